-- A fix made stale: the incident was resolved by another push while selfheal's PR was open.
-- Verify says `close`; deliver closes the PR with a comment and deletes selfheal's branch.
ALTER TABLE verifications DROP CONSTRAINT verifications_verdict_check;
ALTER TABLE verifications ADD CONSTRAINT verifications_verdict_check
    CHECK (verdict IN ('deliver', 'merge', 'hold', 'wait', 'stop', 'skip', 'dry_run', 'close'));
ALTER TABLE deliveries ADD COLUMN closed_at TIMESTAMPTZ;
