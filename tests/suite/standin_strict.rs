//! The stand-in refuses what GitHub refuses, so that a test passing against it means
//! something: forged, expired or foreign App JWTs; unknown, expired, revoked or out-of-scope
//! installation tokens.

use crate::support;

use serde_json::{json, Value};
use support::*;

async fn exchange(env: &TestEnv, jwt: &str, installation: i64, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!(
            "{}/app/installations/{installation}/access_tokens",
            env.standin.url()
        ))
        .bearer_auth(jwt)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn get(env: &TestEnv, token: &str, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", env.standin.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn only_the_apps_own_current_jwt_gets_a_token() {
    let env = TestEnv::new().await;
    let good = app_jwt();
    let (status, token) = exchange(&env, &good, INSTALLATION_ID, json!({})).await;
    assert_eq!(status, 201, "{token}");

    let now = chrono::Utc::now().timestamp();
    let public = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("standin/demo-app-key.pub.pem"),
    )
    .unwrap();
    let forged = [
        // Signed by another key.
        (
            "another key",
            app_jwt_with(1, "tests/keys/another-app-key.pem", -60, 540),
        ),
        // Expired a minute ago.
        (
            "expired",
            app_jwt_with(1, "standin/demo-app-key.pem", -660, -60),
        ),
        // GitHub refuses an expiry more than ten minutes after issue.
        (
            "exp too far",
            app_jwt_with(1, "standin/demo-app-key.pem", -60, 3600),
        ),
        // Issued in the future.
        (
            "iat ahead",
            app_jwt_with(1, "standin/demo-app-key.pem", 60, 540),
        ),
        // Ten minutes and ten seconds ahead: over GitHub's ten.
        (
            "exp 610 s ahead",
            app_jwt_with(1, "standin/demo-app-key.pem", -60, 610),
        ),
        // Another App's id.
        (
            "another app",
            app_jwt_with(2, "standin/demo-app-key.pem", -60, 540),
        ),
        // The algorithm-confusion attack: HS256 keyed with the public key.
        (
            "hs256 with the public key",
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &json!({"iat": now - 60, "exp": now + 540, "iss": 1}),
                &jsonwebtoken::EncodingKey::from_secret(&public),
            )
            .unwrap(),
        ),
        // The shape of a JWT, no signature.
        ("unsigned", "eyJhbGciOiJub25lIn0.eyJpc3MiOjF9.".to_string()),
    ];
    for (what, jwt) in forged {
        let (status, body) = exchange(&env, &jwt, INSTALLATION_ID, json!({})).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(body["message"].is_string(), "{what}: {body}");
    }
    // At the limits GitHub allows: issued now, ten minutes ahead.
    let edge = app_jwt_with(1, "standin/demo-app-key.pem", 0, 595);
    assert_eq!(
        exchange(&env, &edge, INSTALLATION_ID, json!({})).await.0,
        201
    );
    // A JWT goes with `Bearer`, not `token`.
    let r = reqwest::Client::new()
        .post(format!(
            "{}/app/installations/{INSTALLATION_ID}/access_tokens",
            env.standin.url()
        ))
        .header("authorization", format!("token {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A real JWT for an installation the App does not have.
    let (status, _) = exchange(&env, &good, 99, json!({})).await;
    assert_eq!(status, 404);
    // An installation token is not a JWT.
    let token = token["token"].as_str().unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}/app/hook/deliveries", env.standin.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn a_token_works_only_for_its_repositories_until_it_expires_or_is_revoked() {
    let env = TestEnv::new().await;
    env.standin.set_knobs(github_standin::Knobs {
        installations: Some(
            [(
                INSTALLATION_ID,
                vec![
                    "octo-org/octo-repo".to_string(),
                    "octo-org/other".to_string(),
                ],
            )]
            .into(),
        ),
        ..Default::default()
    });
    let jwt = app_jwt();
    let jobs = "/repos/octo-org/octo-repo/actions/runs/1/jobs";
    // Scoped to one repository: that one answers, the installation's other one is not found.
    let (status, body) = exchange(
        &env,
        &jwt,
        INSTALLATION_ID,
        json!({"repositories": ["octo-repo"]}),
    )
    .await;
    assert_eq!(status, 201);
    let names: Vec<&str> = body["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["full_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["octo-org/octo-repo"]);
    let scoped = body["token"].as_str().unwrap().to_string();
    assert_eq!(get(&env, &scoped, jobs).await.0, 200);
    let (status, body) = get(&env, &scoped, "/repos/octo-org/other/actions/runs/1/jobs").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(get(&env, &scoped, "/repos/someone/else/pulls").await.0, 404);
    // A repository the installation does not have cannot be asked for.
    let (status, body) = exchange(
        &env,
        &jwt,
        INSTALLATION_ID,
        json!({"repositories": ["secret"]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // Unknown, missing and malformed credentials.
    assert_eq!(get(&env, "ghs_madeup", jobs).await.0, 401);
    let r = reqwest::Client::new()
        .get(format!("{}{jobs}", env.standin.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // The App's JWT is not an installation token.
    assert_eq!(get(&env, &jwt, jobs).await.0, 401);

    // Revoked.
    env.standin.revoke_tokens();
    let (status, body) = get(&env, &scoped, jobs).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("Bad credentials"))
    );

    // Expired: a token that lives one second.
    env.standin.set_knobs(github_standin::Knobs {
        token_ttl_secs: Some(1),
        ..Default::default()
    });
    let (_, body) = exchange(&env, &jwt, INSTALLATION_ID, json!({})).await;
    let short = body["token"].as_str().unwrap().to_string();
    assert_eq!(get(&env, &short, jobs).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(get(&env, &short, jobs).await.0, 401);
}

/// The stand-in's repository through its API, as any client with a token sees it.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(env: &TestEnv) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("{}/repos/octo-org/octo-repo", env.standin.url()),
            token: env.standin.installation_token(INSTALLATION_ID).unwrap(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A commit on top of `parent` that sets `path` to `content`; its sha.
    async fn commit(&self, parent: &str, path: &str, content: &str) -> String {
        use reqwest::Method;
        let (_, parent_commit) = self
            .call(Method::GET, &format!("/git/commits/{parent}"), Value::Null)
            .await;
        let (status, tree) = self
            .call(
                Method::POST,
                "/git/trees",
                json!({"base_tree": parent_commit["tree"]["sha"], "tree": [
                    {"path": path, "mode": "100644", "type": "blob", "content": content}]}),
            )
            .await;
        assert_eq!(status, 201, "{tree}");
        let (status, commit) = self
            .call(
                Method::POST,
                "/git/commits",
                json!({"message": format!("set {path}"), "tree": tree["sha"], "parents": [parent]}),
            )
            .await;
        assert_eq!(status, 201, "{commit}");
        commit["sha"].as_str().unwrap().to_string()
    }

    async fn set_ref(&self, branch: &str, sha: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/git/refs",
                json!({"ref": format!("refs/heads/{branch}"), "sha": sha}),
            )
            .await;
        if status == 422 {
            let (status, body) = self
                .call(
                    reqwest::Method::PATCH,
                    &format!("/git/refs/heads/{branch}"),
                    json!({"sha": sha, "force": true}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        } else {
            assert_eq!(status, 201, "{body}");
        }
    }

    /// A branch with one commit on master's head, and its pull request; (number, head sha).
    async fn pull(&self, env: &TestEnv, branch: &str, path: &str, content: &str) -> (i64, String) {
        let head = self.commit(&env.standin.head_sha(), path, content).await;
        self.set_ref(branch, &head).await;
        let (status, pr) = self
            .call(
                reqwest::Method::POST,
                "/pulls",
                json!({"title": branch, "head": branch, "base": "master"}),
            )
            .await;
        assert_eq!(status, 201, "{pr}");
        (pr["number"].as_i64().unwrap(), head)
    }

    async fn merge(&self, number: i64, sha: Option<&str>) -> (u16, Value) {
        let mut body = json!({"merge_method": "squash"});
        if let Some(sha) = sha {
            body["sha"] = Value::from(sha);
        }
        self.call(
            reqwest::Method::PUT,
            &format!("/pulls/{number}/merge"),
            body,
        )
        .await
    }
}

fn master(env: &TestEnv) -> String {
    git(&env.standin.git_dir(), &["rev-parse", "refs/heads/master"])
}

#[tokio::test]
async fn merges_are_refused_as_github_refuses_them() {
    let env = TestEnv::new().await;
    let api = Api::new(&env);
    env.standin.set_knobs(github_standin::Knobs {
        protection: Some(github_standin::Protection {
            required_checks: vec!["test".into()],
            required_review: true,
            strict: false,
        }),
        ..Default::default()
    });
    let (n, head) = api.pull(&env, "fix-a", "a.txt", "a\n").await;
    // No check has reported on a new commit: the required one is missing.
    let (status, body) = api.merge(n, Some(&head)).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(
        body["message"],
        "Required status check \"test\" is expected."
    );
    let knobs = |checks: Value, approved: Vec<i64>| github_standin::Knobs {
        protection: Some(github_standin::Protection {
            required_checks: vec!["test".into()],
            required_review: true,
            strict: false,
        }),
        fix_checks: Some(checks.as_array().unwrap().clone()),
        approved_pulls: approved,
        ..Default::default()
    };
    env.standin.set_knobs(knobs(
        json!([{"name": "test", "status": "completed", "conclusion": "failure"}]),
        vec![],
    ));
    let (status, body) = api.merge(n, Some(&head)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (405, Some("Required status check \"test\" is failing."))
    );
    let green = json!([{"name": "test", "status": "completed", "conclusion": "success"}]);
    env.standin.set_knobs(knobs(green.clone(), vec![]));
    let (status, body) = api.merge(n, Some(&head)).await;
    assert_eq!(status, 405, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("approving review"),
        "{body}"
    );
    env.standin.set_knobs(knobs(green, vec![n]));
    // The head moved since it was checked: 409.
    let (status, body) = api.merge(n, Some(&env.standin.head_sha())).await;
    assert_eq!(status, 409, "{body}");
    let before = master(&env);
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("/pulls/{n}/merge"),
            json!({"merge_method": "fast-forward", "sha": head}),
        )
        .await;
    assert_eq!(status, 422, "an unknown merge method: {body}");
    let (status, body) = api.merge(n, Some(&head)).await;
    assert_eq!(status, 200, "{body}");
    // A squash: one commit, one parent, the old master.
    let dir = env.standin.git_dir();
    let parents = git(&dir, &["rev-list", "--parents", "-n1", "refs/heads/master"]);
    assert_eq!(
        parents.split(' ').skip(1).collect::<Vec<_>>(),
        [before.as_str()]
    );
    // Merged is closed: a second merge is 405.
    assert_eq!(api.merge(n, None).await.0, 405);
}

#[tokio::test]
async fn a_base_that_moved_is_merged_three_ways_or_refused() {
    let env = TestEnv::new().await;
    let api = Api::new(&env);
    let (a, _) = api.pull(&env, "fix-a", "a.txt", "a\n").await;
    let (b, _) = api.pull(&env, "fix-b", "b.txt", "b\n").await;
    let (c, _) = api.pull(&env, "fix-c", "a.txt", "something else\n").await;
    assert_eq!(api.merge(a, None).await.0, 200);
    // b branched before a merged: a real three-way merge keeps a's change and adds b's.
    let (status, body) = api.merge(b, None).await;
    assert_eq!(status, 200, "{body}");
    let dir = env.standin.git_dir();
    assert_eq!(git(&dir, &["show", "refs/heads/master:a.txt"]), "a");
    assert_eq!(git(&dir, &["show", "refs/heads/master:b.txt"]), "b");
    // c changes a.txt too: a conflict, not an overwrite.
    let (status, body) = api.merge(c, None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (405, Some("Pull Request is not mergeable"))
    );
    assert_eq!(git(&dir, &["show", "refs/heads/master:a.txt"]), "a");

    // "Require branches to be up to date": behind is refused until the branch is updated.
    env.standin.set_knobs(github_standin::Knobs {
        protection: Some(github_standin::Protection {
            strict: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let (d, d_head) = api.pull(&env, "fix-d", "d.txt", "d\n").await;
    let (status, body) = api.merge(d, None).await;
    assert_eq!(status, 405, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not up to date"),
        "{body}"
    );
    let update_path = format!("/pulls/{d}/update-branch");
    let update = |expected: &str| {
        api.call(
            reqwest::Method::PUT,
            &update_path,
            json!({"expected_head_sha": expected}),
        )
    };
    let (status, _) = update("0000000000000000000000000000000000000000").await;
    assert_eq!(status, 422);
    let (status, body) = update(&d_head).await;
    assert_eq!(status, 202, "{body}");
    let (_, pr) = api
        .call(reqwest::Method::GET, &format!("/pulls/{d}"), Value::Null)
        .await;
    let new_head = pr["head"]["sha"].as_str().unwrap().to_string();
    assert_ne!(new_head, d_head);
    assert_eq!(git(&dir, &["rev-parse", &format!("{new_head}^1")]), d_head);
    assert_eq!(
        git(&dir, &["rev-parse", &format!("{new_head}^2")]),
        master(&env)
    );
    // Up to date now: nothing to update, and the merge goes through.
    assert_eq!(update(&new_head).await.0, 422);
    assert_eq!(api.merge(d, Some(&new_head)).await.0, 200);
    assert_eq!(git(&dir, &["show", "refs/heads/master:d.txt"]), "d");
}

// Several threads, as the stand-in's server has in its own process: writes really overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tree_writes_all_succeed_and_deleting_a_branch_closes_its_pull_request() {
    let env = TestEnv::new().await;
    let api = std::sync::Arc::new(Api::new(&env));
    let head = env.standin.head_sha();
    let writes = (0..24).map(|i| {
        let api = api.clone();
        let head = head.clone();
        tokio::spawn(async move {
            api.commit(&head, &format!("f{i}.txt"), &format!("{i}\n"))
                .await
        })
    });
    let shas: Vec<String> = futures::future::join_all(writes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let dir = env.standin.git_dir();
    for (i, sha) in shas.iter().enumerate() {
        assert_eq!(
            git(&dir, &["show", &format!("{sha}:f{i}.txt")]),
            i.to_string()
        );
    }

    let (n, _) = api.pull(&env, "fix-e", "e.txt", "e\n").await;
    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            "/git/refs/heads/fix-e",
            Value::Null,
        )
        .await;
    assert_eq!(status, 204);
    let (_, pr) = api
        .call(reqwest::Method::GET, &format!("/pulls/{n}"), Value::Null)
        .await;
    assert_eq!(pr["state"], "closed");
    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            "/git/refs/heads/fix-e",
            Value::Null,
        )
        .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn job_lists_are_paginated_and_logs_can_be_gone() {
    let env = TestEnv::new().await;
    let api = Api::new(&env);
    let more: Vec<String> = (0..40).map(|i| format!("test ({i})")).collect();
    let mut log_status = std::collections::BTreeMap::new();
    log_status.insert("test (0)".to_string(), 410);
    log_status.insert("test (1)".to_string(), 404);
    env.standin.set_knobs(github_standin::Knobs {
        more_failing_jobs: more,
        log_status,
        ..Default::default()
    });
    let r = api
        .http
        .get(format!(
            "{}/actions/runs/7/attempts/2/jobs?per_page=30",
            api.base
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert!(link.contains("page=2>; rel=\"next\""), "{link}");
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["total_count"], 42);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 30);
    assert_eq!(page["jobs"][0]["run_attempt"], 2);
    let (_, last) = api
        .call(
            reqwest::Method::GET,
            "/actions/runs/7/attempts/2/jobs?per_page=30&page=2",
            Value::Null,
        )
        .await;
    assert_eq!(last["jobs"].as_array().unwrap().len(), 12);
    let id_of = |name: &str| {
        last["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .chain(page["jobs"].as_array().unwrap())
            .find(|j| j["name"] == name)
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let logs = |id: i64| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("{}/actions/jobs/{id}/logs", api.base))
            .bearer_auth(&api.token)
            .send()
    };
    assert_eq!(
        logs(id_of("test (0)")).await.unwrap().status().as_u16(),
        410
    );
    assert_eq!(
        logs(id_of("test (1)")).await.unwrap().status().as_u16(),
        404
    );
    assert_eq!(
        logs(id_of("test (2)")).await.unwrap().status().as_u16(),
        302
    );
}

#[tokio::test]
async fn a_merge_commit_has_two_parents_and_required_checks_pass_on_neutral_or_the_latest_success()
{
    let env = TestEnv::new().await;
    let api = Api::new(&env);
    let checks = |list: Value| github_standin::Knobs {
        protection: Some(github_standin::Protection {
            required_checks: vec!["test".into(), "docs".into()],
            ..Default::default()
        }),
        fix_checks: Some(list.as_array().unwrap().clone()),
        ..Default::default()
    };
    let (n, head) = api.pull(&env, "fix-m", "m.txt", "m\n").await;
    // `test` failed, then passed on a rerun; `docs` was skipped: GitHub lets it merge.
    env.standin.set_knobs(checks(json!([
        {"name": "test", "status": "completed", "conclusion": "failure"},
        {"name": "test", "status": "completed", "conclusion": "success"},
        {"name": "docs", "status": "completed", "conclusion": "skipped"},
    ])));
    let before = master(&env);
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("/pulls/{n}/merge"),
            json!({"merge_method": "merge", "sha": head}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let dir = env.standin.git_dir();
    let parents = git(&dir, &["rev-list", "--parents", "-n1", "refs/heads/master"]);
    assert_eq!(
        parents.split(' ').skip(1).collect::<Vec<_>>(),
        [before.as_str(), head.as_str()]
    );
    // A passed check followed by a failed rerun: the latest counts.
    let (n, head) = api.pull(&env, "fix-o", "o.txt", "o\n").await;
    env.standin.set_knobs(checks(json!([
        {"name": "test", "status": "completed", "conclusion": "success"},
        {"name": "test", "status": "completed", "conclusion": "failure"},
        {"name": "docs", "status": "completed", "conclusion": "neutral"},
    ])));
    let (status, body) = api.merge(n, Some(&head)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (405, Some("Required status check \"test\" is failing."))
    );
}

#[tokio::test]
async fn refs_are_read_exactly_and_only_the_served_repository_answers() {
    let env = TestEnv::new().await;
    let api = Api::new(&env);
    assert_eq!(
        api.call(reqwest::Method::GET, "/git/ref/heads/master", Value::Null)
            .await
            .0,
        200
    );
    // Revision syntax is not a ref to GitHub.
    for path in [
        "/git/ref/heads/master~1",
        "/git/ref/heads/master^",
        "/git/ref/heads/master@{0}",
    ] {
        assert_eq!(
            api.call(reqwest::Method::GET, path, Value::Null).await.0,
            404,
            "{path}"
        );
    }
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            "/git/refs",
            json!({"ref": "heads/x", "sha": env.standin.head_sha()}),
        )
        .await;
    assert_eq!(status, 422, "a ref name must be fully qualified");
    // GitHub signs what the app commits as itself, not a commit given another author.
    let (_, head) = api
        .call(
            reqwest::Method::GET,
            &format!("/git/commits/{}", env.standin.head_sha()),
            Value::Null,
        )
        .await;
    for (author, verified) in [
        (Value::Null, true),
        (json!({"name": "Mallory", "email": "m@example.com"}), false),
    ] {
        let mut req = json!({"message": "m", "tree": head["tree"]["sha"], "parents": [env.standin.head_sha()]});
        if !author.is_null() {
            req["author"] = author;
        }
        let (status, commit) = api.call(reqwest::Method::POST, "/git/commits", req).await;
        assert_eq!(status, 201);
        assert_eq!(commit["verification"]["verified"], verified, "{commit}");
    }
    // A repository the token may reach but this stand-in does not serve: not found, never
    // answered with the served one's contents.
    env.standin.set_knobs(github_standin::Knobs {
        installations: Some(
            [(
                INSTALLATION_ID,
                vec![
                    "octo-org/octo-repo".to_string(),
                    "octo-org/other".to_string(),
                ],
            )]
            .into(),
        ),
        ..Default::default()
    });
    let token = env.standin.installation_token(INSTALLATION_ID).unwrap();
    let (status, _) = get(&env, &token, "/repos/octo-org/other/git/ref/heads/master").await;
    assert_eq!(status, 404);
}

/// The commit endpoints answer from the stand-in's git repository as GitHub does, and refuse
/// what GitHub refuses: an unknown commit (422 for one commit, 404 for a comparison), a
/// comparison without `...`, a workflow named by something other than its id here; and they
/// still want a token.
#[tokio::test]
async fn commits_and_comparisons_come_from_the_repository_and_unknown_ones_are_refused() {
    let env = TestEnv::new().await;
    let token = env.standin.installation_token(INSTALLATION_ID).unwrap();
    let repo = "/repos/octo-org/octo-repo";
    let head = env.standin.head_sha();
    let (status, commit) = get(&env, &token, &format!("{repo}/commits/{head}")).await;
    assert_eq!(status, 200, "{commit}");
    assert_eq!(commit["sha"], head.as_str());
    assert!(
        commit["files"].as_array().is_some_and(|f| !f.is_empty()),
        "{commit}"
    );
    let (status, same) = get(&env, &token, &format!("{repo}/compare/{head}...{head}")).await;
    assert_eq!(
        (status, same["status"].as_str()),
        (200, Some("identical")),
        "{same}"
    );
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let (status, _) = get(&env, &token, &format!("{repo}/commits/{unknown}")).await;
    assert_eq!(status, 422);
    let (status, _) = get(&env, &token, &format!("{repo}/compare/{head}...{unknown}")).await;
    assert_eq!(status, 404);
    let (status, _) = get(&env, &token, &format!("{repo}/compare/{head}..{head}")).await;
    assert_eq!(status, 404);
    // The recorded run's workflow exists and has no run yet; another workflow is unknown.
    let runs_of = |query: &str| format!("{repo}/actions/workflows/2823525/runs?{query}");
    let (status, runs) = get(&env, &token, &runs_of("status=success&branch=master")).await;
    assert_eq!(
        (status, runs["total_count"].as_u64()),
        (200, Some(0)),
        "{runs}"
    );
    let (status, _) = get(&env, &token, &format!("{repo}/actions/workflows/42/runs")).await;
    assert_eq!(status, 404);
    let (status, _) = get(&env, &token, &runs_of("status=green")).await;
    assert_eq!(status, 422);
    // Runs are listed newest first and filtered as GitHub filters them.
    let run = |branch: &str, event: &str, conclusion: &str, sha: &str| {
        json!({"workflow_id": 2823525, "head_branch": branch, "event": event,
            "conclusion": conclusion, "head_sha": sha})
    };
    env.standin.set_knobs(github_standin::Knobs {
        workflow_runs: vec![
            run("master", "push", "success", "a1"),
            run("master", "push", "success", "b2"),
            run("master", "pull_request", "success", "c3"),
            run("master", "push", "failure", "d4"),
            run("release", "push", "success", "e5"),
        ],
        ..Default::default()
    });
    let shas = |runs: &Value| -> Vec<String> {
        runs["workflow_runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["head_sha"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, runs) = get(
        &env,
        &token,
        &runs_of("status=success&branch=master&event=push"),
    )
    .await;
    assert_eq!(shas(&runs), vec!["b2", "a1"], "{runs}");
    let (_, runs) = get(&env, &token, &runs_of("branch=master")).await;
    assert_eq!(shas(&runs), vec!["d4", "c3", "b2", "a1"]);
    let (_, runs) = get(&env, &token, &runs_of("status=completed&per_page=2&page=2")).await;
    assert_eq!(
        (shas(&runs), runs["total_count"].as_u64()),
        (vec!["c3".to_string(), "b2".to_string()], Some(5))
    );
    // The next page's address keeps the filters.
    let r = reqwest::Client::new()
        .get(format!(
            "{}{}",
            env.standin.url(),
            runs_of("branch=master&per_page=1")
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert!(
        link.contains("branch=master") && link.contains("page=2"),
        "{link}"
    );
    let (_, runs) = get(&env, &token, &runs_of("head_sha=b2")).await;
    assert_eq!(shas(&runs), vec!["b2"]);
    let (status, _) = get(&env, &token, &format!("{repo}/commits/{head}")).await;
    assert_eq!(status, 200);
    let (status, _) = get(&env, "not-a-token", &format!("{repo}/commits/{head}")).await;
    assert_eq!(status, 401);

    // Two commits on top, the second with CRLF lines and a blank last line: the comparison
    // lists them oldest first, and a file's patch is its hunks as git wrote them (no header,
    // carriage returns and blank context kept).
    let git = GitData::new(&env);
    let mut parent = head.clone();
    let mut made = Vec::new();
    for content in ["one\n", "one\r\ntwo\r\n\n"] {
        let tree = git.tree(None, &[("notes.txt", content)]).await;
        parent = git.commit(tree, &[&parent], "notes", None).await;
        made.push(parent.clone());
    }
    let (status, compared) = get(&env, &token, &format!("{repo}/compare/{head}...{parent}")).await;
    assert_eq!(status, 200, "{compared}");
    assert_eq!(compared["status"], "ahead");
    assert_eq!(compared["total_commits"], 2);
    let order: Vec<&str> = compared["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["sha"].as_str().unwrap())
        .collect();
    assert_eq!(order, made.iter().map(String::as_str).collect::<Vec<_>>());
    let (_, last) = get(&env, &token, &format!("{repo}/commits/{parent}")).await;
    let patch = last["files"][0]["patch"].as_str().unwrap();
    assert_eq!(patch, "@@ -1 +1,3 @@\n-one\n+one\r\n+two\r\n+");
    assert_eq!(last["files"][0]["status"], "modified");
    assert_eq!(last["stats"]["total"], 4);
}

/// `git fetch` as a GitHub App's installation does it, against the stand-in's git over HTTP:
/// `git` itself, from a scratch repository, with the token as Basic credentials' password.
async fn git_fetch(
    env: &TestEnv,
    token: Option<&str>,
    repository: &str,
    sha: &str,
) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: Vec<String>| {
        let mut command = tokio::process::Command::new("git");
        command
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("GIT_DIR", dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0");
        if let Some(token) = token {
            use base64::Engine;
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
            command
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
        command.output()
    };
    assert!(git(vec!["init".into(), "-q".into(), "--bare".into()])
        .await
        .unwrap()
        .status
        .success());
    let url = format!("{}/{repository}.git", env.standin.url());
    let out = git(vec![
        "fetch".into(),
        "--depth=1".into(),
        "--no-tags".into(),
        url,
        sha.into(),
    ])
    .await
    .unwrap();
    let fetched = out.status.success()
        && git(vec!["cat-file".into(), "-t".into(), sha.into()])
            .await
            .unwrap()
            .status
            .success();
    (fetched, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn git_fetches_take_a_valid_token_for_the_repository_as_github_does() {
    let env = TestEnv::new().await;
    // Two repositories in the installation: a token for one does not fetch the other.
    env.standin.set_knobs(github_standin::Knobs {
        installations: Some(
            [(
                INSTALLATION_ID,
                vec![
                    "octo-org/octo-repo".to_string(),
                    "octo-org/other".to_string(),
                ],
            )]
            .into(),
        ),
        ..Default::default()
    });
    let jwt = app_jwt();
    let (_, body) = exchange(
        &env,
        &jwt,
        INSTALLATION_ID,
        json!({"repositories": ["octo-repo"]}),
    )
    .await;
    let token = body["token"].as_str().unwrap().to_string();
    let head = env.standin.head_sha();
    // What the stand-in answered the last fetch's first request, and with what credential.
    let answered = || {
        env.standin
            .calls()
            .into_iter()
            .rev()
            .find(|c| c.path.ends_with("/info/refs"))
            .map(|c| (c.auth, c.status))
            .unwrap()
    };
    // A shallow fetch of one commit by its sha (protocol v2, as git speaks by default).
    let (fetched, said) = git_fetch(&env, Some(&token), "octo-org/octo-repo", &head).await;
    assert!(fetched, "{said}");
    assert_eq!(answered(), ("installation-token".to_string(), Some(200)));
    // No credentials, a token never issued, another repository: 401, 401 and GitHub's 404.
    let (fetched, said) = git_fetch(&env, None, "octo-org/octo-repo", &head).await;
    assert!(!fetched, "{said}");
    assert_eq!(answered(), ("none".to_string(), Some(401)));
    let (fetched, said) = git_fetch(&env, Some("ghs_madeup"), "octo-org/octo-repo", &head).await;
    assert!(!fetched, "{said}");
    assert_eq!(answered(), ("installation-token".to_string(), Some(401)));
    let (_, body) = exchange(
        &env,
        &jwt,
        INSTALLATION_ID,
        json!({"repositories": ["other"]}),
    )
    .await;
    let other = body["token"].as_str().unwrap().to_string();
    let (fetched, said) = git_fetch(&env, Some(&other), "octo-org/octo-repo", &head).await;
    assert!(!fetched && said.contains("not found"), "{said}");
    assert_eq!(answered().1, Some(404));
    // Pushes are not served.
    let r = reqwest::Client::new()
        .get(format!(
            "{}/octo-org/octo-repo.git/info/refs?service=git-receive-pack",
            env.standin.url()
        ))
        .basic_auth("x-access-token", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // An expired token and a revoked one no longer fetch.
    env.standin.set_knobs(github_standin::Knobs {
        token_ttl_secs: Some(1),
        ..Default::default()
    });
    let (_, body) = exchange(&env, &jwt, INSTALLATION_ID, json!({})).await;
    let short = body["token"].as_str().unwrap().to_string();
    let (fetched, said) = git_fetch(&env, Some(&short), "octo-org/octo-repo", &head).await;
    assert!(fetched, "{said}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (fetched, said) = git_fetch(&env, Some(&short), "octo-org/octo-repo", &head).await;
    assert!(!fetched, "{said}");
    assert_eq!(answered().1, Some(401));
    env.standin.revoke_tokens();
    let (fetched, said) = git_fetch(&env, Some(&token), "octo-org/octo-repo", &head).await;
    assert!(!fetched, "{said}");
    assert_eq!(answered().1, Some(401));
}

/// A commit that moves a file is listed as GitHub lists it: `renamed`, with the old name.
#[tokio::test]
async fn a_moved_file_is_renamed_in_a_commits_files() {
    let env = TestEnv::new().await;
    let git = GitData::new(&env);
    let head = env.standin.head_sha();
    let notes = "one\ntwo\nthree\nfour\nfive\n";
    let tree = git
        .tree(Some(git.tree_of(&head).await), &[("docs/notes.md", notes)])
        .await;
    let first = git.commit(tree, &[&head], "notes", None).await;
    let tree = git
        .tree_without(
            Some(git.tree_of(&first).await),
            &[("docs/guide.md", notes)],
            &["docs/notes.md"],
        )
        .await;
    let moved = git.commit(tree, &[&first], "move the notes", None).await;
    let jwt = app_jwt();
    let (_, body) = exchange(&env, &jwt, INSTALLATION_ID, json!({})).await;
    let token = body["token"].as_str().unwrap().to_string();
    let (status, body) = get(
        &env,
        &token,
        &format!("/repos/octo-org/octo-repo/commits/{moved}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let files = body["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{body:#}");
    assert_eq!(files[0]["status"], "renamed");
    assert_eq!(files[0]["filename"], "docs/guide.md");
    assert_eq!(files[0]["previous_filename"], "docs/notes.md");
    // Moved, not changed: no patch.
    assert!(files[0].get("patch").is_none(), "{body:#}");
}
