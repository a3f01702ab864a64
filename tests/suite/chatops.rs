//! `/selfheal` commands in comments: obeyed only from people GitHub says may write to the
//! repository, answered on the PR, and written to the audit log with their actor.

use crate::support;

use std::time::Duration;

use github_standin::Knobs;
use support::*;

#[tokio::test]
async fn stop_from_a_reader_is_refused_and_from_a_writer_stops_the_incident() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    env.standin.set_knobs(Knobs {
        permissions: [
            // An organisation's custom role, based on write: `permission` says write, its
            // `role_name` is its own.
            ("hubot-maintainer".to_string(), "deployer/write".to_string()),
            ("stranger".to_string(), "none".to_string()),
        ]
        .into(),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(7101, &now()))
        .await;
    env.wait_run(env.run_of(&body).await, Duration::from_secs(60))
        .await;

    // Codertocat (the recorded commenter) can only read.
    let (status, body) = app
        .deliver(
            "issue_comment",
            &env.comment(1, "Codertocat", "/selfheal stop"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "command_queued");
    let refused = body["command_id"].as_i64().unwrap();
    assert_eq!(env.command_status(refused).await, "refused");
    assert_eq!(
        env.count("SELECT count(*) FROM incidents WHERE stopped_at IS NOT NULL")
            .await,
        0
    );
    let said = env.standin.comments();
    assert!(
        said[0]["body"]
            .as_str()
            .unwrap()
            .contains("needs write access to this repository (GitHub says: read)"),
        "{said:?}"
    );

    // Someone GitHub does not know on this repository (404) is refused the same way.
    let (_, body) = app
        .deliver(
            "issue_comment",
            &env.comment(1, "stranger", "/selfheal stop"),
        )
        .await;
    assert_eq!(
        env.command_status(body["command_id"].as_i64().unwrap())
            .await,
        "refused"
    );
    assert!(env.standin.comments()[1]["body"]
        .as_str()
        .unwrap()
        .contains("(GitHub says: none)"));

    // A maintainer with write access (through a custom role): selfheal stops on the incident.
    let (_, body) = app
        .deliver(
            "issue_comment",
            &env.comment(1, "hubot-maintainer", "/selfheal stop"),
        )
        .await;
    let obeyed = body["command_id"].as_i64().unwrap();
    assert_eq!(env.command_status(obeyed).await, "done");
    assert_eq!(
        env.count("SELECT count(*) FROM incidents WHERE stopped_by = 'github:hubot-maintainer'")
            .await,
        1
    );
    assert!(env.standin.comments()[2]["body"]
        .as_str()
        .unwrap()
        .starts_with("selfheal stopped on this incident"));
    // Both asked GitHub about the commenter's permission.
    let asked: Vec<String> = env
        .standin
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/permission"))
        .map(|c| c.path.clone())
        .collect();
    assert_eq!(
        asked,
        [
            "/repos/octo-org/octo-repo/collaborators/Codertocat/permission",
            "/repos/octo-org/octo-repo/collaborators/stranger/permission",
            "/repos/octo-org/octo-repo/collaborators/hubot-maintainer/permission"
        ]
    );
    // The audit log has each command and its actor: received, then refused or done.
    let db = env.db().await;
    let audit: Vec<(String, String)> = db
        .query(
            "SELECT actor, action FROM audit_log WHERE action LIKE 'command.%' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want = [
        ("github:Codertocat", "command.received"),
        ("github:Codertocat", "command.refused"),
        ("github:stranger", "command.received"),
        ("github:stranger", "command.refused"),
        ("github:hubot-maintainer", "command.received"),
        ("github:hubot-maintainer", "command.done"),
    ];
    assert_eq!(
        audit,
        want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
    );

    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'incident.stopped' AND actor = 'github:hubot-maintainer'")
            .await,
        1
    );

    // Stopped: the fix's green CI is no longer acted on.
    let (branch, head) = env.pull(1);
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(7102, &branch, &head, "success"),
        )
        .await;
    assert_eq!(body["status"], "ignored", "{body}");
}

