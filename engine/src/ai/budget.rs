//! Budgets on what a model service is asked to process. The caller decides what is left (a
//! worker: of the incident's and the installation's day's budgets, in Postgres; `selfheal
//! heal`: a fixed allowance); each request reserves its share before it is sent and settles it
//! with the service's own counts after, so that requests running side by side cannot each
//! spend the same tokens, and a reservation is held only while its request runs.

use std::fmt::Debug;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::Usage;

/// Tokens granted to one request, held against the budget until settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub tokens: u64,
    /// The budget's own handle on the reservation (a row id), if it keeps one.
    pub id: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
#[error("the token budget cannot be read or written: {source}")]
pub struct BudgetError {
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

pub trait TokenBudget: Send + Sync + Debug {
    /// Up to `wanted` tokens for one request to `provider`'s `model` (fewer, or none, when
    /// less is left).
    fn reserve(
        &self,
        wanted: u64,
        provider: &'static str,
        model: String,
    ) -> BoxFuture<'_, Result<Grant, BudgetError>>;
    /// What the request spent in place of its grant: the service's counts (nothing for a
    /// request it refused or never answered), or `None` when they are unknown (an answer cut
    /// off or declined after it was paid for, one without usage): then the grant stays spent.
    fn settle(
        &self,
        grant: Grant,
        spent: Option<Usage>,
        requests: u32,
    ) -> BoxFuture<'_, Result<(), BudgetError>>;
}

/// A fixed number of tokens, kept in memory: one heal's allowance where nothing is shared.
#[derive(Debug)]
pub struct Allowance {
    left: Mutex<u64>,
}

impl Allowance {
    pub fn new(tokens: u64) -> Allowance {
        Allowance {
            left: Mutex::new(tokens),
        }
    }

    pub fn left(&self) -> u64 {
        *self.left.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TokenBudget for Allowance {
    fn reserve(
        &self,
        wanted: u64,
        _provider: &'static str,
        _model: String,
    ) -> BoxFuture<'_, Result<Grant, BudgetError>> {
        let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        let tokens = wanted.min(*left);
        *left -= tokens;
        Box::pin(std::future::ready(Ok(Grant { tokens, id: None })))
    }

    fn settle(
        &self,
        grant: Grant,
        spent: Option<Usage>,
        _requests: u32,
    ) -> BoxFuture<'_, Result<(), BudgetError>> {
        let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        // The grant comes back and what was spent goes out. Spent may exceed the grant, since
        // the prompt's size was estimated: the allowance floors at zero. Unknown: all of it.
        let spent = spent.map_or(grant.tokens, |s| s.total());
        *left = left.saturating_add(grant.tokens).saturating_sub(spent);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_allowance_grants_what_is_left_and_takes_back_what_was_not_spent() {
        let a = Allowance::new(10_000);
        let first = a.reserve(6_000, "anthropic", "m".into()).await.unwrap();
        assert_eq!(first.tokens, 6_000);
        // Held while the first request runs: the second gets what remains.
        let second = a.reserve(6_000, "anthropic", "m".into()).await.unwrap();
        assert_eq!(second.tokens, 4_000);
        assert_eq!(a.left(), 0);
        let spent = Usage {
            input_tokens: 1_000,
            output_tokens: 500,
            cached_input_tokens: 200,
            cache_write_tokens: 300,
        };
        a.settle(first, Some(spent), 1).await.unwrap();
        assert_eq!(a.left(), 4_000);
        a.settle(second, Some(Usage::default()), 0).await.unwrap();
        assert_eq!(a.left(), 8_000);
        // A request whose cost is unknown keeps its whole grant.
        let third = a.reserve(3_000, "anthropic", "m".into()).await.unwrap();
        a.settle(third, None, 1).await.unwrap();
        assert_eq!(a.left(), 5_000);
    }
}
