//! Runs a repository's commands in a Docker container (bollard): no network, memory, CPU and
//! pids limits, a wall-clock timeout, read-only root with a writable work volume, the host's
//! Rust toolchain mounted read-only, and the container and volume removed afterwards.
//! Everything is labelled so that what a crashed worker left behind is swept at the next start.
//! Or, on a cluster, as one Kubernetes Job per run (`kubernetes`): the same image, user, limits
//! and script, with the cluster's own isolation.

mod archive;
pub mod deps;
mod image;
pub mod kubernetes;
mod owner;
pub mod toolchain;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, NetworkCreateRequest,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

pub use image::{ensure_image, image_tag, Images};
pub use owner::LABEL;
pub use toolchain::Language;

use archive::work_archive;

use crate::changes::ChangeSet;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("Docker is unreachable: {0}")]
    Connect(String),
    #[error("Docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("Kubernetes: {0}")]
    Kubernetes(#[from] kube::Error),
    #[error("the Kubernetes API is unreachable: {0}")]
    Cluster(String),
    /// The cluster cannot start the sandbox (an image it cannot pull, a config it refuses).
    #[error("the sandbox cannot start: {0}")]
    Unstartable(String),
    /// Asked of a backend that does not do it (a Docker-only feature on the Kubernetes one).
    #[error("the {backend} sandbox backend does not {what}")]
    Unsupported {
        backend: &'static str,
        what: &'static str,
    },
    #[error("preparing the work dir: {0}")]
    Io(#[from] std::io::Error),
    #[error("building the sandbox image failed: {0}")]
    Image(String),
    #[error("refused: {0}")]
    TooLarge(String),
    #[error("{0}")]
    Gone(String),
    #[error("reading the repository's dependency manifests: {0}")]
    Input(String),
    /// A run found the dependency cache changed since it was fetched; the cache is forgotten
    /// and the next preparation fetches it again.
    #[error("the dependency cache {0} does not match its digest: forgotten, to be fetched again")]
    Tampered(String),
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_bytes: i64,
    pub cpus: f64,
    pub pids: i64,
    pub timeout: Duration,
    /// The work volume (the checkout, build output, caches) may hold this much.
    pub work_bytes: i64,
    /// How often the work volume is measured.
    pub watch_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 1 << 30,
            cpus: 1.0,
            pids: 512,
            timeout: Duration::from_secs(600),
            work_bytes: 8 << 30,
            watch_interval: Duration::from_secs(5),
        }
    }
}

/// What one container run did.
#[derive(Debug, Clone)]
pub struct Execution {
    pub exit_code: i64,
    /// Combined stdout and stderr (the tail, when long).
    pub output: String,
    pub timed_out: bool,
    pub oom_killed: bool,
    /// Killed because its work volume outgrew `Limits::work_bytes` (or hid from the count).
    pub disk_full: bool,
    pub duration: Duration,
}

impl Execution {
    pub fn passed(&self) -> bool {
        self.exit_code == 0 && !self.timed_out && !self.oom_killed && !self.disk_full
    }
}

/// Where the containers run.
#[derive(Clone)]
enum Engine {
    Docker(Docker),
    Kubernetes(kubernetes::Cluster),
}

#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
    images: Images,
    pub limits: Limits,
    rust_toolchain: Option<PathBuf>,
    /// The repository's fetched dependencies, mounted read-only in every run (see `prepare`).
    deps: Option<(deps::Plan, deps::Ready)>,
    /// The toolchain the failing job sets up, when it names one; else the build files decide.
    language: Option<Language>,
}

/// The network of dependency fetches: a bridge of its own on which containers cannot reach
/// each other. What else it reaches (the host, cloud metadata, internal services) is the
/// deployment's to restrict with an egress policy (SECURITY.md).
const FETCH_NETWORK: &str = "selfheal-fetch";

/// How one container is set up: a run of the repository's command (no network, the
/// dependencies read-only) or a dependency fetch (a network, the new cache writable).
#[derive(Clone, Copy)]
enum Mode<'a> {
    Run,
    Fetch { deps_volume: &'a str },
}

const OUTPUT_CAP: usize = 256 * 1024;
/// A file brought back from a container (a capture of changed files) is at most this big.
const COLLECT_CAP: usize = crate::changes::MAX_CAPTURE_BYTES + 1024 * 1024;

