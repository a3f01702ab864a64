//! The webhook server: verifies, persists and enqueues; nothing slow happens here.

pub mod access;
mod admission;
mod dashboard;
mod error;
mod health;
mod metrics;
mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::Router;
use deadpool_postgres::Pool;
use secrecy::SecretString;
use selfheal_shared::queue::{self, JobQueue};
use selfheal_shared::{accepts, db, outbox, Config};
use tokio::net::TcpListener;

pub use error::ApiError;
pub use webhook::verify_signature;

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub queue: Arc<JobQueue>,
    pub secrets: Arc<Vec<SecretString>>,
    pub metrics: Arc<metrics::Metrics>,
    pub gates: Arc<selfheal_shared::config::Gates>,
    pub marks: outbox::Marks,
    /// Failed runs' deliveries, stored in batches (`accepts`).
    pub accepts: accepts::Accepts,
    /// Who may sign in to `/dashboard`: none (the dashboard is off) without a token or a
    /// provider.
    pub access: Option<access::Access>,
    /// The configuration as read at start, secrets redacted, for admins.
    pub config_summary: Arc<String>,
}

/// Bounds on what one request (and all of them together) may cost the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub max_in_flight: usize,
}

/// Dashboard pages and scrapes handled at once, apart from the webhook's own bound: operators
/// (or whoever reaches those paths) can never take the webhook's slots, nor more than this many
/// of the pool's connections.
const OPERATOR_IN_FLIGHT: usize = 8;
/// The largest body an operator's request carries (a sign-in form).
const OPERATOR_BODY_BYTES: usize = 4 * 1024;

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout,
            max_in_flight: config.max_in_flight,
        }
    }
}

/// The public port's routes; `/metrics` among them when `metrics_here` (no
/// `SELFHEAL_METRICS_BIND`).
pub fn router(state: AppState, limits: Limits, metrics_here: bool) -> Router {
    let (router, _) = routes(state.access.clone(), limits, metrics_here);
    router.with_state(state)
}

/// Every route the public port serves, each with what it needs (`access::Need`).
pub fn declared_routes(config: &Config) -> Vec<access::Declared> {
    let access = access::Access::from_config(config, Arc::new(metrics::Metrics::default()), None);
    routes(
        access,
        Limits::from_config(config),
        config.metrics_bind.is_none(),
    )
    .1
}

fn routes(
    access: Option<access::Access>,
    limits: Limits,
    metrics_here: bool,
) -> (Router<AppState>, Vec<access::Declared>) {
    use access::{Need, Routes};
    // The body limit refuses before the body is read; admission bounds the requests handled
    // at once and the time each may take, before any takes a database connection.
    let admission = admission::Admission::new(limits.max_in_flight, limits.request_timeout);
    let mut operators = dashboard::routes(access);
    if metrics_here {
        operators = operators.route(Method::GET, "/metrics", Need::Public, metrics::render);
    }
    Routes::new(None)
        .route_with(
            Method::POST,
            "/webhooks/github",
            Need::WebhookSignature,
            webhook::receive,
            |r| {
                r.layer(DefaultBodyLimit::max(limits.max_body_bytes)).layer(
                    axum::middleware::from_fn_with_state(admission, admission::admit),
                )
            },
        )
        .route(Method::GET, "/healthz", Need::Public, health::healthz)
        .route(Method::GET, "/readyz", Need::Public, health::readyz)
        .merge(operator_bounds(operators, limits))
        .into_parts()
}

fn operator_bounds(routes: access::Routes, limits: Limits) -> access::Routes {
    routes
        .layer(DefaultBodyLimit::max(OPERATOR_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            admission::Admission::new(OPERATOR_IN_FLIGHT, limits.request_timeout),
            admission::admit,
        ))
}

/// `/metrics` alone, for `SELFHEAL_METRICS_BIND`.
fn metrics_router(state: AppState, limits: Limits) -> Router {
    let routes = access::Routes::new(None).route(
        Method::GET,
        "/metrics",
        access::Need::Public,
        metrics::render,
    );
    operator_bounds(routes, limits)
        .into_parts()
        .0
        .with_state(state)
}

/// Connections selfheal web keeps to Postgres.
pub const DB_POOL_SIZE: usize = 16;

