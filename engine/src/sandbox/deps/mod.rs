//! A repository's dependencies, fetched before its command runs, by tools that execute none
//! of its code (`cargo vendor --locked`, `pip install --only-binary=:all:`, `npm ci
//! --ignore-scripts`, `go mod download`), in a short-lived container that has a network and
//! nothing else. The result is a Docker volume keyed by the repository's scope and the hash of
//! its lockfiles, shared by later runs of the same repository, mounted read-only into the
//! sandbox (which has no network), and checked against the digest taken when it was fetched
//! before any of the repository's code runs beside it.
//!
//! The index of ready caches lives in Docker itself: for each key, an empty "pointer" volume
//! whose labels name the data volume, its digest and size. Labels cannot change, so a pointer
//! is made only once its data is complete; two workers racing on one key both fetch, the
//! first pointer wins and the loser's data volume is pruned as unreferenced.

mod cache;
mod python;
mod scripts;

use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::toolchain::Language;
use super::SandboxError;

pub(super) use scripts::{env, prelude};
use scripts::{GO_FETCH, NODE_FETCH, PYTHON_FETCH, RUST_FETCH};
pub use scripts::{TAMPERED, TAMPERED_EXIT};

/// Bumped when a fetch script changes what a cache holds, so old caches are not reused.
const LAYOUT: &str = "deps-v1";
/// A lockfile or manifest bigger than this is refused rather than hashed and uploaded.
const MAX_INPUT_BYTES: u64 = 16 << 20;

/// What to fetch for a repository, and under which key.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub language: Language,
    pub key: String,
    /// Which repository the cache belongs to (a hash of its scope), for pruning one.
    pub scope: String,
    /// The files the key covers (lockfiles, manifests, pinned tool revisions).
    pub inputs: Vec<String>,
    /// Whether a lockfile pinned the resolution; if not, the fetch resolved it and recorded
    /// what it chose.
    pub locked: bool,
    /// Lines of the repository's files that the fetch does not act on, and why.
    pub skipped: Vec<String>,
    /// Why this plan is not fetched at all (the runs go on without dependencies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    #[serde(skip)]
    pub(crate) script: String,
    #[serde(skip)]
    pub(crate) files: Vec<(String, Vec<u8>)>,
}

/// A ready cache, mounted read-only at `/deps` in every run of the repository.
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    pub volume: String,
    pub digest: String,
    pub bytes: u64,
    /// True when an earlier run had fetched it.
    pub hit: bool,
    /// What was fetched (`name==version` or the tool's own listing), the first lines.
    pub resolved: Vec<String>,
    pub fetch_ms: u128,
}

/// What preparing the dependencies came to; recorded in the evidence either way.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Outcome {
    /// Nothing to fetch (no dependencies declared).
    NotNeeded,
    Ready {
        plan: Plan,
        cache: Ready,
    },
    /// The fetch failed: the runs go on without the dependencies, and a failure they cause
    /// will not match the CI's.
    Failed {
        plan: Plan,
        reason: String,
    },
}

impl Outcome {
    pub fn ready(&self) -> Option<(&Plan, &Ready)> {
        match self {
            Outcome::Ready { plan, cache } => Some((plan, cache)),
            _ => None,
        }
    }
}

pub(crate) fn read_input(repo: &Path, rel: &str) -> Result<Option<Vec<u8>>, SandboxError> {
    let path = repo.join(rel);
    // Inputs are files at the root; a link there (a checkout keeps links that stay inside it,
    // and `heal --repo` takes any folder) is not followed.
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.len() > MAX_INPUT_BYTES {
        return Err(SandboxError::TooLarge(format!(
            "{rel} is {} bytes; dependency inputs are capped at {MAX_INPUT_BYTES}",
            meta.len()
        )));
    }
    std::fs::read(&path)
        .map(Some)
        .map_err(|e| SandboxError::Input(format!("{rel}: {e}")))
}

