//! A repository's own code is hostile: it runs in the sandbox (here, a `black.py` that shadows
//! black, as `python3 -m black` imports from the working directory first) and may try to turn
//! what selfheal brings back into a host file, a path outside the repository or a symlink.
//! Against the real Docker engine and, for delivery, the GitHub stand-in.

use crate::support;

use std::path::Path;
use std::time::Duration;

use github_standin::Knobs;
use selfheal_engine::heal::{self, HealOptions, HealReport, Verdict};
use selfheal_engine::sandbox::{Images, Limits, Sandbox};
use selfheal_engine::workflow::StepCommand;
use support::*;

const CHECK: &str = "python3 -m black --check .";

/// A Python repository whose `black.py` fails `--check` until `app.py` reads `x = 1`, and in
/// fix mode runs `attack` (Python) before (maybe) doing the fix.
fn hostile_repo(attack: &str, fix: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pyproject.toml"),
        "[project]\nname = \"app\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("app.py"), "x=1\n").unwrap();
    let fix_line = if fix {
        "open('app.py', 'w').write('x = 1\\n')"
    } else {
        "pass"
    };
    std::fs::write(
        dir.path().join("black.py"),
        format!(
            "import os, sys\n\
             if '--check' in sys.argv:\n    \
                 if open('app.py').read() == 'x = 1\\n':\n        \
                     print('All done! 1 file would be left unchanged.'); sys.exit(0)\n    \
                 print('would reformat app.py'); print(''); print('Oh no!'); \
                 print('1 file would be reformatted.'); sys.exit(1)\n\
             {attack}\n\
             {fix_line}\n"
        ),
    )
    .unwrap();
    dir
}

fn ci_log() -> String {
    heal::as_job_log(
        CHECK,
        "would reformat /work/repo/app.py\n\nOh no! 💥 💔 💥\n1 file would be reformatted.\n",
        1,
    )
}

