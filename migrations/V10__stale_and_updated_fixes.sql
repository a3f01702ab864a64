-- A fix made stale: the incident was resolved by another push while selfheal's PR was open.
-- Verify says `close`; deliver closes the PR with a comment and deletes selfheal's branch.
ALTER TABLE verifications DROP CONSTRAINT verifications_verdict_check;
ALTER TABLE verifications ADD CONSTRAINT verifications_verdict_check
    CHECK (verdict IN ('deliver', 'merge', 'hold', 'wait', 'stop', 'skip', 'dry_run', 'close'));
ALTER TABLE deliveries ADD COLUMN closed_at TIMESTAMPTZ;

-- selfheal brought its branch up to date with the base (GitHub's update-branch) when branch
-- protection required it: the merge commit GitHub made counts as selfheal's own head.
ALTER TABLE deliveries ADD COLUMN branch_updated_sha TEXT;
ALTER TABLE deliveries ADD COLUMN branch_updated_at TIMESTAMPTZ;

-- A fix whose own CI never reported (workflows only on the default branch, path filters):
-- when selfheal said so on the PR and left it for review.
ALTER TABLE deliveries ADD COLUMN ci_deadline_at TIMESTAMPTZ;
-- ...and when it was settled: said on the PR, or found to have reported after all.
ALTER TABLE deliveries ADD COLUMN ci_deadline_said_at TIMESTAMPTZ;

-- What started a run: a workflow run (its id and attempt), or an external CI's check suite
-- on selfheal's fix (its id, attempt 0: no workflow run has attempt 0).
ALTER TABLE runs ADD COLUMN trigger TEXT NOT NULL DEFAULT 'workflow_run'
    CHECK (trigger IN ('workflow_run', 'check_suite'));
-- The app whose check suite started the run (its id and slug).
ALTER TABLE runs ADD COLUMN trigger_app_id BIGINT;
ALTER TABLE runs ADD COLUMN trigger_app TEXT;
