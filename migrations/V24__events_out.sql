-- Issue 16: every lifecycle change emitted as a CloudEvent to the configured sinks (an HTTP
-- endpoint, a Redis stream), through an outbox: the triggers below write the event and one
-- delivery row per sink in the transaction that makes the change, so no code path can forget
-- one and none is sent for a change that rolled back. Workers deliver them (at least once: the
-- event id is for the receiver's dedup) outside any stage's transaction, so a sink that is
-- down slows nothing.

-- The sinks a worker is configured with register themselves at start. With none, no event is
-- kept. Removing a sink (as the owner): delete its undelivered deliveries in batches, then its
-- row (docs/events.md).
CREATE TABLE event_sinks (
    name          TEXT PRIMARY KEY CHECK (name IN ('http', 'redis')),
    registered_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE events (
    id         BIGSERIAL PRIMARY KEY,
    -- The CloudEvent's id.
    event_id   UUID NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    type       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    data       JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE event_deliveries (
    event_id        BIGINT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    sink            TEXT NOT NULL REFERENCES event_sinks(name) ON DELETE CASCADE,
    attempts        INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A worker sending it holds it until then; past it, another worker may. `lease` names
    -- the round that holds it, so that a round that outlived its lease records nothing over
    -- the next one's.
    leased_until    TIMESTAMPTZ,
    lease           UUID,
    delivered_at    TIMESTAMPTZ,
    last_error      TEXT,
    PRIMARY KEY (event_id, sink)
);
CREATE INDEX event_deliveries_due ON event_deliveries (sink, event_id) WHERE delivered_at IS NULL;

-- The triggers run with their owner's rights (SECURITY DEFINER), so that the app role, which
-- may neither write `events` nor call this function, emits through the triggers alone.
CREATE FUNCTION emit_event(p_type TEXT, p_subject TEXT, p_data JSONB) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_id BIGINT;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM event_sinks) THEN
        RETURN;
    END IF;
    INSERT INTO events (type, subject, data) VALUES (p_type, p_subject, p_data) RETURNING id INTO v_id;
    INSERT INTO event_deliveries (event_id, sink) SELECT v_id, name FROM event_sinks;
END $$;
REVOKE ALL ON FUNCTION emit_event(TEXT, TEXT, JSONB) FROM PUBLIC;

CREATE FUNCTION events_of_incidents() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_repository TEXT := (SELECT full_name FROM repositories WHERE id = NEW.repository_id);
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM emit_event('dev.selfheal.incident.opened', NEW.id::text, jsonb_build_object(
            'incident_id', NEW.id, 'repository', v_repository, 'branch', NEW.branch,
            'workflow', NEW.workflow_name, 'first_failed_at', NEW.first_failed_at));
    ELSIF NEW.status = 'resolved' AND OLD.status IS DISTINCT FROM 'resolved' THEN
        PERFORM emit_event('dev.selfheal.incident.resolved', NEW.id::text, jsonb_build_object(
            'incident_id', NEW.id, 'repository', v_repository, 'branch', NEW.branch,
            'resolved_at', NEW.resolved_at,
            'mttr_seconds', extract(epoch FROM NEW.resolved_at - NEW.first_failed_at)));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER incidents_events AFTER INSERT OR UPDATE OF status ON incidents
    FOR EACH ROW EXECUTE FUNCTION events_of_incidents();

CREATE FUNCTION events_of_runs() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.status IN ('succeeded', 'incomplete', 'failed')
       AND OLD.status IS DISTINCT FROM NEW.status THEN
        PERFORM emit_event('dev.selfheal.run.finished', NEW.id::text, jsonb_build_object(
            'run_id', NEW.id, 'incident_id', NEW.incident_id,
            'repository', NEW.repository_full_name, 'status', NEW.status,
            'reason', NEW.failure_reason));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER runs_events AFTER UPDATE OF status ON runs
    FOR EACH ROW EXECUTE FUNCTION events_of_runs();

CREATE FUNCTION events_of_stage_attempts() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF OLD.outcome = 'running' AND NEW.outcome <> 'running' THEN
        PERFORM emit_event('dev.selfheal.stage.finished', NEW.run_id::text, jsonb_build_object(
            'run_id', NEW.run_id, 'stage', NEW.stage, 'attempt', NEW.attempt,
            'outcome', NEW.outcome,
            'duration_seconds', extract(epoch FROM NEW.finished_at - NEW.started_at)));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER stage_attempts_events AFTER UPDATE OF outcome ON stage_attempts
    FOR EACH ROW EXECUTE FUNCTION events_of_stage_attempts();

CREATE FUNCTION events_of_patches() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.verdict <> 'pending'
       AND (TG_OP = 'INSERT' OR OLD.verdict IS DISTINCT FROM NEW.verdict) THEN
        PERFORM emit_event('dev.selfheal.patch.proposed', NEW.run_id::text, jsonb_build_object(
            'run_id', NEW.run_id, 'class', NEW.class, 'strategy', NEW.strategy,
            'verdict', NEW.verdict, 'reason', NEW.reason));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER patches_events AFTER INSERT OR UPDATE OF verdict ON patches
    FOR EACH ROW EXECUTE FUNCTION events_of_patches();

CREATE FUNCTION events_of_deliveries() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.kind <> 'pull_request' THEN
        RETURN NULL;
    END IF;
    IF NEW.pr_number IS NOT NULL
       AND (TG_OP = 'INSERT' OR OLD.pr_number IS NULL) THEN
        PERFORM emit_event('dev.selfheal.pull_request.opened', NEW.incident_id::text, jsonb_build_object(
            'incident_id', NEW.incident_id, 'run_id', NEW.run_id, 'number', NEW.pr_number,
            'url', NEW.pr_url, 'branch', NEW.branch));
    END IF;
    IF NEW.merged_at IS NOT NULL
       AND (TG_OP = 'INSERT' OR OLD.merged_at IS NULL) THEN
        PERFORM emit_event('dev.selfheal.pull_request.merged', NEW.incident_id::text, jsonb_build_object(
            'incident_id', NEW.incident_id, 'run_id', NEW.run_id, 'number', NEW.pr_number,
            'merge_commit_sha', NEW.merge_commit_sha, 'merged_at', NEW.merged_at));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_events AFTER INSERT OR UPDATE OF pr_number, merged_at ON deliveries
    FOR EACH ROW EXECUTE FUNCTION events_of_deliveries();

-- The app role reads events and records their delivery; it writes them only through the
-- triggers (the default privileges of V8 granted it more).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_app') THEN
        RETURN;
    END IF;
    REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON events FROM selfheal_app;
    REVOKE INSERT, DELETE, TRUNCATE ON event_deliveries FROM selfheal_app;
    -- Registering a sink is a worker's; removing one (and its events) is the owner's.
    REVOKE UPDATE, DELETE, TRUNCATE ON event_sinks FROM selfheal_app;
    REVOKE ALL ON SEQUENCE events_id_seq FROM selfheal_app;
END $$;
