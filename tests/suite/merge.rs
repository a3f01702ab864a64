//! Closing the loop on the stand-in: the fix's own CI decides. Green and allowed, the PR is
//! merged (a real squash commit in the stand-in's bare repository) and the next green run on
//! the branch resolves the incident; still running or denied, it is left alone; red, selfheal
//! tries again within `max_attempts`, then says what it tried and stops.

use crate::support;

use std::time::Duration;

use github_standin::Knobs;
use serde_json::json;
use support::*;

#[tokio::test]
async fn a_green_fix_is_merged_by_policy_and_the_next_green_run_resolves_the_incident() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    let first_failed = now();
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(6201, &first_failed))
        .await;
    let failing = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(failing, Duration::from_secs(60)).await,
        "succeeded"
    );
    let (branch, fix_head) = env.pull(1);

    // The fix's own CI went green on selfheal's branch, and reported its check.
    env.standin.set_knobs(Knobs {
        fix_checks: green_checks(),
        ..Knobs::default()
    });
    let (status, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(6202, &branch, &fix_head, "success"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["stage"], "verify",
        "a green fix goes straight to verify"
    );
    let check = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(check, Duration::from_secs(30)).await,
        "succeeded"
    );
    let (v, reason) = verdict(&env, check).await;
    assert_eq!(v, "merge");
    assert_eq!(
        reason,
        "all 1 checks green; merge allowed by policies/merge.rego"
    );

    // Merged for real: a squash commit on master with the fix's tree, parented on the old head.
    let git_dir = env.standin.git_dir();
    let master = git(&git_dir, &["rev-parse", "refs/heads/master"]);
    assert_eq!(
        git(&git_dir, &["rev-parse", &format!("{master}^")]),
        env.standin.head_sha()
    );
    assert_eq!(
        git(&git_dir, &["rev-parse", &format!("{master}^{{tree}}")]),
        git(&git_dir, &["rev-parse", &format!("{fix_head}^{{tree}}")])
    );
    let db = env.db().await;
    let d = db
        .query_one(
            "SELECT merge_decision, decided_by, merge_commit_sha, merged_at IS NOT NULL FROM deliveries WHERE incident_id =
               (SELECT incident_id FROM runs WHERE id = $1)",
            &[&failing],
        )
        .await
        .unwrap();
    assert_eq!(d.get::<_, String>(0), "allowed");
    assert_eq!(d.get::<_, String>(1), "policies/merge.rego");
    assert_eq!(d.get::<_, String>(2), master);
    assert!(d.get::<_, bool>(3));
    let pr = env.standin.pulls()[0].clone();
    assert_eq!(
        (pr["state"].clone(), pr["merged"].clone()),
        (json!("closed"), json!(true))
    );
    // selfheal's branch is deleted once merged, and the stage says so.
    let refs = git(
        &git_dir,
        &["for-each-ref", "--format=%(refname)", "refs/heads/"],
    );
    assert_eq!(refs, "refs/heads/master", "{branch} left behind");
    let detail = deliver_detail(&db, check).await;
    assert!(
        detail.ends_with(&format!("; deleted branch {branch}")),
        "{detail}"
    );
    let calls: Vec<String> = env
        .standin
        .calls()
        .iter()
        .filter(|c| {
            c.path.contains("/pulls/1")
                || c.path.contains("/check-runs")
                || c.path.ends_with("/status")
                || c.path.ends_with("/actions/runs")
        })
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert_eq!(
        calls,
        vec![
            "GET /repos/octo-org/octo-repo/pulls/1".to_string(),
            "GET /repos/octo-org/octo-repo/actions/runs".to_string(),
            format!("GET /repos/octo-org/octo-repo/commits/{fix_head}/check-runs"),
            format!("GET /repos/octo-org/octo-repo/commits/{fix_head}/status"),
            "GET /repos/octo-org/octo-repo/pulls/1/files".to_string(),
            "PUT /repos/octo-org/octo-repo/pulls/1/merge".to_string(),
        ]
    );
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'pull_request.merged' AND actor = 'selfheal:policy'")
            .await,
        1
    );

    // The merge's own CI on master is green: the incident is resolved, MTTR in SQL.
    let mut green = env.green_run(6203, &now());
    green["workflow_run"]["head_sha"] = json!(master);
    let (_, body) = app.deliver("workflow_run", &green).await;
    assert_eq!(body["status"], "incident_resolved", "{body}");
    let mttr: Option<f64> = db
        .query_one("SELECT mttr_seconds FROM incident_mttr", &[])
        .await
        .unwrap()
        .get(0);
    assert!(mttr.is_some_and(|s| s >= 0.0), "{mttr:?}");

    // A late duplicate green of the fix's CI does not merge twice.
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(6204, &branch, &fix_head, "success"),
        )
        .await;
    assert_eq!(body["status"], "ignored", "{body}");
}

