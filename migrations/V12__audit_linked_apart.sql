-- Ingest no longer waits on the audit chain. Every append used to take one global lock until
-- its transaction committed, so all ingest ran one commit at a time. Now a row is appended in
-- the caller's transaction without its link (no lock: everything the transaction writes still
-- lands together or not at all), and `audit_chain` links committed rows later, in order, under
-- that lock (the outbox relay calls it every tick, in web and workers; `selfheal verify-audit`
-- calls it first). A row's place in the chain is `chain_seq`, given when it is linked: `seq`
-- is taken at insert, and transactions commit out of its order.
ALTER TABLE audit_log ALTER COLUMN prev_hash DROP NOT NULL, ALTER COLUMN hash DROP NOT NULL;
ALTER TABLE audit_log ADD COLUMN chain_seq BIGINT UNIQUE;
-- The rows linked so far were linked in seq order, their hashes over seq.
ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
UPDATE audit_log SET chain_seq = seq;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update;
CREATE SEQUENCE audit_log_chain_seq_seq;
SELECT setval('audit_log_chain_seq_seq', coalesce((SELECT max(seq) FROM audit_log), 0) + 1, false);
CREATE INDEX audit_log_unlinked ON audit_log (seq) WHERE chain_seq IS NULL;

CREATE OR REPLACE FUNCTION audit_append(p_actor TEXT, p_action TEXT, p_subject TEXT, p_detail JSONB)
RETURNS BIGINT LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_seq BIGINT;
BEGIN
    INSERT INTO audit_log (at, actor, action, subject, detail)
    VALUES (clock_timestamp(), p_actor, p_action, p_subject, p_detail)
    RETURNING seq INTO v_seq;
    RETURN v_seq;
END $$;

-- Links up to p_limit (1 to 10000) committed rows, in seq order; returns how many, or 0 when
-- another linker holds the lock (it links them: nobody waits on it, the relay least of all).
CREATE FUNCTION audit_chain(p_limit INT)
RETURNS INT LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_prev  BYTEA;
    v_row   RECORD;
    v_chain BIGINT;
    v_n     INT := 0;
BEGIN
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 THEN
        RAISE EXCEPTION 'audit_chain links 1 to 10000 rows at a time, not %', p_limit;
    END IF;
    -- Each statement below must see what the previous linker committed: a transaction reading
    -- from an older snapshot (REPEATABLE READ, SERIALIZABLE) would link to a stale head and
    -- fork the chain for good.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'audit_chain runs at READ COMMITTED only, not %',
            current_setting('transaction_isolation');
    END IF;
    -- One linker at a time, so that each row links to exactly one predecessor.
    IF NOT pg_try_advisory_xact_lock(7261836373) THEN
        RETURN 0;
    END IF;
    SELECT hash INTO v_prev FROM audit_log WHERE chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1;
    v_prev := coalesce(v_prev, '\x'::bytea);
    FOR v_row IN
        SELECT seq, at, actor, action, subject, detail FROM audit_log
        WHERE chain_seq IS NULL ORDER BY seq LIMIT p_limit
    LOOP
        v_chain := nextval('audit_log_chain_seq_seq');
        UPDATE audit_log
           SET chain_seq = v_chain, prev_hash = v_prev,
               hash = audit_row_hash(v_prev, v_chain, v_row.at, v_row.actor, v_row.action,
                                     v_row.subject, v_row.detail)
         WHERE seq = v_row.seq AND chain_seq IS NULL
        RETURNING hash INTO v_prev;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'audit row % was linked by someone else meanwhile', v_row.seq;
        END IF;
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END $$;
REVOKE ALL ON FUNCTION audit_chain(INT) FROM PUBLIC;

-- Linking a row, once, is the only change a row may see: its content stays, and so does a
-- link once made.
CREATE OR REPLACE FUNCTION audit_log_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.chain_seq IS NULL AND NEW.chain_seq IS NOT NULL
       AND NEW.seq = OLD.seq AND NEW.at = OLD.at AND NEW.actor = OLD.actor
       AND NEW.action = OLD.action AND NEW.subject = OLD.subject
       -- As text, as the hash covers it (jsonb's = holds 1.0 and 1.00 equal).
       AND NEW.detail::text = OLD.detail::text THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only';
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_app') THEN
        RETURN;
    END IF;
    GRANT EXECUTE ON FUNCTION audit_chain(INT) TO selfheal_app;
    REVOKE ALL ON SEQUENCE audit_log_chain_seq_seq FROM selfheal_app;
END $$;
