-- Whether selfheal healed an incident: it is resolved, and selfheal's pull request for it was
-- merged no later than the run that went green.
CREATE VIEW incident_healed AS
SELECT i.id AS incident_id,
       EXISTS (
           SELECT 1 FROM deliveries dl
           WHERE dl.incident_id = i.id AND dl.kind = 'pull_request'
             AND dl.merged_at IS NOT NULL AND i.resolved_at IS NOT NULL
             AND dl.merged_at <= i.resolved_at
       ) AS healed
FROM incidents i;

-- Fix rate: of a repository's incidents that first failed in a week (Monday 00:00 UTC), how
-- many selfheal healed.
CREATE VIEW report_fix_rate AS
SELECT r.full_name AS repository,
       (date_trunc('week', i.first_failed_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS week,
       count(*) AS incidents,
       count(*) FILTER (WHERE i.status = 'resolved') AS resolved,
       count(*) FILTER (WHERE h.healed) AS healed,
       round(count(*) FILTER (WHERE h.healed)::numeric / count(*), 4) AS fix_rate
FROM incidents i
JOIN repositories r ON r.id = i.repository_id
JOIN incident_healed h ON h.incident_id = i.id
GROUP BY 1, 2;

-- What each strategy made of each class of failure, per repository and week of the run:
-- patches proposed, validated (passed every run in the sandbox), delivered (a pull request
-- opened from that run: the row written before the pull request exists does not count until
-- GitHub gave it a number) and merged. Sum the counts over weeks; rates of sums, not of rates.
CREATE VIEW report_patch_outcomes AS
SELECT r.repository_full_name AS repository,
       (date_trunc('week', r.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS week,
       p.class,
       p.strategy,
       count(*) AS patches,
       count(*) FILTER (WHERE p.verdict = 'fixed') AS validated,
       count(dl.pr_number) AS delivered,
       count(dl.merged_at) FILTER (WHERE dl.pr_number IS NOT NULL) AS merged
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

-- What the runs of an installation cost, per week of the run: runs, the model's tokens (as
-- `ai_spend_counted` counts them: the service's counts, or the reservation until settled) and
-- cost where prices are configured, and the minutes the patch and validate stages took (the
-- sandbox's share of a run; finished attempts only). `healed` counts the incidents of those
-- runs that selfheal healed, so that tokens and minutes per fix can be read off.
CREATE VIEW report_cost_weekly AS
SELECT r.installation_id,
       (date_trunc('week', r.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS week,
       count(*) AS runs,
       coalesce(sum(ai.tokens), 0)::bigint AS ai_tokens,
       sum(ai.cost_usd) AS ai_cost_usd,
       round(coalesce(sum(st.seconds), 0)::numeric / 60, 2) AS patch_validate_minutes,
       count(DISTINCT r.incident_id) FILTER (WHERE h.healed) AS healed
FROM runs r
JOIN incident_healed h ON h.incident_id = r.incident_id
LEFT JOIN LATERAL (
    SELECT sum(s.counted_tokens) AS tokens, sum(s.cost_usd) AS cost_usd
    FROM ai_spend_counted s WHERE s.run_id = r.id
) ai ON true
LEFT JOIN LATERAL (
    SELECT sum(extract(epoch FROM a.finished_at - a.started_at)) AS seconds
    FROM stage_attempts a
    WHERE a.run_id = r.id AND a.stage IN ('patch', 'validate') AND a.finished_at IS NOT NULL
) st ON true
GROUP BY 1, 2;
