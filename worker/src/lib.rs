//! The worker: pulls stage jobs from Redis (apalis) and carries each run through
//! triage -> diagnose -> patch -> validate -> verify -> deliver, recording every attempt.

mod admission;
pub mod ai_spend;
pub mod assistant;
mod branches;
mod chatops;
mod deadline;
mod event_sinks;
pub mod fix_memory;
pub mod metrics;
// The engine, under the names the stages have always used.
pub use selfheal_engine::{changes, diagnose, heal, policy, sandbox, workflow};
mod pipeline;
pub mod redeliver;
mod stages;
mod startup;

/// What a repository or a log puts in front of the worker, parsed or rendered as the worker
/// does it: for the fuzzing harnesses (`fuzzing/`), which must reach them from outside.
pub mod inputs {
    pub use crate::stages::deliver::markdown;
    pub use crate::stages::repo_config::{
        changed_lines, parse_with_defaults as repo_config, Defaults,
    };
}

use std::future::Future;
use std::sync::Arc;

use apalis::prelude::*;
use deadpool_postgres::Pool;
use selfheal_shared::config::SandboxBackend;
use selfheal_shared::github::{GitHubApp, WritePacer};
use selfheal_shared::queue::{self, JobQueue};
use selfheal_shared::{db, outbox, Config};

/// What every stage needs, shared by the jobs of one worker process.
pub struct WorkerContext {
    pub pool: Pool,
    /// Connected on first use, so a worker without Docker still triages.
    pub sandbox: tokio::sync::OnceCell<sandbox::Sandbox>,
    pub heal: heal::HealOptions,
    /// The model service's budgets and prices, when one is configured.
    pub ai: Option<selfheal_shared::config::AiConfig>,
    /// Where earlier fixes of a failure are looked for (`SELFHEAL_FIX_MEMORY`).
    pub fix_memory: selfheal_shared::config::FixMemory,
    /// Diagnose and validate, but never write to GitHub.
    pub dry_run: bool,
    pub github: Arc<GitHubApp>,
    pub queue: Arc<JobQueue>,
    pub worker_id: String,
    pub database_url: String,
    pub log_cap_bytes: usize,
    /// Limits of every sandbox run.
    pub sandbox_limits: sandbox::Limits,
    pub sandbox_images: sandbox::Images,
    pub sandbox_rust_toolchain: Option<std::path::PathBuf>,
    pub sandbox_backend: SandboxBackend,
    /// Org-wide defaults under every repository's `.github/selfheal.yml`.
    pub repo_defaults: stages::repo_config::Defaults,
    /// One limit for every stage's attempt, instead of each stage's own.
    pub stage_timeout: Option<std::time::Duration>,
    /// One permit per job running in this process. The queue worker is built again when its
    /// Redis connection breaks, and the jobs the old one started run on: the permits keep the
    /// process within its concurrency across rebuilds, and shutdown waits for all of them.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// This worker's own figures (`SELFHEAL_METRICS_BIND`).
    pub metrics: Arc<metrics::WorkerMetrics>,
}

impl WorkerContext {
    pub async fn sandbox(&self) -> Result<&sandbox::Sandbox, sandbox::SandboxError> {
        self.sandbox
            .get_or_try_init(|| async {
                let sandbox = match &self.sandbox_backend {
                    SandboxBackend::Docker => {
                        sandbox::Sandbox::connect(
                            self.sandbox_images.clone(),
                            self.sandbox_limits.clone(),
                        )
                        .await?
                    }
                    SandboxBackend::Kubernetes { .. } => sandbox::Sandbox::on_cluster(
                        cluster(&self.sandbox_backend).await?,
                        self.sandbox_images.clone(),
                        self.sandbox_limits.clone(),
                    ),
                };
                Ok(match &self.sandbox_rust_toolchain {
                    Some(sysroot) => sandbox.with_rust_toolchain(sysroot.clone()),
                    None => sandbox,
                })
            })
            .await
    }
}

