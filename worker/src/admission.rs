//! A failed run's delivery the webhook stored and queued: admitted (`failed_run::admit`: the
//! gates, the dedup by GitHub run, the incident and the run), and the run's first stage
//! pushed. Postgres away: retried with backoff, as a stage's bookkeeping is; a job given up
//! leaves the delivery `accepted`, and the relay pushes it again (`outbox::requeue_unstarted`).
//! Refused by Postgres for what the delivery holds (a value it will not take, a constraint the
//! rows would break: SQLSTATE classes 22 and 23), it would be refused again each time: the
//! delivery is recorded as `admission_failed` with the cause, not retried for ever. Anything
//! else (a busy pool, a lock or statement timeout, a deadlock) is retried like an outage.

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data};
use backon::Retryable;
use selfheal_shared::cause::Chain;
use selfheal_shared::failed_run;
use selfheal_shared::job::AdmitJob;
use selfheal_shared::outbox::DispatchError;
use tracing::Instrument;

use crate::WorkerContext;

pub async fn handle(job: AdmitJob, ctx: Data<Arc<WorkerContext>>) -> Result<(), BoxDynError> {
    let span = tracing::info_span!(
        "admit",
        delivery = %job.delivery_id,
        worker = %ctx.worker_id,
        run = tracing::field::Empty,
    );
    // The run's trace starts at the webhook and goes on here, then in its stages.
    if let Some(parent) = &job.traceparent {
        selfheal_shared::trace_context::continue_in(&span, parent);
    }
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(500))
        .with_max_delay(std::time::Duration::from_secs(30))
        .with_max_times(10);
    let admit = || failed_run::admit_and_push(&ctx.pool, &ctx.queue, &job.delivery_id);
    let admitted = admit
        .retry(backoff)
        .when(|e| !is_permanent(e))
        .notify(|e, delay| tracing::warn!(error = %Chain(e), ?delay, "admitting the delivery failed; retrying"))
        .instrument(span.clone())
        .await;
    let _entered = span.enter();
    match admitted {
        Ok(admission) => {
            if let Some(run) = admission.run_id() {
                span.record("run", tracing::field::display(run));
            }
            tracing::info!(outcome = admission.outcome(), admission = %admission.summary(), "delivery admitted");
            Ok(())
        }
        Err(e) if !is_permanent(&e) => {
            tracing::error!(error = %Chain(&e), "admission given up; the relay pushes the delivery again");
            Err(e.into())
        }
        Err(e) => {
            let cause = Chain(&e).to_string();
            tracing::error!(error = %cause, "the delivery cannot be admitted; recorded as admission_failed");
            failed_run::record_failure(&ctx.pool, &job.delivery_id, &cause).await?;
            Ok(())
        }
    }
}

/// Postgres refused the delivery's own data: admitting it again would fail the same way. Only
/// these are recorded as failed; a wait may cure anything else, and a failure must not be
/// dropped for a busy moment.
fn is_permanent(e: &DispatchError) -> bool {
    let DispatchError::Db(selfheal_shared::db::DbError::Query(e)) = e else {
        return false;
    };
    e.code()
        .is_some_and(|code| matches!(&code.code()[..2], "22" | "23"))
}
