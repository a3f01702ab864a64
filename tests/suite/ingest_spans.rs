//! The webhook handler's span under concurrent deliveries. It installs a global subscriber that
//! records every span's parent, which no other test may share: nextest runs it in a process of
//! its own (scripts/test.sh requires nextest for that).
//!
//! `selfheal bench ingest` once crashed selfheal web ("thread 'tokio-rt-worker' has
//! overflowed its stack"): the `webhook` span was entered with a guard held across `.await`s,
//! so every request a busy thread polled meanwhile opened its span inside it, one level deeper
//! each time, until formatting a log line ran out of stack. Every `webhook` span must be a
//! root.

use crate::support;

use std::sync::{Arc, Mutex};

use support::*;
use tracing::span;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// For each `webhook` span opened: the name of its parent span, if it has one.
#[derive(Clone, Default)]
struct Parents(Arc<Mutex<Vec<Option<String>>>>);

impl<S> Layer<S> for Parents
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "webhook" {
            return;
        }
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.name().to_string());
        self.0.lock().unwrap().push(parent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_each_get_a_webhook_span_of_their_own() {
    let parents = Parents::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(parents.clone()))
        .expect("the only subscriber in this binary");

    let env = TestEnv::new().await;
    let app = Arc::new(env.spawn_web().await);
    let deliveries = 64;
    let mut sent = tokio::task::JoinSet::new();
    for i in 0..deliveries {
        let (app, payload) = (app.clone(), env.failing_run(9000 + i, &now()));
        sent.spawn(async move { app.deliver("workflow_run", &payload).await.0 });
    }
    while let Some(status) = sent.join_next().await {
        assert_eq!(status.unwrap(), 202);
    }

    let parents = parents.0.lock().unwrap().clone();
    assert_eq!(
        parents.len(),
        deliveries as usize,
        "one webhook span per delivery"
    );
    let nested: Vec<&String> = parents.iter().flatten().collect();
    assert!(
        nested.is_empty(),
        "{} of {deliveries} webhook spans opened inside another span: {:?}",
        nested.len(),
        &nested[..nested.len().min(5)]
    );
}
