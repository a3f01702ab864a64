//! Precision (selfheal's merged fixes not reverted within 14 days) and where the time to green
//! goes, on fixes merged relative to today, with a revert reported by a real `pull_request`
//! delivery (docs/reporting.md).

use crate::support;

use support::*;

/// An incident healed by selfheal's pull request `number`: first red `days` ago, its fix
/// pushed 10 minutes later, merged 20 minutes after that, green 10 minutes after the merge;
/// reverted `reverted_after` days after the merge when given.
async fn healed(
    db: &tokio_postgres::Client,
    repository: i64,
    full_name: &str,
    number: i32,
    days: i64,
    reverted_after: Option<i64>,
) -> uuid::Uuid {
    use chrono::Duration;
    let (incident, run) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let first = chrono::Utc::now() - Duration::days(days);
    let (pushed, merged, green) = (
        first + Duration::minutes(10),
        first + Duration::minutes(30),
        first + Duration::minutes(40),
    );
    let reverted = reverted_after.map(|d| merged + Duration::days(d));
    db.execute(
        "INSERT INTO incidents (id, repository_id, head_repository_id, branch, workflow_id,
           status, first_failed_at, resolved_at)
         VALUES ($1, $2, $2, 'main', 7, 'resolved', $3, $4)",
        &[&incident, &repository, &first, &green],
    )
    .await
    .unwrap();
    let delivery = format!("d-{number}");
    db.execute(
        "INSERT INTO webhook_deliveries (delivery_id, event, outcome, payload)
         VALUES ($1, 'workflow_run', 'accepted', '{}')",
        &[&delivery],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO runs (id, incident_id, delivery_id, installation_id, repository_full_name,
           github_run_id, github_run_attempt, head_sha, conclusion, status)
         VALUES ($1, $2, $3, $4, $5, $6, 1, 'abc', 'failure', 'succeeded')",
        &[
            &run,
            &incident,
            &delivery,
            &INSTALLATION_ID,
            &full_name,
            &(i64::from(number) * 100),
        ],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO fix_attempts (run_id, incident_id, attempt, strategy, commit_sha, pushed_at)
         VALUES ($1, $2, 1, 'format', 'c', $3)",
        &[&run, &incident, &pushed],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO deliveries (run_id, incident_id, kind, branch, pr_number, merged_at, reverted_at)
         VALUES ($1, $2, 'pull_request', $3, $4, $5, $6)",
        &[
            &run,
            &incident,
            &format!("selfheal/fix-{number}"),
            &number,
            &merged,
            &reverted,
        ],
    )
    .await
    .unwrap();
    incident
}

/// The recorded run's repository, installed: the database's client, its id and full name.
async fn installed(env: &TestEnv) -> (tokio_postgres::Client, i64, String) {
    let repository = env.failing_run(1, &now())["repository"].clone();
    let (repo_id, full_name) = (
        repository["id"].as_i64().unwrap(),
        repository["full_name"].as_str().unwrap().to_string(),
    );
    let db = env.db().await;
    db.execute(
        "INSERT INTO installations (id, account_login) VALUES ($1, 'octo-org')",
        &[&INSTALLATION_ID],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO repositories (id, installation_id, full_name) VALUES ($1, $2, $3)",
        &[&repo_id, &INSTALLATION_ID, &full_name],
    )
    .await
    .unwrap();
    (db, repo_id, full_name)
}

