//! Actions: a run's jobs, their logs (302 to a pre-signed URL), reruns, a commit's workflow runs.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{fixture_error, from_template, github_error, knobs, Inner, Page, Refusal};

/// A run's jobs: GitHub's documented example (one green job, `build`), and copies of it
/// failing at their "Run Tests" step (the steps after it skipped): `test` (or the
/// `failing_job` knob) and the `more_failing_jobs` knob's, each with its own id.
fn jobs(
    inner: &Inner,
    owner: &str,
    repo: &str,
    run_id: i64,
    attempt: i64,
) -> Result<Vec<Value>, Refusal> {
    let body = inner
        .fixtures
        .example(
            "GET",
            "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
            200,
            "default",
        )
        .map_err(|e| {
            Refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("stand-in fixture: {e}"),
            )
        })?;
    let base = inner.base_url.clone();
    let Some(recorded) = body["jobs"].get(0).cloned() else {
        return Err(Refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "example has no job".into(),
        ));
    };
    let k = knobs(inner);
    let green = is_green_run(&k, run_id);
    // A listed run's `skipped_jobs`: jobs it did not run (a path filter, an `if:`).
    let skipped: Vec<Value> = run_id
        .checked_sub(LISTED_RUNS)
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| k.workflow_runs.get(i))
        .and_then(|r| r["skipped_jobs"].as_array().cloned())
        .unwrap_or_default();
    let failing_names = std::iter::once(k.failing_job.clone().unwrap_or_else(|| "test".into()))
        .chain(k.more_failing_jobs.clone());
    let recorded_id = recorded["id"].as_i64().unwrap_or(0);
    let mut jobs = vec![recorded.clone()];
    for (i, name) in failing_names.enumerate() {
        let mut failing = recorded.clone();
        failing["name"] = Value::from(name);
        if green {
            // The same jobs passing, as they did before the failure; job ids are GitHub-wide.
            failing["id"] = Value::from(recorded_id + GREEN_JOBS + 1 + i as i64);
            if skipped.contains(&failing["name"]) {
                failing["conclusion"] = Value::from("skipped");
            }
            jobs.push(failing);
            continue;
        }
        failing["id"] = Value::from(recorded_id + 1 + i as i64);
        failing["conclusion"] = Value::from("failure");
        let mut failed_at = None;
        for step in failing["steps"].as_array_mut().into_iter().flatten() {
            let number = step["number"].as_i64().unwrap_or(0);
            if step["name"] == "Run Tests" {
                step["conclusion"] = Value::from("failure");
                failed_at = Some(number);
            } else if failed_at.is_some_and(|at| number > at) && !is_post_step(step) {
                step["conclusion"] = Value::from("skipped");
            }
        }
        jobs.push(failing);
    }
    for job in &mut jobs {
        // The documented example predates `created_at`, which GitHub's schema now requires.
        job["created_at"] = job["started_at"].clone();
        job["run_id"] = Value::from(run_id);
        job["run_attempt"] = Value::from(attempt);
        job["run_url"] = Value::from(format!("{base}/repos/{owner}/{repo}/actions/runs/{run_id}"));
    }
    Ok(jobs)
}

/// The ids the `workflow_runs` knob's runs are listed under (the first is this one).
const LISTED_RUNS: i64 = 7000;
/// Jobs of a green listed run are numbered from here on, apart from the failing run's.
const GREEN_JOBS: i64 = 1_000_000;

/// Whether `run_id` is one of the `workflow_runs` knob's, and successful.
fn is_green_run(k: &super::Knobs, run_id: i64) -> bool {
    run_id
        .checked_sub(LISTED_RUNS)
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| k.workflow_runs.get(i))
        .is_some_and(|r| r["conclusion"] == "success")
}

