-- Fix rate: of a repository's incidents that first failed in a week (Monday 00:00 UTC), how
-- many selfheal healed: resolved, with selfheal's pull request merged no later than the run
-- that went green.
CREATE VIEW report_fix_rate AS
SELECT r.full_name AS repository,
       (date_trunc('week', i.first_failed_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS week,
       count(*) AS incidents,
       count(*) FILTER (WHERE i.status = 'resolved') AS resolved,
       count(*) FILTER (WHERE healed.merged_at IS NOT NULL) AS healed,
       round(count(*) FILTER (WHERE healed.merged_at IS NOT NULL)::numeric / count(*), 4) AS fix_rate
FROM incidents i
JOIN repositories r ON r.id = i.repository_id
LEFT JOIN LATERAL (
    SELECT dl.merged_at
    FROM deliveries dl
    WHERE dl.incident_id = i.id AND dl.kind = 'pull_request'
      AND dl.merged_at IS NOT NULL AND i.resolved_at IS NOT NULL
      AND dl.merged_at <= i.resolved_at
    LIMIT 1
) healed ON true
GROUP BY 1, 2;

-- What each strategy made of each class of failure, per repository and week of the run:
-- patches proposed, validated (passed every run in the sandbox), delivered (a pull request
-- opened from that run) and merged. Sum the counts over weeks; rates of sums, not of rates.
CREATE VIEW report_patch_outcomes AS
SELECT r.repository_full_name AS repository,
       (date_trunc('week', r.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS week,
       p.class,
       p.strategy,
       count(*) AS patches,
       count(*) FILTER (WHERE p.verdict = 'fixed') AS validated,
       count(dl.id) AS delivered,
       count(dl.merged_at) AS merged
FROM patches p
JOIN runs r ON r.id = p.run_id
LEFT JOIN deliveries dl ON dl.run_id = p.run_id AND dl.kind = 'pull_request'
GROUP BY 1, 2, 3, 4;

-- Flaky failures by fingerprint: runs whose failure did not reproduce in every sandbox run
-- (the patch stage's `flaky` verdict), per repository, with the tests the last one named.
CREATE VIEW report_flaky_tests AS
SELECT d.fingerprint,
       r.repository_full_name AS repository,
       count(*) AS runs,
       min(r.created_at) AS first_seen,
       max(r.created_at) AS last_seen,
       (array_agg(d.failing_tests ORDER BY r.created_at DESC, r.id))[1] AS failing_tests
FROM patches p
JOIN runs r ON r.id = p.run_id
JOIN diagnoses d ON d.run_id = p.run_id
WHERE p.verdict = 'flaky'
GROUP BY 1, 2;
