//! GitHub's bad moments: rate limits are waited out (as `x-ratelimit-reset` and
//! `retry-after` say) and the stage carries on; an installation token is exchanged once and
//! reused, refreshed before it expires, and replaced once when GitHub answers 401.

mod support;

use std::time::{Duration, Instant};

use github_standin::Knobs;
use support::*;

async fn failed_attempts(env: &TestEnv, run: uuid::Uuid) -> i64 {
    env.db()
        .await
        .query_one(
            "SELECT count(*) FROM stage_attempts WHERE run_id = $1 AND outcome <> 'succeeded'",
            &[&run],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_rate_limit_is_waited_out_then_the_run_succeeds() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // The first installation request meets the primary limit (403, remaining 0, reset), the
    // second a secondary one (429, retry-after: 1).
    env.standin.set_knobs(Knobs {
        rate_limit_next: 1,
        retry_after_next: 1,
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    let started = Instant::now();
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(8101, &now()))
        .await;
    let run = run_id_of(&body);
    assert_eq!(
        env.wait_run(run, Duration::from_secs(90)).await,
        "succeeded"
    );
    // Waited, not failed: no stage attempt was lost to the limit.
    assert_eq!(failed_attempts(&env, run).await, 0);
    let jobs_asked = env
        .standin
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/actions/runs/8101/attempts/1/jobs"))
        .count();
    assert_eq!(jobs_asked, 3, "refused twice, then answered");
    // octocrab waits at least 5 s for a primary limit, and the retry-after second.
    assert!(started.elapsed() >= Duration::from_secs(6));
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_and_a_short_lived_one_refreshed() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(8201, &now()))
        .await;
    let run = run_id_of(&body);
    assert_eq!(
        env.wait_run(run, Duration::from_secs(60)).await,
        "succeeded"
    );
    assert_eq!(
        env.standin.token_requests().len(),
        1,
        "one exchange per run"
    );

    // GitHub revokes the token: the next request gets 401, octocrab exchanges the app's JWT
    // for a new token once and repeats the request.
    env.standin.revoke_tokens();
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(8202, &now()))
        .await;
    let run = run_id_of(&body);
    assert_eq!(
        env.wait_run(run, Duration::from_secs(60)).await,
        "succeeded"
    );
    assert_eq!(failed_attempts(&env, run).await, 0);
    assert_eq!(env.standin.token_requests().len(), 2);

    // Tokens that live 31 s are within octocrab's 30 s margin a second after issue: each
    // later request refreshes first, and the run still succeeds.
    env.standin.set_knobs(Knobs {
        token_ttl_secs: Some(31),
        ..Knobs::default()
    });
    env.standin.revoke_tokens();
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(8203, &now()))
        .await;
    let run = run_id_of(&body);
    assert_eq!(
        env.wait_run(run, Duration::from_secs(60)).await,
        "succeeded"
    );
    assert!(
        env.standin.token_requests().len() >= 4,
        "the short-lived token was refreshed: {} exchanges",
        env.standin.token_requests().len()
    );
    // Every exchange asked for this one repository, with the app's JWT.
    assert!(env
        .standin
        .token_requests()
        .iter()
        .all(|r| r["repositories"] == serde_json::json!(["octo-repo"])));
}
