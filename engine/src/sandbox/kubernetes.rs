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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, ContainerStateTerminated, EmptyDirVolumeSource, EnvVar,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{AttachParams, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::{Api, Client};
use tokio::io::AsyncReadExt;

use super::{archive, Execution, Language, Limits, SandboxError, COLLECT_CAP, OUTPUT_CAP};

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

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn pointers(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    /// A cache pointer's fields (a ConfigMap's data), if it exists.
    pub(super) async fn pointer(
        &self,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, SandboxError> {
        match self.pointers().get_opt(name).await? {
            Some(map) => Ok(Some(map.data.unwrap_or_default().into_iter().collect())),
            None => Ok(None),
        }
    }

    /// Records a pointer; when another worker recorded one first, its fields are returned.
    pub(super) async fn create_pointer(
        &self,
        name: &str,
        fields: HashMap<String, String>,
    ) -> Result<HashMap<String, String>, SandboxError> {
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(deps_labels("pointer")),
                ..Default::default()
            },
            data: Some(fields.clone().into_iter().collect()),
            ..Default::default()
        };
        match self.pointers().create(&PostParams::default(), &map).await {
            Ok(_) => Ok(fields),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                Ok(self.pointer(name).await?.unwrap_or(fields))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn claim_exists(&self, name: &str) -> Result<bool, SandboxError> {
        let claim = self.claims().get_opt(name).await?;
        // A claim being deleted (its pods still using it) is no cache to mount.
        Ok(claim.is_some_and(|c| c.metadata.deletion_timestamp.is_none()))
    }

    /// A new claim for a cache of `bytes`, its fields kept as annotations.
    pub(super) async fn create_claim(
        &self,
        name: &str,
        fields: HashMap<String, String>,
        bytes: i64,
    ) -> Result<(), SandboxError> {
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(deps_labels("data")),
                annotations: Some(fields.into_iter().collect()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec![self.config.cache_access_mode.clone()]),
                storage_class_name: self.config.cache_storage_class.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".into(),
                        Quantity(bytes.to_string()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let made = self.claims().create(&PostParams::default(), &claim).await?;
        // Admission fills in the default StorageClass; none there means the claim would stay
        // Pending and every fetch wait out its start timeout.
        let class = made.spec.and_then(|s| s.storage_class_name);
        if class.is_none() {
            self.delete_cache_object(name, false).await;
            return Err(SandboxError::Unstartable(
                "the cluster has no default StorageClass for the dependency caches: set SELFHEAL_SANDBOX_CACHE_STORAGE_CLASS".into(),
            ));
        }
        Ok(())
    }

    /// Deletes a claim or a pointer; `false` when the API refused (it stays).
    pub(super) async fn delete_cache_object(&self, name: &str, pointer: bool) -> bool {
        let deleted = if pointer {
            self.pointers()
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ())
        } else {
            self.claims()
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ())
        };
        match deleted {
            Ok(()) => true,
            Err(kube::Error::Api(e)) if e.code == 404 => true,
            Err(e) => {
                tracing::warn!(%name, error = %e, "could not delete a dependency cache object");
                false
            }
        }
    }

    /// Every cache object: pointers (ConfigMaps) and data (claims), with their fields.
    pub(super) async fn cache_objects(
        &self,
    ) -> Result<Vec<(String, HashMap<String, String>)>, SandboxError> {
        let selector = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
        let mut out = Vec::new();
        for map in self.pointers().list(&selector).await?.items {
            let name = map.metadata.name.unwrap_or_default();
            out.push((name, map.data.unwrap_or_default().into_iter().collect()));
        }
        for claim in self.claims().list(&selector).await?.items {
            let name = claim.metadata.name.unwrap_or_default();
            let fields = claim.metadata.annotations.unwrap_or_default();
            out.push((name, fields.into_iter().collect()));
        }
        Ok(out)
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

fn deps_labels(kind: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (DEPS_LABEL.to_string(), kind.to_string()),
    ])
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

/// How a run ended, from the pod's status.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct End {
    pub exit_code: i64,
    pub oom_killed: bool,
    pub evicted: bool,
    pub timed_out: bool,
}

/// Where a sandbox pod is, read from the status the kubelet writes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Progress {
    /// Not started yet, with the reason when the pod gives one.
    Starting(String),
    /// `receive` is running: the checkout can be sent.
    Receiving,
    /// `run` is running (or about to).
    Running,
    /// `run` finished, or the pod was stopped around it.
    Over(End),
    /// The pod cannot run: an image that cannot be pulled, a config the kubelet refuses, or
    /// the checkout that `receive` could not unpack.
    Refused(String),
}