/// The jobs list, paginated as GitHub's (`per_page`, `page`, a `Link` to the next page).
async fn list_jobs(
    inner: &Inner,
    owner: &str,
    repo: &str,
    run_id: i64,
    attempt: Option<i64>,
    page: &Page,
) -> Response {
    let k = knobs(inner);
    if k.jobs_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(k.jobs_delay_ms)).await;
    }
    if k.fail_jobs > 0 {
        if let Ok(mut knobs) = inner.knobs.lock() {
            knobs.fail_jobs -= 1;
        }
        return github_error(StatusCode::BAD_GATEWAY, "Server Error");
    }
    let all = match jobs(inner, owner, repo, run_id, attempt.unwrap_or(1)) {
        Ok(j) => j,
        Err(r) => return r.into_response(),
    };
    let path = match attempt {
        Some(n) => format!("/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{n}/jobs"),
        None => format!("/repos/{owner}/{repo}/actions/runs/{run_id}/jobs"),
    };
    let (slice, link) = page.slice(&all, &format!("{}{path}", inner.base_url));
    let mut response = Json(json!({"total_count": all.len(), "jobs": slice})).into_response();
    if let Some(v) = link.and_then(|l| l.parse().ok()) {
        response.headers_mut().insert("link", v);
    }
    response
}

pub(super) async fn run_jobs(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, run_id)): Path<(String, String, i64)>,
    Query(page): Query<Page>,
) -> Response {
    list_jobs(&inner, &owner, &repo, run_id, None, &page).await
}

/// The jobs of one attempt of a run (a rerun is a new attempt with jobs of its own).
pub(super) async fn attempt_jobs(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, run_id, attempt)): Path<(String, String, i64, i64)>,
    Query(page): Query<Page>,
) -> Response {
    list_jobs(&inner, &owner, &repo, run_id, Some(attempt), &page).await
}

/// Cleanup steps GitHub runs even after a step failed.
pub(super) fn is_post_step(step: &Value) -> bool {
    let name = step["name"].as_str().unwrap_or_default();
    name.starts_with("Post ") || name == "Complete job"
}

/// GitHub answers 302 to a pre-signed URL (its documented response).
pub(super) async fn job_logs_redirect(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, job_id)): Path<(String, String, i64)>,
) -> Response {
    // A log GitHub no longer has: expired past the retention (410) or missing (404).
    let k = knobs(&inner);
    let green_run = k
        .workflow_runs
        .iter()
        .position(|r| r["conclusion"] == "success")
        .map(|i| LISTED_RUNS + i as i64);
    let name = [Some(0), green_run]
        .into_iter()
        .flatten()
        .filter_map(|run| jobs(&inner, &owner, &repo, run, 1).ok())
        .flatten()
        .find(|j| j["id"] == job_id)
        .and_then(|j| j["name"].as_str().map(str::to_string));
    let Some(name) = name else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    match k.log_status.get(&name) {
        Some(410) => return github_error(StatusCode::GONE, "Gone"),
        Some(_) => return github_error(StatusCode::NOT_FOUND, "Not Found"),
        None => {}
    }
    if is_green_job(&inner, job_id) && k.green_log_text.is_none() {
        return github_error(StatusCode::GONE, "Gone");
    }
    let base = knobs(&inner)
        .signed_url_base
        .unwrap_or_else(|| inner.base_url.clone());
    let location =
        format!("{base}/_standin/logs/{job_id}?urlSigningMethod=HMACV1&urlSignature=standin");
    (StatusCode::FOUND, [("location", location)]).into_response()
}

/// Whether a job id is one of a green listed run's (`GREEN_JOBS` past the recorded job's).
fn is_green_job(inner: &Inner, job_id: i64) -> bool {
    jobs(inner, "", "", 0, 1)
        .ok()
        .and_then(|all| all.first().and_then(|j| j["id"].as_i64()))
        .and_then(|recorded| job_id.checked_sub(recorded))
        .is_some_and(|past| past > GREEN_JOBS)
}

