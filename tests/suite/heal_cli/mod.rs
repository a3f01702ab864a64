//! What the tests of `selfheal heal` share: the bundled examples, copies of them to change,
//! and the CLI run for its JSON report.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// A copy of `examples/<name>` to heal with `--apply` or to change first.
pub fn copy_example(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-R")
        .arg(format!("{}/.", example(name).display()))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

/// Runs `selfheal heal --format json --repo <repo> <args>`; returns its report and whether it
/// exited 0.
pub fn heal_cli(repo: &Path, args: &[&str]) -> (Value, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["heal", "--format", "json", "--repo"])
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, out.status.success())
}
