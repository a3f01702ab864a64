-- The stored webhook body (about 18 KB for a failed workflow_run) is compressed with lz4 rather
-- than pglz, Postgres's default: measured here, lz4 compressed 2,000 such bodies in 45 % of
-- pglz's time, into 70 % of the space (docs/performance.md); under load pglz had taken a tenth
-- of Postgres's CPU in selfheal's ingest (perf). Rows written from now on; older rows stay as
-- they are and read the same. A server without lz4 (or before Postgres 14) keeps pglz and says
-- so.
DO $$
BEGIN
    -- Run as a string: before Postgres 14 the statement is not even valid syntax, and the
    -- block would fail to compile before its handler could catch anything.
    IF current_setting('server_version_num')::int < 140000 THEN
        RAISE NOTICE 'Postgres before 14 has no per-column compression: webhook bodies stay compressed with pglz';
        RETURN;
    END IF;
    EXECUTE 'ALTER TABLE webhook_deliveries ALTER COLUMN payload SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'this server cannot compress with lz4 (%): webhook bodies stay compressed with pglz', SQLERRM;
END $$;
