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

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::toolchain::Language;
use super::{Sandbox, SandboxError};

const KEY_LABEL: &str = "selfheal.deps.key";
const SCOPE_LABEL: &str = "selfheal.deps.scope";
const DATA_LABEL: &str = "selfheal.deps.data";
const DIGEST_LABEL: &str = "selfheal.deps.digest";
const BYTES_LABEL: &str = "selfheal.deps.bytes";
const CREATED_LABEL: &str = "selfheal.deps.created";
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
    #[serde(skip)]
    script: String,
    #[serde(skip)]
    files: Vec<(String, Vec<u8>)>,
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

fn read_input(repo: &Path, rel: &str) -> Result<Option<Vec<u8>>, SandboxError> {
    let path = repo.join(rel);
    // The checkout never holds a link (see checkout.rs), but `heal --repo` takes any folder.
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
    Ok(Some(std::fs::read(path)?))
}

/// The dependency plan for the repository at `repo`, or `None` when it declares none.
/// `scope` names the repository (its id on GitHub, its path locally): caches are shared
/// only between runs of the same repository.
pub fn plan(repo: &Path, scope: &str) -> Result<Option<Plan>, SandboxError> {
    let language = Language::of(repo);
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
            let wanted = python_requirements(repo)?;
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
        scope: scope_hash(scope),
        inputs: present,
        locked,
        skipped,
        script,
        files,
    }))
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

/// Requirements gathered from a Python repository, as one pip requirements file.
struct PythonWanted {
    requirements: Vec<String>,
    inputs: Vec<&'static str>,
    /// Every requirement pins one exact version.
    pinned: bool,
    skipped: Vec<String>,
}

const PYTHON_INPUTS: [&str; 6] = [
    "requirements.txt",
    "requirements-dev.txt",
    "requirements-test.txt",
    "dev-requirements.txt",
    "pyproject.toml",
    ".pre-commit-config.yaml",
];

/// A requirement specifier pip can take from an index, with nothing that names a path, a URL,
/// an option or an editable install (each of which could build or run the repository's code).
fn is_index_requirement(line: &str) -> bool {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
        .unwrap_or(line.len());
    if name_end == 0 || !line.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return false;
    }
    let rest = line[name_end..].trim_start();
    let rest = match rest.strip_prefix('[') {
        Some(extras) => match extras.split_once(']') {
            Some((names, after))
                if names
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-, ".contains(c)) =>
            {
                after.trim_start()
            }
            _ => return false,
        },
        None => rest,
    };
    !rest.contains("://")
        && !rest.contains('@')
        && (rest.is_empty() || rest.starts_with(['<', '>', '=', '!', '~', ';']))
}

