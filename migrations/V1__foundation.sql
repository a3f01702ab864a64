-- Foundation schema: deliveries in, incidents and runs out, every stage attempt recorded.

CREATE TABLE installations (
    id            BIGINT PRIMARY KEY,            -- GitHub installation id
    account_login TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    suspended_at  TIMESTAMPTZ,
    deleted_at    TIMESTAMPTZ
);

CREATE TABLE repositories (
    id              BIGINT PRIMARY KEY,          -- GitHub repository id
    installation_id BIGINT NOT NULL REFERENCES installations(id),
    full_name       TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    removed_at      TIMESTAMPTZ
);

CREATE TABLE webhook_deliveries (
    delivery_id     TEXT PRIMARY KEY,            -- X-GitHub-Delivery
    event           TEXT NOT NULL,               -- X-GitHub-Event
    action          TEXT,
    installation_id BIGINT,
    repository_id   BIGINT,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    outcome         TEXT NOT NULL,               -- what ingest did with it
    payload         JSONB NOT NULL
);
CREATE INDEX webhook_deliveries_received_at ON webhook_deliveries (received_at);

CREATE TABLE incidents (
    id                  UUID PRIMARY KEY,
    repository_id       BIGINT NOT NULL REFERENCES repositories(id),
    branch              TEXT NOT NULL,
    workflow_id         BIGINT NOT NULL,
    workflow_name       TEXT,
    status              TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    first_failed_at     TIMESTAMPTZ NOT NULL,    -- completion time of the first failing run
    opened_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    failed_runs         INT NOT NULL DEFAULT 1,
    resolved_at         TIMESTAMPTZ,             -- completion time of the run that went green
    resolved_by_run_id  BIGINT,                  -- GitHub run id of that run
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
-- At most one open incident per repo + branch + workflow: later failures attach to it.
CREATE UNIQUE INDEX incidents_one_open ON incidents (repository_id, branch, workflow_id) WHERE status = 'open';

CREATE TABLE runs (
    id                  UUID PRIMARY KEY,
    incident_id         UUID NOT NULL REFERENCES incidents(id),
    delivery_id         TEXT NOT NULL REFERENCES webhook_deliveries(delivery_id),
    installation_id     BIGINT NOT NULL,
    repository_full_name TEXT NOT NULL,
    github_run_id       BIGINT NOT NULL,
    github_run_attempt  INT NOT NULL,
    head_sha            TEXT NOT NULL,
    conclusion          TEXT NOT NULL,           -- failure | timed_out
    status              TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'incomplete', 'failed')),
    current_stage       TEXT,
    failure_reason      TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at         TIMESTAMPTZ,
    UNIQUE (github_run_id, github_run_attempt)
);
CREATE INDEX runs_incident ON runs (incident_id);

CREATE TABLE stage_attempts (
    id          BIGSERIAL PRIMARY KEY,
    run_id      UUID NOT NULL REFERENCES runs(id),
    stage       TEXT NOT NULL,
    attempt     INT NOT NULL,
    worker_id   TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    outcome     TEXT NOT NULL CHECK (outcome IN ('running', 'succeeded', 'skipped', 'failed', 'abandoned')),
    detail      TEXT,
    error       TEXT,
    UNIQUE (run_id, stage, attempt)
);
-- A stage finishes at most once per run, whatever crashes and redeliveries happen.
CREATE UNIQUE INDEX stage_attempts_one_finish ON stage_attempts (run_id, stage) WHERE outcome IN ('succeeded', 'skipped');

-- Transactional outbox: a stage job exists here before it exists in Redis.
CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    run_id      UUID NOT NULL REFERENCES runs(id),
    stage       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    enqueued_at TIMESTAMPTZ,
    attempts    INT NOT NULL DEFAULT 0,
    last_error  TEXT,
    UNIQUE (run_id, stage)
);
CREATE INDEX outbox_pending ON outbox (id) WHERE enqueued_at IS NULL;

CREATE TABLE job_logs (
    id              BIGSERIAL PRIMARY KEY,
    run_id          UUID NOT NULL REFERENCES runs(id),
    github_job_id   BIGINT NOT NULL,
    job_name        TEXT NOT NULL,
    conclusion      TEXT,
    failed_steps    JSONB NOT NULL,              -- [{"number": 5, "name": "Run tests"}]
    log_gzip        BYTEA NOT NULL,
    original_bytes  BIGINT NOT NULL,
    truncated       BOOLEAN NOT NULL,            -- true when only the tail was kept
    fetched_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (run_id, github_job_id)
);

-- Append-only, hash-chained audit log. Each row's hash covers its content and the previous
-- row's hash, so editing or deleting a row breaks the chain (`selfheal verify-audit`).
CREATE TABLE audit_log (
    seq       BIGSERIAL PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    detail    JSONB NOT NULL DEFAULT '{}',
    prev_hash BYTEA NOT NULL,
    hash      BYTEA NOT NULL
);

CREATE FUNCTION audit_row_hash(prev BYTEA, seq BIGINT, at TIMESTAMPTZ, actor TEXT, action TEXT, subject TEXT, detail JSONB)
RETURNS BYTEA LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(prev || convert_to(
        seq::text || E'\x1f' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || E'\x1f' ||
        actor || E'\x1f' || action || E'\x1f' || subject || E'\x1f' || detail::text, 'UTF8'))
$$;

CREATE FUNCTION audit_append(p_actor TEXT, p_action TEXT, p_subject TEXT, p_detail JSONB)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    v_prev BYTEA;
    v_seq  BIGINT;
    v_at   TIMESTAMPTZ := clock_timestamp();
BEGIN
    -- Serialise appends so that each row links to exactly one predecessor.
    PERFORM pg_advisory_xact_lock(7261836373);
    SELECT hash INTO v_prev FROM audit_log ORDER BY seq DESC LIMIT 1;
    v_prev := coalesce(v_prev, '\x'::bytea);
    v_seq := nextval(pg_get_serial_sequence('audit_log', 'seq'));
    INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash)
    VALUES (v_seq, v_at, p_actor, p_action, p_subject, p_detail, v_prev,
            audit_row_hash(v_prev, v_seq, v_at, p_actor, p_action, p_subject, p_detail));
    RETURN v_seq;
END $$;

CREATE FUNCTION audit_log_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_immutable();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_immutable();

-- MTTR per incident; open incidents have a NULL mttr.
CREATE VIEW incident_mttr AS
SELECT i.id AS incident_id,
       r.full_name AS repository,
       i.branch,
       i.workflow_name,
       i.status,
       i.failed_runs,
       i.first_failed_at,
       i.resolved_at,
       i.resolved_at - i.first_failed_at AS mttr,
       extract(epoch FROM i.resolved_at - i.first_failed_at)::double precision AS mttr_seconds
FROM incidents i
JOIN repositories r ON r.id = i.repository_id;
