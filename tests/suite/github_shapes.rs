//! The stand-in answers, and selfheal asks, in GitHub's real shapes: checked against GitHub's
//! own OpenAPI description and webhook schemas in fixtures/github-openapi.

use crate::support;

use std::time::Duration;

use github_standin::fixtures_dir;
use serde_json::Value;
use support::*;

fn openapi() -> Value {
    let path = fixtures_dir().join("github-openapi/rest-subset.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    // Operations the subset lacks, copied from the same OpenAPI description into this
    // repository (fixtures/SOURCE.md).
    for file in ["pulls-files.json", "more-operations.json"] {
        let own = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/github-openapi")
            .join(file);
        let extra: Value = serde_json::from_slice(&std::fs::read(&own).unwrap()).unwrap();
        for (template, ops) in extra["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                spec["paths"][template][method] = op.clone();
            }
        }
    }
    spec
}

/// OpenAPI 3.0 says `nullable: true` where JSON Schema says `type: [T, "null"]`.
fn to_json_schema(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true)) {
                match map.get("type").cloned() {
                    Some(Value::String(t)) => {
                        map.insert("type".into(), serde_json::json!([t, "null"]));
                    }
                    _ => {
                        let inner = Value::Object(std::mem::take(map));
                        map.insert("anyOf".into(), serde_json::json!([inner, {"type": "null"}]));
                    }
                }
            }
            map.values_mut().for_each(to_json_schema);
        }
        Value::Array(items) => items.iter_mut().for_each(to_json_schema),
        _ => {}
    }
}

fn response_schema(spec: &Value, method: &str, path: &str, status: &str) -> Value {
    let mut schema = spec["paths"][path][method]["responses"][status]["content"]
        ["application/json"]["schema"]
        .clone();
    assert!(!schema.is_null(), "no schema for {method} {path} {status}");
    to_json_schema(&mut schema);
    schema
}

fn assert_valid(schema: &Value, instance: &Value, what: &str) {
    let validator =
        jsonschema::validator_for(schema).unwrap_or_else(|e| panic!("{what}: bad schema: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .take(5)
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match GitHub's schema: {errors:#?}"
    );
}

/// `/repos/octo-org/octo-repo/actions/runs/5/jobs` matches `/repos/{owner}/{repo}/actions/runs/{run_id}/jobs`.
fn operation_for<'a>(spec: &'a Value, method: &str, path: &str) -> Option<&'a str> {
    let segments: Vec<&str> = path.split('/').collect();
    spec["paths"]
        .as_object()?
        .iter()
        .find_map(|(template, ops)| {
            let t: Vec<&str> = template.split('/').collect();
            // A trailing `{path}` (contents) or `{ref}` (heads/selfheal/…) spans the rest of
            // the path, slashes included.
            let rest_is_path =
                matches!(t.last(), Some(&"{path}" | &"{ref}")) && segments.len() >= t.len();
            let same = (t.len() == segments.len() || rest_is_path)
                && t.iter()
                    .zip(&segments)
                    .all(|(a, b)| (a.starts_with('{') && a.ends_with('}')) || a == b);
            (same && ops.get(method).is_some()).then_some(template.as_str())
        })
}

/// Each query parameter is one the operation takes, with a value its schema accepts.
fn assert_query_valid(spec: &Value, method: &str, template: &str, query: Option<&str>) {
    let params = spec["paths"][template][method]["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let param = params
            .iter()
            .find(|p| p["name"] == name && p["in"] == "query")
            .unwrap_or_else(|| panic!("{template} has no query parameter {name}"));
        let mut schema = param["schema"].clone();
        to_json_schema(&mut schema);
        let typed = if schema["type"] == "integer" {
            Value::from(value.parse::<i64>().unwrap())
        } else {
            Value::from(value)
        };
        assert_valid(
            &schema,
            &typed,
            &format!("query {name}={value} of {template}"),
        );
    }
}

