//! The second sandbox backend: one Kubernetes Job per run, through the `kube` crate, for
//! workers that have a cluster and no Docker engine of their own.
//!
//! The Job's pod has three containers on one `emptyDir` work volume:
//! - `receive` (an init container) reads the checkout as a tar stream on its stdin: the worker
//!   attaches, writes the archive and closes; `stdinOnce` ends `tar`, and the pod goes on.
//! - `run` runs the repository's script, as the Docker backend does (the same image, user,
//!   environment, memory and CPU limits; a pids limit is the node's `podPidsLimit`, not the
//!   pod's), with the namespace's network policy deciding what it reaches: nothing.
//! - `collect` (only when a file is to come back) sleeps with the work volume mounted
//!   read-only; once `run` has finished the worker execs `tar -c` of that one path in it. The
//!   file is read by a process the repository's code never ran in, as Docker's archive API
//!   does, and it stays data: bounded, its first regular file only.
//!
//! Every container meets the `restricted` Pod Security profile. The exit code, an OOM kill and
//! an eviction (the work volume over its `sizeLimit`) are read from the pod's status, which the
//! kubelet writes, never from anything the run printed; a file comes back only when the
//! collector's `tar` says it succeeded. The worker deletes the Job when the run
//! is over; a worker that dies first leaves it to `activeDeadlineSeconds` and
//! `ttlSecondsAfterFinished`, so nothing needs sweeping.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::{Api, Client};
use tokio::io::AsyncReadExt;

use super::{Execution, Language, Limits, SandboxError, COLLECT_CAP, OUTPUT_CAP};

mod caches;
mod spec;
mod status;

use spec::job_for;
use status::{progress, End, Progress};

/// The client crate, for callers that build the `Client` (same version as the backend's).
pub use kube;

/// Every object this backend makes carries it, so an operator can list them.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "selfheal");
/// The label the sandbox NetworkPolicies select on: `none` for the repository's commands (no
/// traffic at all), `fetch` for a dependency fetch (the package registries only).
pub const NETWORK_LABEL: &str = "selfheal.dev/network";
/// Dependency caches: a PersistentVolumeClaim per fetch (`data`) and a ConfigMap naming the
/// complete one for a key (`pointer`).
const DEPS_LABEL: &str = "selfheal.dev/deps";
/// The label the Job controller puts on a Job's pods: the Job's uid.
const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// How long one API request (a read, the log, the exec) may take.
const API_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the Jobs go and how their pods run.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub namespace: String,
    /// A RuntimeClass such as `gvisor` or `kata`: the recommended isolation for code nobody
    /// reviewed. `None` runs the cluster's default runtime.
    pub runtime_class: Option<String>,
    /// How long a Job may wait for its pod (scheduling, an image pull) before the run is
    /// given up with the pod's reason. The run's own timeout starts once the checkout is in.
    pub start_timeout: Duration,
    /// The StorageClass of the dependency caches' claims (`None`: the cluster's default).
    pub cache_storage_class: Option<String>,
    /// Their access mode: `ReadWriteOnce` serves a single node; runs spread over several nodes
    /// need a class that offers `ReadWriteMany` (the fetch writes the claim).
    pub cache_access_mode: String,
}

impl ClusterConfig {
    pub fn new(namespace: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            namespace: namespace.into(),
            runtime_class: None,
            start_timeout: Duration::from_secs(300),
            cache_storage_class: None,
            cache_access_mode: "ReadWriteOnce".into(),
        }
    }
}

#[derive(Clone)]
pub struct Cluster {
    client: Client,
    config: ClusterConfig,
    /// Each language's toolchain version, asked once per worker (a Job each); a failed ask is
    /// not kept, so the next run asks again.
    versions: Arc<std::sync::Mutex<HashMap<Language, Arc<tokio::sync::OnceCell<String>>>>>,
}

/// What one run asks of the cluster (the backend-neutral part of a sandbox run).
pub(super) struct RunSpec<'a> {
    pub image: String,
    pub archive: Vec<u8>,
    pub script: String,
    pub env: Vec<String>,
    pub collect: Option<&'a str>,
    pub limits: &'a Limits,
    /// `none` for the repository's commands, `fetch` for a dependency fetch.
    pub network: &'static str,
    /// A dependency cache's claim at `/deps`, and whether the run may write it (a fetch).
    pub deps: Option<(String, bool)>,
}

