//! GitHub's bad moments: rate limits are waited out (as `x-ratelimit-reset` and
//! `retry-after` say, or a minute and more when GitHub's message alone says so) and the stage
//! carries on; writes are paced so that GitHub's write limit is not met; an installation
//! token is exchanged once and reused, refreshed before it expires, and replaced once when
//! GitHub answers 401.

use crate::support;

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
    let run = env.run_of(&body).await;
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
async fn a_bare_403_that_says_secondary_rate_limit_is_waited_out_doubling() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_GITHUB_RATE_LIMIT_MIN_WAIT_SECS", "1");
    let app = env.spawn_web().await;
    // GitHub's secondary limit with no header at all, twice: octocrab cannot tell it from a
    // refusal, selfheal reads GitHub's message.
    env.standin.set_knobs(Knobs {
        secondary_limit_next: 2,
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(8151, &now()))
        .await;
    let run = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(run, Duration::from_secs(90)).await,
        "succeeded"
    );
    assert_eq!(failed_attempts(&env, run).await, 0);
    let calls = env.standin.calls();
    let refused: Vec<usize> = (0..calls.len())
        .filter(|&i| calls[i].status == Some(403))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    // The same request again after the wait: at least a second, then at least two.
    for (n, &i) in refused.iter().enumerate() {
        let again = calls[i + 1..]
            .iter()
            .find(|c| c.path == calls[i].path && c.method == calls[i].method)
            .expect("the refused request was made again");
        let waited = again.at_ms - calls[i].at_ms;
        assert!(waited >= 1000 << n, "waited {waited} ms after refusal {n}");
    }
}

/// Writes of the run and their answers, as the stand-in saw them.
fn writes(env: &TestEnv) -> Vec<(u64, Option<u16>, String)> {
    env.standin
        .calls()
        .into_iter()
        .filter(|c| c.method != "GET" && c.auth == "installation-token")
        .map(|c| (c.at_ms, c.status, format!("{} {}", c.method, c.path)))
        .collect()
}

#[tokio::test]
async fn writes_are_paced_so_githubs_write_limit_is_never_met() {
    // GitHub refuses an installation's writes past its limit (here 2 a second): selfheal
    // spaces them out and meets no refusal.
    let limit = github_standin::WriteLimit {
        max: 2,
        window_ms: 1000,
    };
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_GITHUB_WRITE_INTERVAL_MS", "700");
    env.set("SELFHEAL_GITHUB_RATE_LIMIT_MIN_WAIT_SECS", "1");
    let app = env.spawn_web().await;
    env.standin.set_knobs(Knobs {
        write_limit: Some(limit),
        ..Knobs::default()
    });
    let _w1 = env.spawn_worker("w1");
    let _w2 = env.spawn_worker("w2");
    env.fail_and_heal(&app, 8161).await;
    let paced = writes(&env);
    assert!(paced.len() >= 4, "a fix is several writes: {paced:?}");
    assert!(
        paced.iter().all(|(_, status, _)| *status != Some(403)),
        "GitHub refused a paced write: {paced:?}"
    );
    assert_eq!(env.standin.pulls().len(), 1);

    // The same heal unpaced meets the limit (and waits it out): what the pacing prevents.
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_GITHUB_WRITE_INTERVAL_MS", "0");
    env.set("SELFHEAL_GITHUB_RATE_LIMIT_MIN_WAIT_SECS", "1");
    let app = env.spawn_web().await;
    env.standin.set_knobs(Knobs {
        write_limit: Some(limit),
        ..Knobs::default()
    });
    let _w = env.spawn_worker("w");
    env.fail_and_heal(&app, 8162).await;
    let unpaced = writes(&env);
    assert!(
        unpaced.iter().any(|(_, status, _)| *status == Some(403)),
        "unpaced writes should meet the limit: {unpaced:?}"
    );
    assert_eq!(
        env.standin.pulls().len(),
        1,
        "and still deliver after waiting"
    );
}

#[tokio::test]
async fn the_write_pace_is_the_installations_across_processes() {
    // Two pacers on one Redis, as two worker processes have: their turns for one installation
    // interleave, never closer than the interval (a per-process pace would let both write at
    // once); another installation is not held up by them.
    let env = TestEnv::new().await;
    let interval = Duration::from_millis(300);
    let pacer = || async {
        selfheal_shared::github::WritePacer::connect(&env.redis_url, &env.tag, interval)
            .await
            .unwrap()
    };
    let (a, b, c) = (pacer().await, pacer().await, pacer().await);
    let turns = |p: selfheal_shared::github::WritePacer, installation: i64| async move {
        let mut at = Vec::new();
        for _ in 0..4 {
            p.wait_turn(installation).await;
            at.push(Instant::now());
        }
        at
    };
    let (ta, tb, tc) = tokio::join!(turns(a, 42), turns(b, 42), turns(c, 43));
    let mut shared: Vec<Instant> = ta.into_iter().chain(tb).collect();
    shared.sort();
    for pair in shared.windows(2) {
        let gap = pair[1] - pair[0];
        // A turn is taken in Redis before its time is read here (a busy machine may delay the
        // reading): allow half an interval; writing at once would be 0 apart.
        assert!(
            gap >= interval / 2,
            "two writes of one installation {gap:?} apart"
        );
    }
    // Installation 43 took its first turn while 42's second was still waiting.
    assert!(
        tc[0] < shared[1],
        "another installation waited for 42's turns"
    );
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_and_a_short_lived_one_refreshed() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(8201, &now()))
        .await;
    let run = env.run_of(&body).await;
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
    let run = env.run_of(&body).await;
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
    let run = env.run_of(&body).await;
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
