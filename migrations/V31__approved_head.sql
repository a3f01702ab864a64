-- An operator's approval from the dashboard names the fix commit the operator looked at; the
-- worker merges that commit or nothing (docs/access.md). A `/selfheal approve` comment has none: it
-- covers what selfheal had pushed when the comment was written.
ALTER TABLE commands ADD COLUMN approved_head TEXT CHECK (
    approved_head IS NULL OR (approved_head ~ '^[0-9a-f]{40}([0-9a-f]{24})?$' AND command = 'approve')
);
-- A dashboard approval stored before this, still waiting, names no commit: it is failed (and
-- said so in the audit log) rather than carried out on what the operator may not have seen.
WITH failed AS (
    UPDATE commands
       SET status = 'failed', finished_at = now(),
           result = 'stored before approvals named the fix commit; approve again from the run page'
     WHERE source = 'dashboard' AND command = 'approve' AND status = 'queued'
     RETURNING id
)
SELECT audit_append('selfheal:migration', 'command.failed', 'command:' || id,
                    jsonb_build_object('source', 'dashboard', 'command', 'approve',
                                       'result', 'approve again from the run page'))
  FROM failed;
-- Only a waiting approval must name one: the worker's final update of any row passes.
ALTER TABLE commands ADD CONSTRAINT commands_approval_names_head CHECK (
    source <> 'dashboard' OR command <> 'approve' OR status <> 'queued' OR approved_head IS NOT NULL
);
