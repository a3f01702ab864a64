//! The model's spend held to its budgets in Postgres (`ai_spend`): per incident, per
//! installation per UTC day, with reservations that workers asking side by side cannot both
//! spend, and settled rows that carry the service's counts and their cost.

use crate::support;

use std::sync::Arc;

use selfheal_engine::ai::budget::TokenBudget;
use selfheal_engine::ai::Usage;
use selfheal_shared::config::{AiBudget, Prices};
use selfheal_shared::db;
use selfheal_worker::ai_spend::Ledger;
use support::*;
use uuid::Uuid;

const MODEL: &str = "claude-sonnet-4-5";

/// Three runs of one installation: two failures of one workflow on one branch (one incident),
/// and one on another branch (a second incident).
async fn three_runs(env: &TestEnv) -> (Uuid, Uuid, Uuid) {
    let app = env.spawn_web().await;
    let (_, a) = app
        .deliver("workflow_run", &env.failing_run(3101, &now()))
        .await;
    let (_, b) = app
        .deliver("workflow_run", &env.failing_run(3102, &now()))
        .await;
    let mut other = env.failing_run(3103, &now());
    other["workflow_run"]["head_branch"] = "release".into();
    let (_, c) = app.deliver("workflow_run", &other).await;
    (
        env.run_of(&a).await,
        env.run_of(&b).await,
        env.run_of(&c).await,
    )
}

async fn ledger(env: &TestEnv, run: Uuid, budget: AiBudget) -> Ledger {
    let db = env.db().await;
    let row = db
        .query_one(
            "SELECT incident_id, installation_id FROM runs WHERE id = $1",
            &[&run],
        )
        .await
        .unwrap();
    Ledger {
        pool: db::pool(&env.database_url, 4).unwrap(),
        run_id: run,
        incident_id: row.get(0),
        installation_id: row.get(1),
        budget,
        prices: Some(Prices {
            input: 3.0,
            output: 15.0,
            cache_read: 0.3,
            cache_write: 3.75,
        }),
    }
}

fn spent(input: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: 1_000,
        cache_write_tokens: 0,
    }
}

#[tokio::test]
async fn requests_are_held_to_the_incidents_and_the_installations_daily_budgets() {
    let env = TestEnv::new().await;
    let (a, b, c) = three_runs(&env).await;
    let budget = AiBudget {
        incident_tokens: 10_000,
        installation_daily_tokens: 16_000,
        incident_usd: None,
        installation_daily_usd: None,
    };
    let first = ledger(&env, a, budget).await;
    let second = ledger(&env, b, budget).await;
    assert_eq!(first.incident_id, second.incident_id, "one incident");
    let other = ledger(&env, c, budget).await;
    assert_ne!(first.incident_id, other.incident_id);

    // A reservation counts while its request runs: the same incident's next run gets the rest.
    let held = first
        .reserve(8_000, "anthropic", MODEL.into())
        .await
        .unwrap();
    assert_eq!(held.tokens, 8_000);
    let rest = second
        .reserve(8_000, "anthropic", MODEL.into())
        .await
        .unwrap();
    assert_eq!(rest.tokens, 2_000);
    // Settled at what the service counted (3,500), the reservation's excess comes back.
    first
        .settle(held, Some(spent(2_000, 500)), 2)
        .await
        .unwrap();
    second
        .settle(rest, Some(Usage::default()), 0)
        .await
        .unwrap();
    let again = second
        .reserve(8_000, "anthropic", MODEL.into())
        .await
        .unwrap();
    assert_eq!(again.tokens, 10_000 - 3_500);
    second
        .settle(again, Some(spent(5_000, 500)), 1)
        .await
        .unwrap();
    // The incident has spent 3,500 + 6,500: nothing is left for it.
    let none = first
        .reserve(1_000, "anthropic", MODEL.into())
        .await
        .unwrap();
    assert_eq!(none.tokens, 0);
    assert!(none.id.is_none(), "no row for a grant of nothing");

    // The other incident has its own 10,000, but the installation's day has 6,000 left.
    // A request whose cost is unknown (an answer cut off after it was paid for) is settled
    // with no counts and stays counted at its grant.
    let unknown = other
        .reserve(1_000, "anthropic", MODEL.into())
        .await
        .unwrap();
    other.settle(unknown, None, 1).await.unwrap();
    let day = other
        .reserve(9_000, "anthropic", MODEL.into())
        .await
        .unwrap();
    assert_eq!(day.tokens, 5_000);
    other.settle(day, Some(spent(100, 100)), 1).await.unwrap();

    let db = env.db().await;
    let row = db
        .query_one(
            "SELECT tokens::bigint, input_tokens::bigint, output_tokens::bigint, cache_read_tokens::bigint,
                    cost_usd::float8, runs, unsettled
             FROM ai_spend_daily WHERE installation_id = $1",
            &[&first.installation_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 3_500 + 6_500 + 1_000 + 1_200);
    assert_eq!(row.get::<_, i64>(1), 2_000 + 5_000 + 100);
    assert_eq!(row.get::<_, i64>(2), 500 + 500 + 100);
    assert_eq!(row.get::<_, i64>(3), 3_000);
    // 7,100 input at $3, 1,100 output at $15 and 3,000 cache reads at $0.30 a million.
    let cost: f64 = row.get(4);
    assert!((cost - 0.0387).abs() < 1e-9, "{cost}");
    assert_eq!(row.get::<_, i64>(5), 3, "three runs asked");
    let unknown_row = db
        .query_one(
            "SELECT count(*) FROM ai_spend WHERE reserved_tokens = 1000 AND settled_at IS NOT NULL AND input_tokens IS NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(unknown_row.get::<_, i64>(0), 1);
    assert_eq!(row.get::<_, i64>(6), 0, "all settled");
    // The grant of 2,000 that was not spent settled as nothing, and is counted so.
    let zero = db
        .query_one(
            "SELECT count(*) FROM ai_spend WHERE reserved_tokens = 2000 AND input_tokens = 0 AND requests = 0",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(zero.get::<_, i64>(0), 1);
}

#[tokio::test]
async fn workers_asking_at_once_cannot_spend_the_same_tokens() {
    let env = TestEnv::new().await;
    let (a, _, c) = three_runs(&env).await;
    let budget = AiBudget {
        incident_tokens: 1_000_000,
        installation_daily_tokens: 50_000,
        incident_usd: None,
        installation_daily_usd: None,
    };
    // Twenty requests of two incidents race for 50,000 tokens of one installation's day, each
    // on a connection of its own, released together.
    let start = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let ledger = Arc::new(ledger(&env, if i % 2 == 0 { a } else { c }, budget).await);
        drop(ledger.pool.get().await.unwrap());
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            ledger
                .reserve(7_000, "anthropic", MODEL.into())
                .await
                .unwrap()
                .tokens
        }));
    }
    let mut granted = 0;
    for t in tasks {
        granted += t.await.unwrap();
    }
    assert_eq!(granted, 50_000, "every token granted once, none twice");
    // Unsettled reservations (a worker that died mid-request) stay counted.
    let db = env.db().await;
    let row = db
        .query_one("SELECT tokens::bigint, unsettled FROM ai_spend_daily", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 50_000);
    assert_eq!(
        row.get::<_, i64>(1),
        8,
        "seven grants of 7,000 and one of 1,000"
    );
}