/// The dependency plan for the repository at `repo` in `language`'s sandbox, or `None` when
/// it declares none. `scope` names the repository (its id on GitHub, its path locally):
/// caches are shared only between runs of the same repository.
pub fn plan(repo: &Path, scope: &str, language: Language) -> Result<Option<Plan>, SandboxError> {
    let mut refused = None;
    let (inputs, locked, script, files, skipped) = match language {
        Language::Rust => {
            if !declares_crates(&read_input(repo, "Cargo.toml")?.unwrap_or_default()) {
                return Ok(None);
            }
            let locked = repo.join("Cargo.lock").is_file();
            (
                vec![
                    "Cargo.toml",
                    "Cargo.lock",
                    "rust-toolchain.toml",
                    "rust-toolchain",
                ],
                locked,
                RUST_FETCH.to_string(),
                vec![],
                vec![],
            )
        }
        Language::Python => {
            let wanted = python::requirements(repo)?;
            if wanted.requirements.is_empty() {
                return Ok(None);
            }
            let mut text = wanted.requirements.join("\n");
            text.push('\n');
            (
                wanted.inputs,
                wanted.pinned,
                PYTHON_FETCH.to_string(),
                vec![("selfheal-requirements.txt".to_string(), text.into_bytes())],
                wanted.skipped,
            )
        }
        Language::Node => {
            if !repo.join("package.json").is_file() {
                return Ok(None);
            }
            let locked = repo.join("package-lock.json").is_file()
                || repo.join("npm-shrinkwrap.json").is_file();
            for lockfile in ["package-lock.json", "npm-shrinkwrap.json"] {
                if let Some(bytes) = read_input(repo, lockfile)? {
                    refused = refused.or(npm_refusal(lockfile, &bytes));
                }
            }
            if !locked {
                let manifest = read_input(repo, "package.json")?.unwrap_or_default();
                refused = refused.or(npm_manifest_refusal(&manifest));
            }
            (
                vec!["package.json", "package-lock.json", "npm-shrinkwrap.json"],
                locked,
                NODE_FETCH.to_string(),
                vec![],
                vec![],
            )
        }
        Language::Go => {
            let sum = read_input(repo, "go.sum")?.unwrap_or_default();
            if sum.iter().all(u8::is_ascii_whitespace) {
                // No module outside the standard library: nothing to download.
                return Ok(None);
            }
            (
                vec!["go.mod", "go.sum"],
                true,
                GO_FETCH.to_string(),
                vec![],
                vec![],
            )
        }
        // Maven Central is not among the registries selfheal fetches from yet.
        Language::Java => return Ok(None),
    };
    let mut hasher = Sha256::new();
    hasher.update(LAYOUT.as_bytes());
    hasher.update([0]);
    hasher.update(scope.as_bytes());
    hasher.update([0]);
    hasher.update(language.as_str().as_bytes());
    let mut present = Vec::new();
    for rel in inputs {
        if let Some(bytes) = read_input(repo, rel)? {
            hasher.update([0]);
            hasher.update(rel.as_bytes());
            hasher.update([0]);
            hasher.update(Sha256::digest(&bytes));
            present.push(rel.to_string());
        }
    }
    for (name, bytes) in &files {
        hasher.update([0]);
        hasher.update(name.as_bytes());
        hasher.update(Sha256::digest(bytes));
    }
    Ok(Some(Plan {
        language,
        key: hex::encode(&hasher.finalize()[..16]),
        scope: cache::scope_hash(scope),
        refused,
        inputs: present,
        locked,
        skipped,
        script,
        files,
    }))
}

/// Whether an npm dependency spec or resolution names something other than a registry
/// version or tarball: git, a path, a URL, a GitHub shorthand.
fn npm_non_registry(spec: &str) -> bool {
    let spec = spec.trim();
    [
        "git",
        "github:",
        "gitlab:",
        "bitbucket:",
        "gist:",
        "file:",
        "link:",
        "http:",
        "/",
        ".",
    ]
    .iter()
    .any(|p| spec.starts_with(p))
        || (spec.contains('/') && !spec.starts_with("npm:") && !spec.starts_with("https://"))
        || spec.starts_with("https://") && !spec.contains("/-/")
}