/// Waiting reasons that do not clear by themselves.
const STUCK: [&str; 4] = [
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
];

pub(super) fn progress(pod: &Pod) -> Progress {
    let Some(status) = &pod.status else {
        return Progress::Starting("the pod has no status yet".into());
    };
    let reason = status.reason.clone().unwrap_or_default();
    // The kubelet evicts a pod whose emptyDir outgrew its sizeLimit (or the node's disk ran
    // short): the Docker backend's disk meter, done by the cluster.
    if reason == "Evicted" || reason == "DeadlineExceeded" {
        return Progress::Over(End {
            exit_code: run_terminated(pod).map_or(-1, |t| i64::from(t.exit_code)),
            oom_killed: false,
            evicted: reason == "Evicted",
            timed_out: reason == "DeadlineExceeded",
        });
    }
    let init = status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default();
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    for c in init.iter().chain(containers) {
        if let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let why = waiting.reason.clone().unwrap_or_default();
            if STUCK.contains(&why.as_str()) {
                return Progress::Refused(format!(
                    "container {} cannot start: {why}: {}",
                    c.name,
                    waiting.message.clone().unwrap_or_default()
                ));
            }
        }
    }
    if let Some(done) = run_terminated(pod) {
        return Progress::Over(End {
            exit_code: i64::from(done.exit_code),
            oom_killed: done.reason.as_deref() == Some("OOMKilled"),
            evicted: false,
            timed_out: false,
        });
    }
    let run = containers.iter().find(|c| c.name == "run");
    if run
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.running.as_ref())
        .is_some()
    {
        return Progress::Running;
    }
    if let Some(receive) = init.iter().find(|c| c.name == "receive") {
        let state = receive.state.as_ref();
        if state.and_then(|s| s.running.as_ref()).is_some() {
            return Progress::Receiving;
        }
        if let Some(done) = state.and_then(|s| s.terminated.as_ref()) {
            if done.exit_code != 0 {
                return Progress::Refused(format!(
                    "unpacking the checkout failed (exit {})",
                    done.exit_code
                ));
            }
            return Progress::Running;
        }
        if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
            return Progress::Starting(format!(
                "{}: {}",
                waiting.reason.clone().unwrap_or_default(),
                waiting.message.clone().unwrap_or_default()
            ));
        }
    }
    let unscheduled = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    Progress::Starting(match unscheduled {
        Some(c) => format!("not scheduled: {}", c.message.clone().unwrap_or_default()),
        None => format!("pod {}", status.phase.clone().unwrap_or_default()),
    })
}

fn run_terminated(pod: &Pod) -> Option<&ContainerStateTerminated> {
    let containers = pod.status.as_ref()?.container_statuses.as_ref()?;
    let run = containers.iter().find(|c| c.name == "run")?;
    run.state.as_ref()?.terminated.as_ref()
}

