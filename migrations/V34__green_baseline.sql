-- Issue 15: a failure no parser recognises is shown by the lines the same job's last green
-- run did not print. The green run whose log chose the excerpt, and that log (gzip, the tail
-- kept under the same cap as the failed log's) for the patch stage's own diagnosis; both NULL
-- when no green log chose it (a recognised failure, no green run of the workflow on the
-- branch, a green log that printed every line, or GitHub not answering).
ALTER TABLE diagnoses ADD COLUMN green_run_id BIGINT, ADD COLUMN green_log_gzip BYTEA;
