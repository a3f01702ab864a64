//! The stand-in answers, and selfheal asks, in GitHub's real shapes: checked against GitHub's
//! own OpenAPI description and webhook schemas in ../shared/fixtures/github-openapi.

mod support;

use std::time::Duration;

use github_standin::fixtures_dir;
use serde_json::Value;
use support::*;

fn openapi() -> Value {
    let path = fixtures_dir().join("github-openapi/rest-subset.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
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
            // A trailing `{path}` (contents) spans the rest of the path, slashes included.
            let rest_is_path = t.last() == Some(&"{path}") && segments.len() >= t.len();
            let same = (t.len() == segments.len() || rest_is_path)
                && t.iter()
                    .zip(&segments)
                    .all(|(a, b)| (a.starts_with('{') && a.ends_with('}')) || a == b);
            (same && ops.get(method).is_some()).then_some(template.as_str())
        })
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
    env.wait_run(run_id_of(&body), Duration::from_secs(30))
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
        let params = spec["paths"][template][&method]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for pair in call
            .query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
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

    // The stand-in's answers match GitHub's response schemas.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = env.standin.url();
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIxIn0.c2lnbmF0dXJl";
    let token: Value = http
        .post(format!("{base}/app/installations/4242/access_tokens"))
        .bearer_auth(jwt)
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
    let logs = http
        .get(format!(
            "{base}/repos/octo-org/octo-repo/actions/jobs/1/logs"
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
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
}

#[tokio::test]
async fn the_adapted_webhook_payloads_match_githubs_webhook_schema() {
    let env = TestEnv::new().await;
    let path = fixtures_dir().join("github-openapi/webhooks/workflow-run-completed.schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for payload in [
        env.failing_run(1, "2026-11-20T10:00:00Z"),
        env.green_run(2, "2026-11-20T10:05:00Z"),
    ] {
        assert_valid(&schema, &payload, "adapted workflow_run.completed payload");
    }
}
