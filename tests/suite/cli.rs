//! The `selfheal` binary's own behaviour at its edges.

use crate::support;

use std::process::Command;

fn selfheal(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_env_var_names_itself() {
    let (ok, err) = selfheal(&["web"], &[("REDIS_URL", "redis://127.0.0.1:1")]);
    assert!(!ok);
    assert!(
        err.contains("missing environment variable DATABASE_URL"),
        "{err}"
    );

    let (ok, err) = selfheal(
        &["web"],
        &[
            ("DATABASE_URL", "postgres://x@127.0.0.1:1/x"),
            ("REDIS_URL", "redis://127.0.0.1:1"),
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("missing environment variable GITHUB_WEBHOOK_SECRET"),
        "{err}"
    );

    let (ok, err) = selfheal(
        &["worker"],
        &[
            ("DATABASE_URL", "postgres://x@127.0.0.1:1/x"),
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("GITHUB_APP_ID", "7"),
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("missing environment variable GITHUB_APP_PRIVATE_KEY"),
        "{err}"
    );
}

#[test]
fn a_malformed_env_var_names_itself_and_secrets_stay_out_of_errors() {
    let (ok, err) = selfheal(
        &["worker"],
        &[
            ("DATABASE_URL", "postgres://u:hunter2@127.0.0.1:1/x"),
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("GITHUB_APP_ID", "seven"),
        ],
    );
    assert!(!ok);
    assert!(err.contains("GITHUB_APP_ID is malformed"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// The README's first command ends here: a merged pull request on the stand-in, then a green
/// run that resolves the incident, with MTTR read from SQL.
#[test]
fn the_demo_ends_with_a_merged_pull_request_and_a_resolved_incident() {
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .arg("demo")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("SELFHEAL_ADMIN_DATABASE_URL", support::admin_url())
        .env("REDIS_URL", support::redis_url())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "opened PR #1 from selfheal/",
        "verify  succeeded  merge: all 1 checks green; merge allowed by policies/merge.rego",
        "deliver succeeded  merged PR #1 (squash, commit ",
        "selfheal: fix the failing build (#1) (author GitHub)",
        "\"status\":\"incident_resolved\"",
        "resolved, MTTR ",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}

#[test]
fn a_bad_org_wide_defaults_file_stops_the_worker_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let defaults = dir.path().join("selfheal-defaults.yml");
    std::fs::write(&defaults, "max_atempts: 5\n").unwrap();
    let key = concat!(env!("CARGO_MANIFEST_DIR"), "/standin/demo-app-key.pem");
    let (ok, err) = selfheal(
        &["worker"],
        &[
            ("DATABASE_URL", "postgres://x@127.0.0.1:1/x"),
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("GITHUB_APP_ID", "7"),
            ("GITHUB_APP_PRIVATE_KEY", key),
            ("SELFHEAL_REPO_DEFAULTS", defaults.to_str().unwrap()),
        ],
    );
    assert!(!ok);
    assert!(err.contains("SELFHEAL_REPO_DEFAULTS"), "{err}");
    assert!(err.contains("unknown field `max_atempts`"), "{err}");
}
