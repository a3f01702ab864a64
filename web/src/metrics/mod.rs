//! Prometheus metrics. A registry per app (prometheus-client) rather than a global recorder,
//! so several apps in one test process keep separate counts. Web's own counters say what it
//! did with each delivery; the fleet's figures (`fleet`) are read from Postgres at scrape time.

mod fleet;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::AppState;

/// The fleet's figures are read at most this often, whatever the number of scrapers (every
/// Prometheus replica scrapes every web replica); a failed read is not retried sooner either.
const FLEET_TTL: Duration = Duration::from_secs(10);
/// How long a scrape waits for the fleet's figures before it answers without them.
const FLEET_WAIT: Duration = Duration::from_secs(5);

/// What a refused delivery counts as, by the error ingest answered with.
pub const REFUSALS: [&str; 4] = [
    "refused_signature",
    "refused_malformed",
    "unavailable",
    "internal_error",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub event: String,
    pub outcome: String,
}

/// Why a sign-in or a request to an operator route was refused: each a label value of
/// `selfheal_auth_refusals_total`, all present from the start.
pub const AUTH_REFUSALS: [&str; 15] = [
    "wrong_token",
    "expired",
    "audience",
    "issuer",
    "signature",
    "unknown_key",
    "malformed",
    "nonce",
    "provider_unreachable",
    "provider_refused",
    "login_error",
    "no_role",
    "forbidden",
    "cross_site",
    "not_signed_in",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: String,
}

pub struct Metrics {
    registry: Registry,
    pub deliveries: Family<DeliveryLabels, Counter>,
    ingest_seconds: Family<EventLabels, Histogram>,
    pub enqueue_deferred: Counter,
    auth_refusals: Family<ReasonLabels, Counter>,
    fleet_up: Gauge,
    fleet: fleet::FleetCollector,
    /// When the fleet's figures were last read (or tried); held while a read runs, so that
    /// scrapes arriving meanwhile wait for it instead of reading again.
    fleet_read_at: tokio::sync::Mutex<Option<Instant>>,
}

/// The events a label may name: the ones selfheal handles, `ping`, and `other`.
fn known_event(event: &str) -> &'static str {
    selfheal_shared::events::HANDLED
        .into_iter()
        .chain(["ping"])
        .find(|k| *k == event)
        .unwrap_or("other")
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("selfheal");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by event and outcome (refused_* and unavailable: not stored)",
            deliveries.clone(),
        );
        // Refusals start at 0, so that the first one is an increase an alert can see.
        for event in selfheal_shared::events::HANDLED
            .into_iter()
            .chain(["ping", "other"])
        {
            for outcome in REFUSALS {
                let _ = deliveries.get_or_create(&DeliveryLabels {
                    event: event.to_string(),
                    outcome: outcome.to_string(),
                });
            }
        }
        let ingest_seconds =
            Family::<EventLabels, Histogram>::new_with_constructor(|| -> Histogram {
                // 1 ms to about 16 s.
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            });
        registry.register(
            "webhook_ingest_duration_seconds",
            "Time from a delivery's arrival to web's answer, refusals included",
            ingest_seconds.clone(),
        );
        let enqueue_deferred = Counter::default();
        registry.register(
            "enqueue_deferred",
            "Jobs left to the outbox relay because Redis could not take them at ingest",
            enqueue_deferred.clone(),
        );
        let auth_refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_refusals",
            "Sign-ins and requests to operator routes refused, by reason (docs/access.md)",
            auth_refusals.clone(),
        );
        for reason in AUTH_REFUSALS {
            let _ = auth_refusals.get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            });
        }
        let fleet_up = Gauge::default();
        registry.register(
            "fleet_metrics_up",
            "1 when this scrape carries the fleet's figures read from Postgres, 0 when the read failed",
            fleet_up.clone(),
        );
        let fleet = fleet::FleetCollector::default();
        registry.register_collector(Box::new(fleet.clone()));
        Metrics {
            registry,
            deliveries,
            ingest_seconds,
            enqueue_deferred,
            auth_refusals,
            fleet_up,
            fleet,
            fleet_read_at: tokio::sync::Mutex::new(None),
        }
    }
}

impl Metrics {
    /// Counts one refusal; a reason not among the known ones counts as `other`.
    pub fn auth_refused(&self, reason: &str) {
        let known = AUTH_REFUSALS.contains(&reason);
        self.auth_refusals
            .get_or_create(&ReasonLabels {
                reason: if known { reason } else { "other" }.to_string(),
            })
            .inc();
    }

    /// `event` comes from a request header: only the events selfheal knows become a label
    /// value, anything else is `other`, so a sender cannot grow the series without bound.
    pub fn delivery(&self, event: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                event: known_event(event).to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn ingest_took(&self, event: &str, took: Duration) {
        self.ingest_seconds
            .get_or_create(&EventLabels {
                event: known_event(event).to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Reads the fleet's figures again when the last read is older than `FLEET_TTL`.
    async fn refresh_fleet(&self, pool: &deadpool_postgres::Pool) {
        let mut read_at = self.fleet_read_at.lock().await;
        if read_at.is_some_and(|at| at.elapsed() < FLEET_TTL) {
            return;
        }
        let read = tokio::time::timeout(FLEET_WAIT, async {
            let mut client = pool.get().await?;
            fleet::read(&mut client).await
        })
        .await;
        let snapshot = match read {
            Ok(Ok(snapshot)) => Some(Arc::new(snapshot)),
            Ok(Err(e)) => {
                tracing::warn!(error = %selfheal_shared::cause::Chain(&e), "metrics: cannot read the fleet's figures from Postgres");
                None
            }
            Err(_) => {
                tracing::warn!(
                    wait = ?FLEET_WAIT,
                    "metrics: the fleet's figures took too long to read from Postgres"
                );
                None
            }
        };
        self.fleet_up.set(i64::from(snapshot.is_some()));
        *self.fleet.0.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
        *read_at = Some(Instant::now());
    }
}

pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.refresh_fleet(&state.pool).await;
    let mut body = String::new();
    if let Err(e) = encode(&mut body, &state.metrics.registry) {
        tracing::error!(error = %selfheal_shared::cause::Chain(&e), "cannot encode metrics");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}