#[tokio::test]
async fn yesterdays_spend_does_not_count_against_today() {
    let env = TestEnv::new().await;
    let (a, _, c) = three_runs(&env).await;
    let budget = AiBudget {
        incident_tokens: 1_000_000,
        installation_daily_tokens: 10_000,
        incident_usd: None,
        installation_daily_usd: None,
    };
    let first = ledger(&env, a, budget).await;
    let grant = first
        .reserve(10_000, "anthropic", MODEL.into())
        .await
        .unwrap();
    first.settle(grant, Some(spent(9_000, 0)), 1).await.unwrap();
    let other = ledger(&env, c, budget).await;
    assert_eq!(
        other
            .reserve(5_000, "anthropic", MODEL.into())
            .await
            .unwrap()
            .tokens,
        0
    );
    env.db()
        .await
        .execute(
            "UPDATE ai_spend SET started_at = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        other
            .reserve(5_000, "anthropic", MODEL.into())
            .await
            .unwrap()
            .tokens,
        5_000
    );
}

/// With prices set, budgets in dollars hold too: a reservation is priced at the dearest token
/// (it could all be output), what the service counted at its own kinds' prices, and a request
/// whose counts are unknown at the dearest price for its whole grant.
#[tokio::test]
async fn budgets_in_dollars_hold_at_the_configured_prices() {
    let env = TestEnv::new().await;
    let (a, b, c) = three_runs(&env).await;
    // $0.03 an incident, $0.05 the installation's day; tokens would allow far more. At $15 a
    // million output tokens (the dearest), $0.03 is 2,000 tokens.
    let budget = AiBudget {
        incident_tokens: 1_000_000,
        installation_daily_tokens: 1_000_000,
        incident_usd: Some(0.03),
        installation_daily_usd: Some(0.05),
    };
    let first = ledger(&env, a, budget).await;
    let held = first
        .reserve(8_000, "anthropic", MODEL.into())
        .await
        .unwrap();
    assert_eq!(held.tokens, 2_000);
    // Held at the dearest price while it runs: nothing left for the incident's next run.
    let second = ledger(&env, b, budget).await;
    assert_eq!(
        second
            .reserve(8_000, "anthropic", MODEL.into())
            .await
            .unwrap()
            .tokens,
        0
    );
    // Settled at 1,000 input ($3), 500 output ($15) and 1,000 cache reads ($0.30) a million:
    // $0.0108. The incident has $0.0192 left: 1,280 tokens at the dearest price.
    first
        .settle(held, Some(spent(1_000, 500)), 1)
        .await
        .unwrap();
    let again = second
        .reserve(8_000, "anthropic", MODEL.into())
        .await
        .unwrap();
    assert_eq!(again.tokens, 1_280);
    // Unknown counts: the whole grant at the dearest price ($0.0192), so the incident has
    // spent its $0.03.
    second.settle(again, None, 1).await.unwrap();
    assert_eq!(
        first
            .reserve(100, "anthropic", MODEL.into())
            .await
            .unwrap()
            .tokens,
        0
    );
    // The other incident: the day has $0.05 - $0.03 = $0.02 left, 1,333 tokens.
    let other = ledger(&env, c, budget).await;
    assert_eq!(
        other
            .reserve(8_000, "anthropic", MODEL.into())
            .await
            .unwrap()
            .tokens,
        1_333
    );
}