/// The Job for one run. Pure, so that what it asks of the cluster is tested without one.
pub(super) fn job_for(name: &str, spec: &RunSpec<'_>, config: &ClusterConfig) -> Job {
    let labels = BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (NETWORK_LABEL.to_string(), spec.network.to_string()),
    ]);
    let uid = archive::SANDBOX_UID as i64;
    // The `restricted` Pod Security profile, container by container.
    let locked = || SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let work = |read_only: bool| VolumeMount {
        name: "work".into(),
        mount_path: "/work".into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let limits = spec.limits;
    let cpu = format!("{}m", (limits.cpus * 1000.0).round().max(1.0) as i64);
    let storage = (limits.work_bytes + (512 << 20)).to_string();
    let small = ResourceRequirements {
        limits: Some(BTreeMap::from([
            ("cpu".into(), Quantity("100m".into())),
            ("memory".into(), Quantity("64Mi".into())),
            ("ephemeral-storage".into(), Quantity("64Mi".into())),
        ])),
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("10m".into())),
            ("memory".into(), Quantity("16Mi".into())),
            ("ephemeral-storage".into(), Quantity("16Mi".into())),
        ])),
        ..Default::default()
    };
    let env = spec
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| EnvVar {
            name: k.into(),
            value: Some(v.into()),
            ..Default::default()
        })
        .collect();
    let mut run_mounts = vec![
        work(false),
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    ];
    let mut volumes = vec![
        Volume {
            name: "work".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(limits.work_bytes.to_string())),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity("512Mi".into())),
            }),
            ..Default::default()
        },
    ];
    if let Some((claim, writable)) = &spec.deps {
        volumes.push(Volume {
            name: "deps".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(!writable),
            }),
            ..Default::default()
        });
        run_mounts.push(VolumeMount {
            name: "deps".into(),
            mount_path: "/deps".into(),
            read_only: Some(!writable),
            ..Default::default()
        });
    }
    let mut containers = vec![Container {
        name: "run".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["sh".into(), "-c".into(), spec.script.clone()]),
        working_dir: Some("/work/repo".into()),
        env: Some(env),
        volume_mounts: Some(run_mounts),
        resources: Some(ResourceRequirements {
            limits: Some(BTreeMap::from([
                ("cpu".into(), Quantity(cpu.clone())),
                ("memory".into(), Quantity(limits.memory_bytes.to_string())),
                // The work volume, the container's own layer and its logs together: the node's
                // disk is shared, so a run may not take more of it than its volume's size.
                ("ephemeral-storage".into(), Quantity(storage.clone())),
            ])),
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity(cpu)),
                ("memory".into(), Quantity(limits.memory_bytes.to_string())),
                ("ephemeral-storage".into(), Quantity(storage)),
            ])),
            ..Default::default()
        }),
        security_context: Some(locked()),
        ..Default::default()
    }];
    if spec.collect.is_some() {
        containers.push(Container {
            name: "collect".into(),
            image: Some(spec.image.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            // Outlives the run by the time the worker needs to exec in it; the Job's deadline
            // ends it if the worker never comes.
            command: Some(vec![
                "sleep".into(),
                (limits.timeout.as_secs() + 600).to_string(),
            ]),
            volume_mounts: Some(vec![work(true)]),
            resources: Some(small.clone()),
            security_context: Some(locked()),
            ..Default::default()
        });
    }
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            // A backstop for a worker that died mid-run: the run's own timeout is the worker's,
            // counted from the checkout; this one also covers scheduling and image pulls.
            active_deadline_seconds: Some(
                (limits.timeout + config.start_timeout).as_secs() as i64 + 600,
            ),
            ttl_seconds_after_finished: Some(600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    // Deleted, the run stops at once: no 30 s grace for the repository's code.
                    termination_grace_period_seconds: Some(1),
                    runtime_class_name: config.runtime_class.clone(),
                    // The repository's code gets no credentials for the cluster, and no list
                    // of the namespace's services in its environment.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(uid),
                        run_as_group: Some(uid),
                        fs_group: Some(uid),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    volumes: Some(volumes),
                    init_containers: Some(vec![Container {
                        name: "receive".into(),
                        image: Some(spec.image.clone()),
                        image_pull_policy: Some("IfNotPresent".into()),
                        command: Some(vec![
                            "tar".into(),
                            "-x".into(),
                            "-f".into(),
                            "-".into(),
                            "-C".into(),
                            "/work".into(),
                        ]),
                        stdin: Some(true),
                        stdin_once: Some(true),
                        volume_mounts: Some(vec![work(false)]),
                        resources: Some(small),
                        security_context: Some(locked()),
                        ..Default::default()
                    }]),
                    containers,
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "selfheal-abc-x1"},
            "status": status,
        }))
        .unwrap()
    }

    fn terminated(name: &str, code: i32, reason: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"terminated": {"exitCode": code, "reason": reason}}})
    }

    fn waiting(name: &str, reason: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": reason, "message": "m"}}})
    }

    #[test]
    fn the_end_of_a_run_is_read_from_the_kubelets_status() {
        let done = pod(serde_json::json!({
            "phase": "Running",
            "initContainerStatuses": [terminated("receive", 0, "Completed")],
            "containerStatuses": [terminated("run", 3, "Error"),
                {"name": "collect", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                 "state": {"running": {}}}],
        }));
        assert_eq!(
            progress(&done),
            Progress::Over(End {
                exit_code: 3,
                oom_killed: false,
                evicted: false,
                timed_out: false
            })
        );
        let oom = pod(serde_json::json!({
            "phase": "Failed",
            "containerStatuses": [terminated("run", 137, "OOMKilled")],
        }));
        assert!(matches!(
            progress(&oom),
            Progress::Over(End {
                oom_killed: true,
                exit_code: 137,
                ..
            })
        ));
        let evicted = pod(serde_json::json!({"phase": "Failed", "reason": "Evicted",
            "message": "Usage of EmptyDir volume \"work\" exceeds the limit \"8Gi\"."}));
        assert!(matches!(
            progress(&evicted),
            Progress::Over(End { evicted: true, .. })
        ));
        let deadline = pod(serde_json::json!({"phase": "Failed", "reason": "DeadlineExceeded"}));
        assert!(matches!(
            progress(&deadline),
            Progress::Over(End {
                timed_out: true,
                ..
            })
        ));
    }

    #[test]
    fn a_pod_that_cannot_start_says_why_instead_of_waiting_out_its_timeout() {
        let pull = pod(serde_json::json!({"phase": "Pending",
            "initContainerStatuses": [waiting("receive", "ImagePullBackOff")]}));
        assert!(
            matches!(progress(&pull), Progress::Refused(why) if why.contains("ImagePullBackOff"))
        );
        // A first pull error is retried by the kubelet: still starting.
        let first = pod(serde_json::json!({"phase": "Pending",
            "initContainerStatuses": [waiting("receive", "ErrImagePull")]}));
        assert!(matches!(progress(&first), Progress::Starting(_)));
        let unpack = pod(serde_json::json!({"phase": "Failed",
            "initContainerStatuses": [terminated("receive", 2, "Error")]}));
        assert!(matches!(progress(&unpack), Progress::Refused(_)));
        let unscheduled = pod(serde_json::json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient memory."}]}));
        assert!(
            matches!(progress(&unscheduled), Progress::Starting(why) if why.contains("Insufficient memory"))
        );
    }

    #[test]
    fn the_job_meets_the_restricted_profile_and_carries_the_runs_limits() {
        let limits = Limits::default();
        let spec = RunSpec {
            image: "img".into(),
            archive: vec![],
            script: "make test".into(),
            env: vec!["HOME=/tmp".into(), "A=b=c".into()],
            collect: Some("diff"),
            limits: &limits,
            network: "none",
            deps: Some(("selfheal-depsdata-x".into(), false)),
        };
        let mut config = ClusterConfig::new("ci");
        config.runtime_class = Some("gvisor".into());
        let job = job_for("selfheal-0123456789ab", &spec, &config);
        let job_spec = job.spec.unwrap();
        // One try, no restart: a failure is the verdict, not something to retry in place.
        assert_eq!(job_spec.backoff_limit, Some(0));
        assert!(job_spec.active_deadline_seconds.unwrap() > limits.timeout.as_secs() as i64);
        assert!(job_spec.ttl_seconds_after_finished.is_some());
        let pod = job_spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.termination_grace_period_seconds, Some(1));
        assert_eq!(pod.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.enable_service_links, Some(false));
        let pod_sc = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_sc.fs_group, Some(1000));
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        let work = &pod.volumes.as_ref().unwrap()[0];
        assert_eq!(
            work.empty_dir.as_ref().unwrap().size_limit,
            Some(Quantity(limits.work_bytes.to_string()))
        );
        let all: Vec<&Container> = pod
            .init_containers
            .iter()
            .flatten()
            .chain(&pod.containers)
            .collect();
        assert_eq!(all.len(), 3);
        for c in all {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(
                sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
                Some("RuntimeDefault")
            );
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..])
            );
            let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
            // The node's disk is shared: every container's share of it is bounded.
            assert!(limits.contains_key("ephemeral-storage"), "{}", c.name);
        }
        let run = &pod.containers[0];
        let env = run.env.as_ref().unwrap();
        assert_eq!(env[1].name, "A");
        assert_eq!(env[1].value.as_deref(), Some("b=c"));
        let mem = &run.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"];
        assert_eq!(mem.0, (1i64 << 30).to_string());
        // The collector only reads; so does a run of the dependency cache it mounts.
        assert_eq!(
            pod.containers[1].volume_mounts.as_ref().unwrap()[0].read_only,
            Some(true)
        );
        let deps = &run.volume_mounts.as_ref().unwrap()[2];
        assert_eq!(
            (deps.mount_path.as_str(), deps.read_only),
            ("/deps", Some(true))
        );
        let claim = pod.volumes.as_ref().unwrap()[2]
            .persistent_volume_claim
            .as_ref()
            .unwrap();
        assert_eq!(claim.read_only, Some(true));
    }
}
