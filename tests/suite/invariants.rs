//! The invariants on a real repository, through the whole pipeline: a model's fix that mutes a
//! lint is refused before validation and the model asked again; a clean fix that the
//! repository's own policy forbids is validated and then not delivered, with the reason on the
//! run, in the audit log and as a failed check run on the failing commit. (engine/src/invariants has each invariant's cases
//! in several languages; policies/invariants_test.rego the policy's own tests.)

use crate::support;

use std::path::Path;
use std::time::Duration;

use github_standin::Knobs;
use support::*;

const KEY: &str = "sk-ant-invariants-0123456789abcdef";

/// The right fix for rust-api-change's compile error (E0061), with `extra` before the function.
fn fix(extra: &str) -> String {
    let (count, extra) = if extra.is_empty() {
        (3, String::new())
    } else {
        (4, format!("+{extra}\n"))
    };
    format!(
        "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -9,3 +9,{count} @@\n{extra} pub fn listen_address(host: &str, port_text: &str) -> String {{\n-    format!(\"{{host}}:{{}}\", parse_port(port_text))\n+    format!(\"{{host}}:{{}}\", parse_port(port_text, 8080))\n }}\n"
    )
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

struct Outcome {
    patch_verdict: String,
    /// Why the model's answers were refused before the sandbox validated one.
    refused: Vec<String>,
    validation: String,
    verdict: String,
    reason: String,
    denials: Vec<(String, String, String)>,
    audited: i64,
    pulls: usize,
    check: Option<serde_json::Value>,
    proofs: Vec<(String, String, String)>,
}

/// rust-api-change, with `files` (paths from its root) added, healed by the model answering
/// `patch`.
async fn heal(run: i64, patch: &str, files: &[(&str, &str)]) -> Outcome {
    heal_answering(run, &[patch], files).await
}

/// The same, the model answering each of `patches` in turn as it is asked.
async fn heal_answering(run: i64, patches: &[&str], files: &[(&str, &str)]) -> Outcome {
    let model = ai_standin::spawn(Some(KEY)).await;
    for patch in patches {
        let answer = serde_json::json!({
            "root_cause": "parse_port gained a default parameter; listen_address still calls it with one argument",
            "culprit_files": [{"path": "src/lib.rs", "line": 10}], "confidence": 0.9, "patch": patch});
        model.push(ai_standin::Reply::Events(
            ai_standin::anthropic_tool_answer(&answer.to_string(), "tool_use", 0),
        ));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = tempfile::tempdir().unwrap();
    copy(&root.join("examples/rust-api-change"), repo.path());
    for (name, text) in files {
        let path = repo.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // `-> target` makes a link, as a repository may hold one.
        match text.strip_prefix("-> ") {
            Some(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
            None => std::fs::write(&path, text).unwrap(),
        }
    }
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_RERUNS", "2");
    env.set("ANTHROPIC_API_KEY", KEY);
    env.set("ANTHROPIC_BASE_URL", &model.url);
    let app = env.spawn_web().await;
    env.standin.set_knobs(Knobs {
        repo_dir: Some(repo.path().display().to_string()),
        log_text: Some(
            std::fs::read_to_string(root.join("fixtures/ci-logs/examples/rust-api-change.log"))
                .unwrap(),
        ),
        failing_job: Some("test".into()),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w1");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(run, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    env.wait_run(run_id, Duration::from_secs(300)).await;
    let db = env.db().await;
    let one = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[&run_id]).await.unwrap() }
    };
    let p = one(
        "SELECT verdict, coalesce(evidence->'ai'->'refused', '[]') FROM patches WHERE run_id = $1",
    )
    .await;
    let v =
        one("SELECT coalesce((SELECT verdict FROM validations WHERE run_id = $1), 'none')").await;
    let ver = one("SELECT verdict, reason FROM verifications WHERE run_id = $1").await;
    let denials = db
        .query(
            "SELECT policy, invariant, message FROM invariant_denials WHERE run_id = $1 ORDER BY message",
            &[&run_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let audited = one(
        "SELECT count(*) FROM audit_log WHERE action = 'invariants.denied' AND subject = $1::uuid::text",
    )
    .await;
    let proofs = db
        .query(
            "SELECT prover, outcome, detail FROM proofs WHERE run_id = $1 ORDER BY prover",
            &[&run_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Outcome {
        proofs,
        patch_verdict: p.get(0),
        refused: serde_json::from_value(p.get(1)).unwrap(),
        validation: v.get(0),
        verdict: ver.get(0),
        reason: ver.get(1),
        denials,
        audited: audited.get(0),
        pulls: env.standin.pulls().len(),
        check: env
            .standin
            .check_runs()
            .into_iter()
            .find(|c| c["name"] == "selfheal invariants"),
    }
}

/// A model's fix that would pass the sandbox but mutes a lint is refused before validation by
/// selfheal's own invariants, and the model is asked again: its clean fix is delivered. (Until
/// this check ran in the patch stage, such a fix was validated and then stopped at verify.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_models_fix_that_mutes_a_lint_is_refused_before_validation_and_asked_again() {
    let o = heal_answering(
        1701,
        &[&fix("#[allow(clippy::needless_borrow)]"), &fix("")],
        &[],
    )
    .await;
    assert_eq!(o.refused.len(), 1, "{:?}", o.refused);
    assert!(
        o.refused[0].contains("failures-heard: adds the suppression `#[allow(clippy::needless_borrow)]` in src/lib.rs:9"),
        "{:?}",
        o.refused
    );
    assert_eq!(
        (o.patch_verdict.as_str(), o.validation.as_str()),
        ("fixed", "fixed")
    );
    assert_eq!(o.verdict, "deliver", "{}", o.reason);
    assert!(o.denials.is_empty(), "{:?}", o.denials);
    assert_eq!(o.pulls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repositorys_own_policy_stops_a_clean_fix_and_cannot_allow_a_dirty_one() {
    const OWN: &str = "package acme.owners\nimport rego.v1\n\ndeny contains msg if {\n  some f in input.files\n  f.path == \"src/lib.rs\"\n  msg := \"owners: src/lib.rs is changed by its owners only\"\n}\n";
    // The clean fix: selfheal's invariants allow it, the repository's policy does not.
    let o = heal(
        1702,
        &fix(""),
        &[(".github/selfheal/policies/owners.rego", OWN)],
    )
    .await;
    assert_eq!(
        (o.patch_verdict.as_str(), o.validation.as_str()),
        ("fixed", "fixed")
    );
    assert_eq!(o.verdict, "skip", "{}", o.reason);
    assert!(
        o.reason
            .contains("owners: src/lib.rs is changed by its owners only"),
        "{}",
        o.reason
    );
    assert_eq!(o.pulls, 0);
    assert_eq!(
        o.denials,
        vec![(
            ".github/selfheal/policies/owners.rego".to_string(),
            "owners".to_string(),
            "owners: src/lib.rs is changed by its owners only".to_string()
        )]
    );
    // Said where people look: the audit log, and a failed check run on the failing commit.
    assert_eq!(o.audited, 1);
    let check = o.check.expect("a check run on the failing commit says why");
    assert_eq!(check["conclusion"], "failure");
    assert!(
        check["output"]["summary"]
            .as_str()
            .unwrap()
            .contains("src/lib.rs is changed by its owners only"),
        "{check:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_cannot_be_read_denies_rather_than_vanishing() {
    // A link where a policy should be: GitHub lists it as a `symlink`, and its text is not a
    // policy. Skipping it would drop whatever the repository meant it to deny.
    let o = heal(
        1704,
        &fix(""),
        &[(
            ".github/selfheal/policies/owners.rego",
            "-> ../../../src/lib.rs",
        )],
    )
    .await;
    assert_eq!(o.verdict, "skip", "{}", o.reason);
    assert!(
        o.reason.contains(".github/selfheal/policies/owners.rego cannot be evaluated, so it denies: is a symlink, not a file"),
        "{}",
        o.reason
    );
    assert_eq!(o.pulls, 0);
}

/// The worker evaluates a repository's policies in children of its own binary: one that
/// allocates past any memory in a single builtin call (before Rego's time limit is checked)
/// ends its own process, and denies; the caller carries on. (150 million numbers need more
/// than the child's 1 GiB; without that limit they would fit, and the policy would answer.)
#[test]
fn a_policy_that_allocates_past_its_limit_ends_its_own_process_not_the_worker() {
    use selfheal_engine::invariants::{self, Change, Isolated, RepositoryPolicy};
    let evaluator = Isolated {
        program: env!("CARGO_BIN_EXE_selfheal").into(),
    };
    let change = Change::describe(&fix(""), "compile", "ai_patch", 500, &[]);
    let policy = |name: &str, text: &str| RepositoryPolicy {
        path: format!(".github/selfheal/policies/{name}"),
        text: Ok(text.to_string()),
    };
    let bomb = policy(
        "bomb.rego",
        "package bomb\nimport rego.v1\ndeny contains \"x\" if { count(numbers.range(1, 150000000)) > 0 }\n",
    );
    let own = policy(
        "owners.rego",
        "package acme.owners\nimport rego.v1\ndeny contains \"owners: no\" if { some f in input.files; f.path == \"src/lib.rs\" }\n",
    );
    let got = invariants::check(
        &change,
        invariants::DEFAULT_POLICY,
        &[bomb, own],
        &evaluator,
    )
    .unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        // SIGABRT: the allocation failed at the memory limit (the CPU limit ends it with
        // SIGXCPU or SIGKILL instead).
        got[0].message.contains(
            "bomb.rego cannot be evaluated, so it denies: its evaluation was ended by signal 6"
        ),
        "{got:?}"
    );
    // The next policy, in a child of its own, is answered as usual.
    assert_eq!(got[1].message, "owners: no");
}

/// A repository with Lean proofs: `lake build` runs in the real sandbox on the validated tree.
/// The sandbox image has no Lean toolchain (it installs from GitHub, out of reach here), so the
/// proof is `unavailable`: recorded as not checked, never as passed, and it does not stop the
/// fix. Without proofs the run records `not_applicable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_run_on_the_validated_tree_and_a_missing_prover_is_not_a_pass() {
    let o = heal(1705, &fix(""), &[("lakefile.toml", "name = \"proofs\"\n")]).await;
    assert_eq!(o.verdict, "deliver", "{}", o.reason);
    assert_eq!(o.pulls, 1);
    assert_eq!(
        o.proofs,
        vec![(
            "lean".to_string(),
            "unavailable".to_string(),
            "lake is not in the sandbox".to_string()
        )]
    );
    let o = heal(1706, &fix(""), &[]).await;
    assert_eq!(o.proofs.len(), 1);
    assert_eq!(
        (o.proofs[0].0.as_str(), o.proofs[0].1.as_str()),
        ("none", "not_applicable")
    );
}
