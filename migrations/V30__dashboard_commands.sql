-- Operators' retry, stop and approve from the dashboard (docs/access.md) are commands like
-- `/selfheal ...` comments, carried out by the same worker code: they come from a person
-- signed in with a role rather than from a comment whose author GitHub vouches for.
ALTER TABLE commands ADD COLUMN source TEXT NOT NULL DEFAULT 'comment'
    CHECK (source IN ('comment', 'dashboard'));
-- What the dashboard said the person may do (operator or admin).
ALTER TABLE commands ADD COLUMN role TEXT CHECK (role IN ('viewer', 'operator', 'admin'));
ALTER TABLE commands ALTER COLUMN delivery_id DROP NOT NULL;
ALTER TABLE commands ALTER COLUMN comment_id DROP NOT NULL;
ALTER TABLE commands ALTER COLUMN issue_number DROP NOT NULL;
ALTER TABLE commands ADD CONSTRAINT commands_origin CHECK (
    CASE source
        WHEN 'comment' THEN delivery_id IS NOT NULL AND comment_id IS NOT NULL AND issue_number IS NOT NULL
        ELSE role IS NOT NULL AND incident_id IS NOT NULL AND command IN ('retry', 'stop', 'approve')
    END
);
