//! Dependency caches: found by key, fetched into a new volume, recorded by a pointer once
//! complete, pruned by age and size. On Docker the volume and the pointer are volumes (the
//! pointer's fields its labels); on Kubernetes the volume is a PersistentVolumeClaim and the
//! pointer a ConfigMap.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder};
use sha2::{Digest, Sha256};

use super::scripts::DIGEST;
use super::{plan, Outcome, Plan, Ready};
use crate::sandbox::owner::now_secs;
use crate::sandbox::toolchain::Language;
use crate::sandbox::{Engine, Sandbox, SandboxError};

const KEY_LABEL: &str = "selfheal.deps.key";
const SCOPE_LABEL: &str = "selfheal.deps.scope";
const DATA_LABEL: &str = "selfheal.deps.data";
const DIGEST_LABEL: &str = "selfheal.deps.digest";
const BYTES_LABEL: &str = "selfheal.deps.bytes";
const CREATED_LABEL: &str = "selfheal.deps.created";
const RESOLVED_LABEL: &str = "selfheal.deps.resolved";
/// What a pointer remembers of the resolution, for the evidence of later runs.
const RESOLVED_LABEL_BYTES: usize = 4096;

pub(super) fn scope_hash(scope: &str) -> String {
    hex::encode(&Sha256::digest(scope.as_bytes())[..8])
}