fn python_requirements(repo: &Path) -> Result<PythonWanted, SandboxError> {
    let mut wanted = PythonWanted {
        requirements: Vec::new(),
        inputs: PYTHON_INPUTS.to_vec(),
        pinned: true,
        skipped: Vec::new(),
    };
    let add = |wanted: &mut PythonWanted, source: &str, line: &str| {
        let line = line.trim();
        if is_index_requirement(line) {
            let spec = line.split(';').next().unwrap_or(line);
            if !spec.contains("==") {
                wanted.pinned = false;
            }
            wanted.requirements.push(line.to_string());
        } else if !line.is_empty() {
            wanted.skipped.push(format!(
                "{source}: `{line}` (not a requirement from the index)"
            ));
        }
    };
    for rel in &PYTHON_INPUTS[..4] {
        let Some(bytes) = read_input(repo, rel)? else {
            continue;
        };
        for raw in String::from_utf8_lossy(&bytes).lines() {
            let line = raw.split(" #").next().unwrap_or(raw);
            if line.trim_start().starts_with('#') {
                continue;
            }
            add(&mut wanted, rel, line);
        }
    }
    if let Some(bytes) = read_input(repo, "pyproject.toml")? {
        match toml::from_str::<toml::Table>(&String::from_utf8_lossy(&bytes)) {
            Ok(doc) => {
                let project = doc.get("project");
                let mut lists: Vec<&toml::Value> = Vec::new();
                if let Some(deps) = project.and_then(|p| p.get("dependencies")) {
                    lists.push(deps);
                }
                for table in [
                    project.and_then(|p| p.get("optional-dependencies")),
                    doc.get("dependency-groups"),
                ]
                .into_iter()
                .flatten()
                {
                    if let Some(groups) = table.as_table() {
                        lists.extend(groups.values());
                    }
                }
                for item in lists.iter().filter_map(|l| l.as_array()).flatten() {
                    match item.as_str() {
                        Some(line) => add(&mut wanted, "pyproject.toml", line),
                        None => wanted.skipped.push(format!(
                            "pyproject.toml: {item} (an include, not a requirement)"
                        )),
                    }
                }
            }
            Err(e) => wanted
                .skipped
                .push(format!("pyproject.toml: unreadable ({})", e.message())),
        }
    }
    // The formatters and linters a repository pins for pre-commit are the versions its CI
    // runs (pre-commit's own hook), so those are the versions the sandbox runs.
    if let Some(bytes) = read_input(repo, ".pre-commit-config.yaml")? {
        if let Ok(doc) = serde_yaml_ng::from_slice::<serde_yaml_ng::Value>(&bytes) {
            for hook_repo in doc["repos"].as_sequence().into_iter().flatten() {
                let url = hook_repo["repo"].as_str().unwrap_or_default();
                let rev = hook_repo["rev"].as_str().unwrap_or_default();
                let rev = rev.strip_prefix('v').unwrap_or(rev);
                let tool = match url.trim_end_matches(".git").rsplit('/').next() {
                    Some("black") | Some("black-pre-commit-mirror") => "black",
                    Some("ruff-pre-commit") => "ruff",
                    Some("flake8") => "flake8",
                    Some("isort") => "isort",
                    _ => continue,
                };
                let line = format!("{tool}=={rev}");
                if is_index_requirement(&line) {
                    wanted.requirements.push(line);
                }
            }
        }
    }
    Ok(wanted)
}

/// The digest of `/deps`: every file's content and every link's target, in a fixed order.
/// Run at the end of the fetch and again, before the repository's command, in every run.
const DIGEST: &str = r#"selfheal_deps_digest() {
  ( cd /deps && { find . -type f ! -name .selfheal-digest -print0 | LC_ALL=C sort -z | xargs -0r sha256sum; \
    find . -type l -printf '%p -> %l\n' | LC_ALL=C sort; } | sha256sum | cut -d' ' -f1 )
}
"#;

const RUST_FETCH: &str = r#"
# A repository's .cargo/config could name programs for cargo to run: not during the fetch.
rm -rf .cargo
export CARGO_HOME=/tmp/cargo-home
if [ ! -f Cargo.lock ]; then
  echo "no Cargo.lock: resolving the newest compatible versions" >&2
  cargo generate-lockfile 2>&1 || exit 1
  cp Cargo.lock /deps/Cargo.lock
fi
cargo vendor --locked --versioned-dirs /deps/vendor >/deps/cargo-config.toml || exit 1
ls /deps/vendor >/deps/resolved.txt
"#;

const PYTHON_FETCH: &str = r#"
# Wheels only: an sdist would run its build (the package's own code) here.
python3 -m pip install --quiet --disable-pip-version-check --no-input --no-compile \
  --only-binary=:all: --target /deps/python -r /work/selfheal-requirements.txt 2>&1 || {
  echo "selfheal: a requirement has no wheel for this platform, or cannot be fetched" >&2; exit 1; }
python3 -m pip list --disable-pip-version-check --path /deps/python --format freeze >/deps/resolved.txt
"#;

const NODE_FETCH: &str = r#"
# Lifecycle scripts are the packages' (and the repository's) own code: never run here. The
# repository's .npmrc could point npm at programs too.
rm -f .npmrc
export npm_config_cache=/tmp/npm-cache
if [ -f package-lock.json ] || [ -f npm-shrinkwrap.json ]; then
  npm ci --ignore-scripts --no-audit --no-fund 2>&1 || exit 1
else
  if [ -f yarn.lock ] || [ -f pnpm-lock.yaml ]; then
    echo "selfheal: yarn.lock / pnpm-lock.yaml are not read; npm resolves package.json" >&2
  fi
  echo "no package-lock.json: resolving with npm" >&2
  npm install --ignore-scripts --no-audit --no-fund 2>&1 || exit 1
  cp package-lock.json /deps/package-lock.json
