-- Issue 17: the invariants a validated fix broke (policies/invariants.rego, and the
-- repository's own policies), one row per denial, so that a fix not delivered says why and
-- the denials can be counted (docs/invariants.md, the fleet metric
-- selfheal_invariant_denials_total).
CREATE TABLE invariant_denials (
    run_id     UUID NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    -- `selfheal` for the built-in invariants, else the repository policy's path.
    policy     TEXT NOT NULL,
    -- The invariant's name (`tests-kept`, `failures-heard`, `scope`, `no-secrets`,
    -- `tests-offline`), or what a repository's policy calls it.
    invariant  TEXT NOT NULL,
    message    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A verify stage run again after a crash records the same denials once.
    PRIMARY KEY (run_id, policy, message)
);
CREATE INDEX invariant_denials_created ON invariant_denials (created_at);