/// What the deliver stage of `run` said when it succeeded.
async fn deliver_detail(db: &tokio_postgres::Client, run: uuid::Uuid) -> String {
    db.query_one(
        "SELECT detail FROM stage_attempts WHERE run_id = $1 AND stage = 'deliver' AND outcome = 'succeeded'",
        &[&run],
    )
    .await
    .unwrap()
    .get(0)
}

/// The fix's CI goes green at `head` (GitHub run `id`) while the stand-in answers as `knobs`
/// say; returns the run's status and verify's verdict and reason.
/// A failing run healed into selfheal's pull request #1: its branch and head.
async fn fix_opened(env: &TestEnv, app: &App, run: i64) -> (String, String) {
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(run, &now()))
        .await;
    env.wait_run(env.run_of(&body).await, Duration::from_secs(60))
        .await;
    env.pull(1)
}

async fn fix_ci_green(
    env: &TestEnv,
    app: &App,
    id: i64,
    branch: &str,
    head: &str,
    knobs: Knobs,
) -> (String, String, String) {
    env.standin.set_knobs(knobs);
    let (_, body) = app
        .deliver("workflow_run", &env.fix_run(id, branch, head, "success"))
        .await;
    let run = env.run_of(&body).await;
    let status = env.wait_run(run, Duration::from_secs(30)).await;
    let (v, reason) = verdict(env, run).await;
    (status, v, reason)
}

