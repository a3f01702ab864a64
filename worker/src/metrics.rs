//! The worker's own figures on `/metrics` (`SELFHEAL_METRICS_BIND`): how long its stage
//! attempts take and how they end, retries, attempts found abandoned, jobs in flight. What the
//! whole fleet did is counted from Postgres by web; these say what this replica is doing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use selfheal_shared::stage::Stage;

/// How an attempt ended, as `selfheal_stage_duration_seconds` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    Succeeded,
    Skipped,
    Failed,
    /// Given up as hung at the stage's time limit.
    TimedOut,
    /// Postgres went away under it (not charged).
    Interrupted,
}

impl AttemptEnd {
    fn as_str(self) -> &'static str {
        match self {
            AttemptEnd::Succeeded => "succeeded",
            AttemptEnd::Skipped => "skipped",
            AttemptEnd::Failed => "failed",
            AttemptEnd::TimedOut => "timed_out",
            AttemptEnd::Interrupted => "interrupted",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    stage: &'static str,
    outcome: &'static str,
}

pub struct WorkerMetrics {
    registry: Registry,
    durations: Family<AttemptLabels, Histogram>,
    retries: Family<StageLabels, Counter>,
    abandoned: Family<StageLabels, Counter>,
    in_flight: Gauge,
}

impl WorkerMetrics {
    pub fn new(concurrency: usize) -> WorkerMetrics {
        let mut registry = Registry::with_prefix("selfheal");
        let durations = Family::<AttemptLabels, Histogram>::new_with_constructor(|| {
            // 50 ms to about 3.6 hours.
            Histogram::new(exponential_buckets(0.05, 3.0, 11))
        });
        registry.register(
            "stage_duration_seconds",
            "Stage attempts this worker ran, by stage and how they ended",
            durations.clone(),
        );
        let retries = Family::<StageLabels, Counter>::default();
        registry.register(
            "stage_retries",
            "Stage attempts that failed transiently and were tried again",
            retries.clone(),
        );
        let abandoned = Family::<StageLabels, Counter>::default();
        registry.register(
            "stage_abandoned",
            "Attempts this worker found left running by a worker that is gone, and closed",
            abandoned.clone(),
        );
        // Every stage starts at 0, so that the first retry or abandonment is an increase.
        for stage in Stage::ALL {
            let labels = StageLabels {
                stage: stage.as_str(),
            };
            let _ = retries.get_or_create(&labels);
            let _ = abandoned.get_or_create(&labels);
        }
        let in_flight = Gauge::default();
        registry.register(
            "worker_jobs_in_flight",
            "Jobs this worker is running",
            in_flight.clone(),
        );
        let limit = Gauge::<i64>::default();
        limit.set(i64::try_from(concurrency).unwrap_or(i64::MAX));
        registry.register(
            "worker_concurrency",
            "Jobs this worker runs at most at once (SELFHEAL_WORKER_CONCURRENCY)",
            limit,
        );
        WorkerMetrics {
            registry,
            durations,
            retries,
            abandoned,
            in_flight,
        }
    }

    pub fn attempt(&self, stage: Stage, end: AttemptEnd, took: Duration) {
        self.durations
            .get_or_create(&AttemptLabels {
                stage: stage.as_str(),
                outcome: end.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn retried(&self, stage: Stage) {
        self.retries
            .get_or_create(&StageLabels {
                stage: stage.as_str(),
            })
            .inc();
    }

    pub fn abandoned(&self, stage: Stage, attempts: u64) {
        self.abandoned
            .get_or_create(&StageLabels {
                stage: stage.as_str(),
            })
            .inc_by(attempts);
    }

    /// Counts a job in flight until the guard drops.
    pub fn job_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }
}

pub struct InFlight(Arc<WorkerMetrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// In memory only, no I/O: a scrape costs the encoding of a few dozen series.
async fn render(State(metrics): State<Arc<WorkerMetrics>>) -> Response {
    let mut body = String::new();
    if let Err(e) = encode(&mut body, &metrics.registry) {
        tracing::error!(error = %e, "cannot encode the worker's metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Binds the metrics address (failing at start, with the address, when it cannot) and serves
/// `/metrics` there until the process ends.
pub async fn serve(
    bind: SocketAddr,
    metrics: Arc<WorkerMetrics>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("SELFHEAL_METRICS_BIND {bind}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "worker metrics listening");
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(metrics);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "worker metrics server stopped");
        }
    }))
}
