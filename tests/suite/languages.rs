//! Repositories with real dependencies and lockfiles, one per language, healed by `selfheal
//! heal` in the real sandbox: dependencies fetched by tools that run no repository code, cached
//! by lockfile, mounted read-only into runs without network, each run a fresh container.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use selfheal_engine::heal::{self, HealOptions};
use selfheal_engine::sandbox::{deps, Images, Limits, Sandbox, SandboxError};
use selfheal_engine::workflow::StepCommand;
use serde_json::Value;

use crate::heal_cli;
use heal_cli::{copy_example, example, heal_cli};

fn resolved(r: &Value) -> Vec<String> {
    r["before"]["dependencies"]["cache"]["resolved"]
        .as_array()
        .unwrap_or_else(|| panic!("no resolved list: {:#}", r["before"]["dependencies"]))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_rust_crate_with_dependencies_gets_clippys_fixes_and_a_warm_cache_the_second_time() {
    let dir = copy_example("rust-deps");
    let cmd = "cargo clippy --all-targets -- -D warnings";
    let (r, ok) = heal_cli(dir.path(), &["--cmd", cmd, "--runs", "2", "--apply"]);
    assert!(ok, "{r:#}");
    // Without serde in the sandbox this was a dependency failure, handed off.
    assert_eq!(r["diagnosis"]["class"], "lint", "{r:#}");
    assert_eq!(r["diagnosis"]["tool"], "clippy");
    assert_eq!(r["verdict"]["verdict"], "fixed", "{r:#}");
    let deps = &r["before"]["dependencies"];
    assert_eq!(deps["state"], "ready", "{deps:#}");
    assert_eq!(deps["plan"]["locked"], true);
    assert_eq!(
        deps["plan"]["inputs"],
        serde_json::json!(["Cargo.toml", "Cargo.lock"])
    );
    assert_eq!(deps["cache"]["hit"], false);
    // Cargo.lock pins serde_json 1.0.120, older than what resolving `serde_json = "1"` picks.
    let crates = resolved(&r);
    assert!(
        crates.iter().any(|c| c == "serde_json-1.0.120"),
        "{crates:?}"
    );
    assert!(
        crates.iter().any(|c| c.starts_with("serde-1.")),
        "{crates:?}"
    );
    let patch = r["patch"].as_str().unwrap();
    assert!(patch.contains("+    items.is_empty()"), "{patch}");
    assert!(
        patch.contains("+    items.iter().map(|i| i.count).sum()"),
        "{patch}"
    );
    assert!(
        !patch.contains("Cargo.lock"),
        "the lockfile is not the fix: {patch}"
    );

    // Applied, the command passes: not reproduced, and the dependencies come from the cache.
    let (r, ok) = heal_cli(dir.path(), &["--cmd", cmd, "--runs", "1"]);
    assert!(ok, "{r:#}");
    assert_eq!(r["verdict"]["verdict"], "not_reproduced", "{r:#}");
    assert_eq!(r["before"]["dependencies"]["cache"]["hit"], true);
}

#[test]
fn a_node_package_is_formatted_by_the_prettier_its_lockfile_pins() {
    let dir = copy_example("node-format");
    let (r, ok) = heal_cli(
        dir.path(),
        &[
            "--cmd",
            "npx --no-install prettier --check .",
            "--runs",
            "2",
            "--apply",
        ],
    );
    assert!(ok, "{r:#}");
    assert_eq!(r["diagnosis"]["tool"], "prettier", "{r:#}");
    assert_eq!(r["verdict"]["verdict"], "fixed", "{r:#}");
    assert_eq!(r["before"]["dependencies"]["plan"]["locked"], true);
    assert!(
        resolved(&r).iter().any(|p| p == "node_modules/prettier"),
        "{:?}",
        resolved(&r)
    );
    let fixed = std::fs::read_to_string(dir.path().join("src/index.js")).unwrap();
    assert!(
        fixed.contains("  return symbol + (cents / 100).toFixed(2);"),
        "{fixed}"
    );
    // The dependency tree is mounted, not part of the fix.
    assert!(!r["patch"].as_str().unwrap().contains("node_modules"));
    assert!(!dir.path().join("node_modules").exists());
    // package.json asks for ^3.0.0; the lockfile's 3.3.3 is what runs.
    let (r, _) = heal_cli(
        dir.path(),
        &["--cmd", "npx prettier --version; exit 1", "--runs", "1"],
    );
    let excerpt = r["before"]["excerpt"].as_str().unwrap();
    assert_eq!(excerpt.trim(), "3.3.3", "{r:#}");
}

#[test]
fn a_node_package_without_a_lockfile_is_resolved_in_the_fetch_and_says_so() {
    let dir = copy_example("node-format");
    std::fs::remove_file(dir.path().join("package-lock.json")).unwrap();
    let (r, ok) = heal_cli(
        dir.path(),
        &[
            "--cmd",
            "npx --no-install prettier --check .",
            "--runs",
            "1",
        ],
    );
    assert!(ok, "{r:#}");
    let deps = &r["before"]["dependencies"];
    assert_eq!(deps["state"], "ready", "{deps:#}");
    assert_eq!(deps["plan"]["locked"], false);
    assert_eq!(deps["plan"]["inputs"], serde_json::json!(["package.json"]));
    assert!(
        resolved(&r).iter().any(|p| p == "node_modules/prettier"),
        "{deps:#}"
    );
    assert_eq!(r["verdict"]["verdict"], "fixed", "{r:#}");
    // The resolution lives in the cache, not in the fix.
    assert!(
        !r["patch"].as_str().unwrap().contains("package-lock.json"),
        "{r:#}"
    );
}

#[test]
fn a_requirement_that_only_ships_as_source_is_reported_not_built() {
    let dir = tempfile::tempdir().unwrap();
    // antlr4-python3-runtime 4.9.3 is on PyPI as an sdist only: building it runs its setup.py.
    std::fs::write(
        dir.path().join("requirements.txt"),
        "antlr4-python3-runtime==4.9.3\n",
    )
    .unwrap();
    let (r, _) = heal_cli(
        dir.path(),
        &["--cmd", "python3 -c 'import antlr4'", "--runs", "1"],
    );
    let deps = &r["before"]["dependencies"];
    assert_eq!(deps["state"], "failed", "{deps:#}");
    let reason = deps["reason"].as_str().unwrap();
    assert!(reason.contains("has no wheel"), "{reason}");
    assert!(reason.contains("antlr4-python3-runtime"), "{reason}");
}

#[test]
fn a_python_package_runs_its_pinned_black_and_its_tests_import_attrs() {
    let dir = copy_example("python-deps");
    let (r, ok) = heal_cli(
        dir.path(),
        &[
            "--cmd",
            "black --check . && pytest -q -p no:cacheprovider",
            "--runs",
            "2",
            "--apply",
        ],
    );
    assert!(ok, "{r:#}");
    assert_eq!(r["diagnosis"]["tool"], "black", "{r:#}");
    // pytest ran after black and imported attrs: the fix passes the whole command.
    assert_eq!(r["verdict"]["verdict"], "fixed", "{r:#}");
    let packages = resolved(&r);
    for pinned in ["attrs==24.2.0", "black==24.8.0", "pytest==8.3.3"] {
        assert!(
            packages.iter().any(|p| p == pinned),
            "{pinned} in {packages:?}"
        );
    }
    // The version that ran is the repository's (the image carries black 24.10.0).
    let (r, _) = heal_cli(
        dir.path(),
        &["--cmd", "black --version; exit 1", "--runs", "1"],
    );
    let excerpt = r["before"]["excerpt"].as_str().unwrap();
    assert!(excerpt.contains("black, 24.8.0"), "{excerpt}");
}

#[test]
fn a_go_module_is_gofmt_fixed_and_an_unfetchable_module_is_reported() {
    let dir = copy_example("go-format");
    let cmd = "test -z \"$(gofmt -l . | tee /dev/stderr)\"";
    let (r, ok) = heal_cli(dir.path(), &["--cmd", cmd, "--runs", "2", "--apply"]);
    assert!(ok, "{r:#}");
    assert_eq!(r["diagnosis"]["tool"], "gofmt", "{r:#}");
    assert_eq!(r["verdict"]["verdict"], "fixed", "{r:#}");
    assert_eq!(r["before"]["dependencies"]["state"], "not_needed");

    // A module that requires something nobody can download: said, not hidden.
    std::fs::write(
        dir.path().join("go.mod"),
        "module example.com/slug\n\ngo 1.19\n\nrequire example.invalid/nothing v1.0.0\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("go.sum"),
        "example.invalid/nothing v1.0.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    )
    .unwrap();
    let (r, _) = heal_cli(dir.path(), &["--cmd", "go build ./...", "--runs", "1"]);
    let deps = &r["before"]["dependencies"];
    assert_eq!(deps["state"], "failed", "{deps:#}");
    assert!(
        deps["reason"]
            .as_str()
            .unwrap()
            .contains("example.invalid/nothing"),
        "{deps:#}"
    );
}

#[test]
fn every_rerun_is_a_fresh_container() {
    // Passes only when an earlier run left its mark behind, in /tmp or in the work tree.
    let cmd = "if [ -e /tmp/mark ] || [ -e mark ]; then exit 0; fi; touch /tmp/mark mark; exit 1";
    let (r, _) = heal_cli(&example("python-format"), &["--cmd", cmd, "--runs", "3"]);
    assert_eq!(r["before"]["failed"], 3, "{r:#}");
    assert_eq!(r["before"]["passed"], 0, "{r:#}");
}

#[test]
fn a_sandbox_failure_that_is_not_the_cis_is_not_reproduced() {
    // The CI failed on a clippy lint; the sandbox's run of the command fails on formatting.
    let log = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ci-logs/clippy-len-zero.log");
    let (r, ok) = heal_cli(
        &example("rust-format"),
        &[
            "--cmd",
            "cargo fmt --check",
            "--runs",
            "1",
            "--log",
            log.to_str().unwrap(),
        ],
    );
    assert!(!ok, "not reproduced is no success: {r:#}");
    assert_eq!(r["verdict"]["verdict"], "not_reproduced", "{r:#}");
    let reason = r["verdict"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("the CI failed with lint (clippy), the sandbox with format (rustfmt)"),
        "{reason}"
    );
    assert!(r["patch"].is_null());
}

#[tokio::test]
async fn a_tampered_dependency_cache_is_refused_and_a_pruned_one_is_fetched_again() {
    let sandbox = Sandbox::connect(Images::Recipe, Limits::default())
        .await
        .unwrap();
    let repo = example("python-deps");
    let scope = format!("test:tamper:{}", uuid::Uuid::new_v4());
    let (prepared, outcome) = sandbox.prepare(&repo, &scope).await.unwrap();
    let deps::Outcome::Ready { cache, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(!cache.hit);
    let (run, _) = prepared
        .run(
            &repo,
            "python3 -c 'import attrs; print(\"attrs\", attrs.__version__)'",
            None,
        )
        .await
        .unwrap();
    assert!(run.output.contains("attrs 24.2.0"), "{}", run.output);

    // The repository's code cannot change what its next run sees.
    let (run, _) = prepared
        .run(&repo, "touch /deps/python/attrs/x", None)
        .await
        .unwrap();
    assert!(!run.passed(), "{}", run.output);
    assert!(
        run.output.contains("Read-only file system"),
        "{}",
        run.output
    );

    // Someone with access to the engine changes the cache behind selfheal's back.
    let image = sandbox.image_for(&repo).await.unwrap();
    let status = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{}:/deps", cache.volume))
        .arg(&image)
        .args([
            "sh",
            "-c",
            "echo 'print(\"owned\")' > /deps/python/attrs/__init__.py",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let (run, _) = prepared
        .run(
            &repo,
            "echo the-command-ran; python3 -c 'import attrs'",
            None,
        )
        .await
        .unwrap();
    assert_eq!(run.exit_code, 97, "{}", run.output);
    assert!(
        run.output.contains("does not match its digest"),
        "{}",
        run.output
    );
    assert!(!run.output.contains("the-command-ran"), "{}", run.output);

    // Healing on it is no failure of the command: an error (the stage is retried), and the
    // cache is forgotten, so the next preparation fetches a clean copy.
    let err = heal::heal(
        &sandbox,
        &repo,
        &scope,
        &StepCommand::given("python3 -c 'import attrs'"),
        None,
        &HealOptions {
            reproduce_runs: 1,
            validate_runs: 1,
            assistant: None,
            memory: None,
            culprits: Vec::new(),
            culprits_skipped: Vec::new(),
        },
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SandboxError::Tampered(_)), "{err}");
    let (prepared, outcome) = sandbox.prepare(&repo, &scope).await.unwrap();
    assert!(
        matches!(&outcome, deps::Outcome::Ready { cache, .. } if !cache.hit),
        "{outcome:?}"
    );
    let (run, _) = prepared
        .run(&repo, "python3 -c 'import attrs'", None)
        .await
        .unwrap();
    assert!(run.passed(), "{}", run.output);

    // Pruned: nothing of this scope is left, and the next preparation fetches again.
    let removed = sandbox
        .prune_deps(Some(&scope), Duration::ZERO, 0)
        .await
        .unwrap();
    assert!(removed >= 1);
    let (_, outcome) = sandbox.prepare(&repo, &scope).await.unwrap();
    assert!(
        matches!(&outcome, deps::Outcome::Ready { cache, .. } if !cache.hit),
        "{outcome:?}"
    );
    sandbox
        .prune_deps(Some(&scope), Duration::ZERO, 0)
        .await
        .unwrap();
}

#[test]
fn from_a_ci_log_the_workflows_whole_step_runs_with_its_env_and_says_what_it_could_not() {
    let dir = copy_example("python-deps");
    let log =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ci-logs/examples/python-deps.log");
    let (r, ok) = heal_cli(
        dir.path(),
        &["--log", log.to_str().unwrap(), "--runs", "1", "--apply"],
    );
    assert!(ok, "{r:#}");
    assert_eq!(r["command"], "black --check .");
    let step = &r["step"];
    assert_eq!(
        step["source"],
        serde_json::json!({"from": "workflow", "file": ".github/workflows/ci.yml", "job": "check", "step": "Format and test"})
    );
    let script = step["script"].as_str().unwrap();
    assert!(script.contains("export PYTHONWARNINGS='error'"), "{script}");
    assert!(
        script.contains("pytest -q -p no:cacheprovider"),
        "the whole step: {script}"
    );
    let notes = step["notes"].to_string();
    assert!(
        notes.contains("actions/setup-python@v5` with python-version 3.12"),
        "{notes}"
    );
    assert!(
        notes.contains("earlier step `pip install -r requirements.txt` is not run"),
        "{notes}"
    );
    assert_eq!(r["verdict"]["verdict"], "fixed", "{r:#}");
    // The step's later lines ran, with its env: pytest's own summary is in the evidence.
    let after = r["after"]["excerpt"].as_str().unwrap();
    assert!(after.contains("2 passed"), "{after}");
    // The CI set up Python 3.12; Debian's is 3.11: the evidence says so.
    let toolchain = &r["before"]["toolchain"];
    assert_eq!(toolchain["language"], "python", "{toolchain:#}");
    let version = toolchain["version"].as_str().unwrap();
    assert!(version.starts_with("3.11."), "{toolchain:#}");
    assert!(
        toolchain["notes"][0].as_str().unwrap().contains(&format!(
            "actions/setup-python@v5` asks for python 3.12; the sandbox has {version}"
        )),
        "{toolchain:#}"
    );
}

#[test]
fn the_toolchain_the_failing_job_sets_up_chooses_the_image_over_the_build_files() {
    // A Python project with a package.json (for its commit hooks, say): by its build files
    // a Node project, whose image has no black or pytest.
    let dir = copy_example("python-deps");
    std::fs::write(
        dir.path().join("package.json"),
        r#"{"name": "hooks", "private": true}"#,
    )
    .unwrap();
    let log =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ci-logs/examples/python-deps.log");
    let (r, ok) = heal_cli(
        dir.path(),
        &["--log", log.to_str().unwrap(), "--runs", "1", "--apply"],
    );
    assert!(ok, "{r:#}");
    assert_eq!(r["before"]["toolchain"]["language"], "python", "{r:#}");
    assert_eq!(r["before"]["dependencies"]["plan"]["language"], "python");
    assert_eq!(r["verdict"]["verdict"], "fixed", "{r:#}");
    // The same command given by hand (no workflow step to read) goes by the build files.
    let (r, _) = heal_cli(dir.path(), &["--cmd", "black --version", "--runs", "1"]);
    assert_eq!(r["before"]["toolchain"]["language"], "node", "{r:#}");
}

#[tokio::test]
async fn a_repositorys_own_pip_module_does_not_run_in_the_fetch() {
    // `python3 -m pip` in the checkout would import this instead of pip: code of the
    // repository's, with a network, writing into the cache every later run trusts.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("requirements.txt"), "attrs==24.2.0\n").unwrap();
    std::fs::create_dir(dir.path().join("pip")).unwrap();
    std::fs::write(
        dir.path().join("pip/__init__.py"),
        "open('/deps/owned', 'w').write('x')\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pip/__main__.py"),
        "open('/deps/owned', 'w').write('x')\n",
    )
    .unwrap();
    let sandbox = Sandbox::connect(Images::Recipe, Limits::default())
        .await
        .unwrap();
    let scope = format!("test:pip:{}", uuid::Uuid::new_v4());
    let (prepared, outcome) = sandbox.prepare(dir.path(), &scope).await.unwrap();
    assert!(
        matches!(outcome, deps::Outcome::Ready { .. }),
        "{outcome:?}"
    );
    let (run, _) = prepared
        .run(
            dir.path(),
            "test ! -e /deps/owned && ls /deps/python | grep -x attrs",
            None,
        )
        .await
        .unwrap();
    assert!(run.passed(), "{}", run.output);
    sandbox
        .prune_deps(Some(&scope), Duration::ZERO, 0)
        .await
        .unwrap();
}