/// Builds the state from config. Postgres may be down at this point: the pool connects lazily
/// and requests answer 503 until it is back. Migrations run when it is reachable. The handles
/// are the writers of the outbox marks (`outbox::Marks`) and of accepted deliveries
/// (`accepts::Accepts`): await them once the state is dropped.
pub async fn state(config: &Config) -> Result<(AppState, Writers), db::DbError> {
    let pool = db::pool(config.database_url(), DB_POOL_SIZE)?;
    let migrated = if config.migrate_at_start {
        db::migrate(&pool).await
    } else {
        Ok(0)
    };
    match migrated {
        Ok(n) if n > 0 => tracing::info!(applied = n, "migrations applied"),
        Ok(_) => {}
        Err(db::DbError::Pool(e)) => {
            tracing::warn!(error = %selfheal_shared::cause::Chain(&e), "Postgres unreachable at start; migrations deferred to `selfheal migrate` or the next start")
        }
        Err(e) => return Err(e),
    }
    let queue_config = queue::storage_config(
        &config.queue_prefix,
        config.worker.heartbeat,
        config.worker.missed_heartbeats,
    );
    let (marks, marking) = outbox::Marks::start(pool.clone());
    // The writers' own connections, whose sessions time out: many requests wait on each.
    let (accepts, accepting) = accepts::Accepts::start(db::pool_with_timeouts(
        config.database_url(),
        accepts::WRITERS,
        accepts::LOCK_TIMEOUT,
        accepts::STATEMENT_TIMEOUT,
    )?);
    let metrics = Arc::new(metrics::Metrics::default());
    let state_pool = pool.clone();
    let state = AppState {
        pool,
        queue: Arc::new(JobQueue::new(config.redis_url(), queue_config)),
        secrets: Arc::new(config.webhook_secrets.clone()),
        access: access::Access::from_config(config, metrics.clone(), Some(state_pool)),
        metrics,
        config_summary: Arc::new(format!("{config:#?}")),
        gates: Arc::new(config.gates.clone()),
        marks,
        accepts,
    };
    Ok((state, Writers { marking, accepting }))
}

/// The background writers `state` starts; each ends once the state's last clone is dropped.
pub struct Writers {
    pub marking: tokio::task::JoinHandle<()>,
    pub accepting: tokio::task::JoinHandle<()>,
}

/// Serves until `shutdown` resolves; the outbox relay runs beside the server.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (state, writers) = state(&config).await?;
    let relay = tokio::spawn(outbox::relay_forever(
        state.pool.clone(),
        state.queue.clone(),
        config.worker.relay_interval,
        config.worker.requeue_after,
    ));
    let limits = Limits::from_config(&config);
    let (stop_metrics, metrics_stop) = tokio::sync::oneshot::channel::<()>();
    let metrics = match config.metrics_bind {
        Some(bind) => {
            let listener = TcpListener::bind(bind)
                .await
                .map_err(|e| anyhow::anyhow!("SELFHEAL_METRICS_BIND {bind}: {e}"))?;
            tracing::info!(addr = %listener.local_addr()?, "metrics listening");
            let app = metrics_router(state.clone(), limits);
            Some(tokio::spawn(async move {
                let stopped = async move {
                    let _ = metrics_stop.await;
                };
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::error!(error = %e, "the metrics server stopped");
                }
            }))
        }
        None => None,
    };
    let app = router(state, limits, metrics.is_none());
    tracing::info!(addr = %listener.local_addr()?, "selfheal web listening");
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    // The metrics server's connections hold clones of the state, which keep the writers
    // waiting for more: it stops as the public one did (its open connections closed).
    let _ = stop_metrics.send(());
    if let Some(metrics) = metrics {
        if tokio::time::timeout(Duration::from_secs(5), metrics)
            .await
            .is_err()
        {
            tracing::warn!("the metrics server did not stop within 5 s");
        }
    }
    // Deliveries already handed to the writers are stored (every request has its answer by
    // now, so none is waiting), then the marks of the last requests are written (briefly
    // bounded: the relay would push those rows again, which costs a duplicate job, not a lost
    // one).
    if tokio::time::timeout(Duration::from_secs(5), writers.accepting)
        .await
        .is_err()
    {
        tracing::warn!("accepted deliveries not all written at shutdown");
    }
    if tokio::time::timeout(Duration::from_secs(5), writers.marking)
        .await
        .is_err()
    {
        tracing::warn!(
            "outbox marks not all written at shutdown; the relay pushes those jobs again"
        );
    }
    relay.abort();
    Ok(result?)
}
