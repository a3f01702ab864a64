//! The audit log is append-only and hash-chained; `selfheal verify-audit` finds tampering.

use crate::support;

use serde_json::{json, Value};
use support::*;

fn verify_audit(env: &TestEnv) -> (bool, String) {
    let out = env.selfheal(&["verify-audit"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn with_entries(env: &TestEnv) {
    let app = env.spawn_web().await;
    for (i, at) in ["2026-11-20T10:00:00Z", "2026-11-20T10:01:00Z"]
        .iter()
        .enumerate()
    {
        let (status, body) = app
            .deliver("workflow_run", &env.failing_run(2100 + i as i64, at))
            .await;
        assert_eq!(status, 202);
        // Its audit rows are written as it is admitted.
        assert_eq!(env.admit(&body).await["outcome"], "run_created");
    }
    let (status, _) = app
        .deliver("workflow_run", &env.green_run(2199, "2026-11-20T10:05:00Z"))
        .await;
    assert_eq!(status, 202);
    // incident.opened, run.created x2, incident.resolved
    assert_eq!(env.count("SELECT count(*) FROM audit_log").await, 4);
}

#[tokio::test]
async fn rows_appended_in_parallel_transactions_are_linked_in_one_chain() {
    let env = TestEnv::new().await;
    with_entries(&env).await;
    // Two transactions append at once and commit in the other order than they appended.
    let (mut a, mut b) = (env.db().await, env.db().await);
    let ta = a.transaction().await.unwrap();
    let tb = b.transaction().await.unwrap();
    for (tx, who) in [(&ta, "first"), (&tb, "second")] {
        tx.query_one(
            "SELECT audit_append($1, 'test.parallel', 'x', '{}'::jsonb)",
            &[&who],
        )
        .await
        .unwrap();
    }
    tb.commit().await.unwrap();
    ta.commit().await.unwrap();
    let (ok, out) = verify_audit(&env);
    assert!(ok, "{out}");
    assert!(out.contains("intact: 6 rows"), "{out}");
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE chain_seq IS NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn audit_log_is_intact_then_an_edit_is_detected() {
    let env = TestEnv::new().await;
    with_entries(&env).await;
    let (ok, out) = verify_audit(&env);
    assert!(ok, "{out}");
    assert!(out.contains("intact: 4 rows"), "{out}");
    // The chain's head, to anchor elsewhere: the last row's hash, as stored.
    let last: Vec<u8> = env
        .db()
        .await
        .query_one("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        out.contains(&format!("head: row 4 sha256:{}", hex::encode(&last))),
        "{out}"
    );

    // Someone with superuser rights edits history, getting around the trigger.
    let db = env.db().await;
    db.batch_execute(
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
         UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2;
         ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update;",
    )
    .await
    .unwrap();
    let (ok, out) = verify_audit(&env);
    assert!(!ok, "{out}");
    assert!(
        out.contains("row 2: content does not match its hash"),
        "{out}"
    );
}

#[tokio::test]
async fn the_chain_is_linked_only_from_a_fresh_snapshot_and_only_once() {
    let env = TestEnv::new().await;
    with_entries(&env).await;
    let mut db = env.db().await;
    // A session reading from an old snapshot would link to a stale head and fork the chain.
    let tx = db
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .unwrap();
    let err = tx
        .query_one("SELECT audit_chain(10)", &[])
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("READ COMMITTED only"),
        "{err:?}"
    );
    drop(tx);
    // No unbounded batch.
    assert!(db.query_one("SELECT audit_chain(NULL)", &[]).await.is_err());
    // Once linked, a row's link and content stay; an unlinked row's content too.
    let (ok, out) = verify_audit(&env);
    assert!(ok, "{out}");
    let db = env.db().await;
    for sql in [
        "UPDATE audit_log SET chain_seq = chain_seq + 100 WHERE seq = 1",
        "UPDATE audit_log SET hash = '\\x00' WHERE seq = 1",
    ] {
        assert!(db.execute(sql, &[]).await.is_err(), "{sql}");
    }
    db.query_one(
        "SELECT audit_append('github:octocat', 'test.unlinked', 'x', '{}'::jsonb)",
        &[],
    )
    .await
    .unwrap();
    let err = db
        .execute(
            "UPDATE audit_log SET actor = 'someone-else' WHERE chain_seq IS NULL",
            &[],
        )
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("append-only"), "{err:?}");
}

#[tokio::test]
async fn a_deleted_row_breaks_the_chain() {
    let env = TestEnv::new().await;
    with_entries(&env).await;
    // Rows are tamper-evident once linked (within a relay tick of their commit; verify-audit
    // links what is committed first).
    let (ok, out) = verify_audit(&env);
    assert!(ok, "{out}");
    let db = env.db().await;
    db.batch_execute(
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
         DELETE FROM audit_log WHERE seq = 2;
         ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update;",
    )
    .await
    .unwrap();
    let (ok, out) = verify_audit(&env);
    assert!(!ok, "{out}");
    assert!(
        out.contains("row 3: does not link to the previous row"),
        "{out}"
    );
}

#[tokio::test]
async fn audit_log_rejects_updates_and_deletes() {
    let env = TestEnv::new().await;
    with_entries(&env).await;
    let db = env.db().await;
    let err = db
        .execute("UPDATE audit_log SET actor = 'x'", &[])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
        "{err:?}"
    );
    assert!(db.execute("DELETE FROM audit_log", &[]).await.is_err());
    assert!(db.execute("TRUNCATE audit_log", &[]).await.is_err());
    assert_eq!(env.count("SELECT count(*) FROM audit_log").await, 4);
}

#[tokio::test]
async fn the_app_role_runs_selfheal_but_reaches_the_audit_log_only_through_its_function() {
    let mut env = TestEnv::new().await;
    // The owner migrates (as `selfheal migrate` would)...
    env.migrate();
    // ...and web and the worker connect as a login role in `selfheal_app`, never migrating.
    let role = format!("{}_app", env.tag);
    env.db()
        .await
        .batch_execute(&format!("CREATE ROLE {role} LOGIN IN ROLE selfheal_app"))
        .await
        .unwrap();
    let app_url = env
        .database_url
        .replacen("postgres@", &format!("{role}@"), 1);
    env.set("DATABASE_URL", &app_url);
    env.set("SELFHEAL_MIGRATE_AT_START", "false");
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("app-role");
    let (status, body) = app
        .deliver("workflow_run", &env.failing_run(2301, &now()))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        env.wait_run(env.run_of(&body).await, std::time::Duration::from_secs(90))
            .await,
        "succeeded",
        "every stage works with the app role's rights"
    );

    let as_app = pg(&app_url).await;
    for (sql, what) in [
        ("INSERT INTO audit_log (actor, action, subject, prev_hash, hash) VALUES ('x', 'forged', 'y', '', '')", "insert"),
        ("UPDATE audit_log SET actor = 'someone-else'", "update"),
        ("DELETE FROM audit_log", "delete"),
        ("TRUNCATE audit_log", "truncate"),
        ("CREATE TABLE scratch (x int)", "create a table"),
        ("DROP TABLE runs", "drop a table"),
    ] {
        let err = as_app.batch_execute(sql).await.unwrap_err();
        let code = err.code().map(|c| c.code().to_string()).unwrap_or_default();
        assert_eq!(code, "42501", "the app role may not {what}: {err:?}");
    }
    let seq: i64 = as_app
        .query_one(
            "SELECT audit_append('github:octocat', 'test.appended', 'x', '{}'::jsonb)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(seq > 1);
    let (ok, out) = verify_audit(&env);
    assert!(ok, "appends through the function keep the chain: {out}");
}

/// The relay links what was committed since its last tick. It used to link one batch a tick,
/// so above about a thousand audit rows a second the chain fell behind for good. One tick now
/// links batch after batch while they come back full.
#[tokio::test]
async fn one_relay_tick_links_a_backlog_larger_than_a_batch() {
    let env = TestEnv::new().await;
    let pool = selfheal_shared::db::pool(&env.database_url, 1).unwrap();
    selfheal_shared::db::migrate(&pool).await.unwrap();
    let db = env.db().await;
    let backlog = 2 * selfheal_shared::audit::LINK_BATCH + 500;
    db.execute(
        "SELECT audit_append('test'::text, 'backlog'::text, i::text, '{}'::jsonb) FROM generate_series(1, $1) i",
        &[&backlog],
    )
    .await
    .unwrap();
    let linked = selfheal_shared::audit::link_backlog(&pool.get().await.unwrap())
        .await
        .unwrap();
    assert_eq!(linked, i64::from(backlog));
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE chain_seq IS NULL")
            .await,
        0
    );
    let report = selfheal_shared::audit::verify(&pool.get().await.unwrap())
        .await
        .unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
    assert_eq!(report.rows, backlog as u64);
}