impl Sandbox {
    /// Connects (negotiating the API version: Debian's dockerd speaks older ones than
    /// bollard's default) and sweeps containers and volumes a crashed run left behind.
    pub async fn connect(images: Images, limits: Limits) -> Result<Sandbox, SandboxError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| SandboxError::Connect(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| SandboxError::Connect(e.to_string()))?;
        owner::sweep(&docker).await?;
        Ok(Sandbox {
            engine: Engine::Docker(docker),
            images,
            limits,
            rust_toolchain: host_rust_toolchain(),
            deps: None,
            language: None,
        })
    }

    /// Runs every sandbox as a Job on `cluster`. Its images come from a registry the cluster
    /// pulls from (`Images::Own`, `{language}` in the name standing for the language), or
    /// carry the recipe's tags for nodes that have them; nothing of the worker's host is
    /// mounted, so a Rust image brings its own toolchain at `/opt/rust`.
    pub fn on_cluster(cluster: kubernetes::Cluster, images: Images, limits: Limits) -> Sandbox {
        Sandbox {
            engine: Engine::Kubernetes(cluster),
            images,
            limits,
            rust_toolchain: None,
            deps: None,
            language: None,
        }
    }

    /// The Docker engine, for what only it does (dependency caches on volumes, building the
    /// recipe's images).
    fn engine_docker(&self, what: &'static str) -> Result<&Docker, SandboxError> {
        match &self.engine {
            Engine::Docker(docker) => Ok(docker),
            Engine::Kubernetes(_) => Err(SandboxError::Unsupported {
                backend: "Kubernetes",
                what,
            }),
        }
    }

    async fn ensure_fetch_network(&self) -> Result<(), SandboxError> {
        let docker = self.engine_docker("fetch dependencies")?;
        match docker.inspect_network(FETCH_NETWORK, None).await {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        let made = docker
            .create_network(NetworkCreateRequest {
                name: FETCH_NETWORK.into(),
                driver: Some("bridge".into()),
                options: Some(HashMap::from([(
                    "com.docker.network.bridge.enable_icc".to_string(),
                    "false".to_string(),
                )])),
                ..Default::default()
            })
            .await;
        match made {
            Ok(_) => Ok(()),
            // Another worker made it first.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The dependency cache volume this sandbox mounts, if any.
    pub fn deps_volume(&self) -> Option<String> {
        self.deps.as_ref().map(|(_, cache)| cache.volume.clone())
    }

    /// Forgets the dependency cache this sandbox mounts (after a run found it changed): the
    /// next preparation fetches it again.
    pub async fn forget_deps(&self) {
        if let Some((plan, _)) = &self.deps {
            self.forget_cache(plan).await;
        }
    }

    /// Mounts this toolchain (a Rust sysroot) at `/opt/rust` instead of the host's own (on
    /// Docker; a Job cannot mount the worker's files).
    pub fn with_rust_toolchain(mut self, sysroot: PathBuf) -> Sandbox {
        if let Engine::Docker(_) = self.engine {
            self.rust_toolchain = Some(sysroot);
        }
        self
    }

    /// Runs in `language`'s image whatever the repository's build files say (the failing
    /// job set that toolchain up; see [`Language::choose`]).
    pub fn for_language(mut self, language: Language) -> Sandbox {
        self.language = Some(language);
        self
    }

    /// The language whose image and dependency fetch serve `repo`.
    pub fn language_of(&self, repo: &Path) -> Language {
        self.language.unwrap_or_else(|| Language::of(repo))
    }

    /// The image for this repository's language (built on first use).
    pub async fn image_for(&self, repo: &Path) -> Result<String, SandboxError> {
        self.image(self.language_of(repo)).await
    }

    async fn image(&self, language: Language) -> Result<String, SandboxError> {
        match &self.engine {
            Engine::Docker(docker) => ensure_image(docker, &self.images, language).await,
            // The cluster pulls it.
            Engine::Kubernetes(_) => Ok(self.images.name(language)),
        }
    }

    /// The version of `language`'s toolchain in the sandbox, in its own words (`Python
    /// 3.11.2`): the image's label, written by the recipe when it built the image, or for
    /// Rust the mounted toolchain's `rustc --version`. `None` when neither says.
    pub async fn toolchain_version(&self, language: Language) -> Option<String> {
        if let Engine::Kubernetes(cluster) = &self.engine {
            return cluster
                .toolchain_version(language, || self.asked_version(language))
                .await;
        }
        if language == Language::Rust {
            let rustc = self.rust_toolchain.as_ref()?.join("bin/rustc");
            let out = tokio::process::Command::new(rustc)
                .arg("--version")
                .output()
                .await
                .ok()?;
            return out
                .status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        let docker = self.engine_docker("inspect images").ok()?;
        let image = ensure_image(docker, &self.images, language).await.ok()?;
        let inspected = docker.inspect_image(&image).await.ok()?;
        inspected.config?.labels?.get(image::VERSION_LABEL).cloned()
    }

    /// On a cluster, whose images are not inspected from here: the toolchain says its version
    /// in a run of its own (the same words the recipe writes into its image's label).
    async fn asked_version(&self, language: Language) -> Option<String> {
        let command = match language {
            Language::Python => "python3 --version",
            Language::Node => "echo \"node $(node --version)\"",
            Language::Go => "go version",
            Language::Java => "javac -version",
            Language::Rust => "rustc --version",
        };
        let empty = tempfile::tempdir().ok()?;
        let archive = work_archive(empty.path(), None, &[]).ok()?;
        let script = format!("{command} 2>&1");
        let (run, _) = self
            .run_in_volume("selfheal", language, archive, &script, None, Mode::Run)
            .await
            .ok()?;
        // What the image printed is only shown as evidence: one short printable line.
        let line = run.output.lines().map(str::trim).find(|l| !l.is_empty())?;
        run.passed()
            .then(|| line.chars().filter(|c| !c.is_control()).take(120).collect())
    }

    /// The Docker engine, when the sandbox runs on one.
    pub fn docker(&self) -> Option<&Docker> {
        self.engine_docker("").ok()
    }

    /// Copies `repo` to `/work/repo` in a fresh container and runs `script` there with `sh`.
    /// `collect` names a file (relative to /work) to bring back, e.g. a diff.
    pub async fn run(
        &self,
        repo: &Path,
        script: &str,
        collect: Option<&str>,
    ) -> Result<(Execution, Option<Vec<u8>>), SandboxError> {
        self.run_with(repo, None, &[], script, collect).await
    }

    /// Like [`Sandbox::run`], with `overlay` laid over the checkout (changed files replaced,
    /// deleted ones left out) and extra files (e.g. a patch) placed under `/work`.
    pub async fn run_with(
        &self,
        repo: &Path,
        overlay: Option<&ChangeSet>,
        files: &[(&str, &[u8])],
        script: &str,
        collect: Option<&str>,
    ) -> Result<(Execution, Option<Vec<u8>>), SandboxError> {
        // Built before anything exists in Docker, so a failure here leaves nothing behind.
        let archive = work_archive(repo, overlay, files)?;
        self.run_in_volume(
            "selfheal",
            self.language_of(repo),
            archive,
            script,
            collect,
            Mode::Run,
        )
        .await
    }

    /// A dependency fetch: `script` runs on a copy of `upload` (the checkout, or an empty
    /// folder) in `language`'s image, with a network and `deps_volume` writable at `/deps`;
    /// `/work/deps-report` comes back.
    async fn run_fetch(
        &self,
        upload: &Path,
        files: &[(&str, &[u8])],
        script: &str,
        deps_volume: &str,
        language: Language,
    ) -> Result<(Execution, Option<Vec<u8>>), SandboxError> {
        let archive = work_archive(upload, None, files)?;
        if let Engine::Docker(_) = self.engine {
            self.ensure_fetch_network().await?;
        }
        self.run_in_volume(
            "selfheal-fetch",
            language,
            archive,
            script,
            Some("deps-report"),
            Mode::Fetch { deps_volume },
        )
        .await
    }

    /// Runs `script` in a new container on a new work volume (named `<prefix>-<random>`)
    /// holding `archive`; container, meter and volume are removed afterwards, whatever
    /// happened.
    async fn run_in_volume(
        &self,
        prefix: &str,
        language: Language,
        archive: Vec<u8>,
        script: &str,
        collect: Option<&str>,
        mode: Mode<'_>,
    ) -> Result<(Execution, Option<Vec<u8>>), SandboxError> {
        let docker = match &self.engine {
            Engine::Docker(docker) => docker,
            Engine::Kubernetes(cluster) => {
                let (network, env, script, deps) = match mode {
                    Mode::Run => {
                        let mut env = language.env();
                        let mut prelude = String::new();
                        let mut deps = None;
                        if let Some((plan, cache)) = &self.deps {
                            if !cluster.claim_exists(&cache.volume).await? {
                                return Err(SandboxError::Gone(format!(
                                    "the dependency cache {} is gone; prepare again",
                                    cache.volume
                                )));
                            }
                            env.extend(deps::env(plan));
                            prelude = deps::prelude(plan, cache);
                            deps = Some((cache.volume.clone(), false));
                        }
                        ("none", env, format!("{prelude}{script}"), deps)
                    }
                    Mode::Fetch { deps_volume } => (
                        "fetch",
                        toolchain::COMMON_ENV.map(String::from).to_vec(),
                        script.to_string(),
                        Some((deps_volume.to_string(), true)),
                    ),
                };
                let spec = kubernetes::RunSpec {
                    image: self.image(language).await?,
                    archive,
                    script,
                    env,
                    collect,
                    limits: &self.limits,
                    network,
                    deps,
                };
                return cluster.run(spec).await;
            }
        };
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let labels = owner::labels(self.limits.timeout);
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await?;
        let guard = Cleanup::new(docker.clone(), name.clone());
        let result = self
            .run_in(
                docker, &name, labels, language, archive, script, collect, mode,
            )
            .await;
        guard.remove().await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_in(
        &self,
        docker: &Docker,
        name: &str,
        labels: HashMap<String, String>,
        language: Language,
        archive: Vec<u8>,
        script: &str,
        collect: Option<&str>,
        mode: Mode<'_>,
    ) -> Result<(Execution, Option<Vec<u8>>), SandboxError> {
        let image = ensure_image(docker, &self.images, language).await?;
        let mut mounts = vec![Mount {
            target: Some("/work".into()),
            source: Some(name.to_string()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }];
        let (network, env, script) = match mode {
            Mode::Run => {
                let mut env = language.env();
                let mut prelude = String::new();
                if let Some((plan, cache)) = &self.deps {
                    // Docker would make an empty volume of a pruned one's name: the digest
                    // check would refuse it, but this is a retry, not a failed run.
                    if let Err(e) = docker.inspect_volume(&cache.volume).await {
                        return Err(SandboxError::Gone(format!(
                            "the dependency cache {} is gone ({e}); prepare again",
                            cache.volume
                        )));
                    }
                    mounts.push(Mount {
                        target: Some("/deps".into()),
                        source: Some(cache.volume.clone()),
                        typ: Some(MountType::VOLUME),
                        read_only: Some(true),
                        ..Default::default()
                    });
                    env.extend(deps::env(plan));
                    prelude = deps::prelude(plan, cache);
                }
                ("none", env, format!("{prelude}{script}"))
            }
            Mode::Fetch { deps_volume } => {
                mounts.push(Mount {
                    target: Some("/deps".into()),
                    source: Some(deps_volume.to_string()),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                });
                let env = toolchain::COMMON_ENV.map(String::from).to_vec();
                (FETCH_NETWORK, env, script.to_string())
            }
        };
        if let Some(toolchain) = &self.rust_toolchain {
            mounts.push(Mount {
                target: Some("/opt/rust".into()),
                source: Some(toolchain.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            });
        }
        let host = HostConfig {
            network_mode: Some(network.into()),
            memory: Some(self.limits.memory_bytes),
            memory_swap: Some(self.limits.memory_bytes),
            nano_cpus: Some((self.limits.cpus * 1e9) as i64),
            pids_limit: Some(self.limits.pids),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                "rw,exec,nosuid,size=512m".to_string(),
            )])),
            mounts: Some(mounts),
            // Not root, and no capability at all: the repository's code owns its work tree and
            // nothing else.
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            // What the repository's code prints is kept on the engine's disk too: bounded.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "8m".to_string()),
                    ("max-file".to_string(), "1".to_string()),
                ])),
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(vec!["sh".into(), "-c".into(), script]),
            working_dir: Some("/work/repo".into()),
            env: Some(env),
            labels: Some(labels.clone()),
            user: Some(format!("{}:{}", archive::SANDBOX_UID, archive::SANDBOX_UID)),
            network_disabled: Some(network == "none"),
            host_config: Some(host),
            ..Default::default()
        };
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(name).build()),
                body,
            )
            .await?;
        docker
            .upload_to_container(
                name,
                Some(
                    UploadToContainerOptionsBuilder::default()
                        .path("/work")
                        .build(),
                ),
                bollard::body_full(archive.into()),
            )
            .await?;

        let started = Instant::now();
        docker
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await?;
        let deps_volume = match mode {
            Mode::Fetch { deps_volume } => Some(deps_volume),
            Mode::Run => None,
        };
        let meter = watch::start_meter(docker, name, deps_volume, &image, labels).await;
        let stopped = watch::watch(docker, name, meter.as_deref(), &self.limits).await;
        let timed_out = stopped == watch::Stopped::TimedOut;
        let duration = started.elapsed();
        let state = docker
            .inspect_container(name, None)
            .await?
            .state
            .unwrap_or_default();

        let mut logs = docker.logs(
            name,
            Some(
                LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        );
        let mut output = Vec::new();
        while let Some(chunk) = logs.next().await {
            output.extend_from_slice(&chunk?.into_bytes());
            if output.len() > OUTPUT_CAP * 2 {
                output.drain(..output.len() - OUTPUT_CAP);
            }
        }
        if output.len() > OUTPUT_CAP {
            output.drain(..output.len() - OUTPUT_CAP);
        }
        let execution = Execution {
            exit_code: state.exit_code.unwrap_or(-1),
            output: String::from_utf8_lossy(&output).into_owned(),
            timed_out,
            oom_killed: state.oom_killed.unwrap_or(false),
            disk_full: stopped == watch::Stopped::DiskFull,
            duration,
        };
        let collected = match collect {
            Some(path) => download_file(docker, name, &format!("/work/{path}")).await?,
            None => None,
        };
        Ok((execution, collected))
    }
}