#[tokio::test]
async fn explain_retry_and_approve_from_a_writer() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    env.standin.set_knobs(Knobs {
        permissions: [("octocat".to_string(), "admin".to_string())].into(),
        // Not merged by policy: a person has to approve.
        repo_config: Some("auto_merge_classes: []\n".into()),
        fix_checks: green_checks(),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(7201, &now()))
        .await;
    env.wait_run(env.run_of(&body).await, Duration::from_secs(60))
        .await;

    let (_, body) = app
        .deliver(
            "issue_comment",
            &env.comment(1, "octocat", "/selfheal explain"),
        )
        .await;
    assert_eq!(
        env.command_status(body["command_id"].as_i64().unwrap())
            .await,
        "done"
    );
    let explained = env.standin.comments()[0]["body"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(explained.contains("- run 7201: succeeded; diagnosis format (rustfmt); patch `format` → fixed; verify: deliver"), "{explained}");

    let (_, body) = app
        .deliver(
            "issue_comment",
            &env.comment(1, "octocat", "/selfheal retry"),
        )
        .await;
    assert_eq!(
        env.command_status(body["command_id"].as_i64().unwrap())
            .await,
        "done"
    );
    assert!(env
        .standin
        .calls()
        .iter()
        .any(|c| c.method == "POST" && c.path.ends_with("/actions/runs/7201/rerun-failed-jobs")));

    let (_, body) = app
        .deliver(
            "issue_comment",
            &env.comment(1, "octocat", "/selfheal approve"),
        )
        .await;
    assert_eq!(
        env.command_status(body["command_id"].as_i64().unwrap())
            .await,
        "done"
    );
    assert_eq!(env.standin.pulls()[0]["merged"], true);
    assert_eq!(
        env.count(
            "SELECT count(*) FROM deliveries WHERE decided_by = 'github:octocat' AND merged_at IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'pull_request.merged' AND actor = 'github:octocat'")
            .await,
        1
    );

    // Unknown words and bots are not commands.
    let (_, body) = app
        .deliver(
            "issue_comment",
            &env.comment(1, "octocat", "/selfheal dance"),
        )
        .await;
    assert_eq!(body["status"], "ignored");
    assert!(body["reason"]
        .as_str()
        .unwrap()
        .contains("unknown command /selfheal dance"));
    let mut bot = env.comment(1, "selfheal[bot]", "/selfheal approve");
    bot["comment"]["user"]["type"] = "Bot".into();
    let (_, body) = app.deliver("issue_comment", &bot).await;
    assert_eq!(body["status"], "stored");
}

#[tokio::test]
async fn approve_refuses_red_checks_and_commands_obey_dry_run() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let admin = || [("octocat".to_string(), "admin".to_string())].into();
    env.standin.set_knobs(Knobs {
        permissions: admin(),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(7601, &now()))
        .await;
    env.wait_run(env.run_of(&body).await, Duration::from_secs(60))
        .await;

    // An approval written before selfheal pushed the fix (the recorded comment's own time,
    // 2019) does not cover it.
    let mut old = env.comment(1, "octocat", "/selfheal approve");
    old["comment"]["created_at"] = serde_json::json!("2019-05-15T15:20:21Z");
    let (_, body) = app.deliver("issue_comment", &old).await;
    assert_eq!(
        env.command_status(body["command_id"].as_i64().unwrap())
            .await,
        "refused"
    );
    let answer = env.standin.comments().last().unwrap()["body"].to_string();
    assert!(
        answer.contains("after this approval was written"),
        "{answer}"
    );

    // A red check on the fix: a person's approval does not override it.
    env.standin.set_knobs(Knobs {
        permissions: admin(),
        fix_checks: Some(vec![
            serde_json::json!({"name": "test", "status": "completed", "conclusion": "failure"}),
        ]),
        ..Knobs::default()
    });
    let (_, body) = app
        .deliver(
            "issue_comment",
            &env.comment(1, "octocat", "/selfheal approve"),
        )
        .await;
    assert_eq!(
        env.command_status(body["command_id"].as_i64().unwrap())
            .await,
        "refused"
    );
    let answer = env.standin.comments().last().unwrap()["body"].to_string();
    assert!(answer.contains("checks failed"), "{answer}");

    // The repository runs selfheal in dry-run mode: approve and retry write nothing.
    env.standin.set_knobs(Knobs {
        permissions: admin(),
        repo_config: Some("dry_run: true\n".into()),
        ..Knobs::default()
    });
    for command in ["/selfheal approve", "/selfheal retry"] {
        let (_, body) = app
            .deliver("issue_comment", &env.comment(1, "octocat", command))
            .await;
        assert_eq!(
            env.command_status(body["command_id"].as_i64().unwrap())
                .await,
            "refused",
            "{command}"
        );
        let answer = env.standin.comments().last().unwrap()["body"].to_string();
        assert!(answer.contains("dry-run"), "{answer}");
    }
    assert!(
        !env.standin
            .calls()
            .iter()
            .any(|c| c.method == "PUT" || c.path.ends_with("/rerun-failed-jobs")),
        "nothing merged or rerun"
    );
}