impl Cluster {
    pub fn new(client: Client, config: ClusterConfig) -> Cluster {
        Cluster {
            client,
            config,
            versions: Arc::default(),
        }
    }

    /// `language`'s toolchain version, from `ask` the first time it answers (concurrent askers
    /// of one language wait for that answer; other languages do not).
    pub(super) async fn toolchain_version<F>(
        &self,
        language: Language,
        ask: impl FnOnce() -> F,
    ) -> Option<String>
    where
        F: std::future::Future<Output = Option<String>>,
    {
        let cell = self
            .versions
            .lock()
            .unwrap()
            .entry(language)
            .or_default()
            .clone();
        cell.get_or_try_init(|| async { ask().await.ok_or(()) })
            .await
            .ok()
            .cloned()
    }

    pub(super) async fn run(
        &self,
        spec: RunSpec<'_>,
    ) -> Result<(Execution, Option<Vec<u8>>), SandboxError> {
        let name = format!(
            "selfheal-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.config.namespace);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.config.namespace);
        let job = job_for(&name, &spec, &self.config);
        // Armed before the create: a create whose answer is lost, or a run dropped while it
        // waits for it, still deletes the Job (a 404 then is harmless).
        let guard = DeleteJob {
            jobs: Some(jobs.clone()),
            name: name.clone(),
        };
        let made = jobs.create(&PostParams::default(), &job).await?;
        // The pod is found by the uid of this Job, which nothing else in the namespace can
        // carry, not by its name.
        let uid = made.metadata.uid.unwrap_or_default();
        let result = self.run_job(&uid, &pods, spec).await;
        guard.delete().await;
        result
    }

    async fn run_job(
        &self,
        uid: &str,
        pods: &Api<Pod>,
        spec: RunSpec<'_>,
    ) -> Result<(Execution, Option<Vec<u8>>), SandboxError> {
        let pod = self.wait_for_receiver(uid, pods).await?;
        let send = self.send_checkout(pods, &pod, without_root_entry(&spec.archive));
        tokio::time::timeout(self.config.start_timeout, send)
            .await
            .map_err(|_| {
                SandboxError::Gone(format!(
                    "{pod}: sending the checkout took over {} s",
                    self.config.start_timeout.as_secs()
                ))
            })??;

        let started = Instant::now();
        let mut wait = Backoff::new();
        let mut errors = 0;
        let end = loop {
            let read = tokio::time::timeout(API_TIMEOUT, pods.get(&pod)).await;
            let status = match read {
                Ok(Ok(status)) => status,
                // The Job controller deletes the pods of a Job past its activeDeadlineSeconds;
                // anyone with rights in the namespace could too.
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => {
                    return Err(SandboxError::Gone(format!(
                        "{pod} was deleted while it ran (its Job's deadline, or by hand)"
                    )));
                }
                // A slow or throttled API server (429, 5xx, a timeout) is asked again a few
                // times before the run is given up.
                Ok(Err(e)) if errors >= 5 => return Err(e.into()),
                Err(_) if errors >= 5 => {
                    return Err(SandboxError::Gone(format!(
                        "{pod}: the API server did not answer 5 times"
                    )))
                }
                Ok(Err(_)) | Err(_) => {
                    errors += 1;
                    wait.sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            match progress(&status) {
                Progress::Over(end) => break Some(end),
                Progress::Refused(why) => {
                    return Err(SandboxError::Gone(format!("{pod}: {why}")));
                }
                Progress::Starting(_) | Progress::Receiving | Progress::Running => {}
            }
            if started.elapsed() >= spec.limits.timeout {
                break None;
            }
            wait.sleep(spec.limits.timeout.saturating_sub(started.elapsed()))
                .await;
        };
        let duration = started.elapsed();
        let output = tokio::time::timeout(API_TIMEOUT, self.output(pods, &pod))
            .await
            .unwrap_or_else(|_| {
                format!(
                    "(the log of {pod} did not come within {} s)",
                    API_TIMEOUT.as_secs()
                )
            });
        let end = end.unwrap_or(End {
            exit_code: -1,
            oom_killed: false,
            evicted: false,
            timed_out: true,
        });
        let execution = Execution {
            exit_code: end.exit_code,
            output,
            timed_out: end.timed_out,
            oom_killed: end.oom_killed,
            disk_full: end.evicted,
            duration,
        };
        let mut execution = execution;
        let collected = match spec.collect {
            Some(path) if !end.timed_out && !end.evicted => {
                let collected = tokio::time::timeout(API_TIMEOUT, self.collect(pods, &pod, path))
                    .await
                    .map_err(|_| {
                        SandboxError::Gone(format!("{pod}: bringing {path} back timed out"))
                    })??;
                // The kubelet measures emptyDirs every few seconds: a run that outgrew its
                // volume and exited before the measure is evicted now, and counts as such.
                if let Ok(Ok(after)) = tokio::time::timeout(API_TIMEOUT, pods.get(&pod)).await {
                    if after.status.and_then(|s| s.reason).as_deref() == Some("Evicted") {
                        execution.disk_full = true;
                    }
                }
                collected.filter(|_| !execution.disk_full)
            }
            _ => None,
        };
        Ok((execution, collected))
    }

    /// Streams the checkout into `receive`'s stdin and closes it (which ends its `tar`).
    async fn send_checkout(
        &self,
        pods: &Api<Pod>,
        pod: &str,
        archive: &[u8],
    ) -> Result<(), SandboxError> {
        let mut attached = pods
            .attach(
                pod,
                &AttachParams::default()
                    .container("receive")
                    .stdin(true)
                    .stdout(false)
                    .stderr(false)
                    // Frames of 1 MiB rather than kube's default 1 KiB.
                    .max_stdin_buf_size(1 << 20),
            )
            .await?;
        let mut stdin = attached
            .stdin()
            .ok_or_else(|| SandboxError::Gone(format!("{pod}: attach gave no stdin")))?;
        tokio::io::AsyncWriteExt::write_all(&mut stdin, archive).await?;
        tokio::io::AsyncWriteExt::shutdown(&mut stdin).await?;
        drop(stdin);
        attached
            .join()
            .await
            .map_err(|e| SandboxError::Gone(format!("{pod}: sending the checkout: {e}")))
    }

    /// Waits until the pod's `receive` container runs (so the checkout can be attached), giving
    /// up with the pod's own reason when it cannot start.
    async fn wait_for_receiver(&self, uid: &str, pods: &Api<Pod>) -> Result<String, SandboxError> {
        let started = Instant::now();
        let mut wait = Backoff::new();
        let selector = ListParams::default().labels(&format!("{CONTROLLER_UID_LABEL}={uid}"));
        let mut last = "no pod was created for the Job (a RuntimeClass the cluster does not have, a quota or the namespace's Pod Security admission may refuse it: kubectl describe job)".to_string();
        while started.elapsed() < self.config.start_timeout {
            let listed = pods.list(&selector).await?.items;
            // Owned by this Job, as the Job controller marks the pods it makes.
            let ours = listed.into_iter().find(|p| {
                p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.controller == Some(true) && o.uid == uid)
            });
            if let Some(pod) = ours {
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                match progress(&pod) {
                    Progress::Receiving => return Ok(pod_name),
                    Progress::Starting(why) => last = why,
                    Progress::Refused(why) => {
                        return Err(SandboxError::Unstartable(format!("{pod_name}: {why}")));
                    }
                    Progress::Running | Progress::Over(_) => {
                        return Err(SandboxError::Gone(format!(
                            "{pod_name}: ran past its checkout before it was sent"
                        )));
                    }
                }
            }
            wait.sleep(self.config.start_timeout.saturating_sub(started.elapsed()))
                .await;
        }
        Err(SandboxError::Gone(format!(
            "the sandbox Job {uid} did not start within {} s: {last}",
            self.config.start_timeout.as_secs()
        )))
    }

    /// The tail of what `run` printed (as the Docker backend keeps it), bytes decoded lossily.
    async fn output(&self, pods: &Api<Pod>, pod: &str) -> String {
        use futures::AsyncReadExt as _;
        let params = LogParams {
            container: Some("run".into()),
            ..Default::default()
        };
        let mut output = Vec::new();
        match pods.log_stream(pod, &params).await {
            Ok(stream) => {
                let mut stream = Box::pin(stream);
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) => break,
                        Ok(n) => output.extend_from_slice(&chunk[..n]),
                        Err(e) => {
                            tracing::warn!(%pod, error = %e, "the sandbox's output was cut short");
                            break;
                        }
                    }
                    if output.len() > OUTPUT_CAP * 2 {
                        output.drain(..output.len() - OUTPUT_CAP);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%pod, error = %e, "could not read the sandbox's output");
            }
        }
        if output.len() > OUTPUT_CAP {
            output.drain(..output.len() - OUTPUT_CAP);
        }
        String::from_utf8_lossy(&output).into_owned()
    }

