-- External CI reports through any of GitHub's APIs re-trigger verify: a check suite, one
-- check run, or a commit status (named by its context, kept in trigger_app; no app id).
ALTER TABLE runs DROP CONSTRAINT runs_trigger_check;
ALTER TABLE runs ADD CONSTRAINT runs_trigger_check
    CHECK (trigger IN ('workflow_run', 'check_suite', 'check_run', 'status'));
-- Who posted the status (anyone who may write statuses can post any context).
ALTER TABLE runs ADD COLUMN trigger_by TEXT;

-- Check suites, check runs and statuses number themselves apart (and apart from workflow
-- runs): a run is one report of one kind.
ALTER TABLE runs DROP CONSTRAINT runs_github_run_id_github_run_attempt_key;
ALTER TABLE runs ADD CONSTRAINT runs_trigger_report_key
    UNIQUE (trigger, github_run_id, github_run_attempt);

-- The failing commit a pull request's fix is built on: the first failure's, then the newer
-- push's when selfheal rebases its fix onto a branch that moved on and still fails.
ALTER TABLE deliveries ADD COLUMN based_on TEXT;
UPDATE deliveries d SET based_on = r.head_sha FROM runs r WHERE r.id = d.run_id;

-- selfheal's branch deleted (or found gone) after its pull request was merged or closed,
-- by whoever merged or closed it: the sweep that deletes it looks for NULL here.
ALTER TABLE deliveries ADD COLUMN branch_deleted_at TIMESTAMPTZ;
-- A worker deleting it now (a claim older than five minutes is a dead worker's, or a failed
-- try's: tried again then).
ALTER TABLE deliveries ADD COLUMN branch_sweep_claimed_at TIMESTAMPTZ;