/// The pre-signed log URL: a real failing CI log from `ci-logs/`, or the `green_log_text`
/// knob's for a green run's job.
pub(super) async fn signed_log(
    State(inner): State<Arc<Inner>>,
    Path(job_id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    if headers.contains_key("authorization") {
        // Pre-signed URLs must be fetched without GitHub credentials.
        return (
            StatusCode::BAD_REQUEST,
            "credentials sent to a pre-signed URL",
        )
            .into_response();
    }
    let knobs = knobs(&inner);
    if is_green_job(&inner, job_id) {
        return match knobs.green_log_text {
            Some(text) => ([("content-type", "text/plain")], text).into_response(),
            None => (StatusCode::NOT_FOUND, "no such log").into_response(),
        };
    }
    if let Some(text) = knobs.log_text {
        return ([("content-type", "text/plain")], text).into_response();
    }
    let name = knobs
        .log_fixture
        .unwrap_or_else(|| "rustfmt-check.log".into());
    match inner.fixtures.ci_log(&name) {
        Ok(text) => ([("content-type", "text/plain")], text).into_response(),
        Err(e) => fixture_error(e),
    }
}

/// GitHub answers 201 with an empty object, and the run has a new attempt, queued.
pub(super) async fn rerun_failed_jobs(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, run_id)): Path<(String, String, i64)>,
) -> Response {
    *inner
        .reruns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(run_id)
        .or_insert(0) += 1;
    if super::issues::fail_after_write(&inner) {
        return github_error(StatusCode::BAD_GATEWAY, "Server Error");
    }
    (StatusCode::CREATED, Json(json!({}))).into_response()
}

/// Recorded: the `workflow_run` of octokit's `workflow_run.completed` webhook payload (the
/// REST object), as the run asked for: its latest attempt, queued after a rerun.
pub(super) async fn get_run(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, run_id)): Path<(String, String, i64)>,
) -> Response {
    let mut run = match inner
        .fixtures
        .json("github-webhooks/workflow_run/completed.payload.json")
    {
        Ok(payload) => payload["workflow_run"].clone(),
        Err(e) => return fixture_error(e),
    };
    let reruns = inner
        .reruns
        .lock()
        .map(|r| r.get(&run_id).copied().unwrap_or(0))
        .unwrap_or(0);
    run["id"] = Value::from(run_id);
    run["run_attempt"] = Value::from(1 + reruns);
    if reruns > 0 {
        run["status"] = Value::from("queued");
        run["conclusion"] = Value::Null;
    }
    Json(run).into_response()
}

#[derive(Deserialize)]
pub(super) struct RunsQuery {
    #[serde(default)]
    head_sha: Option<String>,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    per_page: Option<usize>,
    #[serde(default)]
    page: Option<usize>,
}

/// GitHub's `status` filter takes a run's status or its conclusion.
const RUN_STATUSES: &[&str] = &[
    "completed",
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "skipped",
    "stale",
    "success",
    "timed_out",
    "in_progress",
    "queued",
    "requested",
    "waiting",
    "pending",
];

