-- Issue 14: a failed run's delivery is stored with an outbox row naming it, in one statement,
-- and answered; a worker admits it later (the gates, the dedup by GitHub run, the incident,
-- the run and its first stage), so the webhook does the least a receiver can.

-- The run a failed run's delivery created or found (`run_created`, `run_exists`), set when it
-- is admitted. Until then its outcome is `accepted`.
ALTER TABLE webhook_deliveries ADD COLUMN run_id UUID;

-- An outbox row is now one of three jobs: a run's stage, a command, or a delivery to admit.
ALTER TABLE outbox ADD COLUMN delivery_id TEXT UNIQUE REFERENCES webhook_deliveries (delivery_id);
-- The web's gate in force when the delivery was accepted (`SELFHEAL_RUNS_PER_HOUR`), applied
-- by the admission: the workers need no gate settings of their own, and a delivery is judged
-- by the settings it arrived under.
ALTER TABLE outbox ADD COLUMN runs_per_hour BIGINT;
ALTER TABLE outbox DROP CONSTRAINT outbox_one_job;
ALTER TABLE outbox ADD CONSTRAINT outbox_one_job CHECK (
    num_nonnulls(run_id, command_id, delivery_id) = 1 AND (run_id IS NULL) = (stage IS NULL)
);

-- The latest green run of each workflow on each branch, by when GitHub created it (for a
-- push, moments after it). A failed run created before it, admitted after it was taken in (a
-- backlog, or GitHub's order), is superseded: a later push made the branch green again and
-- there is nothing to heal.
CREATE TABLE branch_passes (
    repository_id      BIGINT NOT NULL,
    head_repository_id BIGINT NOT NULL,
    branch             TEXT NOT NULL,
    workflow_id        BIGINT NOT NULL,
    run_created_at     TIMESTAMPTZ NOT NULL,  -- the green run's created_at
    github_run_id      BIGINT NOT NULL,
    PRIMARY KEY (repository_id, head_repository_id, branch, workflow_id)
);

-- What waits for admission, counted and aged for /metrics without reading every delivery.
CREATE INDEX webhook_deliveries_accepted ON webhook_deliveries (received_at) WHERE outcome = 'accepted';
