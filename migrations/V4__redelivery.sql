-- GitHub does not retry a failed webhook delivery: the sweeper asks it to, once per delivery.
CREATE TABLE redelivery_requests (
    guid          TEXT PRIMARY KEY,          -- X-GitHub-Delivery of the missed delivery
    hook_delivery BIGINT NOT NULL,           -- GitHub's id of the failed attempt
    event         TEXT,
    status_code   INT,                       -- what our endpoint answered then (0: no answer)
    requested_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
