//! What a real installation meets, against the strict stand-in: logs GitHub no longer has,
//! several failing jobs, the failed attempt's jobs over several pages.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use github_standin::Knobs;
use support::*;

/// The detail of a run's stage that succeeded.
async fn stage_detail(env: &TestEnv, run: uuid::Uuid, stage: &str) -> String {
    env.db()
        .await
        .query_one(
            "SELECT detail FROM stage_attempts WHERE run_id = $1 AND stage = $2 AND outcome = 'succeeded'",
            &[&run, &stage],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_job_whose_log_is_gone_is_skipped_with_a_note_and_the_run_heals_from_the_others() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // 110 more jobs fail the same way (two pages of 100); the first failing job's log has
    // expired and another's is missing.
    let mut more: Vec<String> = (0..109).map(|i| format!("test ({i})")).collect();
    more.push("lint".into());
    env.standin.set_knobs(Knobs {
        more_failing_jobs: more,
        log_status: BTreeMap::from([("test".to_string(), 410), ("test (0)".to_string(), 404)]),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    // The run's second attempt failed (a rerun of a first failure): its jobs are listed.
    let mut failing = env.failing_run(9101, &now());
    failing["workflow_run"]["run_attempt"] = serde_json::json!(2);
    let (_, body) = app.deliver("workflow_run", &failing).await;
    let run_id = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(run_id, Duration::from_secs(60)).await,
        "succeeded"
    );
    let db = env.db().await;
    let detail = stage_detail(&env, run_id, "triage").await;
    assert!(detail.starts_with("111 of 112 jobs failed"), "{detail}");
    assert!(
        detail
            .ends_with("skipped, GitHub has no log: test (log expired), test (0) (log not found)"),
        "{detail}"
    );
    // The last page's job was read too: its log is stored.
    let logs: Vec<String> = db
        .query(
            "SELECT job_name FROM job_logs WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(logs.len(), 109, "{logs:?}");
    assert!(logs.iter().any(|n| n == "lint"), "{logs:?}");
    // The rest of the loop went on: a fix was delivered.
    assert_eq!(env.standin.pulls().len(), 1);
    let pages: Vec<String> = env
        .standin
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/actions/runs/9101/attempts/2/jobs"))
        .filter_map(|c| c.query.clone())
        .collect();
    assert_eq!(pages, ["per_page=100&page=1", "per_page=100&page=2"]);
}

#[tokio::test]
async fn a_newer_push_supersedes_the_failing_commit_and_nothing_is_delivered_for_it() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // Someone pushed to master after the failing commit (through the API, as any client).
    let http = reqwest::Client::new();
    let api = format!("{}/repos/octo-org/octo-repo", env.standin.url());
    let token = env.standin.installation_token(INSTALLATION_ID).unwrap();
    let old = env.standin.head_sha();
    let commit: serde_json::Value = http
        .get(format!("{api}/git/commits/{old}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let newer: serde_json::Value = http
        .post(format!("{api}/git/commits"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"message": "newer work", "tree": commit["tree"]["sha"], "parents": [old]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let moved = http
        .patch(format!("{api}/git/refs/heads/master"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"sha": newer["sha"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);

    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(9201, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    env.wait_run(run_id, Duration::from_secs(60)).await;
    let row = verdict(&env, run_id).await;
    assert_eq!(row.0, "skip");
    let reason = row.1.clone();
    assert!(
        reason.starts_with("superseded: master has moved on from"),
        "{reason}"
    );
    assert!(env.standin.pulls().is_empty());
    assert!(!env
        .standin
        .calls()
        .iter()
        .any(|c| c.method == "POST" && c.path.ends_with("/git/blobs")));
}

/// A failing run healed into PR #1 and, meanwhile, someone else's commit on master; the
/// green run of `green_sha` delivered; returns (branch, the green delivery's answer).
async fn resolved_elsewhere(
    env: &TestEnv,
    app: &App,
    run: i64,
    green_sha: Option<&str>,
) -> (String, serde_json::Value, serde_json::Value) {
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(run, &now()))
        .await;
    env.wait_run(env.run_of(&body).await, Duration::from_secs(60))
        .await;
    let (branch, _) = env.pull(1);
    let theirs = push_to_master(env).await;
    let mut green = env.green_run(run + 1, &now());
    green["workflow_run"]["head_sha"] = serde_json::json!(green_sha.unwrap_or(&theirs));
    let (status, body) = app.deliver("workflow_run", &green).await;
    assert_eq!(status, 202, "{body}");
    (branch, body, green)
}

#[tokio::test]
async fn a_fix_made_stale_by_someone_elses_push_is_closed_with_a_comment() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    // Someone fixed it another way: master's next run is green, selfheal's PR still open.
    let (branch, body, green) = resolved_elsewhere(&env, &app, 9301, None).await;
    assert_eq!(body["status"], "run_created", "{body}");
    let tidy = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(tidy, Duration::from_secs(30)).await,
        "succeeded"
    );

    assert_eq!(
        env.count("SELECT count(*) FROM incidents WHERE status = 'resolved'")
            .await,
        1
    );
    let verdict = verdict(&env, tidy).await.0;
    assert_eq!(verdict, "close");
    let pr = &env.standin.pulls()[0];
    assert_eq!(pr["state"], "closed");
    assert_eq!(pr["merged"], false);
    // Closed by the API (not only as a side effect of the branch's deletion), then said.
    let closes: Vec<String> = env
        .standin
        .calls()
        .iter()
        .filter(|c| c.method == "PATCH" && c.path.ends_with("/pulls/1"))
        .map(|c| c.body.clone().unwrap_or_default().to_string())
        .collect();
    assert_eq!(closes, [r#"{"state":"closed"}"#]);
    let said = env.standin.comments();
    let last = said.last().unwrap()["body"].as_str().unwrap().to_string();
    let theirs = git(&env.standin.git_dir(), &["rev-parse", "refs/heads/master"]);
    assert!(
        last.contains(&format!(
            "the workflow passed at {} without it",
            &theirs[..7]
        )),
        "{last}"
    );
    assert!(
        git(
            &env.standin.git_dir(),
            &[
                "for-each-ref",
                "--format=%(refname)",
                &format!("refs/heads/{branch}")
            ]
        )
        .is_empty(),
        "selfheal's branch left behind"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM deliveries WHERE closed_at IS NOT NULL")
            .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'pull_request.closed_stale'")
            .await,
        1
    );
    // The same green run delivered again changes nothing.
    let (_, again) = app.deliver("workflow_run", &green).await;
    assert_ne!(again["status"], "run_created", "{again}");
    assert_eq!(env.standin.comments().len(), said.len());
}

#[tokio::test]
async fn a_green_run_of_a_commit_that_is_not_the_branchs_head_closes_nothing() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    // A slow green run of some other commit finishing after the failure.
    let (branch, body, _) = resolved_elsewhere(
        &env,
        &app,
        9351,
        Some("c0ffee0000000000000000000000000000000000"),
    )
    .await;
    let tidy = env.run_of(&body).await;
    env.wait_run(tidy, Duration::from_secs(30)).await;
    let row = verdict(&env, tidy).await;
    assert_eq!(row.0, "skip");
    assert!(row.1.contains("which is not master's head"));
    assert_eq!(env.standin.pulls()[0]["state"], "open");
    assert!(!git(
        &env.standin.git_dir(),
        &["for-each-ref", &format!("refs/heads/{branch}")]
    )
    .is_empty());
}

#[tokio::test]
async fn a_merge_branch_protection_refuses_is_left_for_review_with_a_comment_saying_why() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // The policy allows the merge; GitHub's branch protection wants an approving review.
    env.standin.set_knobs(Knobs {
        fix_checks: green_checks(),
        protection: Some(github_standin::Protection {
            required_checks: vec!["test".into()],
            required_review: true,
            strict: false,
        }),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    env.fail_and_heal(&app, 9401).await;
    let (branch, head) = env.pull(1);
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(9402, &branch, &head, "success"),
        )
        .await;
    let check = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(check, Duration::from_secs(30)).await,
        "succeeded"
    );
    let db = env.db().await;
    let error: Option<String> = db
        .query_one(
            "SELECT merge_error FROM deliveries WHERE kind = 'pull_request'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let error = error.expect("the refusal is recorded");
    assert!(
        error.starts_with("GitHub refused the merge (405): At least 1 approving review"),
        "{error}"
    );
    assert_eq!(env.standin.pulls()[0]["state"], "open");
    let said = env.standin.comments();
    let last = said.last().unwrap()["body"].as_str().unwrap();
    assert!(last.starts_with("selfheal would merge this fix, but GitHub refused: ` GitHub refused the merge (405): At least 1 approving review"), "{last}");
    // The branch stays: the PR is still open.
    assert_eq!(
        git(
            &env.standin.git_dir(),
            &["rev-parse", &format!("refs/heads/{branch}")]
        ),
        head
    );
}

/// A commit on master by someone else (a new file), through the API; its sha.
async fn push_to_master(env: &TestEnv) -> String {
    push_to(env, "master", "NOTES.md", "notes\n").await
}

/// A commit by someone else on `branch` adding `path`, made through the Git Data API as a
/// person's tooling would (tree, commit, ref moved fast-forward); its sha.
async fn push_to(env: &TestEnv, branch: &str, path: &str, content: &str) -> String {
    let http = reqwest::Client::new();
    let api = format!("{}/repos/octo-org/octo-repo", env.standin.url());
    let token = env.standin.installation_token(INSTALLATION_ID).unwrap();
    let parent_sha = git(
        &env.standin.git_dir(),
        &["rev-parse", &format!("refs/heads/{branch}")],
    );
    let send = |method: reqwest::Method, path: String, body: serde_json::Value| {
        http.request(method, format!("{api}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let parent: serde_json::Value = send(
        reqwest::Method::GET,
        format!("/git/commits/{parent_sha}"),
        serde_json::Value::Null,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let tree: serde_json::Value = send(
        reqwest::Method::POST,
        "/git/trees".into(),
        serde_json::json!({"base_tree": parent["tree"]["sha"], "tree": [
            {"path": path, "mode": "100644", "type": "blob", "content": content}]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let commit: serde_json::Value = send(
        reqwest::Method::POST,
        "/git/commits".into(),
        serde_json::json!({"message": format!("add {path}"), "tree": tree["sha"], "parents": [parent_sha]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let sha = commit["sha"].as_str().unwrap().to_string();
    let moved = send(
        reqwest::Method::PATCH,
        format!("/git/refs/heads/{branch}"),
        serde_json::json!({"sha": sha}),
    )
    .await
    .unwrap();
    assert_eq!(moved.status(), 200);
    sha
}

#[tokio::test]
async fn a_newer_push_that_fails_again_gets_the_open_fix_rebased_onto_it() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    env.fail_and_heal(&app, 9601).await;
    let (branch, first) = env.pull(1);
    let failing = env.standin.head_sha();
    // Someone pushes to master without fixing it, and the same workflow fails on the new head.
    let newer = push_to_master(&env).await;
    let mut payload = env.failing_run(9602, &now());
    payload["workflow_run"]["head_sha"] = serde_json::json!(newer);
    let (_, body) = app.deliver("workflow_run", &payload).await;
    let run = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(run, Duration::from_secs(90)).await,
        "succeeded"
    );
    let detail = stage_detail(&env, run, "deliver").await;
    assert!(
        detail.contains("rebased the fix onto the newer push"),
        "{detail}"
    );
    // Still one PR, on the same branch, now holding the fix made on the newer commit.
    assert_eq!(env.standin.pulls().len(), 1);
    let (same, rebased) = env.pull(1);
    assert_eq!(same, branch);
    let dir = env.standin.git_dir();
    assert_eq!(git(&dir, &["rev-parse", &format!("{rebased}^")]), newer);
    assert_eq!(
        git(&dir, &["show", &format!("{rebased}:NOTES.md")]),
        "notes"
    );
    assert_eq!(
        git(&dir, &["diff", &format!("{rebased}^"), &rebased]),
        git(&dir, &["diff", &failing, &first]),
        "the same fix, made again on the newer commit"
    );
    let said = env.standin.comments();
    let last = said.last().unwrap()["body"].as_str().unwrap().to_string();
    assert!(
        last.contains(&format!("The branch moved on to {}", &newer[..7]))
            && last.contains(&format!("replaces the fix made for {}", &failing[..7])),
        "{last}"
    );
    let based_on: Option<String> = env
        .db()
        .await
        .query_one(
            "SELECT based_on FROM deliveries WHERE kind = 'pull_request' AND pr_number = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(based_on.as_deref(), Some(newer.as_str()));

    // Someone else adds a commit to selfheal's branch; master moves on and fails again: the
    // fix is not rebased over their commit.
    let theirs = push_to(&env, &branch, "THEIRS.md", "theirs\n").await;
    let newest = push_to(&env, "master", "MORE.md", "more\n").await;
    let mut payload = env.failing_run(9603, &now());
    payload["workflow_run"]["head_sha"] = serde_json::json!(newest);
    let (_, body) = app.deliver("workflow_run", &payload).await;
    let run = env.run_of(&body).await;
    env.wait_run(run, Duration::from_secs(90)).await;
    let (verdict, reason) = verdict(&env, run).await;
    assert_eq!(verdict, "hold", "{reason}");
    assert!(reason.contains("someone else pushed to it"), "{reason}");
    assert_eq!(env.pull(1).1, theirs);
}

/// Whether the stand-in's repository has `branch`.
fn has_branch(env: &TestEnv, branch: &str) -> bool {
    std::process::Command::new("git")
        .arg("--git-dir")
        .arg(env.standin.git_dir())
        .args([
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/heads/{branch}"),
        ])
        .output()
        .unwrap()
        .status
        .success()
}

async fn branch_settled(env: &TestEnv, pr: i32) -> bool {
    for _ in 0..40 {
        let done: bool = env
            .db()
            .await
            .query_one(
                "SELECT branch_deleted_at IS NOT NULL FROM deliveries WHERE kind = 'pull_request' AND pr_number = $1",
                &[&pr],
            )
            .await
            .unwrap()
            .get(0);
        if done {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// A person closes (or merges) pull request `number` on GitHub, through the API; the
/// webhook GitHub then sends is delivered to `app`.
async fn person_closes(env: &TestEnv, app: &App, number: i64, merge: bool) {
    let http = reqwest::Client::new();
    let api = format!(
        "{}/repos/octo-org/octo-repo/pulls/{number}",
        env.standin.url()
    );
    let token = env.standin.installation_token(INSTALLATION_ID).unwrap();
    let answer = if merge {
        http.put(format!("{api}/merge"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"merge_method": "squash"}))
            .send()
            .await
    } else {
        http.patch(&api)
            .bearer_auth(&token)
            .json(&serde_json::json!({"state": "closed"}))
            .send()
            .await
    }
    .unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    let (branch, _) = env.pull(number);
    let (_, body) = app
        .deliver(
            "pull_request",
            &env.pr_closed(number, &branch, merge, "octocat"),
        )
        .await;
    let expected = if merge { "fix_merged" } else { "fix_closed" };
    assert_eq!(body["status"], expected, "{body}");
}

/// Another incident of the failing branch (a workflow of its own), healed to its PR.
async fn another_incident(env: &TestEnv, app: &App, run: i64) {
    let mut other = env.failing_run(run, &now());
    other["workflow_run"]["workflow_id"] = serde_json::json!(run * 1000);
    let (_, body) = app.deliver("workflow_run", &other).await;
    let run = env.run_of(&body).await;
    env.wait_run(run, Duration::from_secs(60)).await;
    let stages: Vec<(String, Option<String>, Option<String>)> = env
        .db()
        .await
        .query(
            "SELECT stage, detail, error FROM stage_attempts WHERE run_id = $1 ORDER BY id",
            &[&run],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        stages.iter().any(
            |(s, d, _)| s == "deliver" && d.as_deref().is_some_and(|d| d.contains("opened PR"))
        ),
        "{stages:?}"
    );
}

#[tokio::test]
async fn the_branch_of_a_fix_a_person_merged_or_closed_is_deleted_unless_it_holds_their_commit() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_BRANCH_SWEEP_INTERVAL_SECS", "1");
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    env.fail_and_heal(&app, 9701).await;
    let (branch, _) = env.pull(1);
    assert!(has_branch(&env, &branch));
    // A person closes selfheal's PR without merging: its branch goes, as GitHub's
    // "automatically delete head branches" would have it.
    person_closes(&env, &app, 1, false).await;
    assert!(branch_settled(&env, 1).await, "the sweep never settled it");
    assert!(!has_branch(&env, &branch));

    // Someone adds their commit to selfheal's branch, then a person closes the PR. Their
    // commit is not selfheal's to drop: the branch stays.
    another_incident(&env, &app, 9702).await;
    let (branch, _) = env.pull(2);
    let theirs = push_to(&env, &branch, "THEIRS.md", "theirs\n").await;
    person_closes(&env, &app, 2, false).await;
    assert!(branch_settled(&env, 2).await, "the sweep never settled it");
    assert_eq!(
        git(
            &env.standin.git_dir(),
            &["rev-parse", &format!("refs/heads/{branch}")]
        ),
        theirs
    );

    // A person merges another: its branch goes too.
    another_incident(&env, &app, 9703).await;
    let (branch, _) = env.pull(3);
    person_closes(&env, &app, 3, true).await;
    assert!(branch_settled(&env, 3).await, "the sweep never settled it");
    assert!(!has_branch(&env, &branch));
}

#[tokio::test]
async fn a_fix_behind_its_base_is_brought_up_to_date_and_merged_after_its_ci() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // "Require branches to be up to date before merging", and the fix's CI is green.
    env.standin.set_knobs(Knobs {
        fix_checks: green_checks(),
        protection: Some(github_standin::Protection {
            required_checks: vec!["test".into()],
            required_review: false,
            strict: true,
        }),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    env.fail_and_heal(&app, 9501).await;
    let (branch, fix) = env.pull(1);
    // Meanwhile someone else's commit lands on master: the fix is behind.
    let theirs = push_to_master(&env).await;

    let (_, body) = app
        .deliver("workflow_run", &env.fix_run(9502, &branch, &fix, "success"))
        .await;
    let first = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(first, Duration::from_secs(40)).await,
        "succeeded"
    );
    let detail = stage_detail(&env, first, "deliver").await;
    assert!(
        detail.contains("was behind its base: brought up to date"),
        "{detail}"
    );
    let (_, updated) = env.pull(1);
    let dir = env.standin.git_dir();
    assert_eq!(git(&dir, &["rev-parse", &format!("{updated}^1")]), fix);
    assert_eq!(git(&dir, &["rev-parse", &format!("{updated}^2")]), theirs);
    assert_eq!(env.standin.pulls()[0]["state"], "open");

    // The updated head's CI is green: selfheal takes the update as its own and merges.
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(9503, &branch, &updated, "success"),
        )
        .await;
    let second = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(second, Duration::from_secs(40)).await,
        "succeeded"
    );
    let verdict = verdict(&env, second).await.0;
    assert_eq!(verdict, "merge");
    assert_eq!(env.standin.pulls()[0]["merged"], true);
    // master holds both: the other commit's file and the fix.
    assert_eq!(git(&dir, &["show", "refs/heads/master:NOTES.md"]), "notes");
    assert_eq!(
        git(&dir, &["rev-parse", "refs/heads/master^{tree}"]),
        git(&dir, &["rev-parse", &format!("{updated}^{{tree}}")])
    );
}

#[tokio::test]
async fn a_fix_whose_ci_reported_no_check_is_not_merged() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    env.fail_and_heal(&app, 9601).await;
    let (branch, head) = env.pull(1);
    // A green workflow run on the branch, but no check run or status on the commit (the
    // stand-in, as GitHub, shows none until a CI reports one).
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(9602, &branch, &head, "success"),
        )
        .await;
    let check = env.run_of(&body).await;
    env.wait_run(check, Duration::from_secs(30)).await;
    let row = verdict(&env, check).await;
    assert_eq!(row.0, "hold");
    assert!(row.1.starts_with("no checks reported"), "{}", row.1);
    assert_eq!(env.standin.pulls()[0]["merged"], false);
}

#[tokio::test]
async fn a_branch_whose_last_commits_are_all_selfheals_gets_no_fix_on_top() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // master's last three commits are selfheal's merged fixes (same broken tree: they did
    // not hold); the newest fails again.
    let http = reqwest::Client::new();
    let api = format!("{}/repos/octo-org/octo-repo", env.standin.url());
    let token = env.standin.installation_token(INSTALLATION_ID).unwrap();
    let mut head = env.standin.head_sha();
    let commit: serde_json::Value = http
        .get(format!("{api}/git/commits/{head}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for n in 1..=3 {
        let made: serde_json::Value = http
            .post(format!("{api}/git/commits"))
            .bearer_auth(&token)
            .json(
                &serde_json::json!({"message": format!("selfheal: fix the failing build (#{n})"),
                "tree": commit["tree"]["sha"], "parents": [head]}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        head = made["sha"].as_str().unwrap().to_string();
    }
    let moved = http
        .patch(format!("{api}/git/refs/heads/master"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"sha": head}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    let _worker = env.spawn_worker("w");
    let mut failing = env.failing_run(9701, &now());
    failing["workflow_run"]["head_sha"] = serde_json::json!(head);
    let (_, body) = app.deliver("workflow_run", &failing).await;
    let run_id = env.run_of(&body).await;
    env.wait_run(run_id, Duration::from_secs(60)).await;
    let row = verdict(&env, run_id).await;
    assert_eq!(row.0, "stop");
    assert!(
        row.1.contains("the last 3 commits of the failing branch"),
        "{}",
        row.1
    );
    assert!(env.standin.pulls().is_empty());
    let said = env.standin.comments();
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(said[0]["commit_sha"], head.as_str());
    assert!(said[0]["body"]
        .as_str()
        .unwrap()
        .starts_with("selfheal stops here"));
    assert_eq!(
        env.count("SELECT count(*) FROM incidents WHERE stopped_at IS NOT NULL")
            .await,
        1
    );
}

#[tokio::test]
async fn the_same_failure_in_two_workflows_of_one_commit_gets_one_fix() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _w1 = env.spawn_worker("w1");
    let _w2 = env.spawn_worker("w2");
    // Two workflows (CI and Lint) fail the same way on the same commit, at the same time.
    let first = env.failing_run(9801, &now());
    let mut second = env.failing_run(9802, &now());
    second["workflow_run"]["workflow_id"] = serde_json::json!(99_001);
    second["workflow_run"]["name"] = serde_json::json!("Lint");
    let (_, a) = app.deliver("workflow_run", &first).await;
    let (_, b) = app.deliver("workflow_run", &second).await;
    let (a, b) = (env.run_of(&a).await, env.run_of(&b).await);
    assert_ne!(
        env.db()
            .await
            .query_one("SELECT incident_id FROM runs WHERE id = $1", &[&a])
            .await
            .unwrap()
            .get::<_, uuid::Uuid>(0),
        env.db()
            .await
            .query_one("SELECT incident_id FROM runs WHERE id = $1", &[&b])
            .await
            .unwrap()
            .get::<_, uuid::Uuid>(0),
        "two workflows, two incidents"
    );
    env.wait_run(a, Duration::from_secs(90)).await;
    env.wait_run(b, Duration::from_secs(90)).await;
    assert_eq!(env.standin.pulls().len(), 1, "one failure, one fix");
    let verdicts: Vec<(String, String)> = env
        .db()
        .await
        .query(
            "SELECT verdict, reason FROM verifications WHERE run_id = ANY($1) ORDER BY verdict",
            &[&vec![a, b]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(verdicts[0].0, "deliver", "{verdicts:?}");
    assert_eq!(verdicts[1].0, "skip", "{verdicts:?}");
    assert!(
        verdicts[1].1.starts_with("one failure, one fix"),
        "{verdicts:?}"
    );
}

async fn deadline_noted(env: &TestEnv, within: Duration) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if env
            .count("SELECT count(*) FROM deliveries WHERE ci_deadline_at IS NOT NULL")
            .await
            > 0
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[tokio::test]
async fn a_fix_whose_ci_never_comes_is_said_so_and_left_for_review() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_FIX_CI_DEADLINE_SECS", "2");
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    env.fail_and_heal(&app, 9901).await;
    let (_, head) = env.pull(1);
    assert!(deadline_noted(&env, Duration::from_secs(15)).await);
    // Claimed, then said: wait for the comment.
    let started = std::time::Instant::now();
    while env.standin.comments().is_empty() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let said = env.standin.comments();
    let last = said.last().unwrap()["body"].as_str().unwrap();
    assert!(
        last.starts_with(&format!(
            "No CI has reported on selfheal's commit {}",
            &head[..7]
        )),
        "{last}"
    );
    // Said once, whichever worker and however often it looks; recorded.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.standin.comments().len(), said.len());
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'fix.ci_never_came'")
            .await,
        1
    );
    assert_eq!(env.standin.pulls()[0]["state"], "open");
}

#[tokio::test]
async fn a_fix_whose_ci_came_is_not_said_to_have_none() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_FIX_CI_DEADLINE_SECS", "2");
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    env.fail_and_heal(&app, 9911).await;
    let (branch, head) = env.pull(1);
    // The fix's CI reports right away (it is still running: verify waits).
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(9912, &branch, &head, "success"),
        )
        .await;
    env.wait_run(env.run_of(&body).await, Duration::from_secs(30))
        .await;
    assert!(!deadline_noted(&env, Duration::from_secs(6)).await);
}

#[tokio::test]
async fn a_comment_github_made_before_failing_to_answer_is_not_made_twice() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    env.fail_and_heal(&app, 9951).await;
    // GitHub makes the next comment, then answers 502 (as after a timeout).
    env.standin.set_knobs(Knobs {
        permissions: [("octocat".to_string(), "admin".to_string())].into(),
        fail_after_write: 1,
        ..Knobs::default()
    });
    let before = env.standin.comments().len();
    let calls_before = env.standin.calls().len();
    let (_, body) = app
        .deliver(
            "issue_comment",
            &env.comment(1, "octocat", "/selfheal explain"),
        )
        .await;
    let command = body["command_id"].as_i64().unwrap();
    assert_eq!(env.command_status(command).await, "done");
    let said: Vec<serde_json::Value> = env.standin.comments()[before..].to_vec();
    assert_eq!(said.len(), 1, "said once: {said:#?}");
    assert!(said[0]["body"]
        .as_str()
        .unwrap()
        .contains(&format!("<!-- selfheal:command:{command} -->")));
    // selfheal looked before trying again, and did not post again.
    let calls = env.standin.calls()[calls_before..].to_vec();
    let posts = calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/issues/1/comments"))
        .count();
    let looks = calls
        .iter()
        .filter(|c| c.method == "GET" && c.path.ends_with("/issues/1/comments"))
        .count();
    assert_eq!((posts, looks), (1, 1), "one post, then one look");
}

#[tokio::test]
async fn a_rerun_github_started_before_failing_to_answer_is_not_asked_twice() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_RERUNS", "2");
    let app = env.spawn_web().await;
    // The CI says `true` failed; the sandbox sees it pass every time: a flake, rerun. GitHub
    // starts the rerun, then answers 502.
    env.standin.set_knobs(Knobs {
        log_text: Some(
            "##[group]Run true\ntrue\n##[endgroup]\n##[error]Process completed with exit code 1.\n"
                .into(),
        ),
        fail_after_write: 1,
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(9961, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    env.wait_run(run_id, Duration::from_secs(60)).await;
    let detail = stage_detail(&env, run_id, "deliver").await;
    assert!(
        detail.starts_with("reran the failed jobs of run 9961 (1 of 2"),
        "{detail}"
    );
    let calls = env.standin.calls();
    let asked = calls
        .iter()
        .filter(|c| c.path.ends_with("/actions/runs/9961/rerun-failed-jobs"))
        .count();
    let looked = calls
        .iter()
        .filter(|c| c.method == "GET" && c.path.ends_with("/actions/runs/9961"))
        .count();
    assert_eq!((asked, looked), (1, 1), "asked once, then looked");
}

#[tokio::test]
async fn a_check_run_github_made_before_failing_to_answer_is_not_made_twice() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_DRY_RUN", "true");
    let app = env.spawn_web().await;
    env.standin.set_knobs(Knobs {
        fail_after_write: 1,
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(9971, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    env.wait_run(run_id, Duration::from_secs(60)).await;
    let made = env.standin.check_runs();
    assert_eq!(made.len(), 1, "{made:#?}");
    assert_eq!(
        made[0]["external_id"],
        format!("selfheal:{run_id}:selfheal (dry run)")
    );
    let looked = env
        .standin
        .calls()
        .iter()
        .filter(|c| {
            c.method == "GET"
                && c.path.ends_with("/check-runs")
                && c.query.as_deref().is_some_and(|q| q.contains("check_name"))
        })
        .count();
    assert_eq!(looked, 1);
}

#[tokio::test]
async fn external_ci_reporting_through_a_check_suite_re_triggers_verify_and_merges() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // The repository's CI is an external app (no GitHub Actions run on selfheal's branch): its
    // check run is green on the fix.
    env.standin.set_knobs(Knobs {
        fix_checks: Some(vec![
            serde_json::json!({"name": "octocoders-linter", "status": "completed", "conclusion": "success"}),
        ]),
        repo_config: Some("external_ci: [octocoders-linter]\n".into()),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    env.fail_and_heal(&app, 9981).await;
    let (branch, head) = env.pull(1);

    // A suite on another commit, or GitHub Actions' own, or a red one: nothing to verify.
    let (_, body) = app
        .deliver(
            "check_suite",
            &env.check_suite(7001, &branch, &env.standin.head_sha(), "success"),
        )
        .await;
    assert_eq!(body["status"], "ignored", "{body}");
    let mut actions = env.check_suite(7002, &branch, &head, "success");
    actions["check_suite"]["app"]["slug"] = serde_json::json!("github-actions");
    let (_, body) = app.deliver("check_suite", &actions).await;
    assert_eq!(body["status"], "stored", "{body}");
    let (_, body) = app
        .deliver(
            "check_suite",
            &env.check_suite(7003, &branch, &head, "failure"),
        )
        .await;
    assert_eq!(body["status"], "stored", "{body}");

    // Green, on selfheal's commit, but from an app the repository does not name as its CI
    // (a DCO bot going green first): verify runs and decides nothing.
    let mut dco = env.check_suite(7005, &branch, &head, "success");
    dco["check_suite"]["app"]["slug"] = serde_json::json!("dco");
    dco["check_suite"]["app"]["id"] = serde_json::json!(4242_4242);
    let (_, body) = app.deliver("check_suite", &dco).await;
    let run = env.run_of(&body).await;
    env.wait_run(run, Duration::from_secs(30)).await;
    let reason: String = env
        .db()
        .await
        .query_one(
            "SELECT reason FROM verifications WHERE run_id = $1 AND verdict = 'skip'",
            &[&run],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        reason.contains("which .github/selfheal.yml does not list under external_ci"),
        "{reason}"
    );
    assert_eq!(env.standin.pulls()[0]["merged"], false);

    // Green on selfheal's commit from the repository's CI: verify runs and merges.
    let green = env.check_suite(7004, &branch, &head, "success");
    let (_, body) = app.deliver("check_suite", &green).await;
    assert_eq!(body["status"], "run_created", "{body}");
    assert_eq!(body["stage"], "verify", "{body}");
    let run = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(run, Duration::from_secs(30)).await,
        "succeeded"
    );
    let verdict = verdict(&env, run).await.0;
    assert_eq!(verdict, "merge");
    assert_eq!(env.standin.pulls()[0]["merged"], true);
    // The same suite delivered again is the same run.
    let (status, again) = app.deliver("check_suite", &green).await;
    assert_eq!(
        (status, again["status"].as_str()),
        (202, Some("stored")),
        "{again}"
    );
}

#[tokio::test]
async fn external_ci_reporting_through_commit_statuses_re_triggers_verify_and_merges() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // The repository's CI reports commit statuses (Jenkins-style): red on the fix, then
    // someone else posts a green one under its context, which GitHub's combined status shows.
    let red_then_forged = vec![
        serde_json::json!({"context": "ci/jenkins", "state": "failure", "creator": "jenkins-bot"}),
        serde_json::json!({"context": "ci/jenkins", "state": "success", "creator": "mallory"}),
    ];
    // A context names no one: the repository says who posts it.
    let config = "external_statuses: {ci/jenkins: jenkins-bot}\n";
    env.standin.set_knobs(Knobs {
        fix_checks: Some(Vec::new()),
        fix_statuses: red_then_forged.clone(),
        repo_config: Some(config.into()),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    env.fail_and_heal(&app, 9982).await;
    let (branch, head) = env.pull(1);

    // Pending says nothing yet; a failure is one of the fix's checks, for the next verify; a
    // status on a commit no selfheal branch contains is someone else's.
    for (id, state, branches) in [
        (8001, "pending", vec![branch.as_str()]),
        (8002, "failure", vec![branch.as_str()]),
        (8003, "success", vec!["master"]),
    ] {
        let (_, body) = app
            .deliver(
                "status",
                &env.status(id, &head, (state, "ci/jenkins", "jenkins-bot"), &branches),
            )
            .await;
        assert_eq!(body["status"], "stored", "{state}: {body}");
    }
    // On selfheal's branch, but of a commit selfheal did not push last.
    let base = env.standin.head_sha();
    let (_, body) = app
        .deliver(
            "status",
            &env.status(
                8004,
                &base,
                ("success", "ci/jenkins", "jenkins-bot"),
                &["master", &branch],
            ),
        )
        .await;
    assert_eq!(body["status"], "ignored", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not of the commit selfheal last pushed")),
        "{body}"
    );

    // A green status whose context the repository does not name as its CI, or the right
    // context posted by someone else (anyone who may write statuses can): nothing decided.
    for (id, context, creator, why) in [
        (8005, "dco/signoff", "dco-bot", "a commit status `dco/signoff` posted by `dco-bot`, a context .github/selfheal.yml does not list under external_statuses"),
        (8007, "ci/jenkins", "mallory", "a commit status `ci/jenkins` posted by `mallory`, not by `jenkins-bot`"),
    ] {
        let (_, body) = app
            .deliver(
                "status",
                &env.status(id, &head, ("success", context, creator), &["master", &branch]),
            )
            .await;
        let run = env.run_of(&body).await;
        env.wait_run(run, Duration::from_secs(30)).await;
        let reason: String = env
            .db()
            .await
            .query_one(
                "SELECT reason FROM verifications WHERE run_id = $1 AND verdict = 'skip'",
                &[&run],
            )
            .await
            .unwrap()
            .get(0);
        assert!(reason.contains(why), "{reason}");
        assert_eq!(env.standin.pulls()[0]["merged"], false);
    }

    // Before the pinned CI has said anything, a green run of the fix's workflow does not
    // merge: the repository's CI still has to speak.
    env.standin.set_knobs(Knobs {
        fix_checks: Some(Vec::new()),
        repo_config: Some(config.into()),
        ..Knobs::default()
    });
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(9985, &branch, &head, "success"),
        )
        .await;
    let run = env.run_of(&body).await;
    env.wait_run(run, Duration::from_secs(30)).await;
    let (waiting, reason) = verdict(&env, run).await;
    assert_eq!(waiting, "wait", "{reason}");
    assert!(reason.contains("ci/jenkins"), "{reason}");
    env.standin.set_knobs(Knobs {
        fix_checks: Some(Vec::new()),
        fix_statuses: red_then_forged.clone(),
        repo_config: Some(config.into()),
        ..Knobs::default()
    });

    // Any green trigger (here the fix's workflow) judges the statuses as their pinned poster
    // posted them: red, whatever the combined status says.
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(9984, &branch, &head, "success"),
        )
        .await;
    let run = env.run_of(&body).await;
    env.wait_run(run, Duration::from_secs(30)).await;
    let (held, reason) = verdict(&env, run).await;
    assert_eq!(held, "hold", "{reason}");
    assert!(reason.contains("checks failed: ci/jenkins"), "{reason}");
    assert_eq!(env.standin.pulls()[0]["merged"], false);

    // The repository's CI goes green on selfheal's commit: verify reads every status and merges.
    let mut now_green = red_then_forged;
    now_green.push(
        serde_json::json!({"context": "ci/jenkins", "state": "success", "creator": "jenkins-bot"}),
    );
    env.standin.set_knobs(Knobs {
        fix_checks: Some(Vec::new()),
        fix_statuses: now_green,
        repo_config: Some(config.into()),
        ..Knobs::default()
    });
    let green = env.status(
        8006,
        &head,
        ("success", "ci/jenkins", "jenkins-bot"),
        &[&branch],
    );
    let (_, body) = app.deliver("status", &green).await;
    assert_eq!(body["status"], "run_created", "{body}");
    let run = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(run, Duration::from_secs(30)).await,
        "succeeded"
    );
    assert_eq!(verdict(&env, run).await.0, "merge");
    assert_eq!(env.standin.pulls()[0]["merged"], true);
    let trigger: (String, Option<i64>, Option<String>, Option<String>) = env
        .db()
        .await
        .query_one(
            "SELECT trigger, trigger_app_id, trigger_app, trigger_by FROM runs WHERE id = $1",
            &[&run],
        )
        .await
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .unwrap();
    assert_eq!(
        trigger,
        (
            "status".into(),
            None,
            Some("ci/jenkins".into()),
            Some("jenkins-bot".into())
        )
    );
}

#[tokio::test]
async fn external_ci_reporting_through_a_check_run_re_triggers_verify() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    env.standin.set_knobs(Knobs {
        fix_checks: Some(vec![
            serde_json::json!({"name": "octocoders-linter", "status": "completed", "conclusion": "success"}),
        ]),
        repo_config: Some("external_ci: [octocoders-linter]\n".into()),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    env.fail_and_heal(&app, 9983).await;
    let (branch, head) = env.pull(1);

    // GitHub Actions' own check runs come as workflow runs: stored, nothing more.
    let mut actions = env.check_run(7101, &branch, &head, "success");
    actions["check_run"]["app"]["slug"] = serde_json::json!("github-actions");
    let (_, body) = app.deliver("check_run", &actions).await;
    assert_eq!(body["status"], "stored", "{body}");
    // A check suite of an app the repository does not name: verify decides nothing.
    let mut dco = env.check_suite(7102, &branch, &head, "success");
    dco["check_suite"]["app"]["slug"] = serde_json::json!("dco");
    dco["check_suite"]["app"]["id"] = serde_json::json!(4242_4242);
    let (_, suite) = app.deliver("check_suite", &dco).await;
    assert_eq!(suite["status"], "run_created", "{suite}");
    env.wait_run(env.run_of(&suite).await, Duration::from_secs(30))
        .await;
    assert_eq!(env.standin.pulls()[0]["merged"], false);
    // Nor does a check run of an app it does not name.
    let mut dco = env.check_run(7103, &branch, &head, "success");
    dco["check_run"]["app"]["slug"] = serde_json::json!("dco");
    dco["check_run"]["app"]["id"] = serde_json::json!(4242_4242);
    let (_, body) = app.deliver("check_run", &dco).await;
    let run = env.run_of(&body).await;
    env.wait_run(run, Duration::from_secs(30)).await;
    let (verdict_of_dco, reason) = verdict(&env, run).await;
    assert_eq!(verdict_of_dco, "skip");
    assert!(
        reason.contains("a check run of `dco`, which .github/selfheal.yml does not list"),
        "{reason}"
    );
    assert_eq!(env.standin.pulls()[0]["merged"], false);
    // A check run of the repository's CI, with the same id as that suite (GitHub numbers
    // them apart): a run of its own, and it merges.
    let (_, body) = app
        .deliver("check_run", &env.check_run(7102, &branch, &head, "success"))
        .await;
    assert_eq!(body["status"], "run_created", "{body}");
    let run = env.run_of(&body).await;
    assert_ne!(run, env.run_of(&suite).await);
    assert_eq!(
        env.wait_run(run, Duration::from_secs(30)).await,
        "succeeded"
    );
    assert_eq!(verdict(&env, run).await.0, "merge");
    assert_eq!(env.standin.pulls()[0]["merged"], true);
}

#[tokio::test]
async fn a_mark_someone_else_planted_does_not_silence_selfhealss_comment() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    env.fail_and_heal(&app, 9991).await;
    // Someone writes the marks of the next commands' replies on the PR; GitHub then fails
    // selfheal's first comment without making it.
    for id in 1..=3 {
        env.standin
            .comment_as(1, "mallory", &format!("<!-- selfheal:command:{id} -->"));
    }
    env.standin.set_knobs(Knobs {
        permissions: [("octocat".to_string(), "admin".to_string())].into(),
        fail_writes: 1,
        ..Knobs::default()
    });
    let (_, body) = app
        .deliver(
            "issue_comment",
            &env.comment(1, "octocat", "/selfheal explain"),
        )
        .await;
    let command = body["command_id"].as_i64().unwrap();
    assert_eq!(env.command_status(command).await, "done");
    let mark = format!("<!-- selfheal:command:{command} -->");
    let ours: Vec<serde_json::Value> = env
        .standin
        .comments()
        .into_iter()
        .filter(|c| !c["performed_via_github_app"].is_null())
        .filter(|c| c["body"].as_str().is_some_and(|b| b.contains(&mark)))
        .collect();
    assert_eq!(ours.len(), 1, "selfheal's reply was made, once: {ours:#?}");
}