/// npm prepares a git or local-path dependency by running its scripts (its `prepare`), which
/// `--ignore-scripts` has not always covered: such a lockfile is not fetched. Lockfile v2/v3
/// list every package under `packages` (with `resolved`); v1 nests `dependencies` (with the
/// spec in `version`).
fn npm_refusal(lockfile: &str, bytes: &[u8]) -> Option<String> {
    let doc: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(d) => d,
        Err(e) => return Some(format!("{lockfile} is not JSON ({e})")),
    };
    if let Some(packages) = doc["packages"].as_object() {
        return packages.iter().find_map(|(name, p)| {
            // A workspace member, linked from the checkout itself: nothing is prepared.
            if p["link"] == true {
                return None;
            }
            let resolved = p["resolved"].as_str()?;
            npm_non_registry(resolved).then(|| {
                format!("{lockfile}: {name} resolves to {resolved:?}, not a registry tarball: git and path dependencies are not fetched")
            })
        });
    }
    fn walk(lockfile: &str, deps: &serde_json::Value, depth: usize) -> Option<String> {
        if depth > 64 {
            return Some(format!("{lockfile} nests dependencies too deeply"));
        }
        deps.as_object()?.iter().find_map(|(name, d)| {
            let spec = d["resolved"].as_str().or(d["version"].as_str()).unwrap_or_default();
            if npm_non_registry(spec) && !spec.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                return Some(format!("{lockfile}: {name} is {spec:?}, not a registry version: git and path dependencies are not fetched"));
            }
            walk(lockfile, &d["dependencies"], depth + 1)
        })
    }
    walk(lockfile, &doc["dependencies"], 0)
}

/// Without a lockfile npm resolves `package.json` itself: the same refusal, on its specs.
fn npm_manifest_refusal(manifest: &[u8]) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    ["dependencies", "devDependencies", "optionalDependencies", "peerDependencies"]
        .iter()
        .filter_map(|k| doc[*k].as_object())
        .flatten()
        .find_map(|(name, spec)| {
            let spec = spec.as_str().unwrap_or_default();
            npm_non_registry(spec).then(|| {
                format!("package.json: {name} is {spec:?}, not a registry version: git and path dependencies are not fetched")
            })
        })
}

