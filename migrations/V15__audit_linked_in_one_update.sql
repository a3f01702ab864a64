-- audit_chain links a batch with one UPDATE instead of one UPDATE statement per row: the links
-- are computed first, in order (each hash covers the one before it), then written together.
-- Rows, order, hashes and checks are those of V12; the immutability trigger still sees each
-- row's change. Under load the linker kept up only this way (docs/performance.md).
CREATE OR REPLACE FUNCTION audit_chain(p_limit INT)
RETURNS INT LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_prev    BYTEA;
    v_row     RECORD;
    v_chain   BIGINT;
    v_seqs    BIGINT[] := '{}';
    v_chains  BIGINT[] := '{}';
    v_prevs   BYTEA[] := '{}';
    v_hashes  BYTEA[] := '{}';
    v_n       INT := 0;
    v_written INT;
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
        v_seqs := v_seqs || v_row.seq;
        v_chains := v_chains || v_chain;
        v_prevs := v_prevs || v_prev;
        v_prev := audit_row_hash(v_prev, v_chain, v_row.at, v_row.actor, v_row.action,
                                 v_row.subject, v_row.detail);
        v_hashes := v_hashes || v_prev;
        v_n := v_n + 1;
    END LOOP;
    IF v_n = 0 THEN
        RETURN 0;
    END IF;
    UPDATE audit_log a
       SET chain_seq = u.chain_seq, prev_hash = u.prev_hash, hash = u.hash
      FROM unnest(v_seqs, v_chains, v_prevs, v_hashes) AS u(seq, chain_seq, prev_hash, hash)
     WHERE a.seq = u.seq AND a.chain_seq IS NULL;
    GET DIAGNOSTICS v_written = ROW_COUNT;
    IF v_written <> v_n THEN
        RAISE EXCEPTION 'audit rows were linked by someone else meanwhile (% of %)', v_n - v_written, v_n;
    END IF;
    RETURN v_n;
END $$;
REVOKE ALL ON FUNCTION audit_chain(INT) FROM PUBLIC;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_app') THEN
        RETURN;
    END IF;
    GRANT EXECUTE ON FUNCTION audit_chain(INT) TO selfheal_app;
END $$;
