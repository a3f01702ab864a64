-- An operator's approval from the dashboard names the fix commit the operator looked at; the
-- worker merges only that commit (docs/access.md). A `/selfheal approve` comment has none: it
-- covers what selfheal had pushed when the comment was written.
ALTER TABLE commands ADD COLUMN approved_head TEXT CHECK (
    approved_head IS NULL OR (approved_head ~ '^[0-9a-f]{40}([0-9a-f]{24})?$' AND command = 'approve')
);
-- Rows a V30 dashboard stored keep their meaning; new dashboard approvals must name a head.
ALTER TABLE commands ADD CONSTRAINT commands_approval_names_head CHECK (
    source <> 'dashboard' OR command <> 'approve' OR approved_head IS NOT NULL
) NOT VALID;
