//! scripts/advisories.sh against an advisory database of our own (RustSec's is on GitHub,
//! which these machines cannot reach): a git repository served by `git daemon`, holding one
//! advisory against a crate selfheal depends on. cargo deny must find it, the script must fail,
//! and the metrics it writes must count it; once the advisory no longer applies, none.
//! Needs cargo-deny, which scripts/supply-chain.sh installs before the tests run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

fn advisory(patched: &str) -> String {
    format!(
        "```toml\n[advisory]\nid = \"RUSTSEC-2099-0001\"\npackage = \"hex\"\ndate = \"2099-01-01\"\n\
         url = \"https://example.com/advisory\"\ncategories = [\"memory-corruption\"]\n\n\
         [versions]\npatched = [\"{patched}\"]\n```\n\n# A planted advisory against hex\n\n\
         Planted by selfheal's supply-chain test.\n"
    )
}

/// `git daemon`, stopped through its pid file (`git` runs it as a child of its own).
struct Daemon(std::process::Child, PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.1) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(config: &Path, prom: &Path) -> (i32, String) {
    let out = Command::new("bash")
        .arg(root().join("scripts/advisories.sh"))
        .arg(config)
        .env("SELFHEAL_ADVISORIES_PROM", prom)
        .current_dir(root())
        .output()
        .unwrap();
    let metrics = std::fs::read_to_string(prom).unwrap_or_default();
    (out.status.code().unwrap_or(-1), metrics)
}

#[test]
fn an_advisory_against_a_dependency_fails_the_check_and_is_counted_in_the_metrics() {
    assert!(
        Command::new("cargo-deny")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "cargo-deny is not installed: scripts/supply-chain.sh installs it"
    );
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("advisory-db");
    std::fs::create_dir_all(db.join("crates/hex")).unwrap();
    git(&db, &["init", "-q", "-b", "main"]);
    std::fs::write(
        db.join("crates/hex/RUSTSEC-2099-0001.md"),
        advisory(">= 99.0.0"),
    )
    .unwrap();
    git(&db, &["add", "-A"]);
    git(&db, &["commit", "-qm", "an advisory"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pid_file = tmp.path().join("daemon.pid");
    let _daemon = Daemon(
        Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", pid_file.display()))
            .arg(format!("--base-path={}", tmp.path().display()))
            .arg(&db)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        pid_file,
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    // The repository's own deny.toml, reading our database instead of RustSec's.
    let deny = std::fs::read_to_string(root().join("deny.toml")).unwrap();
    assert!(deny.contains("[advisories]\n"));
    let config = tmp.path().join("deny.toml");
    std::fs::write(
        &config,
        deny.replacen(
            "[advisories]\n",
            &format!(
                "[advisories]\ndb-urls = [\"git://localhost:{port}/advisory-db\"]\ndb-path = \"{}\"\n",
                tmp.path().join("cache").display()
            ),
            1,
        ),
    )
    .unwrap();
    let prom = tmp.path().join("advisories.prom");

    let (code, metrics) = run(&config, &prom);
    assert_eq!(code, 1, "{metrics}");
    assert!(
        metrics.contains("selfheal_supply_chain_advisories{severity=\"error\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("selfheal_supply_chain_advisories_checked 1\n"),
        "{metrics}"
    );

    // Patched in every version selfheal could use: nothing found.
    std::fs::write(
        db.join("crates/hex/RUSTSEC-2099-0001.md"),
        advisory(">= 0.0.0"),
    )
    .unwrap();
    git(&db, &["commit", "-qam", "patched"]);
    let (code, metrics) = run(&config, &prom);
    assert_eq!(code, 0, "{metrics}");
    assert!(
        metrics.contains("selfheal_supply_chain_advisories{severity=\"error\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("selfheal_supply_chain_advisories_checked 1\n"),
        "{metrics}"
    );

    // The database out of reach (nothing listens there): not checked, said so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            &format!("localhost:{port}/"),
            &format!("localhost:{closed}/"),
        ),
    )
    .unwrap();
    let (code, metrics) = run(&config, &prom);
    assert_eq!(code, 3, "{metrics}");
    assert!(
        metrics.contains("selfheal_supply_chain_advisories_checked 0\n"),
        "{metrics}"
    );
}
