-- Issue 17: provers and model checkers run on each validated fix (Lean's `lake build`,
-- `cargo kani`, TLA+'s `tlc`, `cargo miri test`; engine/src/prove). One row per prover that
-- applied, or one `none`/`not_applicable` row when none did. A `failed` proof keeps the fix
-- from being delivered; `unavailable` (the sandbox lacks the prover, or stopped it),
-- `already_failing` (it fails without the fix too) and `not_applicable` are never counted as
-- attempts or successes (docs/proofs.md).
CREATE TABLE proofs (
    run_id     UUID NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    prover     TEXT NOT NULL CHECK (prover IN ('lean', 'kani', 'tlc', 'miri', 'none')),
    outcome    TEXT NOT NULL CHECK (outcome IN ('passed', 'failed', 'unavailable', 'already_failing', 'not_applicable')),
    command    TEXT NOT NULL,
    detail     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, prover)
);

-- Per repository, week (Monday 00:00 UTC) and prover: attempted (passed + failed), and the
-- success rate over those.
CREATE VIEW report_proofs AS
SELECT r.repository_full_name AS repository,
       (date_trunc('week', p.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS week,
       p.prover,
       count(*) FILTER (WHERE p.outcome = 'passed')         AS passed,
       count(*) FILTER (WHERE p.outcome = 'failed')         AS failed,
       count(*) FILTER (WHERE p.outcome = 'unavailable')    AS unavailable,
       count(*) FILTER (WHERE p.outcome = 'already_failing') AS already_failing,
       count(*) FILTER (WHERE p.outcome = 'not_applicable') AS not_applicable,
       count(*) FILTER (WHERE p.outcome IN ('passed', 'failed')) AS attempted,
       (count(*) FILTER (WHERE p.outcome = 'passed'))::float8
         / nullif(count(*) FILTER (WHERE p.outcome IN ('passed', 'failed')), 0) AS success_rate
FROM proofs p JOIN runs r ON r.id = p.run_id
GROUP BY 1, 2, 3;
