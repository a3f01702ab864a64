//! What the model services were asked to process (`ai_spend`), held to the budgets per
//! incident and per installation per UTC day. Each request reserves its share before it is
//! sent, under a transaction-scoped advisory lock per installation, so that workers asking side
//! by side cannot each spend the same allowance; it is settled with the service's counts (and
//! their cost at the configured prices) when the answer is in.

use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use selfheal_engine::ai::budget::{BudgetError, Grant, TokenBudget};
use selfheal_engine::ai::Usage;
use selfheal_shared::config::{AiBudget, Prices};
use selfheal_shared::runs::Run;
use uuid::Uuid;

/// No request counts more tokens than this (a trillion); a service that says so is capped.
const MAX_COUNT: u64 = 1_000_000_000_000;

/// One run's requests, charged to its incident and installation.
#[derive(Debug)]
pub struct Ledger {
    pub pool: Pool,
    pub run_id: Uuid,
    pub incident_id: Uuid,
    pub installation_id: i64,
    pub budget: AiBudget,
    pub prices: Option<Prices>,
}

impl Ledger {
    pub fn for_run(pool: Pool, run: &Run, budget: AiBudget, prices: Option<Prices>) -> Ledger {
        Ledger {
            pool,
            run_id: run.id,
            incident_id: run.incident_id,
            installation_id: run.installation_id,
            budget,
            prices,
        }
    }

    async fn reserve_tokens(
        &self,
        wanted: u64,
        provider: &'static str,
        model: String,
    ) -> Result<Grant, Box<dyn std::error::Error + Send + Sync>> {
        let mut client = self.pool.get().await?;
        // Read committed whatever the server's default: each statement after the lock must see
        // the rows committed by the holder before (a snapshot taken at the lock would not).
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
            .start()
            .await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('selfheal.ai_spend:' || $1::bigint::text, 0))",
            &[&self.installation_id],
        )
        .await?;
        let row = tx
            .query_one(
                "SELECT
                   (SELECT COALESCE(sum(counted_tokens), 0)::bigint FROM ai_spend_counted
                     WHERE incident_id = $1),
                   (SELECT COALESCE(sum(counted_tokens), 0)::bigint FROM ai_spend_counted
                     WHERE installation_id = $2
                       AND started_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')",
                &[&self.incident_id, &self.installation_id],
            )
            .await?;
        let incident: i64 = row.get(0);
        let today: i64 = row.get(1);
        let left = self
            .budget
            .incident_tokens
            .saturating_sub(incident.max(0) as u64)
            .min(
                self.budget
                    .installation_daily_tokens
                    .saturating_sub(today.max(0) as u64),
            )
            .min(self.dollars_left_in_tokens(&tx).await?);
        let tokens = wanted.min(left);
        if tokens == 0 {
            return Ok(Grant { tokens, id: None });
        }
        let id: i64 = tx
            .query_one(
                "INSERT INTO ai_spend (run_id, incident_id, installation_id, provider, model, reserved_tokens)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &self.run_id,
                    &self.incident_id,
                    &self.installation_id,
                    &provider,
                    &model,
                    &(tokens as i64),
                ],
            )
            .await?
            .get(0);
        tx.commit().await?;
        Ok(Grant {
            tokens,
            id: Some(id),
        })
    }

    /// What the budgets in dollars leave, as tokens at the dearest price (a reservation's
    /// tokens could all be output): `u64::MAX` when there are none. Spent is the cost of what
    /// the services counted, and a reservation or a request whose counts are unknown at its
    /// tokens' dearest price.
    async fn dollars_left_in_tokens(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<u64, tokio_postgres::Error> {
        let (Some(prices), (incident_usd, daily_usd)) = (
            self.prices,
            (self.budget.incident_usd, self.budget.installation_daily_usd),
        ) else {
            return Ok(u64::MAX);
        };
        if incident_usd.is_none() && daily_usd.is_none() {
            return Ok(u64::MAX);
        }
        let dearest = prices.dearest_per_token();
        let row = tx
            .query_one(
                "SELECT
                   (SELECT COALESCE(sum(COALESCE(cost_usd::float8, counted_tokens * $3::float8)), 0)
                      FROM ai_spend_counted WHERE incident_id = $1),
                   (SELECT COALESCE(sum(COALESCE(cost_usd::float8, counted_tokens * $3::float8)), 0)
                      FROM ai_spend_counted
                     WHERE installation_id = $2
                       AND started_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')",
                &[&self.incident_id, &self.installation_id, &dearest],
            )
            .await?;
        let (incident, today): (f64, f64) = (row.get(0), row.get(1));
        let left = incident_usd
            .map_or(f64::INFINITY, |b| b - incident)
            .min(daily_usd.map_or(f64::INFINITY, |b| b - today));
        Ok(match left {
            l if l <= 0.0 => 0,
            // A price of nothing: dollars limit nothing.
            _ if dearest == 0.0 => u64::MAX,
            // A millionth of a token forgiven, so that a budget a price divides exactly is not
            // a token short for a rounding; saturating: past u64's range is u64::MAX.
            l => (l / dearest + 1e-6).floor() as u64,
        })
    }

    async fn settle_tokens(
        &self,
        grant: Grant,
        spent: Option<Usage>,
        requests: u32,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let Some(id) = grant.id else { return Ok(()) };
        // The service's counts, each held to a bound no request reaches, so that a hostile
        // count cannot overflow the sums the budgets are read from.
        let counts = spent.map(|s| {
            [
                s.input_tokens,
                s.output_tokens,
                s.cached_input_tokens,
                s.cache_write_tokens,
            ]
            .map(|n| n.min(MAX_COUNT))
        });
        let cost = self
            .prices
            .zip(counts)
            .map(|(p, [input, output, read, write])| p.cost(input, output, read, write));
        let [input, output, read, write] = counts.map_or([None; 4], |c| c.map(|n| Some(n as i64)));
        // Unknown counts settle the row with none: it stays counted at its reservation.
        self.pool
            .get()
            .await?
            .execute(
                "UPDATE ai_spend SET input_tokens = $2, output_tokens = $3, cache_read_tokens = $4,
                   cache_write_tokens = $5, requests = $6, cost_usd = round($7::float8::numeric, 6),
                   settled_at = now()
                 WHERE id = $1 AND settled_at IS NULL",
                &[
                    &id,
                    &input,
                    &output,
                    &read,
                    &write,
                    &(requests as i32),
                    &cost,
                ],
            )
            .await?;
        Ok(())
    }
}

impl TokenBudget for Ledger {
    fn reserve(
        &self,
        wanted: u64,
        provider: &'static str,
        model: String,
    ) -> BoxFuture<'_, Result<Grant, BudgetError>> {
        Box::pin(async move {
            self.reserve_tokens(wanted, provider, model)
                .await
                .map_err(|source| BudgetError { source })
        })
    }

    fn settle(
        &self,
        grant: Grant,
        spent: Option<Usage>,
        requests: u32,
    ) -> BoxFuture<'_, Result<(), BudgetError>> {
        Box::pin(async move {
            self.settle_tokens(grant, spent, requests)
                .await
                .map_err(|source| BudgetError { source })
        })
    }
}
