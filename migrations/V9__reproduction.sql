-- What the sandbox ran for the failing step (the workflow's own step when it was found, the
-- log's command otherwise) and what it could not reproduce: validation runs the same script.
ALTER TABLE patches ADD COLUMN step JSONB;