#[tokio::test]
async fn the_standin_answers_and_our_requests_have_githubs_shapes() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let mut worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.failing_run(3101, &chrono::Utc::now().to_rfc3339()),
        )
        .await;
    env.wait_run(env.run_of(&body).await, Duration::from_secs(30))
        .await;
    worker.kill().ok();
    worker.wait().ok();

    let spec = openapi();
    // Every call the worker made is an operation GitHub has, with valid query parameters.
    for call in env
        .standin
        .calls()
        .iter()
        .filter(|c| !c.path.starts_with("/_standin"))
    {
        let method = call.method.to_lowercase();
        let template = operation_for(&spec, &method, &call.path)
            .unwrap_or_else(|| panic!("{} {} is not in GitHub's API", call.method, call.path));
        assert_query_valid(&spec, &method, template, call.query.as_deref());
    }

    // The stand-in's answers match GitHub's response schemas.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = env.standin.url();
    let jwt = app_jwt();
    let token: Value = http
        .post(format!("{base}/app/installations/4242/access_tokens"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_valid(
        &response_schema(
            &spec,
            "post",
            "/app/installations/{installation_id}/access_tokens",
            "201",
        ),
        &token,
        "access token",
    );
    let installation_token = token["token"].as_str().unwrap();
    let jobs: Value = http
        .get(format!(
            "{base}/repos/octo-org/octo-repo/actions/runs/3101/jobs"
        ))
        .bearer_auth(installation_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_valid(
        &response_schema(
            &spec,
            "get",
            "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
            "200",
        ),
        &jobs,
        "jobs list",
    );
    let job_id = jobs["jobs"][1]["id"].as_i64().unwrap();
    let logs = http
        .get(format!(
            "{base}/repos/octo-org/octo-repo/actions/jobs/{job_id}/logs"
        ))
        .bearer_auth(installation_token)
        .send()
        .await
        .unwrap();
    assert_eq!(logs.status().as_u16(), 302);
    assert!(
        spec["paths"]["/repos/{owner}/{repo}/actions/jobs/{job_id}/logs"]["get"]["responses"]
            ["302"]["headers"]["Location"]
            .is_object()
    );
    assert!(logs.headers().contains_key("location"));
    // An app JWT is not an installation token.
    let refused = http
        .get(format!(
            "{base}/repos/octo-org/octo-repo/actions/runs/3101/jobs"
        ))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
}

/// The schema of an operation's JSON request body, if it takes one.
fn request_schema(spec: &Value, method: &str, template: &str) -> Option<Value> {
    let mut schema = spec["paths"][template][method]["requestBody"]["content"]["application/json"]
        ["schema"]
        .clone();
    if schema.is_null() {
        return None;
    }
    to_json_schema(&mut schema);
    Some(schema)
}

#[tokio::test]
async fn closing_the_loop_asks_and_is_answered_in_githubs_shapes() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    env.standin.set_knobs(github_standin::Knobs {
        repo_config: Some("reviewers: [hubot, octo-org/justice-league]\n".into()),
        permissions: [("octocat".to_string(), "admin".to_string())].into(),
        fix_checks: green_checks(),
        ..Default::default()
    });
    let _worker = env.spawn_worker("w");
    let now = || chrono::Utc::now().to_rfc3339();
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(3201, &now()))
        .await;
    env.wait_run(env.run_of(&body).await, Duration::from_secs(60))
        .await;
    let (branch, head) = env.pull(1);
    // `org/team` in the config is asked as a team, a login as a person.
    assert_eq!(
        env.standin.pulls()[0]["requested_reviewers"][0]["login"],
        "hubot"
    );
    assert_eq!(
        env.standin.pulls()[0]["requested_teams"][0]["slug"],
        "justice-league"
    );
    let (_, body) = app
        .deliver(
            "workflow_run",
            &env.fix_run(3202, &branch, &head, "success"),
        )
        .await;
    env.wait_run(env.run_of(&body).await, Duration::from_secs(30))
        .await;
    assert_eq!(env.standin.pulls()[0]["merged"], true);
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

    // Every request selfheal made exists in GitHub's API, and each JSON body it sent is one
    // GitHub's request schema accepts.
    let spec = openapi();
    let mut checked = Vec::new();
    for call in env
        .standin
        .calls()
        .into_iter()
        .filter(|c| !c.path.starts_with("/_standin"))
    {
        let method = call.method.to_lowercase();
        let template = operation_for(&spec, &method, &call.path)
            .unwrap_or_else(|| panic!("{} {} is not in GitHub's API", call.method, call.path));
        assert_query_valid(&spec, &method, template, call.query.as_deref());
        if let (Some(body), Some(schema)) = (&call.body, request_schema(&spec, &method, template)) {
            assert_valid(
                &schema,
                body,
                &format!("request body of {method} {template}"),
            );
            checked.push(format!("{method} {template}"));
        }
    }
    for op in [
        "post /repos/{owner}/{repo}/git/trees",
        "post /repos/{owner}/{repo}/git/commits",
        "post /repos/{owner}/{repo}/pulls",
        "post /repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers",
        "put /repos/{owner}/{repo}/pulls/{pull_number}/merge",
        "post /repos/{owner}/{repo}/issues/{issue_number}/comments",
    ] {
        assert!(
            checked.iter().any(|c| c == op),
            "{op} not exercised: {checked:?}"
        );
    }

    // The stand-in's answers to those calls have GitHub's response shapes.
    let http = reqwest::Client::new();
    let base = env.standin.url();
    let jwt = app_jwt();
    let token: Value = http
        .post(format!("{base}/app/installations/4242/access_tokens"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let repo = format!("{base}/repos/octo-org/octo-repo");
    let get = |url: String| {
        let http = http.clone();
        let token = token.clone();
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // Check the fields selfheal reads against GitHub's definitions.
    let (got, pr) = get(format!("{repo}/pulls/1")).await;
    assert_eq!(got, 200);
    let full = response_schema(
        &spec,
        "get",
        "/repos/{owner}/{repo}/pulls/{pull_number}",
        "200",
    );
    let read = ["number", "state", "head", "base", "merged", "html_url"];
    let mut props = serde_json::Map::new();
    for key in read {
        props.insert(key.into(), full["properties"][key].clone());
    }
    for side in ["head", "base"] {
        let def = &full["properties"][side]["properties"];
        props.insert(
            side.into(),
            serde_json::json!({"type": "object", "required": ["ref", "sha"],
                "properties": {"ref": def["ref"], "sha": def["sha"]}}),
        );
    }
    assert_valid(
        &serde_json::json!({"type": "object", "required": read, "properties": props}),
        &pr,
        "the pull request's fields selfheal reads",
    );
    for (url, template, status) in [
        (
            format!("{repo}/commits/{head}/check-runs"),
            "/repos/{owner}/{repo}/commits/{ref}/check-runs",
            200,
        ),
        (
            format!("{repo}/commits/{head}/status"),
            "/repos/{owner}/{repo}/commits/{ref}/status",
            200,
        ),
        (
            format!("{repo}/actions/runs?head_sha={head}&per_page=100"),
            "/repos/{owner}/{repo}/actions/runs",
            200,
        ),
        (
            format!("{repo}/collaborators/octocat/permission"),
            "/repos/{owner}/{repo}/collaborators/{username}/permission",
            200,
        ),
        (
            format!("{repo}/pulls/1/files?per_page=100&page=1"),
            "/repos/{owner}/{repo}/pulls/{pull_number}/files",
            200,
        ),
    ] {
        let (got, body) = get(url).await;
        assert_eq!(got, status, "{template}: {body}");
        assert_valid(
            &response_schema(&spec, "get", template, &status.to_string()),
            &body,
            template,
        );
    }
    // Answers to writes: a comment, reviewers, a ref moved, a merge.
    let send = |method: reqwest::Method, url: String, body: Value| {
        let http = http.clone();
        let token = token.clone();
        async move {
            let r = http
                .request(method, url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = send(
        reqwest::Method::POST,
        format!("{repo}/issues/1/comments"),
        serde_json::json!({"body": "hello"}),
    )
    .await;
    assert_valid(
        &response_schema(
            &spec,
            "post",
            "/repos/{owner}/{repo}/issues/{issue_number}/comments",
            &status.to_string(),
        ),
        &body,
        "comment",
    );
    let (status, mut body) = send(
        reqwest::Method::POST,
        format!("{repo}/pulls/1/requested_reviewers"),
        serde_json::json!({"reviewers": ["hubot"]}),
    )
    .await;
    // GitHub's labels without a description come back `"description": null` (octokit's
    // recorded label), which its OpenAPI types as a plain string: not ours to judge.
    for label in body["labels"].as_array_mut().into_iter().flatten() {
        if label["description"].is_null() {
            label["description"] = Value::from("");
        }
    }
    assert_valid(
        &response_schema(
            &spec,
            "post",
            "/repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers",
            &status.to_string(),
        ),
        &body,
        "requested reviewers",
    );
    let (status, body) = send(
        reqwest::Method::PATCH,
        format!("{repo}/git/refs/heads/{branch}"),
        serde_json::json!({"sha": head, "force": false}),
    )
    .await;
    assert_valid(
        &response_schema(
            &spec,
            "patch",
            "/repos/{owner}/{repo}/git/refs/{ref}",
            &status.to_string(),
        ),
        &body,
        "updated ref",
    );
    // A second merge of PR 1: merged already (GitHub's 405). selfheal's own merge came first.
    let (status, _) = send(
        reqwest::Method::PUT,
        format!("{repo}/pulls/1/merge"),
        serde_json::json!({"merge_method": "squash"}),
    )
    .await;
    assert_eq!(status, 405);
    let merges = env.merges_asked(1);
    assert_eq!(merges, 2, "selfheal's merge, then this test's");

    // The newer operations' answers: a PATCH of the PR, an attempt's jobs, update-branch on
    // a PR behind its base, a ref deleted.
    let (status, body) = send(
        reqwest::Method::PATCH,
        format!("{repo}/pulls/1"),
        serde_json::json!({"title": "selfheal: renamed"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_valid(
        &response_schema(
            &spec,
            "patch",
            "/repos/{owner}/{repo}/pulls/{pull_number}",
            "200",
        ),
        &body,
        "updated pull request",
    );
    let (status, body) = get(format!("{repo}/actions/runs/3101/attempts/2/jobs")).await;
    assert_eq!(status, 200, "{body}");
    assert_valid(
        &response_schema(
            &spec,
            "get",
            "/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}/jobs",
            "200",
        ),
        &body,
        "an attempt's jobs",
    );
    // A branch from the old head, one commit on it: behind master, which the merge moved.
    let old = env.standin.head_sha();
    let (_, old_commit) = get(format!("{repo}/git/commits/{old}")).await;
    let (_, tree) = send(
        reqwest::Method::POST,
        format!("{repo}/git/trees"),
        serde_json::json!({"base_tree": old_commit["tree"]["sha"], "tree": [
            {"path": "OTHER.md", "mode": "100644", "type": "blob", "content": "other\n"}]}),
    )
    .await;
    let (_, commit) = send(
        reqwest::Method::POST,
        format!("{repo}/git/commits"),
        serde_json::json!({"message": "other", "tree": tree["sha"], "parents": [old]}),
    )
    .await;
    let (status, _) = send(
        reqwest::Method::POST,
        format!("{repo}/git/refs"),
        serde_json::json!({"ref": "refs/heads/other", "sha": commit["sha"]}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, pr2) = send(
        reqwest::Method::POST,
        format!("{repo}/pulls"),
        serde_json::json!({"title": "other", "head": "other", "base": "master"}),
    )
    .await;
    assert_eq!(status, 201, "{pr2}");
    let (status, body) = send(
        reqwest::Method::PUT,
        format!("{repo}/pulls/{}/update-branch", pr2["number"]),
        serde_json::json!({"expected_head_sha": commit["sha"]}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_valid(
        &response_schema(
            &spec,
            "put",
            "/repos/{owner}/{repo}/pulls/{pull_number}/update-branch",
            "202",
        ),
        &body,
        "update-branch",
    );
    let deleted = http
        .delete(format!("{repo}/git/refs/heads/other"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    assert!(
        spec["paths"]["/repos/{owner}/{repo}/git/refs/{ref}"]["delete"]["responses"]["204"]
            .is_object()
    );

    // Every status of a commit, with who posted it (selfheal reads it for pinned contexts).
    env.standin.set_knobs(github_standin::Knobs {
        fix_statuses: vec![
            serde_json::json!({"context": "ci/jenkins", "state": "failure", "creator": "jenkins-bot"}),
            serde_json::json!({"context": "ci/jenkins", "state": "success", "creator": "mallory"}),
        ],
        ..Default::default()
    });
    let listed: Value = http
        .get(format!(
            "{repo}/commits/{}/statuses",
            env.standin.head_sha()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_valid(
        &response_schema(
            &spec,
            "get",
            "/repos/{owner}/{repo}/commits/{ref}/statuses",
            "200",
        ),
        &listed,
        "the commit's statuses",
    );
    assert_eq!(listed[0]["creator"]["login"], "mallory", "newest first");
    assert_eq!(listed[1]["creator"]["login"], "jenkins-bot");
}

#[tokio::test]
async fn the_adapted_webhook_payloads_match_githubs_webhook_schema() {
    let env = TestEnv::new().await;
    let path = fixtures_dir().join("github-openapi/webhooks/workflow-run-completed.schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for payload in [
        env.failing_run(1, "2026-11-20T10:00:00Z"),
        env.green_run(2, "2026-11-20T10:05:00Z"),
        env.fix_run(3, "selfheal/abc-123", &env.standin.head_sha(), "success"),
    ] {
        assert_valid(&schema, &payload, "adapted workflow_run.completed payload");
    }
    let path = fixtures_dir().join("github-openapi/webhooks/check-suite-completed.schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_valid(
        &schema,
        &env.check_suite(4, "selfheal/abc-123", &env.standin.head_sha(), "success"),
        "adapted check_suite.completed payload",
    );
    let path = fixtures_dir().join("github-openapi/webhooks/check-run-completed.schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let head = env.standin.head_sha();
    assert_valid(
        &schema,
        &env.check_run(5, "selfheal/abc-123", &head, "success"),
        "adapted check_run.completed payload",
    );
    let path = fixtures_dir().join("github-openapi/webhooks/status.schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for state in ["success", "failure", "pending"] {
        assert_valid(
            &schema,
            &env.status(
                6,
                &head,
                (state, "ci/jenkins", "jenkins-bot"),
                &["master", "selfheal/abc-123"],
            ),
            "adapted status payload",
        );
    }
    let path = fixtures_dir().join("github-openapi/webhooks/issue-comment-created.schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_valid(
        &schema,
        &env.comment(1, "octocat", "/selfheal stop"),
        "adapted issue_comment.created payload",
    );
    let path = fixtures_dir().join("github-openapi/webhooks/pull-request-closed.schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for merged in [false, true] {
        assert_valid(
            &schema,
            &env.pr_closed(1, "selfheal/abc-123", merged, "octocat"),
            "adapted pull_request.closed payload",
        );
    }
}

#[tokio::test]
async fn the_standins_pull_request_files_are_paginated_like_githubs() {
    let env = TestEnv::new().await;
    let http = reqwest::Client::new();
    let api = format!("{}/repos/octo-org/octo-repo", env.standin.url());
    let token = env.standin.installation_token(INSTALLATION_ID).unwrap();
    let send = |method: reqwest::Method, path: String, body: Value| {
        http.request(method, format!("{api}{path}"))
            .header("authorization", format!("token {token}"))
            .json(&body)
            .send()
    };
    let head = env.standin.head_sha();
    let base: Value = send(
        reqwest::Method::GET,
        format!("/git/commits/{head}"),
        Value::Null,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let blob: Value = send(
        reqwest::Method::POST,
        "/git/blobs".into(),
        serde_json::json!({"content": "x\n", "encoding": "utf-8"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let entries: Vec<Value> = (0..150)
        .map(|i| serde_json::json!({"path": format!("gen/f{i:03}.txt"), "mode": "100644", "type": "blob", "sha": blob["sha"]}))
        .collect();
    let tree: Value = send(
        reqwest::Method::POST,
        "/git/trees".into(),
        serde_json::json!({"base_tree": base["tree"]["sha"], "tree": entries}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let commit: Value = send(
        reqwest::Method::POST,
        "/git/commits".into(),
        serde_json::json!({"message": "many files", "tree": tree["sha"], "parents": [head]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let r = send(
        reqwest::Method::POST,
        "/git/refs".into(),
        serde_json::json!({"ref": "refs/heads/many", "sha": commit["sha"]}),
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let pr: Value = send(
        reqwest::Method::POST,
        "/pulls".into(),
        serde_json::json!({"title": "many", "head": "many", "base": "master"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let number = pr["number"].as_i64().unwrap();
    let schema = response_schema(
        &openapi(),
        "get",
        "/repos/{owner}/{repo}/pulls/{pull_number}/files",
        "200",
    );
    // GitHub's default page is 30; at most 100; a `Link: rel="next"` while more remain.
    let mut seen = Vec::new();
    for (query, want, more) in [
        ("", 30, true),
        ("?per_page=100&page=1", 100, true),
        ("?per_page=100&page=2", 50, false),
    ] {
        let r = send(
            reqwest::Method::GET,
            format!("/pulls/{number}/files{query}"),
            Value::Null,
        )
        .await
        .unwrap();
        let link = r
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_string());
        let page: Value = r.json().await.unwrap();
        assert_valid(&schema, &page, "a page of pull request files");
        assert_eq!(page.as_array().unwrap().len(), want, "{query}");
        assert_eq!(
            link.as_deref().is_some_and(|l| l.contains("rel=\"next\"")),
            more,
            "{query}: {link:?}"
        );
        if !query.is_empty() {
            seen.extend(
                page.as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["filename"].as_str().unwrap().to_string()),
            );
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 150, "every file once across the pages");
    assert_eq!(seen[149], "gen/f149.txt");
}