    /// Brings `/work/<path>` back through the `collect` container: a tar of that one path.
    async fn collect(
        &self,
        pods: &Api<Pod>,
        pod: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, SandboxError> {
        let mut attached = pods
            .exec(
                pod,
                ["tar", "-c", "-f", "-", "-C", "/work", "--", path],
                &AttachParams::default()
                    .container("collect")
                    .stdin(false)
                    .stdout(true)
                    .stderr(false),
            )
            .await?;
        let stdout = attached
            .stdout()
            .ok_or_else(|| SandboxError::Gone(format!("{pod}: exec gave no stdout")))?;
        let mut tarball = Vec::new();
        stdout
            .take(COLLECT_CAP as u64 + 1)
            .read_to_end(&mut tarball)
            .await?;
        if tarball.len() > COLLECT_CAP {
            attached.abort();
            return Err(SandboxError::TooLarge(format!(
                "{path} in the sandbox is over {COLLECT_CAP} bytes"
            )));
        }
        // Only an archive tar finished is read: a path that is not there (or that the run made
        // unreadable) makes it fail, and a stream cut short has no success status.
        let status = match attached.take_status() {
            Some(status) => status.await,
            None => None,
        };
        let _ = attached.join().await;
        if status.and_then(|s| s.status).as_deref() != Some("Success") {
            return Ok(None);
        }
        super::first_file(&tarball)
    }
}

/// Deletes the Job (and, in the background, its pod) when the run ends or is dropped.
struct DeleteJob {
    jobs: Option<Api<Job>>,
    name: String,
}

impl DeleteJob {
    async fn delete(mut self) {
        if let Some(jobs) = self.jobs.take() {
            delete_job(jobs, std::mem::take(&mut self.name)).await;
        }
    }
}

async fn delete_job(jobs: Api<Job>, name: String) {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    // The run must stop now, not at the Job's deadline: asked again before it is left to
    // activeDeadlineSeconds and the TTL controller.
    for attempt in 1..=3 {
        match jobs.delete(&name, &params).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) if attempt == 3 => {
                tracing::warn!(job = %name, error = %e, "could not delete the sandbox Job: it runs until its deadline");
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(attempt)).await,
        }
    }
}

impl Drop for DeleteJob {
    fn drop(&mut self) {
        if let (Some(jobs), Ok(runtime)) = (self.jobs.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(delete_job(jobs, std::mem::take(&mut self.name)));
        }
    }
}

/// The archive without its entry for the volume's root (`.`, always its first block): Docker
/// needs it to hand `/work` to the sandbox user, but an emptyDir is root's (world-writable), and
/// `tar` run as that user fails setting the mode of a folder it does not own.
fn without_root_entry(archive: &[u8]) -> &[u8] {
    let root = archive
        .get(..512)
        .map(tar::Header::from_byte_slice)
        .and_then(|h| h.path().ok().map(|p| p.as_os_str() == "."));
    match root {
        Some(true) => &archive[512..],
        _ => archive,
    }
}

/// Polls quickly at first (most runs are short) and every two seconds after that.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(100))
    }

    async fn sleep(&mut self, at_most: Duration) {
        tokio::time::sleep(self.0.min(at_most)).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(2));
    }
}
