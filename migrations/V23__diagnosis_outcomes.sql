-- Issue 16: what became of each diagnosis (for its accuracy), and the indexes web's metrics
-- read by at every scrape.

-- A diagnosis is overturned when the sandbox did not reproduce the failure it described, or the
-- patch stage found another class (a test failure found flaky is not: one log cannot tell
-- flakiness, and the class stays right); confirmed when the fix its run pushed is the one that
-- was merged (the last fix pushed for the incident before the merge) and the incident went
-- green; unsettled (NULL) until one of those is known.
CREATE VIEW diagnosis_outcomes AS
SELECT d.run_id,
       r.repository_full_name AS repository,
       r.incident_id,
       d.class,
       r.created_at AS run_created_at,
       CASE
           WHEN p.verdict = 'not_reproduced'
                OR (p.class <> d.class AND p.class <> 'flaky') THEN 'overturned'
           WHEN h.healed AND fa.pushed_at IS NOT NULL AND fa.run_id = (
                SELECT f.run_id
                FROM fix_attempts f
                JOIN deliveries dl ON dl.incident_id = f.incident_id AND dl.kind = 'pull_request'
                WHERE f.incident_id = r.incident_id
                  AND f.pushed_at IS NOT NULL AND f.pushed_at <= dl.merged_at
                ORDER BY f.pushed_at DESC, f.attempt DESC
                LIMIT 1) THEN 'confirmed'
       END AS outcome
FROM diagnoses d
JOIN runs r ON r.id = d.run_id
JOIN incident_healed h ON h.incident_id = r.incident_id
LEFT JOIN patches p ON p.run_id = d.run_id
LEFT JOIN fix_attempts fa ON fa.run_id = d.run_id;

-- Diagnosis accuracy per repository, week of the run and class: confirmed / settled.
-- Sum the counts over weeks; rates of sums, not of rates.
CREATE VIEW report_diagnosis_accuracy AS
SELECT repository,
       (date_trunc('week', run_created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS week,
       class,
       count(*) AS diagnoses,
       count(*) FILTER (WHERE outcome = 'confirmed') AS confirmed,
       count(*) FILTER (WHERE outcome = 'overturned') AS overturned,
       round(count(*) FILTER (WHERE outcome = 'confirmed')::numeric
             / nullif(count(outcome), 0), 4) AS accuracy
FROM diagnosis_outcomes
GROUP BY 1, 2, 3;

-- The metrics count what is in flight at every scrape: without these, each scrape would read
-- every run and attempt ever recorded.
CREATE INDEX runs_in_flight ON runs (status) WHERE status IN ('queued', 'running');
CREATE INDEX stage_attempts_running ON stage_attempts (stage) WHERE outcome = 'running';
-- The dashboard lists the newest runs first.
CREATE INDEX runs_created_at ON runs (created_at);
