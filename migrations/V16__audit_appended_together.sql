-- A failed run's ingest appends `incident.opened` and `run.created` in one call instead of one
-- call each: a statement less per delivery (`selfheal bench ingest`). The rows go in in the
-- order given, so their `seq`, and so their place in the chain, follows it.
CREATE FUNCTION audit_append_each(p_actor TEXT, p_actions TEXT[], p_subjects TEXT[], p_details JSONB[])
RETURNS INT LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_n INT;
BEGIN
    IF p_actions IS NULL OR p_subjects IS NULL OR p_details IS NULL
       OR cardinality(p_actions) <> cardinality(p_subjects)
       OR cardinality(p_actions) <> cardinality(p_details) THEN
        RAISE EXCEPTION 'audit_append_each needs as many actions, subjects and details (% , %, %)',
            cardinality(p_actions), cardinality(p_subjects), cardinality(p_details);
    END IF;
    INSERT INTO audit_log (at, actor, action, subject, detail)
    SELECT clock_timestamp(), p_actor, u.action, u.subject, u.detail
      FROM unnest(p_actions, p_subjects, p_details) WITH ORDINALITY AS u(action, subject, detail, n)
     ORDER BY u.n;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END $$;
REVOKE ALL ON FUNCTION audit_append_each(TEXT, TEXT[], TEXT[], JSONB[]) FROM PUBLIC;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_app') THEN
        RAISE NOTICE 'no role selfheal_app: grant it EXECUTE on audit_append_each by hand (SECURITY.md)';
        RETURN;
    END IF;
    GRANT EXECUTE ON FUNCTION audit_append_each(TEXT, TEXT[], TEXT[], JSONB[]) TO selfheal_app;
END $$;
