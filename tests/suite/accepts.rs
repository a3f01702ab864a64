//! Failed runs' deliveries written in batches (`selfheal_shared::accepts`): what gathers while
//! every writer is busy goes in one statement, each delivery answered with its own outcome and
//! outbox row; a payload Postgres refuses costs the rest of its batch nothing; an outage or a
//! session that never commits is every waiting request's prompt error, never a hang.

use std::time::Duration;

use selfheal_shared::accepts::{AcceptError, Accepts, Written, WRITERS};
use selfheal_shared::envelope::Envelope;
use selfheal_shared::incidents::{Delivery, Ingested};
use tokio::task::JoinHandle;

use crate::support::*;

type Answer = JoinHandle<Result<Ingested, AcceptError>>;

fn send(accepts: &Accepts, id: &str, payload: &str) -> Answer {
    let (accepts, id, payload) = (accepts.clone(), id.to_string(), payload.to_string());
    tokio::spawn(async move {
        let envelope = Envelope {
            action: Some("completed".into()),
            installation_id: Some(INSTALLATION_ID),
            repository_id: Some(1296269),
        };
        let delivery = Delivery {
            id: &id,
            event: "workflow_run",
            payload: &payload,
            envelope: &envelope,
        };
        accepts.accept(&delivery, Some(30)).await
    })
}

