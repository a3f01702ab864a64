use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::fixtures::Fixtures;

/// A request the stand-in received. Credentials are reduced to their kind.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// `app-jwt`, `installation-token`, `other` or `none`.
    pub auth: String,
}

/// Behaviour a test or the demo can change while the stand-in runs (also over HTTP:
/// `POST /_standin/knobs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Knobs {
    /// Delay before answering the run's jobs list, to hold a worker mid-triage.
    #[serde(default)]
    pub jobs_delay_ms: u64,
    /// Answer the next N jobs-list requests with a 502.
    #[serde(default)]
    pub fail_jobs: u32,
    /// Which `ci-logs/` file to serve as the failed job's log (default: rustfmt-check.log).
    #[serde(default)]
    pub log_fixture: Option<String>,
    /// A scenario's own log text instead of a fixture (tests that need a particular
    /// command to fail, e.g. a slow one).
    #[serde(default)]
    pub log_text: Option<String>,
    /// The directory served as the repository at any ref (default: examples/rust-format,
    /// whose breakage that log shows).
    #[serde(default)]
    pub repo_dir: Option<String>,
}

/// The bundled example the default log belongs to.
pub fn default_repo_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rust-format")
}

struct Inner {
    fixtures: Fixtures,
    base_url: String,
    calls: Mutex<Vec<Call>>,
    knobs: Mutex<Knobs>,
    tokens_issued: Mutex<u64>,
}

#[derive(Clone)]
pub struct StandIn {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
}

impl StandIn {
    pub fn url(&self) -> String {
        self.inner.base_url.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    pub fn set_knobs(&self, knobs: Knobs) {
        if let Ok(mut k) = self.inner.knobs.lock() {
            *k = knobs;
        }
    }
}

/// Serves on `listener` until the process ends.
pub async fn spawn(listener: TcpListener, fixtures: Fixtures) -> std::io::Result<StandIn> {
    let addr = listener.local_addr()?;
    let inner = Arc::new(Inner {
        fixtures,
        base_url: format!("http://{addr}"),
        calls: Mutex::new(Vec::new()),
        knobs: Mutex::new(Knobs::default()),
        tokens_issued: Mutex::new(0),
    });
    let app = Router::new()
        .route("/app/installations/{id}/access_tokens", post(access_token))
        .route(
            "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
            get(run_jobs),
        )
        .route(
            "/repos/{owner}/{repo}/actions/jobs/{job_id}/logs",
            get(job_logs_redirect),
        )
        .route("/_standin/logs/{job_id}", get(signed_log))
        .route(
            "/repos/{owner}/{repo}/tarball/{*git_ref}",
            get(tarball_redirect),
        )
        .route("/_standin/codeload/{owner}/{repo}/{git_ref}", get(tarball))
        .route("/_standin/calls", get(list_calls))
        .route("/_standin/knobs", post(set_knobs))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(inner.clone(), record))
        .with_state(inner.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "stand-in stopped");
        }
    });
    Ok(StandIn { inner, addr })
}

async fn record(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !uri.path().starts_with("/_standin/calls") && !uri.path().starts_with("/_standin/knobs") {
        let auth = credential(&headers).as_str();
        if let Ok(mut calls) = inner.calls.lock() {
            calls.push(Call {
                method: method.to_string(),
                path: uri.path().to_string(),
                query: uri.query().map(str::to_string),
                auth: auth.to_string(),
            });
        }
    }
    next.run(request).await
}

fn knobs(inner: &Inner) -> Knobs {
    inner.knobs.lock().map(|k| k.clone()).unwrap_or_default()
}

fn github_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"message": message, "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

fn fixture_error(e: crate::FixtureError) -> Response {
    github_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("stand-in fixture: {e}"),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    AppJwt,
    InstallationToken,
    Other,
    None,
}

impl Credential {
    fn as_str(self) -> &'static str {
        match self {
            Credential::AppJwt => "app-jwt",
            Credential::InstallationToken => "installation-token",
            Credential::Other => "other",
            Credential::None => "none",
        }
    }
}

/// GitHub tells an app's JWT (three base64url parts) from an installation token (`ghs_`).
fn credential(headers: &HeaderMap) -> Credential {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Credential::None;
    };
    let token = value.split_once(' ').map(|(_, t)| t.trim()).unwrap_or("");
    if token.starts_with("ghs_") {
        Credential::InstallationToken
    } else if token.starts_with("eyJ") && token.split('.').count() == 3 {
        Credential::AppJwt
    } else {
        Credential::Other
    }
}

/// Recorded: PyGithub `GithubIntegration.testGetAccessToken` (201 with token, expires_at,
/// permissions). The token and expiry are adapted so the client sees a valid hour ahead.
async fn access_token(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    if credential(&headers) != Credential::AppJwt {
        return github_error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    }
    let mut body = match inner.fixtures.replay_json(
        "GithubIntegration.testGetAccessToken.txt",
        "POST",
        "/access_tokens",
    ) {
        Ok(b) => b,
        Err(e) => return fixture_error(e),
    };
    let n = {
        let mut issued = inner
            .tokens_issued
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *issued += 1;
        *issued
    };
    body["token"] = Value::from(format!("ghs_standin{id}x{n}"));
    body["expires_at"] = Value::from(rfc3339_in(3600));
    (StatusCode::CREATED, Json(body)).into_response()
}