async fn heal_it(repo: &Path) -> HealReport {
    let sandbox = Sandbox::connect(Images::Recipe, Limits::default())
        .await
        .unwrap();
    let options = HealOptions {
        reproduce_runs: 1,
        validate_runs: 1,
        assistant: None,
        memory: None,
        culprits: Vec::new(),
        culprits_skipped: Vec::new(),
    };
    heal::heal(
        &sandbox,
        repo,
        "local:test",
        &StepCommand::given(CHECK),
        Some(&ci_log()),
        &options,
        &|_| {},
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_repository_that_sets_diff_external_gets_only_its_real_change() {
    // git's external diff, set by the repository's code in the sandbox's git config, would
    // print a diff of the worker's /etc/passwd if selfheal took the sandbox's diff text.
    let attack = "open('/tmp/evil.sh', 'w').write('#!/bin/sh\\nprintf \"diff --git a/../../etc/passwd b/../../etc/passwd\\\\n+++ b/../../etc/passwd\\\\n\"\\n')\n\
                  os.chmod('/tmp/evil.sh', 0o755)\n\
                  open(os.path.expanduser('~/.gitconfig'), 'a').write('[diff]\\n\\texternal = /tmp/evil.sh\\n[core]\\n\\tquotePath = true\\n')";
    let repo = hostile_repo(attack, true);
    let report = heal_it(repo.path()).await;
    assert!(
        matches!(report.verdict, Verdict::Fixed),
        "{:?}",
        report.verdict
    );
    let changes = report.changes.as_ref().unwrap();
    assert_eq!(changes.paths().collect::<Vec<_>>(), ["app.py"]);
    let patch = report.patch.unwrap();
    assert!(patch.contains("-x=1\n+x = 1\n"), "{patch}");
    assert!(!patch.contains("etc/passwd"), "{patch}");
}

#[tokio::test]
async fn a_symlink_made_in_the_sandbox_is_refused_with_the_reason() {
    let attack = "os.symlink('/etc/passwd', 'leak.txt')";
    let repo = hostile_repo(attack, true);
    let report = heal_it(repo.path()).await;
    match &report.verdict {
        Verdict::Rejected { reason } => {
            assert!(
                reason.contains("leak.txt") && reason.contains("symlink"),
                "{reason}"
            )
        }
        other => panic!("a symlink must be refused, got {other:?}"),
    }
    assert!(report.changes.is_none() && report.patch.is_none());
}

#[tokio::test]
async fn a_file_moved_out_of_the_tree_is_only_a_deletion_and_an_empty_change_is_refused() {
    // Moving a file out of the repository: selfheal sees the file gone, nothing of where it
    // went (and the guard would then judge the deletion like any other).
    let repo = hostile_repo(
        "import shutil; shutil.move('pyproject.toml', '/tmp/pyproject.toml')",
        true,
    );
    let report = heal_it(repo.path()).await;
    let changes = report
        .changes
        .as_ref()
        .unwrap_or_else(|| panic!("a change: {:?}", report.verdict));
    let deleted: Vec<_> = changes
        .files
        .iter()
        .filter(|f| f.content.is_none())
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(deleted, ["pyproject.toml"]);

    let repo = hostile_repo("pass", false);
    let report = heal_it(repo.path()).await;
    match &report.verdict {
        Verdict::Rejected { reason } => assert!(reason.contains("changed nothing"), "{reason}"),
        other => panic!("an empty change must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_diff_naming_paths_outside_the_repository_is_never_a_change() {
    let sandbox = Sandbox::connect(Images::Recipe, Limits::default())
        .await
        .unwrap();
    let repo = hostile_repo("pass", true);
    // git apply itself refuses paths outside the tree: selfheal's own check is the second
    // line, and is what stops a link git is happy to make.
    for diff in [
        "diff --git a/../../etc/passwd b/../../etc/passwd\n--- a/../../etc/passwd\n+++ b/../../etc/passwd\n@@ -1 +1 @@\n-root\n+owned\n",
        "diff --git a/app.py b/../outside.py\nsimilarity index 100%\nrename from app.py\nrename to ../outside.py\n",
    ] {
        match heal::apply_diff(&sandbox, repo.path(), diff).await.unwrap() {
            Err(reason) => assert!(reason.contains("patch does not apply"), "{reason}"),
            Ok(made) => panic!("{diff}\nwas not refused: {made:?}"),
        }
    }
    let link = "diff --git a/link b/link\nnew file mode 120000\n--- /dev/null\n+++ b/link\n@@ -0,0 +1 @@\n+/etc/passwd\n\\ No newline at end of file\n";
    match heal::apply_diff(&sandbox, repo.path(), link).await.unwrap() {
        Ok(Err(refused)) => assert!(refused.to_string().contains("symlink"), "{refused}"),
        other => panic!("a symlink must be refused by selfheal's check, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_change_is_recorded_and_nothing_is_pushed() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let repo = hostile_repo("os.symlink('/etc/passwd', 'leak.txt')", true);
    env.standin.set_knobs(Knobs {
        repo_dir: Some(repo.path().display().to_string()),
        log_text: Some(ci_log()),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(6601, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    env.wait_run(run_id, Duration::from_secs(90)).await;
    let row = env
        .db()
        .await
        .query_one(
            "SELECT verdict, reason, changes IS NULL FROM patches WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "rejected");
    let reason: String = row.get(1);
    assert!(reason.contains("symlink"), "{reason}");
    assert!(row.get::<_, bool>(2), "no change recorded");
    let writes: Vec<String> = env
        .standin
        .calls()
        .iter()
        .filter(|c| c.method != "GET")
        .map(|c| format!("{} {}", c.method, c.path))
        .filter(|c| c.contains("/git/") || c.contains("/pulls"))
        .collect();
    assert!(writes.is_empty(), "nothing pushed: {writes:?}");
}