fi
cp -a node_modules /deps/node_modules
npm ls --all --parseable 2>/dev/null | sed 's#^/work/repo/##' | grep node_modules >/deps/resolved.txt || true
"#;

const GO_FETCH: &str = r#"
export GOMODCACHE=/deps/gomod GOPATH=/tmp/go GOCACHE=/tmp/go-cache GOFLAGS=-mod=mod GOTOOLCHAIN=local
go mod download 2>&1 || exit 1
go list -m all >/deps/resolved.txt 2>/dev/null || true
chmod -R u+w /deps/gomod 2>/dev/null
"#;

/// The shell, run first in every sandbox run with the cache mounted, that refuses a cache
/// whose content is not what was fetched and wires it in for the language's tools.
pub(super) fn prelude(plan: &Plan, cache: &Ready) -> String {
    let mut out = String::from(DIGEST);
    out.push_str(&format!(
        "[ \"$(selfheal_deps_digest)\" = {} ] || {{ echo 'selfheal: the dependency cache does not match its digest; refusing to run' >&2; exit 97; }}\n",
        cache.digest
    ));
    match plan.language {
        Language::Rust => out.push_str(
            "mkdir -p \"$CARGO_HOME\" && cp /deps/cargo-config.toml \"$CARGO_HOME/config.toml\"\n\
             [ -f Cargo.lock ] || [ ! -f /deps/Cargo.lock ] || cp /deps/Cargo.lock Cargo.lock\n",
        ),
        Language::Node => out.push_str(
            "[ -e node_modules ] || ln -s /deps/node_modules node_modules\n\
             [ -f package-lock.json ] || [ ! -f /deps/package-lock.json ] || cp /deps/package-lock.json .\n",
        ),
        Language::Python | Language::Go | Language::Java => {}
    }
    out
}

/// Environment a run gets with the cache mounted (on top of [`Language::env`]).
pub(super) fn env(plan: &Plan) -> Vec<String> {
    match plan.language {
        Language::Python => vec![
            "PYTHONPATH=/deps/python".into(),
            "PATH=/deps/python/bin:/usr/local/bin:/usr/bin:/bin".into(),
        ],
        Language::Go => vec!["GOMODCACHE=/deps/gomod".into()],
        Language::Rust | Language::Node | Language::Java => vec![],
    }
}

fn scope_hash(scope: &str) -> String {
    hex::encode(&Sha256::digest(scope.as_bytes())[..8])
}

