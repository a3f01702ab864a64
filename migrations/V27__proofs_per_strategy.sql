-- Issue 16: the sandbox's proof per class and strategy, beside what each strategy made of each
-- class (V22): `proofs` (the validate stage judged the patch) and `proved` (it passed every
-- run). Columns added at the end, so that readers of the view keep working.
CREATE OR REPLACE VIEW report_patch_outcomes AS
SELECT r.repository_full_name AS repository,
       (date_trunc('week', r.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS week,
       p.class,
       p.strategy,
       count(*) AS patches,
       count(*) FILTER (WHERE p.verdict = 'fixed') AS validated,
       count(dl.pr_number) AS delivered,
       count(dl.merged_at) FILTER (WHERE dl.pr_number IS NOT NULL) AS merged,
       count(v.run_id) AS proofs,
       count(v.run_id) FILTER (WHERE v.verdict = 'fixed') AS proved
FROM patches p
JOIN runs r ON r.id = p.run_id
LEFT JOIN deliveries dl ON dl.run_id = p.run_id AND dl.kind = 'pull_request'
LEFT JOIN validations v ON v.run_id = p.run_id
GROUP BY 1, 2, 3, 4;