#[tokio::test]
async fn running_checks_wait_and_a_denying_policy_leaves_the_fix_for_review() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    let (branch, head) = fix_opened(&env, &app, 6301).await;

    // One workflow finished green while another has not even created its check runs.
    let knobs = Knobs {
        fix_workflows: Some(vec![
            json!({"name": "CI", "status": "completed", "conclusion": "success"}),
            json!({"name": "Lint", "status": "queued", "conclusion": null}),
        ]),
        ..Knobs::default()
    };
    let (status, v, reason) = fix_ci_green(&env, &app, 6304, &branch, &head, knobs).await;
    assert_eq!(status, "incomplete");
    assert_eq!(v, "wait");
    assert!(
        reason.contains("1 of the fix's workflow runs still going (Lint)"),
        "{reason}"
    );

    // One workflow finished green while another still runs: not decided yet.
    let knobs = Knobs {
        fix_checks: Some(vec![
            json!({"name": "test", "status": "completed", "conclusion": "success"}),
            json!({"name": "lint", "status": "in_progress", "conclusion": null}),
        ]),
        ..Knobs::default()
    };
    let (status, v, reason) = fix_ci_green(&env, &app, 6302, &branch, &head, knobs).await;
    assert_eq!(status, "incomplete");
    assert_eq!(v, "wait");
    assert!(
        reason.contains("1 of the fix's checks still running (lint)"),
        "{reason}"
    );

    // Checks green, but an external CI reports a failed commit status: not merged.
    let knobs = Knobs {
        fix_checks: green_checks(),
        fix_statuses: vec![json!({"context": "ci/jenkins", "state": "failure"})],
        ..Knobs::default()
    };
    let (_, v, reason) = fix_ci_green(&env, &app, 6305, &branch, &head, knobs).await;
    assert_eq!(v, "hold");
    assert!(
        reason.starts_with("checks failed: ci/jenkins; merge denied"),
        "{reason}"
    );

    // All green now, but this repository does not let selfheal merge format fixes.
    let knobs = Knobs {
        fix_checks: green_checks(),
        repo_config: Some("auto_merge_classes: [lint]\n".into()),
        ..Knobs::default()
    };
    let (status, v, reason) = fix_ci_green(&env, &app, 6303, &branch, &head, knobs).await;
    assert_eq!(status, "succeeded");
    assert_eq!(v, "hold");
    assert!(
        reason.ends_with(
            "merge denied by policies/merge.rego: auto-merge is not enabled for format failures"
        ),
        "{reason}"
    );
    assert!(
        !env.standin.calls().iter().any(|c| c.method == "PUT"),
        "nothing was merged"
    );
    assert_eq!(
        env.count(
            "SELECT count(*) FROM deliveries WHERE merge_decision = 'denied' AND merged_at IS NULL"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_red_fix_gets_further_attempts_up_to_the_limit_then_a_comment_and_a_stop() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // The repository serves its unformatted tree at every commit, so the fix's CI failure
    // reproduces and a second attempt is made.
    env.standin.set_knobs(Knobs {
        repo_config: Some("max_attempts: 2\n".into()),
        repo_dir: Some(github_standin::default_repo_dir().display().to_string()),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    let (branch, first) = fix_opened(&env, &app, 6401).await;

    // The fix's CI fails on more unformatted code (served at every commit from now on), so
    // attempt 2 is a real change on top of the first fix: an empty one would be refused.
    let more = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-R")
        .arg(format!(
            "{}/.",
            github_standin::default_repo_dir().display()
        ))
        .arg(more.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let lib = more.path().join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, format!("{text}pub fn extra( )->u8{{1}}\n")).unwrap();
    env.standin.set_knobs(Knobs {
        repo_config: Some("max_attempts: 2\n".into()),
        repo_dir: Some(more.path().display().to_string()),
        ..Knobs::default()
    });

    // The fix's CI fails: attempt 2 goes onto the same branch, fast-forward, with a comment.
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(6402, &branch, &first, "failure"),
        )
        .await;
    let run = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(run, Duration::from_secs(90)).await,
        "succeeded"
    );
    assert_eq!(verdict(&env, run).await.1, "format fix, attempt 2 of 2");
    let (_, second) = env.pull(1);
    assert_ne!(second, first);
    assert_eq!(
        git(
            &env.standin.git_dir(),
            &["rev-parse", &format!("{second}^")]
        ),
        first
    );
    assert_eq!(env.standin.pulls().len(), 1, "still one PR");
    let comments = env.standin.comments();
    assert_eq!(comments.len(), 1);
    assert!(comments[0]["body"]
        .as_str()
        .unwrap()
        .contains("pushed attempt 2"));

    // It fails again: no attempt left. selfheal says what it tried and stops.
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(6403, &branch, &second, "failure"),
        )
        .await;
    let run = env.run_of(&body).await;
    env.wait_run(run, Duration::from_secs(90)).await;
    let (v, reason) = verdict(&env, run).await;
    assert_eq!(v, "stop");
    assert!(reason.contains("after 2 attempt(s)"), "{reason}");
    assert_eq!(env.pull(1).1, second, "nothing more was pushed");
    let comments = env.standin.comments();
    assert_eq!(comments.len(), 2);
    let said = comments[1]["body"].as_str().unwrap();
    assert!(said.starts_with("selfheal stops here"), "{said}");
    assert!(said.contains("- attempt 1: `format`"), "{said}");
    assert!(said.contains("- attempt 2: `format`"), "{said}");
    assert_eq!(comments[1]["issue_number"], 1);
    assert_eq!(
        env.count("SELECT count(*) FROM incidents WHERE stopped_by = 'selfheal:loop-protection'")
            .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'incident.stopped' AND actor = 'selfheal:loop-protection'")
            .await,
        1
    );

    // Stopped means stopped: the next failure on the branch is not acted on.
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(6404, &now()))
        .await;
    let body = env.admit(&body).await;
    assert_eq!(body["outcome"], "ignored_inactive", "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("stopped"),
        "{body}"
    );

    // Until someone with write access says `/selfheal retry`: a fresh budget of attempts.
    env.standin.set_knobs(Knobs {
        repo_config: Some("max_attempts: 2\n".into()),
        repo_dir: Some(github_standin::default_repo_dir().display().to_string()),
        permissions: [("octocat".to_string(), "write".to_string())].into(),
        ..Knobs::default()
    });
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
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(6405, &branch, &second, "failure"),
        )
        .await;
    let run = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(run, Duration::from_secs(90)).await,
        "succeeded"
    );
    assert_eq!(verdict(&env, run).await.1, "format fix, attempt 1 of 2");
    assert_ne!(env.pull(1).1, second, "a third commit went onto the branch");
}