async fn download_file(
    docker: &Docker,
    name: &str,
    path: &str,
) -> Result<Option<Vec<u8>>, SandboxError> {
    let mut stream = docker.download_from_container(
        name,
        Some(
            DownloadFromContainerOptionsBuilder::default()
                .path(path)
                .build(),
        ),
    );
    // Whatever the container left there is the repository's code's doing: bounded.
    let mut tarball = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                tarball.extend_from_slice(&bytes);
                if tarball.len() > COLLECT_CAP {
                    return Err(SandboxError::TooLarge(format!(
                        "{path} in the sandbox is over {COLLECT_CAP} bytes"
                    )));
                }
            }
            // The file was not written: nothing to bring back.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    first_file(&tarball)
}

/// The first regular file in a tarball a sandbox handed back (a link in its place brings
/// nothing back), bounded.
fn first_file(tarball: &[u8]) -> Result<Option<Vec<u8>>, SandboxError> {
    let mut archive = tar::Archive::new(tarball);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let mut data = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(&mut entry, COLLECT_CAP as u64),
                &mut data,
            )?;
            return Ok(Some(data));
        }
    }
    Ok(None)
}

struct Cleanup {
    docker: Docker,
    name: String,
    /// Still to do: the run was not finished with `remove` (its future was dropped, e.g. a
    /// stage given up past its limit), so dropping the guard removes everything in the
    /// background instead of leaving a container running with nobody to stop it.
    armed: bool,
}