/// Recorded: the same `workflow_run` object, as `GET /repos/{o}/{r}/actions/workflows/{id}/runs`
/// lists a workflow's runs: the `workflow_runs` knob's runs of that workflow, newest first,
/// filtered by `branch` (the head branch), `event`, `status` (a status or a conclusion) and
/// `head_sha`, paginated. A workflow the stand-in does not know (neither the recorded run's
/// nor one with runs) is GitHub's 404; an unknown `status`, 422.
pub(super) async fn list_runs_of_workflow(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, workflow_id)): Path<(String, String, String)>,
    axum::extract::Query(q): axum::extract::Query<RunsQuery>,
) -> Response {
    if knobs(&inner).fail_workflow_runs > 0 {
        if let Ok(mut knobs) = inner.knobs.lock() {
            knobs.fail_workflow_runs -= 1;
        }
        return github_error(StatusCode::BAD_GATEWAY, "Server Error");
    }
    let Ok(workflow_id) = workflow_id.parse::<i64>() else {
        // A workflow's file name is taken by GitHub too; the stand-in knows ids only.
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    if let Some(status) = &q.status {
        if !RUN_STATUSES.contains(&status.as_str()) {
            return github_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Validation Failed: status is not a valid run status or conclusion",
            );
        }
    }
    let template = match inner
        .fixtures
        .json("github-webhooks/workflow_run/completed.payload.json")
    {
        Ok(payload) => payload["workflow_run"].clone(),
        Err(e) => return fixture_error(e),
    };
    let own = format!("{owner}/{repo}");
    let known: Vec<Value> = knobs(&inner)
        .workflow_runs
        .iter()
        .enumerate()
        .filter(|(_, r)| r["workflow_id"].as_i64() == Some(workflow_id))
        .map(|(i, r)| {
            let mut run = template.clone();
            run["id"] = json!(LISTED_RUNS + i as i64);
            run["workflow_id"] = json!(workflow_id);
            for key in ["head_branch", "event", "conclusion", "head_sha"] {
                run[key] = r[key].clone();
            }
            run["status"] = json!("completed");
            let head = r["head_repository"].as_str().unwrap_or(&own);
            run["head_repository"]["full_name"] = json!(head);
            run
        })
        .collect();
    // The recorded run's workflow exists whether or not it has runs; others only by theirs.
    if known.is_empty() && template["workflow_id"].as_i64() != Some(workflow_id) {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let field = |run: &Value, key: &str| run[key].as_str().map(str::to_string);
    let wanted = |run: &Value| {
        q.branch
            .as_ref()
            .is_none_or(|b| field(run, "head_branch").as_ref() == Some(b))
            && q.event
                .as_ref()
                .is_none_or(|e| field(run, "event").as_ref() == Some(e))
            && q.head_sha
                .as_ref()
                .is_none_or(|s| field(run, "head_sha").as_ref() == Some(s))
            && q.status.as_ref().is_none_or(|s| {
                field(run, "status").as_ref() == Some(s)
                    || field(run, "conclusion").as_ref() == Some(s)
            })
    };
    let runs: Vec<Value> = known.into_iter().rev().filter(wanted).collect();
    let page = Page {
        per_page: q.per_page,
        page: q.page,
    };
    let filters: Vec<String> = [
        ("branch", &q.branch),
        ("event", &q.event),
        ("status", &q.status),
        ("head_sha", &q.head_sha),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.as_ref().map(|v| format!("{key}={v}")))
    .collect();
    let url = match filters.is_empty() {
        true => format!("/repos/{own}/actions/workflows/{workflow_id}/runs"),
        false => format!(
            "/repos/{own}/actions/workflows/{workflow_id}/runs?{}",
            filters.join("&")
        ),
    };
    let (shown, next) = page.slice(&runs, &url);
    let mut response =
        Json(json!({"total_count": runs.len(), "workflow_runs": shown})).into_response();
    if let Some(link) = next.and_then(|l| axum::http::HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert("link", link);
    }
    response
}

/// Recorded: the `workflow_run` of octokit's `workflow_run.completed` webhook payload (the
/// same object the REST listing returns), adapted to the commit asked for and to the `fix_workflows` knob.
pub(super) async fn list_workflow_runs(
    State(inner): State<Arc<Inner>>,
    axum::extract::Query(q): axum::extract::Query<RunsQuery>,
) -> Response {
    let template = match inner
        .fixtures
        .json("github-webhooks/workflow_run/completed.payload.json")
    {
        Ok(payload) => payload["workflow_run"].clone(),
        Err(e) => return fixture_error(e),
    };
    let wanted = knobs(&inner).fix_workflows.unwrap_or_default();
    let mut runs = from_template(&template, &wanted, 8000, &["name", "status", "conclusion"]);
    if let Some(sha) = &q.head_sha {
        for run in &mut runs {
            run["head_sha"] = Value::from(sha.clone());
        }
    }
    Json(json!({"total_count": runs.len(), "workflow_runs": runs})).into_response()
}