#[tokio::test]
async fn a_person_closing_the_fix_stops_selfheal_and_a_person_merging_it_is_recorded() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    let (branch, head) = fix_opened(&env, &app, 6501).await;

    // Closed without merging: selfheal takes the hint and stops on the incident.
    let (_, body) = app
        .deliver("pull_request", &env.pr_closed(1, &branch, false, "octocat"))
        .await;
    assert_eq!(body["status"], "fix_closed", "{body}");
    assert_eq!(
        env.count("SELECT count(*) FROM incidents WHERE stopped_by = 'github:octocat' AND stopped_reason = '@octocat closed PR #1 without merging'")
            .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'incident.stopped' AND actor = 'github:octocat'")
            .await,
        1
    );
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(6502, &branch, &head, "success"),
        )
        .await;
    assert_eq!(body["status"], "ignored", "{body}");

    // Another incident's fix, merged by a person in GitHub's UI: recorded as theirs.
    let mut other = env.failing_run(6503, &now());
    other["workflow_run"]["workflow_id"] = json!(5151);
    let (_, body) = app.deliver("workflow_run", &other).await;
    env.wait_run(env.run_of(&body).await, Duration::from_secs(60))
        .await;
    let (branch, _) = env.pull(2);
    let (_, body) = app
        .deliver("pull_request", &env.pr_closed(2, &branch, true, "hubot"))
        .await;
    assert_eq!(body["status"], "fix_merged", "{body}");
    assert_eq!(
        env.count("SELECT count(*) FROM deliveries WHERE pr_number = 2 AND decided_by = 'github:hubot' AND merged_at IS NOT NULL")
            .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'pull_request.merged' AND actor = 'github:hubot'")
            .await,
        1
    );
}