/// Backends waiting for a lock: the writers held up by `hold`'s uncommitted rows.
async fn waiting(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Every writer busy: each given a delivery whose id `holder` has inserted and not committed,
/// one at a time so that each takes a batch of its own. Returns their answers.
async fn hold(
    accepts: &Accepts,
    holder: &tokio_postgres::Client,
    watcher: &tokio_postgres::Client,
    tag: &str,
) -> Vec<Answer> {
    holder.batch_execute("BEGIN").await.unwrap();
    let mut held = Vec::new();
    for n in 0..WRITERS {
        let id = format!("{tag}-holder-{n}");
        holder
            .execute(
                "INSERT INTO webhook_deliveries (delivery_id, event, outcome, payload) VALUES ($1, 'workflow_run', 'held', '{}')",
                &[&id],
            )
            .await
            .unwrap();
        held.push(send(accepts, &id, "{}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while waiting(watcher).await < (n + 1) as i64 {
            assert!(
                std::time::Instant::now() < deadline,
                "writer {n} never waited for the held row"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    held
}

#[tokio::test]
async fn deliveries_that_gather_are_written_together_each_with_its_own_outcome() {
    let env = TestEnv::new().await;
    let pool = selfheal_shared::db::pool(&env.database_url, 8).unwrap();
    selfheal_shared::db::migrate(&pool).await.unwrap();
    let (accepts, writers) = Accepts::start(pool.clone());
    let (holder, watcher, db) = (env.db().await, env.db().await, env.db().await);

    let held = hold(&accepts, &holder, &watcher, "a").await;
    // Stored before: its redelivery is a duplicate, in a batch or not.
    db.execute(
        "INSERT INTO webhook_deliveries (delivery_id, event, outcome, payload) VALUES ('a-earlier', 'workflow_run', 'accepted', '{}')",
        &[],
    )
    .await
    .unwrap();
    let mut answers = Vec::new();
    for n in 0..12 {
        let id = format!("a-{n:02}");
        answers.push((id.clone(), send(&accepts, &id, &format!(r#"{{"n":{n}}}"#))));
    }
    // The same delivery twice in one batch (a redelivery racing its original), and one stored
    // before.
    answers.push(("a-05".into(), send(&accepts, "a-05", r#"{"n":5}"#)));
    answers.push(("a-earlier".into(), send(&accepts, "a-earlier", "{}")));
    // Every request handed over while the writers are held.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = accepts.written();
    assert_eq!(before.deliveries, 0, "{before:?}");
    holder.batch_execute("ROLLBACK").await.unwrap();
    for answer in held {
        assert!(matches!(
            answer.await.unwrap(),
            Ok(Ingested::Accepted { .. })
        ));
    }

    let mut accepted = 0;
    let mut duplicates = Vec::new();
    for (id, answer) in answers {
        match answer.await.unwrap() {
            Ok(Ingested::Accepted { outbox_id }) => {
                accepted += 1;
                // The outbox row answered is this delivery's own.
                let named: String = db
                    .query_one(
                        "SELECT delivery_id FROM outbox WHERE id = $1",
                        &[&outbox_id],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(named, id);
            }
            Ok(Ingested::Duplicate) => duplicates.push(id),
            other => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(accepted, 12);
    duplicates.sort();
    assert_eq!(duplicates, ["a-05", "a-earlier"]);
    // The held writers' own, then the 13 distinct ids of the batch in one statement, and the
    // repeat of a-05 in a second (where it finds a-05 stored).
    assert_eq!(
        accepts.written(),
        Written {
            statements: WRITERS as u64 + 2,
            deliveries: WRITERS as u64 + 14,
            refused: 0
        }
    );
    // Each delivery's own columns, in their places.
    let row = db
        .query_one(
            "SELECT d.event, d.action, d.installation_id, d.repository_id, d.outcome, d.payload->>'n', o.runs_per_hour
               FROM webhook_deliveries d JOIN outbox o USING (delivery_id) WHERE delivery_id = 'a-07'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "workflow_run");
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("completed")
    );
    assert_eq!(row.get::<_, Option<i64>>(2), Some(INSTALLATION_ID));
    assert_eq!(row.get::<_, Option<i64>>(3), Some(1296269));
    assert_eq!(row.get::<_, String>(4), "accepted");
    assert_eq!(row.get::<_, Option<String>>(5).as_deref(), Some("7"));
    assert_eq!(row.get::<_, Option<i64>>(6), Some(30));
    let outbox: i64 = db
        .query_one(
            "SELECT count(*) FROM outbox WHERE delivery_id LIKE 'a-%' AND runs_per_hour = 30",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        outbox,
        12 + WRITERS as i64,
        "one outbox row per stored delivery"
    );

    // A payload Postgres cannot store, in a batch with good ones: refused alone.
    let before = accepts.written();
    let held = hold(&accepts, &holder, &watcher, "b").await;
    let good: Vec<_> = (0..6)
        .map(|n| send(&accepts, &format!("b-{n}"), r#"{"ok":true}"#))
        .collect();
    let bad = send(&accepts, "b-bad", r#"{"s":"\u0000"}"#);
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.batch_execute("ROLLBACK").await.unwrap();
    for answer in held.into_iter().chain(good) {
        assert!(matches!(
            answer.await.unwrap(),
            Ok(Ingested::Accepted { .. })
        ));
    }
    match bad.await.unwrap() {
        Err(AcceptError::Db(e)) => assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::UNTRANSLATABLE_CHARACTER),
            "{e}"
        ),
        other => panic!("b-bad: {other:?}"),
    }
    let stored: Vec<String> = db
        .query(
            "SELECT delivery_id FROM webhook_deliveries WHERE delivery_id LIKE 'b-%' AND delivery_id NOT LIKE 'b-holder-%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, ["b-0", "b-1", "b-2", "b-3", "b-4", "b-5"]);
    // The seven went together, were refused, and were split in halves until the bad payload
    // was alone: 7 -> 3 + 4 -> (1 + 2) + (2 + 2) -> the bad one's pair split once more.
    let after = accepts.written();
    assert_eq!(after.deliveries - before.deliveries, WRITERS as u64 + 6);
    let refused = after.refused - before.refused;
    assert!((2..=3).contains(&refused), "{before:?} {after:?}");

    // Dropped, the writers finish what they hold and stop.
    drop(accepts);
    tokio::time::timeout(Duration::from_secs(10), writers)
        .await
        .expect("the writers stop once every handle is gone")
        .unwrap();
}

/// Postgres that never answers (a server that accepts connections and says nothing): each
/// batch waits for the pool's connection timeout once, and every request waiting in it is
/// answered with that outage (a 503 in the webhook), not tried again one by one.
#[tokio::test]
async fn an_outage_is_every_waiting_requests_prompt_error() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let url = format!("postgres://selfheal@127.0.0.1:{port}/none");
    let (accepts, _writers) = Accepts::start(selfheal_shared::db::pool(&url, WRITERS).unwrap());
    let started = std::time::Instant::now();
    let answers: Vec<_> = (0..20)
        .map(|n| send(&accepts, &format!("down-{n}"), "{}"))
        .collect();
    for answer in answers {
        match answer.await.unwrap() {
            Err(AcceptError::Pool(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    // The pool gives a connection 3 s: the first writers' batches, then the rest together,
    // about 6 s; one by one it would be a minute.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(accepts.written().deliveries, 0);
}

/// A session that inserted a delivery id and never commits holds up the batch that holds the
/// same id for `LOCK_TIMEOUT`, then the batch is answered with the timeout (a 503), and the
/// writers go on with what comes next.
#[tokio::test]
async fn a_row_held_by_a_session_that_never_commits_times_out() {
    use selfheal_shared::accepts::{LOCK_TIMEOUT, STATEMENT_TIMEOUT};
    let env = TestEnv::new().await;
    let migrated = selfheal_shared::db::pool(&env.database_url, 1).unwrap();
    selfheal_shared::db::migrate(&migrated).await.unwrap();
    let pool = selfheal_shared::db::pool_with_timeouts(
        &env.database_url,
        WRITERS,
        LOCK_TIMEOUT,
        STATEMENT_TIMEOUT,
    )
    .unwrap();
    let (accepts, _writers) = Accepts::start(pool);
    let holder = env.db().await;
    holder
        .batch_execute(
            "BEGIN; INSERT INTO webhook_deliveries (delivery_id, event, outcome, payload) VALUES ('stuck', 'workflow_run', 'held', '{}')",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    match send(&accepts, "stuck", "{}").await.unwrap() {
        Err(AcceptError::Db(e)) => assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= LOCK_TIMEOUT);
    assert!(matches!(
        send(&accepts, "after", "{}").await.unwrap(),
        Ok(Ingested::Accepted { .. })
    ));
    holder.batch_execute("ROLLBACK").await.unwrap();
}
