//! The `selfheal` binary's own behaviour at its edges.

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