/// Recorded: PyGithub `WorkflowRun.test_jobs` (five jobs, all green). Adapted: the run id,
/// and the second job made to fail at its "Run tests" step, as a failing run's listing reads.
async fn run_jobs(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, run_id)): Path<(String, String, i64)>,
    headers: HeaderMap,
) -> Response {
    if credential(&headers) != Credential::InstallationToken {
        return github_error(StatusCode::UNAUTHORIZED, "Requires authentication");
    }
    let k = knobs(&inner);
    if k.jobs_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(k.jobs_delay_ms)).await;
    }
    if k.fail_jobs > 0 {
        if let Ok(mut knobs) = inner.knobs.lock() {
            knobs.fail_jobs -= 1;
        }
        return github_error(StatusCode::BAD_GATEWAY, "Server Error");
    }
    let mut body = match inner
        .fixtures
        .replay_json("WorkflowRun.test_jobs.txt", "GET", "/jobs")
    {
        Ok(b) => b,
        Err(e) => return fixture_error(e),
    };
    let base = inner.base_url.clone();
    if let Some(jobs) = body["jobs"].as_array_mut() {
        for (i, job) in jobs.iter_mut().enumerate() {
            job["run_id"] = Value::from(run_id);
            job["run_url"] =
                Value::from(format!("{base}/repos/{owner}/{repo}/actions/runs/{run_id}"));
            if i == 1 {
                job["conclusion"] = Value::from("failure");
                if let Some(steps) = job["steps"].as_array_mut() {
                    for step in steps.iter_mut() {
                        if step["name"] == "Run tests" {
                            step["conclusion"] = Value::from("failure");
                        } else if step["number"].as_i64().unwrap_or(0) > 5
                            && step["number"].as_i64().unwrap_or(0) < 11
                        {
                            step["conclusion"] = Value::from("skipped");
                        }
                    }
                }
            }
        }
    }
    Json(body).into_response()
}

/// Recorded: PyGithub `WorkflowJob.testAttributes` — GitHub answers 302 to a pre-signed URL.
async fn job_logs_redirect(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, job_id)): Path<(String, String, i64)>,
    headers: HeaderMap,
) -> Response {
    if credential(&headers) != Credential::InstallationToken {
        return github_error(StatusCode::UNAUTHORIZED, "Requires authentication");
    }
    let location = format!(
        "{}/_standin/logs/{job_id}?urlSigningMethod=HMACV1&urlSignature=standin",
        inner.base_url
    );
    (StatusCode::FOUND, [("location", location)]).into_response()
}

/// The pre-signed log URL: a real failing CI log from `ci-logs/`.
async fn signed_log(
    State(inner): State<Arc<Inner>>,
    Path(_job_id): Path<i64>,
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

/// Recorded: PyGithub `Repository.testGetArchiveLink` — 302 to the archive host.
async fn tarball_redirect(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, git_ref)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if credential(&headers) != Credential::InstallationToken {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let location = format!(
        "{}/_standin/codeload/{owner}/{repo}/{git_ref}",
        inner.base_url
    );
    (StatusCode::FOUND, [("location", location)]).into_response()
}

/// A gzipped tarball with one top-level directory `<owner>-<repo>-<sha7>/`, as GitHub's.
async fn tarball(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, git_ref)): Path<(String, String, String)>,
) -> Response {
    let dir = knobs(&inner)
        .repo_dir
        .map(std::path::PathBuf::from)
        .unwrap_or_else(default_repo_dir);
    let short: String = git_ref.chars().take(7).collect();
    let top = format!("{owner}-{repo}-{short}");
    let build = || -> std::io::Result<Vec<u8>> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        builder.append_dir_all(&top, &dir)?;
        builder.into_inner()?.finish()
    };
    match build() {
        Ok(bytes) => ([("content-type", "application/x-gzip")], bytes).into_response(),
        Err(e) => github_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("stand-in archive of {}: {e}", dir.display()),
        ),
    }
}

async fn list_calls(State(inner): State<Arc<Inner>>) -> Json<Vec<Call>> {
    Json(inner.calls.lock().map(|c| c.clone()).unwrap_or_default())
}

async fn set_knobs(State(inner): State<Arc<Inner>>, Json(knobs): Json<Knobs>) -> StatusCode {
    if let Ok(mut k) = inner.knobs.lock() {
        *k = knobs;
    }
    StatusCode::NO_CONTENT
}

async fn not_found() -> Response {
    github_error(StatusCode::NOT_FOUND, "Not Found")
}

fn rfc3339_in(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
