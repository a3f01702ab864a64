//! Each prover's command and its reading of the output. None of the four installs on the
//! machines this is built on (Lean's and TLC's toolchains, Kani's and Miri's, all come from
//! GitHub or a nightly toolchain), so the outputs below are samples in each tool's documented
//! format (lake's build log, the Kani book's, TLC's as tla2tools prints it, Miri's rustc-style
//! errors), not recordings of runs here. `tests/suite/invariants.rs` runs the Lean plug-in through
//! the real sandbox, where `lake` is missing and the outcome is `unavailable`.

use super::*;

const LAKE_OK: &str = "⣿ [2/4] Building Proofs.Basic\n✔ [3/4] Built Proofs.Basic\n✔ [4/4] Built Proofs\nBuild completed successfully.\n";
const LAKE_SORRY: &str = "⚠ [3/4] Built Proofs.Basic\nwarning: ./././Proofs/Basic.lean:12:8: declaration uses 'sorry'\n✔ [4/4] Built Proofs\nBuild completed successfully.\n";
const LAKE_FAILED: &str = "✖ [3/4] Building Proofs.Basic\ntrace: .> LEAN_PATH=./.lake/build/lib lean ./././Proofs/Basic.lean -R ./././. -o ./.lake/build/lib/Proofs/Basic.olean\nerror: ./././Proofs/Basic.lean:7:2: unsolved goals\nn : Nat\n⊢ n + 0 = n\nerror: Lean exited with code 1\nSome required builds logged failures:\n- Proofs.Basic\nerror: build failed\n";
const KANI_OK: &str = "Checking harness check_add...\nSUMMARY:\n ** 0 of 3 failed\n\nVERIFICATION:- SUCCESSFUL\nVerification Time: 0.0457s\n\nComplete - 1 successfully verified harnesses, 0 failures, 1 total.\n";
const KANI_FAILED: &str = "Checking harness check_div...\nCheck 1: check_div.assertion.1\n\t - Status: FAILURE\n\t - Description: \"attempt to divide by zero\"\n\t - Location: src/lib.rs:4:5 in function div\n\nSUMMARY:\n ** 1 of 2 failed\nFailed Checks: attempt to divide by zero\n\nVERIFICATION:- FAILED\nVerification Time: 0.1s\n\nSummary:\nVerification failed for - check_div\nComplete - 0 successfully verified harnesses, 1 failures, 1 total.\n";
const TLC_OK: &str = "TLC2 Version 2.18\nComputing initial states...\nModel checking completed. No error has been found.\n  Estimates of the probability that TLC did not check all reachable states\n12 states generated, 6 distinct states found, 0 states left on queue.\nFinished in 00s\n";
const TLC_FAILED: &str = "TLC2 Version 2.18\nError: Invariant TypeOK is violated.\nError: The behavior up to this point is:\nState 1: <Initial predicate>\nx = 0\n6 states generated, 4 distinct states found, 1 states left on queue.\n";
const MIRI_FAILED: &str = "running 1 test\ntest tests::reads ... error: Undefined Behavior: out-of-bounds pointer use: alloc1234 has been freed\n  --> src/lib.rs:5:14\nerror: aborting due to 1 previous error\nerror: test failed, to rerun pass `--lib`\n";

#[test]
fn lean_a_sorry_is_not_a_proof() {
    assert_eq!(Lean.judge(0, LAKE_OK).0, Outcome::Passed);
    let (outcome, why) = Lean.judge(0, LAKE_SORRY);
    assert_eq!(outcome, Outcome::Failed);
    assert!(
        why.contains("Basic.lean:12:8: declaration uses 'sorry'"),
        "{why}"
    );
    let (outcome, why) = Lean.judge(1, LAKE_FAILED);
    assert_eq!(outcome, Outcome::Failed);
    assert!(
        why.starts_with("error: ./././Proofs/Basic.lean:7:2: unsolved goals"),
        "{why}"
    );
    assert_eq!(
        Lean.judge(127, "sh: 1: lake: not found\n").0,
        Outcome::Unavailable
    );
}

