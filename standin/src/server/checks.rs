//! Check runs and commit statuses on a commit.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{fixture_error, from_template, github_error, knobs, Inner, Page};

/// Recorded: octocrab `commit_check_runs.json` (its first check run, adapted).
pub(super) async fn create_check_run(
    State(inner): State<Arc<Inner>>,
    Json(req): Json<Value>,
) -> Response {
    let mut run = match inner
        .fixtures
        .json("github-rest/octocrab/commit_check_runs.json")
    {
        Ok(list) => list["check_runs"][0].clone(),
        Err(e) => return fixture_error(e),
    };
    let mut runs = inner.check_runs.lock().unwrap_or_else(|p| p.into_inner());
    run["id"] = Value::from(5000 + runs.len() as i64);
    for key in [
        "name",
        "head_sha",
        "external_id",
        "status",
        "conclusion",
        "output",
    ] {
        if let Some(v) = req.get(key) {
            run[key] = v.clone();
        }
    }
    run["app"] = super::app_object(&inner);
    runs.push(run.clone());
    drop(runs);
    if super::issues::fail_after_write(&inner) {
        return github_error(StatusCode::BAD_GATEWAY, "Server Error");
    }
    (StatusCode::CREATED, Json(run)).into_response()
}

/// Recorded: octocrab `commit_check_runs.json`, its first check run adapted to the commit
/// and to the `fix_checks` knob.
#[derive(serde::Deserialize)]
pub(super) struct CheckRunsQuery {
    #[serde(default)]
    check_name: Option<String>,
    /// `latest` (GitHub's default: the newest run of each name) or `all`.
    #[serde(default)]
    filter: Option<String>,
}

pub(super) async fn commit_check_runs(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, sha)): Path<(String, String, String)>,
    axum::extract::Query(q): axum::extract::Query<CheckRunsQuery>,
) -> Response {
    let template = match inner
        .fixtures
        .json("github-rest/octocrab/commit_check_runs.json")
    {
        Ok(list) => list["check_runs"][0].clone(),
        Err(e) => return fixture_error(e),
    };
    let wanted = knobs(&inner).fix_checks.unwrap_or_default();
    let mut runs = from_template(&template, &wanted, 7000, &["name", "status", "conclusion"]);
    for run in &mut runs {
        run["head_sha"] = Value::from(sha.clone());
    }
    // Check runs created through the API on this commit are listed too, as GitHub does.
    runs.extend(created_on(&inner, &sha));
    if let Some(name) = &q.check_name {
        runs.retain(|r| r["name"] == name.as_str());
    }
    if q.filter.as_deref() != Some("all") {
        // The newest of each name only.
        let mut seen = std::collections::HashSet::new();
        runs.reverse();
        runs.retain(|r| seen.insert(r["name"].to_string()));
        runs.reverse();
    }
    Json(json!({"total_count": runs.len(), "check_runs": runs})).into_response()
}

fn created_on(inner: &Inner, sha: &str) -> Vec<Value> {
    inner
        .check_runs
        .lock()
        .map(|c| c.iter().filter(|r| r["head_sha"] == sha).cloned().collect())
        .unwrap_or_default()
}

/// Each check on `sha` (check runs by name, commit statuses by context) with whether it
/// succeeded: what branch protection's required checks look at.
pub(super) fn outcomes(inner: &Inner, sha: &str) -> Vec<(String, bool)> {
    let k = knobs(inner);
    let mut out: Vec<(String, bool)> = k
        .fix_checks
        .unwrap_or_default()
        .iter()
        .chain(created_on(inner, sha).iter())
        .filter_map(|c| {
            // GitHub's required checks pass on success, and on neutral or skipped.
            let passed = c["status"] == "completed"
                && matches!(
                    c["conclusion"].as_str(),
                    Some("success" | "neutral" | "skipped")
                );
            Some((c["name"].as_str()?.to_string(), passed))
        })
        .collect();
    out.extend(k.fix_statuses.iter().filter_map(|st| {
        Some((
            st["context"].as_str()?.to_string(),
            st["state"] == "success",
        ))
    }));
    // The latest report of a name is the one that counts.
    out.reverse();
    let mut seen = std::collections::HashSet::new();
    out.retain(|(name, _)| seen.insert(name.clone()));
    out
}