#[tokio::test]
async fn precision_counts_reverts_within_fourteen_days_and_time_to_green_splits_the_wait() {
    let env = TestEnv::new().await;
    env.migrate();
    let app = env.spawn_web().await;
    let (db, repo_id, full_name) = installed(&env).await;
    // Merged 30 days ago: kept; reverted 10 days later; reverted 25 days later (past the 14).
    let kept = healed(&db, repo_id, &full_name, 11, 30, None).await;
    healed(&db, repo_id, &full_name, 12, 30, Some(10)).await;
    healed(&db, repo_id, &full_name, 13, 30, Some(25)).await;
    // Merged 2 days ago: not settled yet; and one people revert now, through GitHub.
    healed(&db, repo_id, &full_name, 14, 2, None).await;
    let reverted_now = healed(&db, repo_id, &full_name, 15, 2, None).await;

    // GitHub's Revert button: branch `revert-15-<the fix's branch>`, merged by a person.
    let (status, body) = app
        .deliver(
            "pull_request",
            &env.pr_closed(99, "revert-15-selfheal/fix-15", true, "octocat"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "fix_reverted", "{body}");
    assert_eq!(body["incident_id"], reverted_now.to_string());
    // Not a revert of selfheal's fix: another branch, an unmerged revert, an unknown number.
    for (number, branch, merged) in [
        (100, "revert-14-feature/login", true),
        (101, "revert-14-selfheal/fix-14", false),
        (102, "revert-77-selfheal/fix-77", true),
        // The number of selfheal's fix, another branch: not its revert.
        (103, "revert-14-selfheal/fix-15", true),
    ] {
        let (_, body) = app
            .deliver(
                "pull_request",
                &env.pr_closed(number, branch, merged, "octocat"),
            )
            .await;
        assert_ne!(body["status"], "fix_reverted", "{branch}: {body}");
    }
    let by: String = db
        .query_one(
            "SELECT reverted_by FROM deliveries WHERE pr_number = 15",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(by, "github:octocat #99");
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'pull_request.reverted'")
            .await,
        1
    );

    let weeks = selfheal_shared::reports::precision(
        &db,
        Some(&full_name),
        chrono::Utc::now() - chrono::Duration::days(60),
    )
    .await
    .unwrap();
    let got: Vec<(i64, i64, i64, Option<f64>)> = weeks
        .iter()
        .map(|w| (w.merged, w.settled, w.reverted, w.precision))
        .collect();
    // Newest week first: two merged, the one reverted already settled; then three, one of
    // them reverted within 14 days.
    assert_eq!(
        got,
        [(2, 1, 1, Some(0.0)), (3, 3, 1, Some(0.6667))],
        "{weeks:?}"
    );

    // The healed incident's 40 minutes: 10 to the fix, 20 to the merge, 10 to green.
    let row = db
        .query_one(
            "SELECT to_fix_seconds, to_merge_seconds, to_green_seconds
             FROM incident_time_to_green WHERE incident_id = $1",
            &[&kept],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, f64>(0),
            row.get::<_, f64>(1),
            row.get::<_, f64>(2)
        ),
        (600.0, 1200.0, 600.0)
    );
    let out = env.selfheal(&[
        "report",
        "time-to-green",
        "--since",
        "60d",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let healed_total: i64 = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["healed"].as_i64().unwrap())
        .sum();
    assert_eq!(healed_total, 5, "{rows}");
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["to_merge_p50_seconds"] == 1200.0),
        "{rows}"
    );
    let out = env.selfheal(&["report", "precision", "--since", "60d", "--format", "csv"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(",3,3,1,0.6667"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A `git revert` of selfheal's merged fix pushed by hand (no Revert button) is seen in the
/// runs the push starts, whatever became of them: the fix counts as reverted once, by whoever
/// pushed, when the push came; a pull request's run, another branch, a fork, another
/// repository and a commit that is not the fix's record nothing.
#[tokio::test]
async fn a_revert_pushed_by_hand_is_seen_in_the_runs_the_push_starts() {
    use chrono::{DateTime, Utc};
    let env = TestEnv::new().await;
    env.migrate();
    let app = env.spawn_web().await;
    let (db, repo_id, full_name) = installed(&env).await;
    // Fixes #21, #22 and #23 merged on main two days ago: #21 squashed as `fix`, #22 as
    // `other`, #23 with a merge commit `merge` bringing its own commit `own`.
    let sha = |s: &str| s.repeat(20);
    let (fix, other, merge, own) = (sha("f1"), sha("0e"), sha("3a"), sha("3b"));
    let reverted = healed(&db, repo_id, &full_name, 21, 2, None).await;
    healed(&db, repo_id, &full_name, 22, 2, None).await;
    let merged_23 = healed(&db, repo_id, &full_name, 23, 2, None).await;
    for (number, merged_as, commit) in [(21, &fix, ""), (22, &other, ""), (23, &merge, &own[..])] {
        db.execute(
            "UPDATE deliveries SET merge_commit_sha = $2, commit_sha = nullif($3, '') WHERE pr_number = $1",
            &[&number, merged_as, &commit],
        )
        .await
        .unwrap();
    }
    let revert = format!("Revert \"Fix formatting\"\n\nThis reverts commit {fix}.\n");
    let pushed_at = (Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let run = |id: i64, conclusion: &str, event: &str, branch: &str, message: &str| {
        let mut payload = if conclusion == "success" {
            env.green_run(id, &now())
        } else {
            env.failing_run(id, &now())
        };
        let wr = &mut payload["workflow_run"];
        wr["event"] = event.into();
        wr["head_branch"] = branch.into();
        wr["head_sha"] = "c0ffee".repeat(7)[..40].into();
        wr["head_commit"]["message"] = message.into();
        wr["created_at"] = pushed_at.as_str().into();
        wr["actor"]["login"] = "mona".into();
        payload
    };
    let revert_of = |number: i32| {
        let db = &db;
        async move {
            let row = db
                .query_one(
                    "SELECT reverted_by, reverted_at FROM deliveries WHERE pr_number = $1",
                    &[&number],
                )
                .await
                .unwrap();
            (
                row.get::<_, Option<String>>(0),
                row.get::<_, Option<DateTime<Utc>>>(1),
            )
        }
    };

    // Nothing that is not a push of the fix's revert onto the branch it was merged into.
    let mut fork = run(31, "success", "push", "main", &revert);
    fork["workflow_run"]["head_repository"]["id"] = 99_999.into();
    let mut elsewhere = run(35, "success", "push", "main", &revert);
    elsewhere["repository"]["id"] = 99_998.into();
    elsewhere["workflow_run"]["head_repository"]["id"] = 99_998.into();
    for (why, payload) in [
        (
            "a pull request's run",
            run(30, "success", "pull_request", "main", &revert),
        ),
        (
            "another branch",
            run(32, "success", "push", "feature/x", &revert),
        ),
        ("a fork", fork),
        ("another repository", elsewhere),
        (
            "another commit",
            run(
                33,
                "success",
                "push",
                "main",
                &format!("This reverts commit {}.", sha("ab")),
            ),
        ),
        (
            "a mention",
            run(34, "success", "push", "main", &format!("Follows {fix}.")),
        ),
    ] {
        let (status, body) = app.deliver("workflow_run", &payload).await;
        assert_eq!(status, 202, "{why}: {body}");
        assert_ne!(body["status"], "fix_reverted", "{why}: {body}");
        assert_eq!(revert_of(21).await, (None, None), "{why}");
    }

    // The revert's green run.
    let (status, body) = app
        .deliver("workflow_run", &run(40, "success", "push", "main", &revert))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "fix_reverted", "{body}");
    assert_eq!(body["incident_id"], reverted.to_string());
    let first = revert_of(21).await;
    assert_eq!(
        first,
        (
            Some("github:mona c0ffeec0ffee".to_string()),
            Some(pushed_at.parse().unwrap())
        )
    );
    // A failing run of a later push by someone else that reverts #21 again and #22: its run
    // is made as any failed run's (on the general path, not the failed run's own), #22's
    // revert recorded, #21's first one kept.
    let mut both = run(
        41,
        "failure",
        "push",
        "main",
        &format!("{revert}This reverts commit {other}.\n"),
    );
    both["workflow_run"]["head_sha"] = sha("d0").into();
    both["workflow_run"]["actor"]["login"] = "hubot".into();
    both["workflow_run"]["created_at"] = now().into();
    let (_, body) = app.deliver("workflow_run", &both).await;
    assert_eq!(body["status"], "run_created", "{body}");
    assert_eq!(revert_of(21).await, first);
    assert_eq!(
        revert_of(22).await.0.as_deref(),
        Some("github:hubot d0d0d0d0d0d0")
    );
    // A run the next push cancelled at once: its `requested` delivery says it; with a merge
    // commit, a revert of the fix's own commit counts.
    let mut requested = run(
        42,
        "success",
        "push",
        "main",
        &format!("This reverts commit {own}."),
    );
    requested["action"] = "requested".into();
    requested["workflow_run"]["conclusion"] = serde_json::Value::Null;
    let (_, body) = app.deliver("workflow_run", &requested).await;
    assert_eq!(body["status"], "fix_reverted", "{body}");
    assert_eq!(body["incident_id"], merged_23.to_string());
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'pull_request.reverted'")
            .await,
        3
    );
    assert_eq!(
        env.count("SELECT count(*) FROM deliveries WHERE reverted_at IS NOT NULL")
            .await,
        3
    );
}