/// Someone with write access pushes a commit onto selfheal's branch (through the stand-in's
/// Git Data API, as any client would): a workflow file, on top of selfheal's fix.
async fn push_onto(env: &TestEnv, branch: &str, parent: &str) -> String {
    let http = reqwest::Client::new();
    let api = format!("{}/repos/octo-org/octo-repo", env.standin.url());
    // Someone else's token: the installation's, as a person's app or CI would hold one.
    let auth = format!(
        "token {}",
        env.standin.installation_token(INSTALLATION_ID).unwrap()
    );
    let call = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        http.request(method, format!("{api}{path}"))
            .header("authorization", &auth)
            .json(&body)
            .send()
    };
    let parent_commit: serde_json::Value = call(
        reqwest::Method::GET,
        &format!("/git/commits/{parent}"),
        json!(null),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let blob: serde_json::Value = call(
        reqwest::Method::POST,
        "/git/blobs",
        json!({"content": "on: push\njobs: {}\n", "encoding": "utf-8"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let tree: serde_json::Value = call(
        reqwest::Method::POST,
        "/git/trees",
        json!({"base_tree": parent_commit["tree"]["sha"], "tree": [
            {"path": ".github/workflows/exfiltrate.yml", "mode": "100644", "type": "blob", "sha": blob["sha"]}
        ]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let commit: serde_json::Value = call(
        reqwest::Method::POST,
        "/git/commits",
        json!({"message": "a little extra", "tree": tree["sha"], "parents": [parent]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let sha = commit["sha"].as_str().unwrap().to_string();
    let r = call(
        reqwest::Method::PATCH,
        &format!("/git/refs/heads/{branch}"),
        json!({"sha": sha, "force": false}),
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    sha
}

#[tokio::test]
async fn a_commit_someone_else_pushed_onto_the_fix_is_never_merged_by_selfheal() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    env.standin.set_knobs(Knobs {
        permissions: [("octocat".to_string(), "admin".to_string())].into(),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    let (branch, ours) = fix_opened(&env, &app, 6501).await;
    let theirs = push_onto(&env, &branch, &ours).await;
    assert_eq!(env.pull(1).1, theirs);

    // Its CI fails: selfheal does not build its next attempt on someone else's commit (which
    // would make that commit part of what selfheal later merges under its own name).
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(6503, &branch, &theirs, "failure"),
        )
        .await;
    let red = env.run_of(&body).await;
    env.wait_run(red, Duration::from_secs(90)).await;
    let (v, reason) = verdict(&env, red).await;
    assert_eq!(v, "hold", "{reason}");
    assert!(
        reason.contains("someone else pushed to the branch"),
        "{reason}"
    );
    assert_eq!(env.pull(1).1, theirs, "nothing pushed on top of it");

    // Its CI is green and format fixes are auto-merged here: still, it is not selfheal's.
    let knobs = Knobs {
        permissions: [("octocat".to_string(), "admin".to_string())].into(),
        ..Knobs::default()
    };
    let (status, v, reason) = fix_ci_green(&env, &app, 6502, &branch, &theirs, knobs).await;
    assert_eq!(status, "succeeded");
    assert_eq!(v, "hold", "{reason}");
    assert!(
        reason.contains("is not the commit selfheal pushed"),
        "{reason}"
    );
    // Nor does a person's approval merge it: it is pinned to selfheal's own commit.
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
    assert!(
        answer.contains("not the commit selfheal pushed"),
        "{answer}"
    );
    assert!(
        !env.standin.calls().iter().any(|c| c.method == "PUT"),
        "nothing was merged"
    );
}

#[tokio::test]
async fn the_policy_judges_the_pull_requests_own_files_not_selfheals_records() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    let (branch, head) = fix_opened(&env, &app, 6601).await;
    // What selfheal recorded no longer says what the PR holds (here: emptied on purpose);
    // the repository now protects src/, which the PR's files touch.
    env.db()
        .await
        .execute("UPDATE patches SET diff = '', changes = NULL", &[])
        .await
        .unwrap();
    let knobs = Knobs {
        repo_config: Some("protected_paths: [src/]\n".into()),
        ..Knobs::default()
    };
    let (status, v, reason) = fix_ci_green(&env, &app, 6602, &branch, &head, knobs).await;
    assert_eq!(status, "succeeded");
    assert_eq!(v, "hold", "{reason}");
    assert!(
        reason.contains("touches src/lib.rs, under protected path src/"),
        "{reason}"
    );
    assert!(!env.standin.calls().iter().any(|c| c.method == "PUT"));
}

#[tokio::test]
async fn dry_run_switched_on_after_the_pull_request_merges_nothing() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    let (branch, head) = fix_opened(&env, &app, 6701).await;
    // The fix's CI is green and format fixes are auto-merged, but the repository has since
    // put selfheal in dry-run mode.
    let knobs = Knobs {
        repo_config: Some("dry_run: true\n".into()),
        ..Knobs::default()
    };
    let (status, v, reason) = fix_ci_green(&env, &app, 6702, &branch, &head, knobs).await;
    assert_eq!(status, "succeeded");
    assert_eq!(v, "hold", "{reason}");
    assert!(reason.contains("dry run"), "{reason}");
    assert!(!env.standin.calls().iter().any(|c| c.method == "PUT"));
}

#[tokio::test]
async fn a_merge_an_attempt_made_but_did_not_live_to_record_is_read_not_asked_again() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let mut doomed = env.spawn_worker("doomed");
    let (branch, head) = fix_opened(&env, &app, 6301).await;
    // GitHub makes the merge, then its answer is slow: the worker dies before it hears it.
    env.standin.set_knobs(Knobs {
        fix_checks: green_checks(),
        merge_answer_delay_ms: 60_000,
        ..Knobs::default()
    });
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(6302, &branch, &head, "success"),
        )
        .await;
    let check = env.run_of(&body).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env.standin.pulls()[0]["merged"] != true {
        assert!(std::time::Instant::now() < deadline, "never merged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&doomed, nix::sys::signal::Signal::SIGKILL);
    doomed.wait().ok();
    env.standin.set_knobs(Knobs {
        fix_checks: green_checks(),
        ..Knobs::default()
    });
    let _rescuer = env.spawn_worker("rescuer");
    assert_eq!(
        env.wait_run(check, Duration::from_secs(90)).await,
        "succeeded"
    );

    let master = git(&env.standin.git_dir(), &["rev-parse", "refs/heads/master"]);
    let db = env.db().await;
    let d = db
        .query_one(
            "SELECT merge_commit_sha, merged_at IS NOT NULL, merge_error FROM deliveries",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        d.get::<_, Option<String>>(0).as_deref(),
        Some(master.as_str())
    );
    assert!(d.get::<_, bool>(1), "the merge GitHub made is recorded");
    assert_eq!(d.get::<_, Option<String>>(2), None);
    let merges = env.merges_asked(1);
    assert_eq!(merges, 1, "asked GitHub to merge once");
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'pull_request.merged' AND actor = 'selfheal:policy'")
            .await,
        1
    );
    let detail = deliver_detail(&db, check).await;
    assert!(
        detail.starts_with("PR #1 found merged by selfheal:policy")
            && detail.ends_with(&format!("; deleted branch {branch}")),
        "{detail}"
    );
}

/// A failing run whose delivery is held before its PR is opened (its branch pushed), and the
/// fix's CI green meanwhile, decided before the PR exists: (failing run, early fix run).
async fn fix_ci_green_before_its_pr(env: &TestEnv, app: &App, id: i64) -> (uuid::Uuid, uuid::Uuid) {
    env.standin.set_knobs(Knobs {
        fix_checks: green_checks(),
        // Long enough for the fix's CI to be ingested and decided on a slow, busy machine,
        // and under the GitHub client's 30 s read timeout.
        pulls_delay_ms: 20_000,
        ..Knobs::default()
    });
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(id, &now()))
        .await;
    let failing = env.run_of(&body).await;
    env.wait_until(
        "SELECT EXISTS (SELECT 1 FROM deliveries WHERE ref_created AND pr_number IS NULL)",
        Duration::from_secs(60),
    )
    .await;
    let row = env
        .db()
        .await
        .query_one("SELECT branch, commit_sha FROM deliveries", &[])
        .await
        .unwrap();
    let (branch, head): (String, String) = (row.get(0), row.get(1));
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(id + 1, &branch, &head, "success"),
        )
        .await;
    let early = env.run_of(&body).await;
    env.wait_run(early, Duration::from_secs(60)).await;
    assert!(
        env.standin.pulls().is_empty(),
        "the fix's CI was decided before the PR was opened (the test's premise)"
    );
    let (v, reason) = verdict(env, early).await;
    assert_eq!(v, "wait", "{reason}");
    (failing, early)
}

/// The branch is pushed before the PR is opened, so the fix's CI (run on the push) can be
/// green before selfheal has recorded its PR, and a worker may even die in between. Found by
/// the chaos test: that green run used to be skipped ("no pull request"), and the fix was
/// never merged. It now waits, and deliver decides it when it records the PR.
#[tokio::test]
async fn a_fix_whose_ci_is_green_before_its_pull_request_is_recorded_is_still_merged() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // Two workers: one held opening the PR, one to take the fix's CI meanwhile.
    let _w1 = env.spawn_worker("w1");
    let _w2 = env.spawn_worker("w2");
    let (failing, early) = fix_ci_green_before_its_pr(&env, &app, 6801).await;

    assert_eq!(
        env.wait_run(failing, Duration::from_secs(90)).await,
        "succeeded"
    );
    assert_eq!(env.standin.pulls()[0]["merged"], true, "the fix is merged");
    let (v, reason) = verdict(&env, early).await;
    assert_eq!(v, "merge", "{reason}");
    assert!(
        reason.ends_with("(decided when the pull request was recorded)"),
        "{reason}"
    );
    let detail = deliver_detail(&env.db().await, failing).await;
    assert!(
        detail.starts_with("opened PR #1")
            && detail.contains("the fix's CI (run 6802) had finished first: merged PR #1"),
        "{detail}"
    );
    let merges = env.merges_asked(1);
    assert_eq!(merges, 1, "asked GitHub to merge once");
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'verification.taken_up'")
            .await,
        1
    );
}

/// The same, but a person stops selfheal on the incident while its PR is being opened: the
/// green run taken up then merges nothing.
#[tokio::test]
async fn a_fix_taken_up_after_its_incident_was_stopped_is_not_merged() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _w1 = env.spawn_worker("w1");
    let _w2 = env.spawn_worker("w2");
    let (failing, early) = fix_ci_green_before_its_pr(&env, &app, 6811).await;
    // What `/selfheal stop` records (tests/suite/chatops.rs covers the command itself).
    env.db()
        .await
        .execute(
            "UPDATE incidents SET stopped_at = now(), stopped_by = 'github:octocat', stopped_reason = 'not now'",
            &[],
        )
        .await
        .unwrap();
    // The stop was written while the PR was still held (the test's premise).
    assert!(
        env.standin.pulls().is_empty(),
        "the PR was opened before the stop"
    );
    taken_up_and_not_merged(
        &env,
        failing,
        early,
        "selfheal was stopped on this incident meanwhile (decided when the pull request was recorded)",
    )
    .await;
}

/// Once the PR is opened and recorded, the early green run is decided: skipped for `reason`,
/// the one PR left unmerged, no merge asked for.
async fn taken_up_and_not_merged(
    env: &TestEnv,
    failing: uuid::Uuid,
    early: uuid::Uuid,
    reason: &str,
) {
    env.wait_run(failing, Duration::from_secs(90)).await;
    assert_eq!(env.standin.pulls().len(), 1, "{:?}", env.standin.pulls());
    assert_eq!(env.standin.pulls()[0]["merged"], false, "nothing merged");
    assert!(!env.standin.calls().iter().any(|c| c.method == "PUT"));
    let (v, got) = verdict(env, early).await;
    assert_eq!((v.as_str(), got.as_str()), ("skip", reason));
}

/// The same, but the branch goes green by other hands while the PR is being opened (a green
/// run of the failing workflow resolves the incident): the green run of the fix's CI taken
/// up then merges nothing, and says why.
#[tokio::test]
async fn a_fix_taken_up_after_its_incident_was_resolved_is_not_merged() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _w1 = env.spawn_worker("w1");
    let _w2 = env.spawn_worker("w2");
    let (failing, early) = fix_ci_green_before_its_pr(&env, &app, 6821).await;
    let (status, body) = app
        .deliver("workflow_run", &env.green_run(6830, &now()))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "incident_resolved", "{body}");
    // Resolved while the PR was still held (the test's premise).
    assert!(
        env.standin.pulls().is_empty(),
        "the PR was opened before the incident was resolved"
    );
    taken_up_and_not_merged(
        &env,
        failing,
        early,
        "the incident was resolved meanwhile (decided when the pull request was recorded)",
    )
    .await;
}
