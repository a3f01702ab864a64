-- An outbox row's age counts from its insert, not from its transaction's start: the relay
-- leaves rows younger than 3 s to the process that wrote them (`outbox::PUSH_GRACE`), and a
-- transaction that waited on a lock longer than that would otherwise commit a row the relay
-- takes at once, racing the writer's own push.
ALTER TABLE outbox ALTER COLUMN created_at SET DEFAULT clock_timestamp();