/// The first lines of the resolution that fit in a label.
fn resolved_label(resolved: &[String]) -> String {
    let mut out = String::new();
    for line in resolved {
        if out.len() + line.len() + 1 > RESOLVED_LABEL_BYTES {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A pointer's data volume and digest as selfheal writes them.
fn sound_pointer(volume: &str, digest: &str) -> bool {
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let data = volume.strip_prefix("selfheal-depsdata-").and_then(|rest| {
        let (key, nonce) = rest.split_once('-')?;
        Some(key.len() == 12 && nonce.len() == 8 && hex(key) && hex(nonce))
    });
    data == Some(true) && digest.len() == 64 && hex(digest)
}

fn pointer_name(key: &str) -> String {
    format!("selfheal-deps-{key}")
}

impl Sandbox {
    /// Fetches (or finds) the dependencies of the repository at `repo` and returns a sandbox
    /// whose runs mount them, with what happened for the evidence.
    pub async fn prepare(
        &self,
        repo: &Path,
        scope: &str,
    ) -> Result<(Sandbox, Outcome), SandboxError> {
        let Some(plan) = plan(repo, scope, self.language_of(repo))? else {
            return Ok((self.clone(), Outcome::NotNeeded));
        };
        if let Some(reason) = plan.refused.clone() {
            return Ok((self.clone(), Outcome::Failed { plan, reason }));
        }
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
        let Some(labels) = self.pointer_fields(&pointer_name(&plan.key)).await? else {
            return Ok(None);
        };
        let (Some(volume), Some(digest)) = (labels.get(DATA_LABEL), labels.get(DIGEST_LABEL))
        else {
            return Ok(None);
        };
        // What a pointer says reaches a shell line (the digest check) and a mount: only the
        // shapes selfheal writes are taken; anything else is fetched again.
        if !sound_pointer(volume, digest) {
            self.remove_pointer(&pointer_name(&plan.key)).await;
            return Ok(None);
        }
        if !self.data_exists(volume).await? {
            // Its data was pruned under it: forget the pointer and fetch again.
            self.remove_pointer(&pointer_name(&plan.key)).await;
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
            resolved: labels
                .get(RESOLVED_LABEL)
                .map(|r| r.lines().map(str::to_string).collect())
                .unwrap_or_default(),
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
        match self.create_data(&data, labels).await {
            Ok(()) => {}
            // A namespace quota on claims or storage: recorded on the run, not retried.
            Err(SandboxError::Kubernetes(kube::Error::Api(e))) if e.code == 403 => {
                return Ok(Err(format!(
                    "the cluster refused a claim for the dependency cache: {} (prune the caches or raise the quota)",
                    e.message
                )));
            }
            Err(SandboxError::Unstartable(why)) => return Ok(Err(why)),
            Err(e) => return Err(e),
        }
        let script = format!(
            "{DIGEST}{}\nselfheal_deps_digest >/deps/.selfheal-digest\n{{ cat /deps/.selfheal-digest; du -sb /deps | cut -f1; head -n 200 /deps/resolved.txt 2>/dev/null; }} >/work/deps-report\n",
            plan.script
        );
        let files: Vec<(&str, &[u8])> = plan
            .files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        // pip needs only the requirements gathered on this side: the checkout is not uploaded,
        // so nothing of the repository's is there to be imported or read.
        let empty = tempfile::tempdir()?;
        let upload = match plan.language {
            Language::Python => empty.path(),
            _ => repo,
        };
        let fetched = self
            .run_fetch(upload, &files, &script, &data, plan.language)
            .await;
        let (run, report) = match fetched {
            Ok(x) => x,
            Err(e) => {
                self.remove_data(&data).await;
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
            .map(|l| {
                // Package names come from the repository's lockfile: printable text only.
                l.chars()
                    .filter(|c| !c.is_control() || *c == '\t')
                    .take(200)
                    .collect()
            })
            .collect();
        let Some(digest) = digest.filter(|d| {
            run.exit_code == 0 && d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())
        }) else {
            self.remove_data(&data).await;
            // The tools' output names the repository's packages: hostile text, kept printable.
            let tail: Vec<String> = run
                .output
                .lines()
                .rev()
                .take(15)
                .map(|l| {
                    l.chars()
                        .filter(|c| !c.is_control() || *c == '\t')
                        .collect()
                })
                .collect();
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
            (RESOLVED_LABEL.to_string(), resolved_label(&resolved)),
        ]);
        let made = self
            .create_pointer(&pointer_name(&plan.key), pointer_labels)
            .await?;
        // Another worker's pointer may have won the race: use what it points at.
        let (volume, digest) = match (made.get(DATA_LABEL), made.get(DIGEST_LABEL)) {
            (Some(winner), Some(winning)) if *winner != data => {
                if !sound_pointer(winner, winning) {
                    return Err(SandboxError::Input(format!(
                        "the dependency pointer for {} is not one selfheal wrote",
                        plan.key
                    )));
                }
                // Ours lost: its volume goes now rather than at the next hourly prune.
                self.remove_data(&data).await;
                (winner.clone(), winning.clone())
            }
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

    pub(in crate::sandbox) async fn forget_cache(&self, plan: &Plan) {
        self.remove_pointer(&pointer_name(&plan.key)).await;
    }

    /// A pointer's fields (its labels), if it exists.
    async fn pointer_fields(
        &self,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, SandboxError> {
        match &self.engine {
            Engine::Docker(docker) => match docker.inspect_volume(name).await {
                Ok(v) => Ok(Some(v.labels)),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(None),
                Err(e) => Err(e.into()),
            },
            Engine::Kubernetes(cluster) => cluster.pointer(name).await,
        }
    }

    /// Records a pointer and returns the fields of the one that stands (another worker's, when
    /// it was first: Docker gives back the existing volume, Kubernetes a 409).
    async fn create_pointer(
        &self,
        name: &str,
        fields: HashMap<String, String>,
    ) -> Result<HashMap<String, String>, SandboxError> {
        match &self.engine {
            Engine::Docker(docker) => Ok(docker
                .create_volume(VolumeCreateRequest {
                    name: Some(name.into()),
                    labels: Some(fields),
                    ..Default::default()
                })
                .await?
                .labels),
            Engine::Kubernetes(cluster) => cluster.create_pointer(name, fields).await,
        }
    }

    async fn data_exists(&self, name: &str) -> Result<bool, SandboxError> {
        match &self.engine {
            Engine::Docker(docker) => match docker.inspect_volume(name).await {
                Ok(_) => Ok(true),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(false),
                Err(e) => Err(e.into()),
            },
            Engine::Kubernetes(cluster) => cluster.claim_exists(name).await,
        }
    }

    async fn create_data(
        &self,
        name: &str,
        fields: HashMap<String, String>,
    ) -> Result<(), SandboxError> {
        match &self.engine {
            Engine::Docker(docker) => {
                docker
                    .create_volume(VolumeCreateRequest {
                        name: Some(name.into()),
                        labels: Some(fields),
                        ..Default::default()
                    })
                    .await?;
                Ok(())
            }
            Engine::Kubernetes(cluster) => {
                cluster
                    .create_claim(name, fields, self.limits.work_bytes)
                    .await
            }
        }
    }

    async fn remove_pointer(&self, name: &str) {
        self.remove_cache_object(name, true, true).await;
    }

    async fn remove_data(&self, name: &str) {
        self.remove_cache_object(name, false, true).await;
    }

    /// Removes a pointer or a data volume; `false` when it stays (Docker refuses to remove a
    /// volume a container uses, unless forced).
    async fn remove_cache_object(&self, name: &str, pointer: bool, force: bool) -> bool {
        match &self.engine {
            Engine::Docker(docker) => docker
                .remove_volume(
                    name,
                    Some(RemoveVolumeOptionsBuilder::default().force(force).build()),
                )
                .await
                .is_ok(),
            Engine::Kubernetes(cluster) => cluster.delete_cache_object(name, pointer).await,
        }
    }

    /// Every cache object (pointers and data) of `scope`, or all, with its fields.
    async fn cache_objects(
        &self,
        scope: Option<&str>,
    ) -> Result<Vec<(String, HashMap<String, String>)>, SandboxError> {
        let only = scope.map(scope_hash);
        let all = match &self.engine {
            Engine::Docker(docker) => {
                let label = match &only {
                    Some(hash) => format!("{SCOPE_LABEL}={hash}"),
                    None => KEY_LABEL.to_string(),
                };
                docker
                    .list_volumes(Some(
                        ListVolumesOptionsBuilder::default()
                            .filters(&HashMap::from([("label", vec![label.as_str()])]))
                            .build(),
                    ))
                    .await?
                    .volumes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| (v.name, v.labels))
                    .collect::<Vec<_>>()
            }
            Engine::Kubernetes(cluster) => cluster.cache_objects().await?,
        };
        Ok(all
            .into_iter()
            .filter(|(_, fields)| fields.contains_key(KEY_LABEL))
            .filter(|(_, fields)| {
                only.as_ref()
                    .is_none_or(|hash| fields.get(SCOPE_LABEL) == Some(hash))
            })
            .collect())
    }

    /// Removes dependency caches (of one repository's `scope`, or all): unreferenced data
    /// volumes older than an hour (a crashed fetch's), caches older than `max_age`, then the
    /// oldest until the rest fit in `max_bytes` (on Kubernetes a claim counts what it
    /// requested). On Docker a cache mounted by a running container is kept (Docker refuses);
    /// on Kubernetes its claim is only marked for deletion and goes with its last pod, and a
    /// run that then finds it gone fails its attempt, which prepares again. Returns how many
    /// caches were removed.
    pub async fn prune_deps(
        &self,
        scope: Option<&str>,
        max_age: Duration,
        max_bytes: u64,
    ) -> Result<usize, SandboxError> {
        let volumes = self.cache_objects(scope).await?;
        let now = now_secs();
        let created = |labels: &HashMap<String, String>| {
            labels
                .get(CREATED_LABEL)
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut pointers: Vec<_> = volumes
            .iter()
            .filter(|(_, labels)| labels.contains_key(DATA_LABEL))
            .collect();
        pointers.sort_by_key(|(_, labels)| std::cmp::Reverse(created(labels)));
        let mut removed = 0;
        let mut kept_bytes = 0u64;
        let mut referenced = Vec::new();
        for (name, labels) in pointers {
            let measured: u64 = labels
                .get(BYTES_LABEL)
                .and_then(|b| b.parse().ok())
                .unwrap_or(0);
            // A claim holds what it requested, however little the fetch wrote in it.
            let bytes = match &self.engine {
                Engine::Kubernetes(_) => measured.max(self.limits.work_bytes as u64),
                Engine::Docker(_) => measured,
            };
            let old = now.saturating_sub(created(labels)) >= max_age.as_secs();
            if old || kept_bytes.saturating_add(bytes) > max_bytes {
                let data = labels.get(DATA_LABEL).cloned().unwrap_or_default();
                // Not forced: a cache a running sandbox mounts is kept.
                if self.remove_cache_object(&data, false, false).await {
                    self.remove_pointer(name).await;
                    removed += 1;
                    continue;
                }
            }
            kept_bytes = kept_bytes.saturating_add(bytes);
            referenced.extend(labels.get(DATA_LABEL).cloned());
        }
        for (name, labels) in volumes
            .iter()
            .filter(|(_, labels)| !labels.contains_key(DATA_LABEL))
        {
            if !referenced.contains(name) && now.saturating_sub(created(labels)) > 3600 {
                self.remove_data(name).await;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::sound_pointer;

    #[test]
    fn only_pointers_of_the_shape_selfheal_writes_are_taken() {
        let digest = "ab".repeat(32);
        assert!(sound_pointer(
            "selfheal-depsdata-0123456789ab-89abcdef",
            &digest
        ));
        // A digest that would end the shell test it is pasted into, a volume of someone
        // else's, a short or upper-case digest.
        assert!(!sound_pointer(
            "selfheal-depsdata-0123456789ab-89abcdef",
            "x ] || true; [ 1"
        ));
        assert!(!sound_pointer("kube-system-secrets", &digest));
        assert!(!sound_pointer(
            "selfheal-depsdata-0123456789ab-89abcdef",
            "abc"
        ));
        assert!(!sound_pointer(
            "selfheal-depsdata-0123456789ab-89abcdef",
            &"AB".repeat(32)
        ));
        assert!(!sound_pointer(
            "selfheal-depsdata-0123456789ab-89abcdef-x",
            &digest
        ));
    }
}
