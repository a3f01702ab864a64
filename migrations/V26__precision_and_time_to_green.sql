-- Issue 16: precision (selfheal's merged fixes not reverted within 14 days) and where an
-- incident's time to green goes.

-- A merged revert of selfheal's merged pull request (seen through GitHub's Revert button's
-- branch, `revert-<number>-selfheal/...`): when, and by whom (`github:<login> #<revert PR>`).
ALTER TABLE deliveries ADD COLUMN reverted_at TIMESTAMPTZ;
ALTER TABLE deliveries ADD COLUMN reverted_by TEXT;

-- Per repository and week of the merge: selfheal's fixes merged, those settled (14 days have
-- passed, or they were reverted before), those reverted within 14 days of the merge, and
-- precision = settled and not reverted / settled (NULL while none is settled).
CREATE VIEW report_precision AS
SELECT r.repository_full_name AS repository,
       (date_trunc('week', dl.merged_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS week,
       count(*) AS merged,
       count(*) FILTER (WHERE s.settled) AS settled,
       count(*) FILTER (WHERE s.reverted) AS reverted,
       round(count(*) FILTER (WHERE s.settled AND NOT s.reverted)::numeric
             / nullif(count(*) FILTER (WHERE s.settled), 0), 4) AS precision
FROM deliveries dl
JOIN runs r ON r.id = dl.run_id
CROSS JOIN LATERAL (
    SELECT coalesce(dl.reverted_at <= dl.merged_at + interval '14 days', false) AS reverted,
           dl.merged_at <= now() - interval '14 days'
             OR coalesce(dl.reverted_at <= dl.merged_at + interval '14 days', false) AS settled
) s
WHERE dl.kind = 'pull_request' AND dl.merged_at IS NOT NULL
GROUP BY 1, 2;

-- Where the time to green of an incident selfheal healed went: from the first red run to
-- selfheal's first fix pushed (diagnose, reproduce, patch, prove), from there to the merge
-- (the fix's CI, review or the merge policy), and from the merge to the green run.
CREATE VIEW incident_time_to_green AS
SELECT i.id AS incident_id,
       rp.full_name AS repository,
       i.first_failed_at,
       f.first_pushed_at,
       dl.merged_at,
       i.resolved_at,
       extract(epoch FROM f.first_pushed_at - i.first_failed_at)::float8 AS to_fix_seconds,
       extract(epoch FROM dl.merged_at - f.first_pushed_at)::float8 AS to_merge_seconds,
       extract(epoch FROM i.resolved_at - dl.merged_at)::float8 AS to_green_seconds
FROM incidents i
JOIN repositories rp ON rp.id = i.repository_id
JOIN incident_healed h ON h.incident_id = i.id AND h.healed
JOIN deliveries dl ON dl.incident_id = i.id AND dl.kind = 'pull_request'
JOIN LATERAL (
    SELECT min(pushed_at) AS first_pushed_at FROM fix_attempts fa
    WHERE fa.incident_id = i.id AND fa.pushed_at IS NOT NULL
) f ON true;

-- Their medians per repository and week of the first failure.
CREATE VIEW report_time_to_green AS
SELECT repository,
       (date_trunc('week', first_failed_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS week,
       count(*) AS healed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY to_fix_seconds) AS to_fix_p50_seconds,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY to_merge_seconds) AS to_merge_p50_seconds,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY to_green_seconds) AS to_green_p50_seconds
FROM incident_time_to_green
GROUP BY 1, 2;
