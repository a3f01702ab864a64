-- Issue 15: what the model services were asked to process, per run, with budgets per incident
-- and per installation per day. A worker reserves what a heal may spend before it asks (under
-- an advisory lock per installation, so that workers running side by side cannot each spend
-- the same allowance) and settles the row with the service's own counts after.

CREATE TABLE ai_spend (
    id                  BIGSERIAL PRIMARY KEY,
    run_id              UUID NOT NULL REFERENCES runs(id),
    incident_id         UUID NOT NULL REFERENCES incidents(id),
    installation_id     BIGINT NOT NULL,
    -- `morph` for Morph's apply model merging another model's edits.
    provider            TEXT NOT NULL CHECK (provider IN ('anthropic', 'openai_compatible', 'morph')),
    model               TEXT NOT NULL,
    -- What the heal was allowed: counted against the budgets until the row is settled.
    reserved_tokens     BIGINT NOT NULL CHECK (reserved_tokens >= 0),
    -- The service's counts once settled; input is the input neither read from nor written to
    -- the prompt cache, so that the four add up to what was processed.
    input_tokens        BIGINT CHECK (input_tokens >= 0),
    output_tokens       BIGINT CHECK (output_tokens >= 0),
    cache_read_tokens   BIGINT CHECK (cache_read_tokens >= 0),
    cache_write_tokens  BIGINT CHECK (cache_write_tokens >= 0),
    requests            INT CHECK (requests >= 0),
    -- US dollars at the configured prices; NULL when none are configured.
    cost_usd            NUMERIC(14, 6) CHECK (cost_usd >= 0),
    started_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    settled_at          TIMESTAMPTZ,
    -- Settled means counted: all four counts or none (a heal that failed before it could say
    -- stays counted at its reservation).
    CHECK (settled_at IS NOT NULL OR input_tokens IS NULL),
    CHECK ((input_tokens IS NULL) = (output_tokens IS NULL)
       AND (input_tokens IS NULL) = (cache_read_tokens IS NULL)
       AND (input_tokens IS NULL) = (cache_write_tokens IS NULL))
);

CREATE INDEX ai_spend_incident ON ai_spend (incident_id);
CREATE INDEX ai_spend_installation_day ON ai_spend (installation_id, started_at);

-- What counts against a budget: the service's counts once known, the reservation until then.
CREATE VIEW ai_spend_counted AS
SELECT s.*,
       COALESCE(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens,
                reserved_tokens) AS counted_tokens
FROM ai_spend s;

-- Spend per installation per UTC day: the figure the daily budget is held to.
CREATE VIEW ai_spend_daily AS
SELECT installation_id,
       (started_at AT TIME ZONE 'UTC')::date AS day,
       count(DISTINCT run_id) AS runs,
       sum(counted_tokens) AS tokens,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(cache_read_tokens) AS cache_read_tokens,
       sum(cache_write_tokens) AS cache_write_tokens,
       sum(cost_usd) AS cost_usd,
       count(*) FILTER (WHERE settled_at IS NULL) AS unsettled
FROM ai_spend_counted
GROUP BY installation_id, (started_at AT TIME ZONE 'UTC')::date;