/// A failed run's audit rows, written in one statement with its incident and run: the
/// incident's `incident.opened` first, then `run.created` naming the delivery, the incident
/// and the run; a second failure of the same incident adds only its `run.created`.
#[tokio::test]
async fn a_failed_runs_audit_rows_name_its_incident_and_run_in_order() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let mut runs = Vec::new();
    let mut workflow_id = Value::Null;
    for (i, at) in ["2026-11-20T10:00:00Z", "2026-11-20T10:01:00Z"]
        .iter()
        .enumerate()
    {
        let payload = env.failing_run(2300 + i as i64, at);
        workflow_id = payload["workflow_run"]["workflow_id"].clone();
        let (status, body) = app
            .deliver_as("workflow_run", &format!("audit-delivery-{i}"), &payload)
            .await;
        assert_eq!(status, 202, "{body}");
        // The audit rows are written as the delivery is admitted.
        runs.push(env.admit(&body).await);
    }
    let incident = runs[0]["incident_id"].as_str().unwrap().to_string();
    assert_eq!(runs[1]["incident_id"], runs[0]["incident_id"]);
    let rows = env
        .db()
        .await
        .query(
            "SELECT actor, action, subject, detail FROM audit_log ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, String, Value)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_str(), got[0].2.as_str()),
        ("github:webhook", "incident.opened", incident.as_str())
    );
    assert_eq!(got[0].3["workflow_id"], workflow_id);
    for (k, (actor, action, subject, detail)) in got[1..].iter().enumerate() {
        assert_eq!(
            (actor.as_str(), action.as_str()),
            ("github:webhook", "run.created")
        );
        assert_eq!(subject, runs[k]["run_id"].as_str().unwrap(), "{got:?}");
        assert_eq!(detail["incident"], json!(incident), "{detail}");
        assert_eq!(
            detail["delivery"],
            json!(format!("audit-delivery-{k}")),
            "{detail}"
        );
        assert_eq!(detail["github_run_id"], json!(2300 + k as i64), "{detail}");
    }
}