/// Whether a Cargo manifest names any crate to fetch (or is a workspace, whose members may).
/// A manifest cargo cannot read is left for the run to report.
fn declares_crates(manifest: &[u8]) -> bool {
    let Ok(doc) = toml::from_str::<toml::Table>(&String::from_utf8_lossy(manifest)) else {
        return false;
    };
    let nonempty =
        |v: Option<&toml::Value>| v.and_then(|t| t.as_table()).is_some_and(|t| !t.is_empty());
    doc.contains_key("workspace") && !doc["workspace"].as_table().is_some_and(|t| t.is_empty())
        || ["dependencies", "dev-dependencies", "build-dependencies"]
            .iter()
            .any(|k| nonempty(doc.get(*k)))
        || doc.get("target").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_plan_reads_requirements_pyproject_and_precommit_pins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("requirements.txt"),
            "attrs==24.2.0  # runtime\n-e .\n# comment\nblack==24.8.0\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname='x'\ndependencies=['click>=8']\n[project.optional-dependencies]\ntest=['pytest==8.3.3']\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(".pre-commit-config.yaml"),
            "repos:\n- repo: https://github.com/astral-sh/ruff-pre-commit\n  rev: v0.6.9\n  hooks: [{id: ruff}]\n- repo: https://github.com/evil/run-me\n  rev: '1'\n",
        )
        .unwrap();
        let p = plan(dir.path(), "local", Language::of(dir.path()))
            .unwrap()
            .unwrap();
        let text = String::from_utf8(p.files[0].1.clone()).unwrap();
        assert_eq!(
            text,
            "attrs==24.2.0\nblack==24.8.0\nclick>=8\npytest==8.3.3\nruff==0.6.9\n"
        );
        assert!(
            p.locked,
            "requirements.txt pins every version: it is the lock"
        );
        assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
        assert!(p.skipped[0].contains("-e ."));
        std::fs::remove_file(dir.path().join("requirements.txt")).unwrap();
        let p = plan(dir.path(), "local", Language::of(dir.path()))
            .unwrap()
            .unwrap();
        assert!(!p.locked, "without it, click>=8 is not pinned");
    }

    #[test]
    fn npm_lockfiles_with_git_or_path_dependencies_are_not_fetched() {
        let lock = |resolved: &str, link: bool| {
            serde_json::json!({"lockfileVersion": 3, "packages": {
                "": {"name": "x"},
                "node_modules/a": {"version": "1.0.0", "resolved": "https://registry.npmjs.org/a/-/a-1.0.0.tgz"},
                "node_modules/b": {"resolved": resolved, "link": link}
            }})
            .to_string()
        };
        let git = npm_refusal(
            "package-lock.json",
            lock("git+ssh://git@github.com/x/b.git#abc", false).as_bytes(),
        );
        assert!(git
            .unwrap()
            .contains("node_modules/b resolves to \"git+ssh"));
        assert!(npm_refusal("package-lock.json", lock("file:../b", false).as_bytes()).is_some());
        assert!(npm_refusal("package-lock.json", lock("packages/b", true).as_bytes()).is_none());
        assert!(npm_refusal(
            "package-lock.json",
            lock("https://registry.npmjs.org/b/-/b-1.tgz", false).as_bytes()
        )
        .is_none());
        assert!(npm_refusal("package-lock.json", b"{nope")
            .unwrap()
            .contains("not JSON"));
        // Lockfile v1: specs nest under `dependencies`.
        let v1 = serde_json::json!({"lockfileVersion": 1, "dependencies": {
            "a": {"version": "1.0.0", "resolved": "https://registry.npmjs.org/a/-/a-1.0.0.tgz",
                  "dependencies": {"b": {"version": "github:x/b#abc"}}}
        }});
        assert!(npm_refusal("package-lock.json", v1.to_string().as_bytes())
            .unwrap()
            .contains("github:x/b"));
        // No lockfile: package.json's own specs.
        for bad in [
            "github:x/y",
            "x/y",
            "git+https://h/x.git",
            "file:../z",
            "https://h/x.tgz#nope",
        ] {
            let manifest = serde_json::json!({"devDependencies": {"p": bad}}).to_string();
            assert!(npm_manifest_refusal(manifest.as_bytes()).is_some(), "{bad}");
        }
        for good in ["^3.0.0", "3.3.3", "latest", "npm:prettier@3", ">=1 <2"] {
            let manifest = serde_json::json!({"devDependencies": {"p": good}}).to_string();
            assert!(
                npm_manifest_refusal(manifest.as_bytes()).is_none(),
                "{good}"
            );
        }
    }

    #[test]
    fn keys_follow_the_lockfile_and_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[package]\nname='x'\n").unwrap();
        assert!(
            plan(dir.path(), "repo-1", Language::of(dir.path()))
                .unwrap()
                .is_none(),
            "no crates: nothing to fetch"
        );
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname='x'\n[dependencies]\nserde='1'\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("Cargo.lock"), "version = 3\n").unwrap();
        let a = plan(dir.path(), "repo-1", Language::of(dir.path()))
            .unwrap()
            .unwrap();
        assert!(a.locked);
        assert_eq!(a.inputs, ["Cargo.toml", "Cargo.lock"]);
        assert_eq!(
            a.key,
            plan(dir.path(), "repo-1", Language::of(dir.path()))
                .unwrap()
                .unwrap()
                .key
        );
        assert_ne!(
            a.key,
            plan(dir.path(), "repo-2", Language::of(dir.path()))
                .unwrap()
                .unwrap()
                .key
        );
        std::fs::write(dir.path().join("Cargo.lock"), "version = 4\n").unwrap();
        assert_ne!(
            a.key,
            plan(dir.path(), "repo-1", Language::of(dir.path()))
                .unwrap()
                .unwrap()
                .key
        );
    }

    #[test]
    fn a_go_module_without_requirements_needs_no_fetch() {
        let go = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/go-format");
        assert!(plan(&go, "local", Language::of(&go)).unwrap().is_none());
    }
}