/// The cluster from the worker's kubeconfig (`KUBECONFIG`, `~/.kube/config`) or, in a pod,
/// its service account; the sandbox namespace defaults to the one that config names.
async fn cluster(
    backend: &SandboxBackend,
) -> Result<sandbox::kubernetes::Cluster, sandbox::SandboxError> {
    use sandbox::kubernetes::{kube, Cluster, ClusterConfig};
    let SandboxBackend::Kubernetes {
        namespace,
        runtime_class,
        cache_storage_class,
        cache_access_mode,
    } = backend.clone()
    else {
        return Err(sandbox::SandboxError::Cluster(
            "not the Kubernetes backend".into(),
        ));
    };
    let config = kube::Config::infer()
        .await
        .map_err(|e| sandbox::SandboxError::Cluster(e.to_string()))?;
    let mut cluster =
        ClusterConfig::new(namespace.unwrap_or_else(|| config.default_namespace.clone()));
    cluster.runtime_class = runtime_class;
    cluster.cache_storage_class = cache_storage_class;
    cluster.cache_access_mode = cache_access_mode;
    let client = kube::Client::try_from(config)
        .map_err(|e| sandbox::SandboxError::Cluster(e.to_string()))?;
    Ok(Cluster::new(client, cluster))
}

/// Keeps the dependency caches within their age and size, every ten minutes (every replica
/// does it; removing what another replica removed already is a no-op).
async fn prune_deps_forever(ctx: Arc<WorkerContext>, max_age: std::time::Duration, max_bytes: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tick.tick().await;
        let Ok(sandbox) = ctx.sandbox().await else {
            continue;
        };
        match sandbox.prune_deps(None, max_age, max_bytes).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "pruned dependency caches"),
            Err(e) => tracing::warn!(error = %e, "could not prune the dependency caches"),
        }
    }
}

/// The first pause before the queue worker is built again after it broke, and the most it
/// doubles to; a worker that ran this long before breaking starts from the first pause again.
const QUEUE_WORKER_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);
const QUEUE_WORKER_MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(10);
const QUEUE_WORKER_HEALTHY: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a Redis error says the server is away (a wait can cure it), not that the URL or the
/// credentials are wrong.
fn redis_outage(e: &redis::RedisError) -> bool {
    e.is_connection_refusal() || e.is_io_error() || e.is_timeout() || e.is_connection_dropped()
}

/// A name unique to this process, shown in `stage_attempts.worker_id`.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host = host.trim();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{}-{}-{}",
        if host.is_empty() { "worker" } else { host },
        std::process::id(),
        &nonce[..6]
    )
}

