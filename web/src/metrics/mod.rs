//! Prometheus metrics. A registry per app (prometheus-client) rather than a global recorder,
//! so several apps in one test process keep separate counts.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub event: String,
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub enqueue_deferred: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("selfheal");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by event and outcome",
            deliveries.clone(),
        );
        let enqueue_deferred = Counter::default();
        registry.register(
            "enqueue_deferred",
            "Jobs left to the outbox relay because Redis could not take them at ingest",
            enqueue_deferred.clone(),
        );
        Metrics {
            registry,
            deliveries,
            enqueue_deferred,
        }
    }
}

impl Metrics {
    /// `event` comes from a request header: only the events selfheal knows become a label
    /// value, anything else is `other`, so a sender cannot grow the series without bound.
    pub fn delivery(&self, event: &str, outcome: &str) {
        let event = selfheal_shared::events::HANDLED
            .into_iter()
            .chain(["ping"])
            .find(|k| *k == event)
            .unwrap_or("other");
        self.deliveries
            .get_or_create(&DeliveryLabels {
                event: event.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
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
