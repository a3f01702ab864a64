-- Closing the loop: the fix's own CI is watched, the fix merged where policy allows, further
-- attempts are bounded, and people steer selfheal with /selfheal commands.

-- A run of the fix's own CI (on selfheal's branch) belongs to the incident it fixes.
ALTER TABLE runs ADD COLUMN fix_branch TEXT;          -- NULL: a run on the incident's own branch

-- selfheal stops acting on an incident (loop protection, /selfheal stop); the incident stays
-- open until its branch is green, so MTTR still counts the time people take.
ALTER TABLE incidents ADD COLUMN stopped_at TIMESTAMPTZ;
ALTER TABLE incidents ADD COLUMN stopped_by TEXT;      -- selfheal:loop-protection or github:<login>
ALTER TABLE incidents ADD COLUMN stopped_reason TEXT;

-- What the verify stage decided before anything is written to GitHub.
CREATE TABLE verifications (
    run_id      UUID PRIMARY KEY REFERENCES runs(id),
    verdict     TEXT NOT NULL CHECK (verdict IN ('deliver', 'merge', 'hold', 'wait', 'stop', 'skip', 'dry_run')),
    reason      TEXT NOT NULL,
    checks      JSONB NOT NULL DEFAULT '[]',          -- the fix's check runs as observed
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every commit selfheal pushed for an incident: the first opens the PR, later ones (after the
-- fix's CI failed) go onto the same branch. `attempt` counts them for loop protection.
CREATE TABLE fix_attempts (
    run_id       UUID PRIMARY KEY REFERENCES runs(id),
    incident_id  UUID NOT NULL REFERENCES incidents(id),
    attempt      INT NOT NULL,
    strategy     TEXT NOT NULL,
    commit_sha   TEXT,
    pushed_at    TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (incident_id, attempt)
);

ALTER TABLE deliveries ADD COLUMN merged_at TIMESTAMPTZ;
ALTER TABLE deliveries ADD COLUMN merge_commit_sha TEXT;
ALTER TABLE deliveries ADD COLUMN merge_error TEXT;     -- why GitHub refused the merge

-- ChatOps: `/selfheal retry|explain|stop|approve` in a comment, honoured only from people
-- with write access to the repository.
CREATE TABLE commands (
    id               BIGSERIAL PRIMARY KEY,
    delivery_id      TEXT NOT NULL UNIQUE REFERENCES webhook_deliveries(delivery_id),
    installation_id  BIGINT NOT NULL,
    repository_id    BIGINT NOT NULL,
    repository_full_name TEXT NOT NULL,
    issue_number     INT NOT NULL,                     -- the PR (or issue) commented on
    comment_id       BIGINT NOT NULL,
    actor            TEXT NOT NULL,                    -- the commenter's login
    command          TEXT NOT NULL CHECK (command IN ('retry', 'explain', 'stop', 'approve')),
    status           TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'done', 'refused', 'failed')),
    permission       TEXT,                             -- what GitHub said the actor has
    incident_id      UUID REFERENCES incidents(id),
    result           TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at      TIMESTAMPTZ
);

-- The outbox carries commands as well as stages: exactly one of the two per row.
ALTER TABLE outbox ALTER COLUMN run_id DROP NOT NULL;
ALTER TABLE outbox ALTER COLUMN stage DROP NOT NULL;
ALTER TABLE outbox ADD COLUMN command_id BIGINT UNIQUE REFERENCES commands(id);
ALTER TABLE outbox ADD CONSTRAINT outbox_one_job CHECK ((run_id IS NOT NULL AND stage IS NOT NULL) <> (command_id IS NOT NULL));

-- The relay looks for jobs pushed but never started among the runs and commands still open.
CREATE INDEX runs_open ON runs (id) WHERE status IN ('queued', 'running');
CREATE INDEX commands_queued ON commands (id) WHERE status = 'queued';
