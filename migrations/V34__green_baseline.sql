-- Issue 15: a failure no parser recognises is shown by the lines the same job's last green
-- run did not print. The green run whose log served as the baseline; NULL when none did (a
-- recognised failure, no green run of the workflow on the branch, or GitHub not answering).
ALTER TABLE diagnoses ADD COLUMN green_run_id BIGINT;
