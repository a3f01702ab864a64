-- Issue 11: least privilege in Postgres. Migrations run as the schema's owner (whoever runs
-- `selfheal migrate`); web and workers connect as a login role that is a member of
-- `selfheal_app`, which may read and write selfheal's tables but not change the schema, and
-- may touch the audit log only through `audit_append`. A superuser bypasses all of this:
-- production connects web and workers as the app role (SECURITY.md).

DO $$
BEGIN
    CREATE ROLE selfheal_app NOLOGIN;
EXCEPTION
    -- Roles are cluster-wide: another database's migration (or a concurrent one) made it.
    WHEN duplicate_object OR unique_violation THEN NULL;
    -- An owner without CREATEROLE: the grants below are skipped; an administrator creates
    -- the role and applies them by hand (SECURITY.md lists them).
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'cannot create role selfheal_app (no CREATEROLE); create it and grant by hand (SECURITY.md)';
END $$;

-- The audit log is appended to by the function alone, which runs with its owner's rights
-- and a fixed search path (so a caller cannot substitute its own `audit_log`).
ALTER FUNCTION audit_append(TEXT, TEXT, TEXT, JSONB) SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE ALL ON FUNCTION audit_append(TEXT, TEXT, TEXT, JSONB) FROM PUBLIC;
REVOKE ALL ON audit_log FROM PUBLIC;
-- Nobody but the owner creates objects in the schema (the default since Postgres 15; older
-- servers let everyone, which would let a role shadow what the definer function reads).
DO $$
BEGIN
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    -- A role that does not own the schema gets a warning, not an error, from REVOKE: say it.
    IF has_schema_privilege('public', 'public', 'CREATE') THEN
        RAISE WARNING 'everyone may still CREATE in schema public: revoke it as its owner (SECURITY.md)';
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'cannot revoke CREATE on schema public from PUBLIC (not its owner): do it as the owner (SECURITY.md)';
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_app') THEN
        RETURN;
    END IF;
    GRANT USAGE ON SCHEMA public TO selfheal_app;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO selfheal_app;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO selfheal_app;
    -- Tables and sequences later migrations create get the same grants.
    ALTER DEFAULT PRIVILEGES IN SCHEMA public
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO selfheal_app;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public
        GRANT USAGE, SELECT ON SEQUENCES TO selfheal_app;
    -- The audit log: read, and appended to through the function only.
    REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON audit_log FROM selfheal_app;
    GRANT SELECT ON audit_log TO selfheal_app;
    REVOKE ALL ON SEQUENCE audit_log_seq_seq FROM selfheal_app;
    GRANT EXECUTE ON FUNCTION audit_append(TEXT, TEXT, TEXT, JSONB) TO selfheal_app;
    -- The migration history is the owner's business.
    REVOKE ALL ON refinery_schema_history FROM selfheal_app;
END $$;
