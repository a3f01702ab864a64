-- MTTR per repository, per week of the first failure (ISO weeks, from Monday 00:00 UTC) and per
-- failure class: the class selfheal gave the incident's first diagnosed run ('unknown' when no
-- run of it was diagnosed). Open incidents count in `incidents`, not in the MTTR figures.
CREATE VIEW report_mttr_weekly AS
WITH classed AS (
    SELECT m.repository,
           m.first_failed_at,
           m.resolved_at,
           m.mttr_seconds,
           coalesce((SELECT d.class
                     FROM runs r JOIN diagnoses d ON d.run_id = r.id
                     WHERE r.incident_id = m.incident_id
                     ORDER BY r.created_at, r.id
                     LIMIT 1), 'unknown') AS class
    FROM incident_mttr m
)
SELECT repository,
       (date_trunc('week', first_failed_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS week,
       class,
       count(*) AS incidents,
       count(resolved_at) AS resolved,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY mttr_seconds) AS mttr_p50_seconds,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY mttr_seconds) AS mttr_p95_seconds,
       avg(mttr_seconds) AS mttr_mean_seconds
FROM classed
GROUP BY 1, 2, 3;