fn pointer_name(key: &str) -> String {
    format!("selfheal-deps-{key}")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Sandbox {
    /// Fetches (or finds) the dependencies of the repository at `repo` and returns a sandbox
    /// whose runs mount them, with what happened for the evidence.
    pub async fn prepare(
        &self,
        repo: &Path,
        scope: &str,
    ) -> Result<(Sandbox, Outcome), SandboxError> {
        let Some(plan) = plan(repo, scope)? else {
            return Ok((self.clone(), Outcome::NotNeeded));
        };
        let outcome = match self.find_cache(&plan).await? {
            Some(cache) => Outcome::Ready { plan, cache },
            None => match self.fetch(repo, &plan).await? {
                Ok(cache) => Outcome::Ready { plan, cache },
                Err(reason) => Outcome::Failed { plan, reason },
            },
        };
        let mut prepared = self.clone();
        if let Some((plan, cache)) = outcome.ready() {
            prepared.deps = Some((plan.clone(), cache.clone()));
        }
        Ok((prepared, outcome))
    }

    async fn find_cache(&self, plan: &Plan) -> Result<Option<Ready>, SandboxError> {
        let pointer = match self.docker.inspect_volume(&pointer_name(&plan.key)).await {
            Ok(v) => v,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let labels = pointer.labels;
        let (Some(volume), Some(digest)) = (labels.get(DATA_LABEL), labels.get(DIGEST_LABEL))
        else {
            return Ok(None);
        };
        if self.docker.inspect_volume(volume).await.is_err() {
            // Its data was pruned under it: forget the pointer and fetch again.
            self.remove_volume(&pointer_name(&plan.key)).await;
            return Ok(None);
        }
        Ok(Some(Ready {
            volume: volume.clone(),
            digest: digest.clone(),
            bytes: labels
                .get(BYTES_LABEL)
                .and_then(|b| b.parse().ok())
                .unwrap_or(0),
            hit: true,
            resolved: Vec::new(),
            fetch_ms: 0,
        }))
    }

    /// Runs the plan's fetch in a container with a network, into a new data volume; on
    /// success records the pointer. `Err(reason)` is a fetch that failed (recorded, not fatal).
    async fn fetch(&self, repo: &Path, plan: &Plan) -> Result<Result<Ready, String>, SandboxError> {
        let started = std::time::Instant::now();
        let data = format!(
            "selfheal-depsdata-{}-{}",
            &plan.key[..12],
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        // Not the sandbox's owner labels: a cache outlives the fetch that made it and is
        // removed by `prune_deps` only (an unreferenced one, a crashed fetch's, after an hour).
        let labels = HashMap::from([
            (KEY_LABEL.to_string(), plan.key.clone()),
            (SCOPE_LABEL.to_string(), plan.scope.clone()),
            (CREATED_LABEL.to_string(), now_secs().to_string()),
        ]);
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(data.clone()),
                labels: Some(labels),
                ..Default::default()
            })
            .await?;
        let script = format!(
            "{DIGEST}{}\nselfheal_deps_digest >/deps/.selfheal-digest\n{{ cat /deps/.selfheal-digest; du -sb /deps | cut -f1; head -n 200 /deps/resolved.txt 2>/dev/null; }} >/work/deps-report\n",
            plan.script
        );
        let files: Vec<(&str, &[u8])> = plan
            .files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let fetched = self
            .run_fetch(repo, &files, &script, &data, plan.language)
            .await;
        let (run, report) = match fetched {
            Ok(x) => x,
            Err(e) => {
                self.remove_volume(&data).await;
                return Err(e);
            }
        };
        // The fetch ran no repository code, but its report is still only data: parsed
        // strictly, and the digest is checked again before every run that mounts the cache.
        let report = String::from_utf8_lossy(&report.unwrap_or_default()).into_owned();
        let mut lines = report.lines();
        let digest = lines.next().map(str::to_string);
        let bytes: u64 = lines
            .next()
            .and_then(|b| b.trim().parse().ok())
            .unwrap_or(0);
        let resolved: Vec<String> = lines
            .take(200)
            .map(|l| l.chars().take(200).collect())
            .collect();
        let Some(digest) = digest.filter(|d| {
            run.exit_code == 0 && d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())
        }) else {
            self.remove_volume(&data).await;
            let tail: Vec<&str> = run.output.lines().rev().take(15).collect();
            let why = if run.timed_out { "timed out" } else { "failed" };
            return Ok(Err(format!(
                "fetching the {} dependencies {why} (exit {}): {}",
                plan.language.as_str(),
                run.exit_code,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        };
        let pointer_labels = HashMap::from([
            (KEY_LABEL.to_string(), plan.key.clone()),
            (SCOPE_LABEL.to_string(), plan.scope.clone()),
            (DATA_LABEL.to_string(), data.clone()),
            (DIGEST_LABEL.to_string(), digest.clone()),
            (BYTES_LABEL.to_string(), bytes.to_string()),
            (CREATED_LABEL.to_string(), now_secs().to_string()),
        ]);
        let made = self
            .docker
            .create_volume(VolumeCreateRequest {
                name: Some(pointer_name(&plan.key)),
                labels: Some(pointer_labels),
                ..Default::default()
            })
            .await?;
        // Another worker's pointer may have won the race: use what it points at.
        let (volume, digest) = match made.labels.get(DATA_LABEL) {
            Some(winner) if *winner != data => (
                winner.clone(),
                made.labels.get(DIGEST_LABEL).cloned().unwrap_or(digest),
            ),
            _ => (data, digest),
        };
        Ok(Ok(Ready {
            volume,
            digest,
            bytes,
            hit: false,
            resolved,
            fetch_ms: started.elapsed().as_millis(),
        }))
    }

    async fn remove_volume(&self, name: &str) {
        let _ = self
            .docker
            .remove_volume(
                name,
                Some(RemoveVolumeOptionsBuilder::default().force(true).build()),
            )
            .await;
    }

    /// Removes dependency caches (of one repository's `scope`, or all): unreferenced data
    /// volumes older than an hour (a crashed or losing fetch), caches older than `max_age`,
    /// then the oldest until the rest fit in `max_bytes`. A cache mounted by a running
    /// container is kept (Docker refuses). Returns how many caches were removed.
    pub async fn prune_deps(
        &self,
        scope: Option<&str>,
        max_age: Duration,
        max_bytes: u64,
    ) -> Result<usize, SandboxError> {
        let only = scope.map(|s| format!("{SCOPE_LABEL}={}", scope_hash(s)));
        let label = only.as_deref().unwrap_or(KEY_LABEL);
        let volumes = self
            .docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&HashMap::from([("label", vec![label])]))
                    .build(),
            ))
            .await?
            .volumes
            .unwrap_or_default();
        let now = now_secs();
        let created = |labels: &HashMap<String, String>| {
            labels
                .get(CREATED_LABEL)
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut pointers: Vec<_> = volumes
            .iter()
            .filter(|v| v.labels.contains_key(DATA_LABEL))
            .collect();
        pointers.sort_by_key(|v| std::cmp::Reverse(created(&v.labels)));
        let mut removed = 0;
        let mut kept_bytes = 0u64;
        let mut referenced = Vec::new();
        for p in pointers {
            let bytes: u64 = p
                .labels
                .get(BYTES_LABEL)
                .and_then(|b| b.parse().ok())
                .unwrap_or(0);
            let old = now.saturating_sub(created(&p.labels)) > max_age.as_secs();
            if old || kept_bytes + bytes > max_bytes {
                let data = p.labels.get(DATA_LABEL).cloned().unwrap_or_default();
                let gone = self
                    .docker
                    .remove_volume(
                        &data,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    )
                    .await;
                if gone.is_ok() {
                    self.remove_volume(&p.name).await;
                    removed += 1;
                    continue;
                }
            }
            kept_bytes += bytes;
            referenced.extend(p.labels.get(DATA_LABEL).cloned());
        }
        for v in volumes
            .iter()
            .filter(|v| !v.labels.contains_key(DATA_LABEL))
        {
            if !referenced.contains(&v.name) && now.saturating_sub(created(&v.labels)) > 3600 {
                self.remove_volume(&v.name).await;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_index_requirements_are_fetched() {
        for ok in [
            "attrs==24.2.0",
            "black>=24",
            "requests[socks]==2.32.3",
            "pytest",
            "tomli; python_version < \"3.11\"",
        ] {
            assert!(is_index_requirement(ok), "{ok}");
        }
        for refused in [
            "-e .",
            ".",
            "./local/pkg",
            "-r other.txt",
            "--index-url http://evil",
            "pkg @ https://example.com/pkg.tar.gz",
            "git+https://github.com/x/y",
            "pkg @ file:///etc",
            "/abs/path",
        ] {
            assert!(!is_index_requirement(refused), "{refused}");
        }
    }

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
        let plan = plan(dir.path(), "local").unwrap().unwrap();
        let text = String::from_utf8(plan.files[0].1.clone()).unwrap();
        assert_eq!(
            text,
            "attrs==24.2.0\nblack==24.8.0\nclick>=8\npytest==8.3.3\nruff==0.6.9\n"
        );
        assert!(!plan.locked, "click>=8 is not pinned");
        assert_eq!(plan.skipped.len(), 1, "{:?}", plan.skipped);
        assert!(plan.skipped[0].contains("-e ."));
    }

    #[test]
    fn keys_follow_the_lockfile_and_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[package]\nname='x'\n").unwrap();
        assert!(
            plan(dir.path(), "repo-1").unwrap().is_none(),
            "no crates: nothing to fetch"
        );
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname='x'\n[dependencies]\nserde='1'\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("Cargo.lock"), "version = 3\n").unwrap();
        let a = plan(dir.path(), "repo-1").unwrap().unwrap();
        assert!(a.locked);
        assert_eq!(a.inputs, ["Cargo.toml", "Cargo.lock"]);
        assert_eq!(a.key, plan(dir.path(), "repo-1").unwrap().unwrap().key);
        assert_ne!(a.key, plan(dir.path(), "repo-2").unwrap().unwrap().key);
        std::fs::write(dir.path().join("Cargo.lock"), "version = 4\n").unwrap();
        assert_ne!(a.key, plan(dir.path(), "repo-1").unwrap().unwrap().key);
    }

    #[test]
    fn a_go_module_without_requirements_needs_no_fetch() {
        let go = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/go-format");
        assert!(plan(&go, "local").unwrap().is_none());
    }
}
