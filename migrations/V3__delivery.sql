-- Delivery to GitHub: one pull request per incident at most, and reruns of flaky jobs.
CREATE TABLE deliveries (
    id           BIGSERIAL PRIMARY KEY,
    run_id       UUID NOT NULL REFERENCES runs(id),
    incident_id  UUID NOT NULL REFERENCES incidents(id),
    kind         TEXT NOT NULL CHECK (kind IN ('pull_request', 'rerun')),
    branch       TEXT,                -- selfheal/<incident>-<short sha>
    commit_sha   TEXT,                -- the fix's commit, made through the Git Data API
    ref_created  BOOLEAN NOT NULL DEFAULT false,
    pr_number    INT,
    pr_url       TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (run_id, kind)
);
-- The idempotency key: never two pull requests for one incident.
CREATE UNIQUE INDEX deliveries_one_pr_per_incident ON deliveries (incident_id) WHERE kind = 'pull_request';
