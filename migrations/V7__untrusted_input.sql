-- Issue 11: forks, merge queues and replays are recorded with the reason selfheal did not act.

-- Why ingest did not act on a delivery (fork, merge queue, stopped incident, replayed comment...).
ALTER TABLE webhook_deliveries ADD COLUMN reason TEXT;

-- Incidents are keyed by the repository the failing code lives in as well as the branch, so a
-- fork's branch of the same name can never join (or resolve) the base repository's incident.
ALTER TABLE incidents ADD COLUMN head_repository_id BIGINT;
UPDATE incidents SET head_repository_id = repository_id;
ALTER TABLE incidents ALTER COLUMN head_repository_id SET NOT NULL;
DROP INDEX incidents_one_open;
CREATE UNIQUE INDEX incidents_one_open
    ON incidents (repository_id, head_repository_id, branch, workflow_id) WHERE status = 'open';

-- A comment is a command once: a replayed delivery of the same comment (under a new delivery
-- id) runs nothing again. GitHub's comment ids are unique across repositories. Replays
-- recorded before this migration keep their row (outbox rows point at them), marked with a
-- negative comment id: the row's own id, negated.
UPDATE commands c SET comment_id = -c.id,
       status = CASE WHEN c.status = 'queued' THEN 'refused' ELSE c.status END,
       result = coalesce(c.result, 'a replayed delivery of comment ' || c.comment_id || ': not run again')
FROM commands first
WHERE first.comment_id = c.comment_id AND first.id < c.id;
-- When the comment was written: an approval covers what its author could have seen then.
ALTER TABLE commands ADD COLUMN comment_created_at TIMESTAMPTZ;
CREATE UNIQUE INDEX commands_one_per_comment ON commands (comment_id);

-- The fix itself, as file contents checked on the worker (path, base64 content or null when
-- deleted, executable bit): what validation lays over the checkout and delivery commits.
-- `patches.diff` stays as the diff rendered from it, for people and the policy.
ALTER TABLE patches ADD COLUMN changes JSONB;