/// Runs until `shutdown` resolves: then stops taking jobs and lets the ones in flight finish
/// (up to the shutdown timeout; what is left is recovered by another worker).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // A typo in the org-wide defaults would apply everywhere: refuse to start instead.
    let repo_defaults = match &config.worker.repo_defaults {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("SELFHEAL_REPO_DEFAULTS {}: {e}", path.display()))?;
            stages::repo_config::Defaults::parse(&text)
                .map_err(|e| anyhow::anyhow!("SELFHEAL_REPO_DEFAULTS {}: {e}", path.display()))?
        }
        None => stages::repo_config::Defaults::default(),
    };
    let pool = db::pool(config.database_url(), config.worker.concurrency + 4)?;
    let wait = config.worker.outage_wait;
    startup::wait_for("Postgres", wait, db::DbError::is_outage, || async {
        drop(pool.get().await?);
        if config.migrate_at_start {
            db::migrate(&pool).await?;
        }
        Ok(())
    })
    .await?;
    let pacer = startup::wait_for("Redis", wait, redis_outage, || {
        WritePacer::connect(
            config.redis_url(),
            &config.queue_prefix,
            config.github.write_interval,
        )
    })
    .await
    .map_err(|e| anyhow::anyhow!("write pacing: cannot connect to Redis: {e}"))?;
    let github = Arc::new(GitHubApp::new(&config.github)?.with_pacer(pacer));
    let storage_config = queue::storage_config(
        &config.queue_prefix,
        config.worker.heartbeat,
        config.worker.missed_heartbeats,
    );
    // Fetch no more than can run at once: a job buffered behind a busy worker would wait
    // while another replica sits idle.
    let storage = startup::wait_for(
        "Redis",
        wait,
        |e| matches!(e, queue::QueueError::Connect(_)),
        || {
            queue::connect_storage(
                config.redis_url(),
                storage_config
                    .clone()
                    .batch_size(config.worker.concurrency.max(1)),
            )
        },
    )
    .await?;
    let queue = Arc::new(JobQueue::new(config.redis_url(), storage_config));
    let worker_id = worker_id();
    let metrics = Arc::new(metrics::WorkerMetrics::new(
        config.worker.concurrency.max(1),
    ));
    let metrics_server = match config.metrics_bind {
        Some(bind) => Some(metrics::serve(bind, metrics.clone()).await?),
        None => None,
    };
    let ctx = Arc::new(WorkerContext {
        pool: pool.clone(),
        sandbox: tokio::sync::OnceCell::new(),
        dry_run: config.gates.dry_run,
        heal: heal::HealOptions {
            reproduce_runs: config.worker.reruns,
            validate_runs: config.worker.reruns,
            assistant: config.worker.ai.as_ref().map(|ai| {
                let mut assistant = assistant::assistant(ai, assistant::own_secrets(&config));
                // The operator's floor (a repository can only tighten it; verify holds the
                // fix to the repository's own configuration too).
                if let Ok(floor) = stages::repo_config::parse_with_defaults(&repo_defaults, "") {
                    assistant.invariants = selfheal_engine::invariants::Limits {
                        protected_paths: floor.protected_paths,
                        max_diff_lines: floor.max_diff_lines,
                    };
                }
                assistant
            }),
            // Looked up per run (stages::patch).
            memory: None,
            culprits: Vec::new(),
            culprits_skipped: Vec::new(),
        },
        ai: config.worker.ai.clone(),
        fix_memory: config.worker.fix_memory,
        github: github.clone(),
        queue: queue.clone(),
        worker_id: worker_id.clone(),
        database_url: config.database_url().to_string(),
        log_cap_bytes: config.worker.log_cap_bytes,
        stage_timeout: config.worker.stage_timeout,
        sandbox_limits: sandbox::Limits {
            work_bytes: config.worker.sandbox_work_bytes,
            ..sandbox::Limits::default()
        },
        sandbox_images: match &config.worker.sandbox_image {
            Some(own) => sandbox::Images::Own(own.clone()),
            None => sandbox::Images::Recipe,
        },
        sandbox_rust_toolchain: config
            .worker
            .sandbox_rust_toolchain
            .as_ref()
            .map(std::path::PathBuf::from),
        sandbox_backend: config.worker.sandbox_backend.clone(),
        repo_defaults,
        in_flight: Arc::new(tokio::sync::Semaphore::new(
            config.worker.concurrency.max(1),
        )),
        metrics,
    });
    let sweeper = (!config.worker.redelivery_interval.is_zero()).then(|| {
        tokio::spawn(redeliver::sweep_forever(
            pool.clone(),
            github.clone(),
            config.worker.redelivery_interval,
        ))
    });
    // Containers a crashed predecessor left behind go now, not at the first patch.
    if config.worker.sandbox_backend == SandboxBackend::Docker {
        tokio::spawn(sandbox::sweep_at_start());
    }
    tokio::spawn(prune_deps_forever(
        ctx.clone(),
        config.worker.deps_cache_max_age,
        config.worker.deps_cache_max_bytes,
    ));
    let deadline = tokio::spawn(deadline::watch_forever(
        ctx.clone(),
        config.worker.fix_ci_deadline,
        // Often enough to say it within a tenth of the deadline, at most every minute.
        (config.worker.fix_ci_deadline / 10).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(60),
        ),
    ));
    let branches = tokio::spawn(branches::sweep_forever(
        ctx.clone(),
        config.worker.branch_sweep_interval,
    ));
    let events = config.worker.events.any().then(|| {
        tokio::spawn(event_sinks::deliver_forever(
            pool.clone(),
            config.worker.events.clone(),
            config.redis_url().to_string(),
        ))
    });
    let relay = tokio::spawn(outbox::relay_forever(
        pool,
        queue,
        config.worker.relay_interval,
        config.worker.requeue_after,
    ));
    tracing::info!(worker = %worker_id, concurrency = config.worker.concurrency, "selfheal worker starting");

    let concurrency = config.worker.concurrency;
    let poll_interval = config.worker.poll_interval;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested: finishing jobs in flight");
        let _ = stop_tx.send(true);
    });
    let mut pause = QUEUE_WORKER_PAUSE;
    let result = loop {
        let started = std::time::Instant::now();
        let mut stop = stop_rx.clone();
        // apalis logs why its worker ended but returns no error: keep the cause for the log
        // line below (restarting is this loop's to do, with a pause).
        let broke = Arc::new(std::sync::Mutex::new(None::<String>));
        let ended = Monitor::new()
            .should_restart({
                let broke = broke.clone();
                move |_, error| {
                    *broke.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
                    false
                }
            })
            .register({
                let (worker_id, storage, ctx) = (worker_id.clone(), storage.clone(), ctx.clone());
                move |_| {
                    WorkerBuilder::new(worker_id.clone())
                        // apalis-redis pushes every job as "scheduled" (run at now) without
                        // signalling an idle worker; without a periodic wake-up a job pushed
                        // while the worker is parked can wait until some other job completes.
                        .backend(storage.clone().poll_with_interval(poll_interval))
                        .data(ctx.clone())
                        .concurrency(concurrency)
                        .parallelize(tokio::spawn)
                        .build(pipeline::handle)
                }
            })
            .shutdown_timeout(config.worker.shutdown_timeout)
            .run_with_signal(async move {
                let _ = stop.wait_for(|stop| *stop).await;
                Ok(())
            })
            .await;
        if *stop_rx.borrow() {
            break ended;
        }
        // apalis ends a worker whose Redis connection broke (a Redis restart, a failover), and
        // its monitor returns as if asked to stop: the process would exit 0 with work left.
        // Build it again instead, pausing more while it keeps failing.
        if started.elapsed() > QUEUE_WORKER_HEALTHY {
            pause = QUEUE_WORKER_PAUSE;
        }
        let broke = broke.lock().unwrap_or_else(|p| p.into_inner()).take();
        let cause = match (broke, &ended) {
            (Some(cause), _) => cause,
            (None, Err(e)) => e.to_string(),
            (None, Ok(())) => "it ended without giving a cause".to_string(),
        };
        tracing::error!(%cause, ?pause, "the queue worker stopped without being asked; starting it again");
        let mut stop = stop_rx.clone();
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stop| *stop) => break Ok(()),
        }
        pause = (pause * 2).min(QUEUE_WORKER_MAX_PAUSE);
    };
    // Jobs a broken queue worker left running finish (or the timeout passes) before the exit.
    let all = u32::try_from(concurrency.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(
        config.worker.shutdown_timeout,
        ctx.in_flight.acquire_many(all),
    )
    .await
    .is_err()
    {
        tracing::warn!(
            "shutdown timeout: jobs still running are left to the recovery of another worker"
        );
    }
    relay.abort();
    deadline.abort();
    branches.abort();
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    if let Some(server) = metrics_server {
        server.abort();
    }
    if let Some(events) = events {
        events.abort();
    }
    result?;
    Ok(())
}
