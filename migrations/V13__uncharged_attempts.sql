-- An attempt that Postgres going away interrupted (its lock session closed, its bookkeeping
-- could not be written) is recorded `failed` with charged = false: the stage is taken up again
-- without using up its retries, so three database restarts do not fail a run. The worker bounds
-- such attempts per stage on its own (a database that keeps going away still ends the run).
ALTER TABLE stage_attempts ADD COLUMN charged boolean NOT NULL DEFAULT true;
COMMENT ON COLUMN stage_attempts.charged IS
  'false: interrupted by a Postgres outage; not counted against the stage''s retries';
