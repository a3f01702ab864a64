-- Deterministic healing: what was diagnosed, what patch was made, and how it was proven.

ALTER TABLE incidents ADD COLUMN fingerprint TEXT;
CREATE INDEX incidents_fingerprint ON incidents (fingerprint);

CREATE TABLE diagnoses (
    run_id        UUID PRIMARY KEY REFERENCES runs(id),
    github_job_id BIGINT,                 -- the job whose log was diagnosed
    class         TEXT NOT NULL,          -- format, lint, compile, test, dependency, infra, flaky, unknown
    tool          TEXT,
    culprit_file  TEXT,
    culprit_line  INT,
    failing_tests JSONB NOT NULL DEFAULT '[]',
    fingerprint   TEXT NOT NULL,
    command       TEXT,                   -- the failed step's command
    excerpt       TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX diagnoses_fingerprint ON diagnoses (fingerprint);

CREATE TABLE patches (
    run_id      UUID PRIMARY KEY REFERENCES runs(id),
    strategy    TEXT NOT NULL,            -- format, lint_autofix, rerun, revert_culprit, hand_off
    diff        TEXT,                     -- unified diff; NULL when the plan is no code change
    class       TEXT NOT NULL,            -- may say flaky where the log said test
    verdict     TEXT NOT NULL,            -- pending, fixed, flaky, rerun, rejected, handed_off, not_reproduced
    reason      TEXT,                     -- why rejected or handed off
    evidence    JSONB NOT NULL,           -- the reproduction: runs, passed, failed, duration_ms, excerpt
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE validations (
    run_id       UUID PRIMARY KEY REFERENCES runs(id),
    applied      BOOLEAN NOT NULL,
    runs         INT NOT NULL,
    passed       INT NOT NULL,
    failed       INT NOT NULL,
    duration_ms  BIGINT NOT NULL,
    excerpt      TEXT NOT NULL,
    verdict      TEXT NOT NULL,           -- fixed or rejected
    reason       TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