/// Recorded: octokit `create-status.json` (GET …/commits/{ref}/statuses): every status of the
/// commit, newest first, each with its `creator`, from the `fix_statuses` knob (in the order
/// posted; `creator` a login, default the recorded one); paginated like GitHub's lists.
pub(super) async fn list_statuses(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    Query(page): Query<Page>,
) -> Response {
    let template = match recorded_status(&inner, "/statuses", "no status list") {
        Ok(answer) => answer.get(0).cloned().unwrap_or_default(),
        Err(refused) => return *refused,
    };
    let wanted = knobs(&inner).fix_statuses;
    let mut statuses = from_template(&template, &wanted, 9500, &["context", "state"]);
    for (status, w) in statuses.iter_mut().zip(&wanted) {
        if let Some(login) = w["creator"].as_str() {
            status["creator"]["login"] = Value::from(login);
        }
    }
    statuses.reverse();
    let path = format!("/repos/{owner}/{repo}/commits/{sha}/statuses");
    let (slice, link) = page.slice(&statuses, &format!("{}{path}", inner.base_url));
    let mut response = Json(Value::Array(slice)).into_response();
    if let Some(v) = link.and_then(|l| l.parse().ok()) {
        response.headers_mut().insert("link", v);
    }
    response
}

/// Recorded: octokit `create-status.json` (GET …/commits/{ref}/status), its statuses replaced
/// by the `fix_statuses` knob. With no status GitHub says `pending`, as recorded nowhere but
/// documented; selfheal looks at `total_count` first.
pub(super) async fn combined_status(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, sha)): Path<(String, String, String)>,
) -> Response {
    let mut body = match recorded_status(&inner, "/status", "no combined status") {
        Ok(answer) => answer,
        Err(refused) => return *refused,
    };
    let template = body["statuses"][0].clone();
    // GitHub's combined status: the latest status of each context, whoever posted it.
    let mut wanted = knobs(&inner).fix_statuses;
    wanted.reverse();
    let mut seen = std::collections::HashSet::new();
    wanted.retain(|w| seen.insert(w["context"].to_string()));
    wanted.reverse();
    let statuses = from_template(&template, &wanted, 9500, &["context", "state"]);
    let states: Vec<&str> = wanted.iter().filter_map(|w| w["state"].as_str()).collect();
    let state = if states.iter().any(|s| matches!(*s, "failure" | "error")) {
        "failure"
    } else if states.is_empty() || states.contains(&"pending") {
        "pending"
    } else {
        "success"
    };
    body["state"] = Value::from(state);
    body["total_count"] = Value::from(statuses.len());
    body["statuses"] = Value::Array(statuses);
    body["sha"] = Value::from(sha);
    Json(body).into_response()
}

/// The answer octokit recorded for `GET …/commits/{ref}{suffix}` in `create-status.json`.
fn recorded_status(inner: &Inner, suffix: &str, missing: &str) -> Result<Value, Box<Response>> {
    let exchanges = match inner
        .fixtures
        .json("github-rest/octokit-fixtures/create-status.json")
    {
        Ok(Value::Array(exchanges)) => exchanges,
        Ok(_) => Vec::new(),
        Err(e) => return Err(Box::new(fixture_error(e))),
    };
    exchanges
        .into_iter()
        .find(|x| x["method"] == "get" && x["path"].as_str().is_some_and(|p| p.ends_with(suffix)))
        .map(|x| x["response"].clone())
        .ok_or_else(|| {
            Box::new(github_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("stand-in fixture: {missing}"),
            ))
        })
}