#[test]
fn kani_tlc_and_miri_read_their_verdicts() {
    assert_eq!(Kani.judge(0, KANI_OK).0, Outcome::Passed);
    let (outcome, why) = Kani.judge(1, KANI_FAILED);
    assert_eq!(outcome, Outcome::Failed);
    assert!(
        why.contains("Status: FAILURE") && why.contains("Checking harness check_div"),
        "{why}"
    );
    // A run that verified nothing is not a pass.
    assert_eq!(
        Kani.judge(0, "Complete - 0 successfully verified harnesses\n")
            .0,
        Outcome::Failed
    );
    assert_eq!(
        Kani.judge(101, "error: no such command: `kani`\n").0,
        Outcome::Unavailable
    );
    assert_eq!(Tlc.judge(0, TLC_OK).0, Outcome::Passed);
    let (outcome, why) = Tlc.judge(12, TLC_FAILED);
    assert_eq!(outcome, Outcome::Failed);
    assert!(
        why.starts_with("Error: Invariant TypeOK is violated."),
        "{why}"
    );
    // Exit 0 without TLC's all-clear is not a pass either.
    assert_eq!(Tlc.judge(0, "TLC2 Version 2.18\n").0, Outcome::Failed);
    let (outcome, why) = Miri.judge(101, MIRI_FAILED);
    assert_eq!(outcome, Outcome::Failed);
    assert!(why.contains("Undefined Behavior"), "{why}");
    assert_eq!(
        Miri.judge(0, "test result: ok. 3 passed; 0 failed\n").0,
        Outcome::Passed
    );
    assert_eq!(
        Miri.judge(101, "error: no such command: `miri`\n").0,
        Outcome::Unavailable
    );
}

#[test]
fn each_prover_applies_to_what_it_checks_and_builds_its_command() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for p in all() {
        assert_eq!(p.applies(root), None, "{} on an empty tree", p.name());
    }
    std::fs::write(root.join("lakefile.toml"), "name = \"proofs\"\n").unwrap();
    assert!(Lean
        .applies(root)
        .is_some_and(|c| c.starts_with("lake build >/tmp/lake.log 2>&1;")));
    std::fs::write(root.join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    assert_eq!(Kani.applies(root), None);
    std::fs::write(
        root.join("src/proofs.rs"),
        "#[kani::proof]\nfn check() {}\n",
    )
    .unwrap();
    assert_eq!(Kani.applies(root).as_deref(), Some("cargo kani"));
    std::fs::create_dir_all(root.join("spec")).unwrap();
    std::fs::write(
        root.join("spec/Queue.tla"),
        "---- MODULE Queue ----\n====\n",
    )
    .unwrap();
    assert_eq!(Tlc.applies(root), None, "a module without its model's .cfg");
    std::fs::write(root.join("spec/Queue.cfg"), "INVARIANT TypeOK\n").unwrap();
    assert_eq!(
        Tlc.applies(root).as_deref(),
        Some("cd spec && tlc -config Queue.cfg Queue.tla")
    );
    // A module name that is not a plain word never reaches the command line.
    std::fs::write(root.join("$(boom).tla"), "").unwrap();
    std::fs::write(root.join("$(boom).cfg"), "").unwrap();
    assert_eq!(
        Tlc.applies(root).as_deref(),
        Some("cd spec && tlc -config Queue.cfg Queue.tla")
    );
    assert_eq!(Miri.applies(root), None);
    std::fs::create_dir_all(root.join(".github/workflows")).unwrap();
    std::fs::write(
        root.join(".github/workflows/ci.yml"),
        "steps:\n  - run: cargo miri test\n",
    )
    .unwrap();
    assert_eq!(Miri.applies(root).as_deref(), Some("cargo miri test"));
    // A workflow file ending `.yaml` counts as well.
    std::fs::rename(
        root.join(".github/workflows/ci.yml"),
        root.join(".github/workflows/ci.yaml"),
    )
    .unwrap();
    assert_eq!(Miri.applies(root).as_deref(), Some("cargo miri test"));
}
