//! Starting while Postgres or Redis is away. A replica scheduled during a database failover,
//! or a whole stack brought up in any order, must wait for its services rather than exit: an
//! exit only moves the wait into the orchestrator's crash-loop backoff. The wait is bounded
//! (`SELFHEAL_OUTAGE_WAIT_SECS`) and only for errors a wait can cure; a bad URL or a failed
//! migration ends the process at once, with its cause.

use std::future::Future;
use std::time::Duration;

use backon::Retryable;

/// Runs `connect` until it succeeds, its error is not an outage, or `limit` has been spent
/// waiting (each wait logged with its cause).
pub async fn wait_for<T, E, F, Fut>(
    what: &str,
    limit: Duration,
    is_outage: impl Fn(&E) -> bool,
    connect: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .with_total_delay(Some(limit));
    connect
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(is_outage)
        .notify(|e, pause| tracing::warn!(error = %e, ?pause, "{what} is not answering yet; waiting for it"))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_waited_out_and_anything_else_ends_at_once() {
        let calls = AtomicU32::new(0);
        let connected = wait_for(
            "Postgres",
            Duration::from_secs(300),
            |e: &&str| *e == "refused",
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0..=4 => Err("refused"),
                    _ => Ok("up"),
                }
            },
        )
        .await;
        assert_eq!(connected, Ok("up"));
        assert_eq!(calls.load(Ordering::SeqCst), 6);

        let calls = AtomicU32::new(0);
        let bad = wait_for(
            "Postgres",
            Duration::from_secs(300),
            |e: &&str| *e == "refused",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>("password authentication failed")
            },
        )
        .await;
        assert_eq!(bad, Err("password authentication failed"));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "not an outage: no second try"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded() {
        let started = tokio::time::Instant::now();
        let gave_up = wait_for(
            "Redis",
            Duration::from_secs(30),
            |_: &&str| true,
            || async { Err::<(), _>("refused") },
        )
        .await;
        assert_eq!(gave_up, Err("refused"));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(25) && waited <= Duration::from_secs(36),
            "waited {waited:?} for a limit of 30 s"
        );
    }
}