impl Cleanup {
    fn new(docker: Docker, name: String) -> Self {
        Cleanup {
            docker,
            name,
            armed: true,
        }
    }

    async fn remove(mut self) {
        self.armed = false;
        Self::remove_all(self.docker.clone(), self.name.clone()).await;
    }

    async fn remove_all(docker: Docker, name: String) {
        let _ = docker
            .remove_container(
                &name,
                Some(
                    RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await;
        let _ = docker
            .remove_container(
                &watch::meter_name(&name),
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
        let _ = docker
            .remove_volume(
                &name,
                Some(RemoveVolumeOptionsBuilder::default().force(true).build()),
            )
            .await;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(Self::remove_all(
                self.docker.clone(),
                std::mem::take(&mut self.name),
            ));
        }
    }
}

/// The host's Rust toolchain (its sysroot), shared read-only with the sandbox.
fn host_rust_toolchain() -> Option<PathBuf> {
    let out = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    path.join("bin/cargo").exists().then_some(path)
}

/// Best effort at process start: a worker on a machine without Docker still triages.
pub async fn sweep_at_start() {
    let docker = match Docker::connect_with_local_defaults() {
        Ok(d) => d,
        Err(_) => return,
    };
    let Ok(docker) = docker.negotiate_version().await else {
        tracing::info!("Docker unreachable: the sandbox stages will fail until it is back");
        return;
    };
    if let Err(e) = owner::sweep(&docker).await {
        tracing::warn!(error = %e, "could not sweep leftover sandbox containers");
    }
}
