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
use crate::git::GitRepo;

/// A request the stand-in received. Credentials are reduced to their kind.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// `app-jwt`, `installation-token`, `other` or `none`.
    pub auth: String,
    /// The request's JSON body, if it had one.
    #[serde(default)]
    pub body: Option<Value>,
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
    /// The failing job's name in the run's job listing (default: `test`), as a scenario's
    /// workflow names it.
    #[serde(default)]
    pub failing_job: Option<String>,
    /// The directory served as the repository's tarball at any ref (default: the stand-in's
    /// git repository, imported from examples/rust-format, whose breakage that log shows).
    #[serde(default)]
    pub repo_dir: Option<String>,
    /// The repository's `.github/selfheal.yml` on its default branch (absent: 404).
    #[serde(default)]
    pub repo_config: Option<String>,
    /// Delay before answering a pull-request creation, to hold a worker between ref and PR.
    #[serde(default)]
    pub pulls_delay_ms: u64,
    /// The check runs GitHub reports on any commit of selfheal's branch, as
    /// `{"name", "status", "conclusion"}` (absent: one completed, successful check).
    #[serde(default)]
    pub fix_checks: Option<Vec<Value>>,
    /// Commit statuses (older CI) on any commit of selfheal's branch, as
    /// `{"context", "state"}` (absent: none, as on most repositories).
    #[serde(default)]
    pub fix_statuses: Vec<Value>,
    /// The workflow runs GitHub lists for a commit of selfheal's branch, as
    /// `{"name", "status", "conclusion"}` (absent: one completed, successful run).
    #[serde(default)]
    pub fix_workflows: Option<Vec<Value>>,
    /// Collaborator permissions by login (`admin`, `write`, `read`, ...; `none`: 404); others:
    /// `read`.
    #[serde(default)]
    pub permissions: std::collections::BTreeMap<String, String>,
    /// Answer the next N installation requests with GitHub's primary rate limit (403,
    /// `x-ratelimit-remaining: 0`, `x-ratelimit-reset` a second ahead).
    #[serde(default)]
    pub rate_limit_next: u32,
    /// Answer the next N installation requests with a secondary rate limit (429,
    /// `retry-after: 1`).
    #[serde(default)]
    pub retry_after_next: u32,
    /// Lifetime of the installation tokens issued (default an hour, as GitHub's).
    #[serde(default)]
    pub token_ttl_secs: Option<i64>,
    /// Where the pre-signed log URLs point (default: the stand-in itself). A dead address
    /// shows whether a failed download reveals the URL's signature.
    #[serde(default)]
    pub signed_url_base: Option<String>,
}

/// The bundled example the default log belongs to.
pub fn default_repo_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rust-format")
}

pub(crate) struct Inner {
    fixtures: Fixtures,
    pub(crate) git: GitRepo,
    head_sha: String,
    pub(crate) pulls: Mutex<Vec<Value>>,
    check_runs: Mutex<Vec<Value>>,
    pub(crate) base_url: String,
    calls: Mutex<Vec<Call>>,
    knobs: Mutex<Knobs>,
    tokens_issued: Mutex<u64>,
    token_requests: Mutex<Vec<Value>>,
    /// Tokens numbered up to this are answered 401, as GitHub answers a revoked token.
    revoked_upto: Mutex<u64>,
    comments: Mutex<Vec<Value>>,
}

#[derive(Clone)]
pub struct StandIn {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
}

impl StandIn {
    /// The commit the repository's `master` starts at: failing runs are at this SHA.
    pub fn head_sha(&self) -> String {
        self.inner.head_sha.clone()
    }

    /// The bare git repository behind the Git Data API.
    pub fn git_dir(&self) -> std::path::PathBuf {
        self.inner.git.dir.clone()
    }

    /// The bodies of the installation-token requests (which repositories were asked for).
    pub fn token_requests(&self) -> Vec<Value> {
        self.inner
            .token_requests
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    pub fn check_runs(&self) -> Vec<Value> {
        self.inner
            .check_runs
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    pub fn pulls(&self) -> Vec<Value> {
        self.inner
            .pulls
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

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

    /// Comments made on issues and pull requests, with their issue number.
    pub fn comments(&self) -> Vec<Value> {
        self.inner
            .comments
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Every installation token issued so far stops working (401), as after a revocation.
    pub fn revoke_tokens(&self) {
        let issued = *self
            .inner
            .tokens_issued
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *self
            .inner
            .revoked_upto
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = issued;
    }

    pub fn set_knobs(&self, knobs: Knobs) {
        if let Ok(mut k) = self.inner.knobs.lock() {
            *k = knobs;
        }
    }
}

/// Serves on `listener` until the process ends.
pub async fn spawn(listener: TcpListener, fixtures: Fixtures) -> std::io::Result<StandIn> {
    spawn_with(listener, fixtures, None, &default_repo_dir()).await
}

/// [`spawn`], serving the folder `repo` as the repository, and naming itself `public_url` in
/// the URLs it hands out (another container reaches it by a service name, not its bind address).
pub async fn spawn_with(
    listener: TcpListener,
    fixtures: Fixtures,
    public_url: Option<String>,
    repo: &std::path::Path,
) -> std::io::Result<StandIn> {
    let addr = listener.local_addr()?;
    let git_dir = std::env::temp_dir().join(format!(
        "selfheal-standin-{}-{}.git",
        std::process::id(),
        addr.port()
    ));
    let _ = std::fs::remove_dir_all(&git_dir);
    let (git, head_sha) =
        GitRepo::import(repo, &git_dir).map_err(|e| std::io::Error::other(e.to_string()))?;
    let inner = Arc::new(Inner {
        fixtures,
        git,
        head_sha,
        pulls: Mutex::new(Vec::new()),
        check_runs: Mutex::new(Vec::new()),
        base_url: public_url.unwrap_or_else(|| format!("http://{addr}")),
        calls: Mutex::new(Vec::new()),
        knobs: Mutex::new(Knobs::default()),
        tokens_issued: Mutex::new(0),
        token_requests: Mutex::new(Vec::new()),
        revoked_upto: Mutex::new(0),
        comments: Mutex::new(Vec::new()),
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
        .route("/repos/{owner}/{repo}/git/commits/{sha}", get(git_commit))
        .route("/repos/{owner}/{repo}/git/blobs", post(git_blob))
        .route("/repos/{owner}/{repo}/git/trees", post(git_tree))
        .route("/repos/{owner}/{repo}/git/commits", post(git_create_commit))
        .route("/repos/{owner}/{repo}/git/refs", post(git_create_ref))
        .route("/repos/{owner}/{repo}/git/ref/{*git_ref}", get(git_get_ref))
        .route(
            "/repos/{owner}/{repo}/git/refs/{*git_ref}",
            axum::routing::patch(git_update_ref),
        )
        .route(
            "/repos/{owner}/{repo}/pulls",
            post(create_pull).get(list_pulls),
        )
        .route("/repos/{owner}/{repo}/pulls/{number}", get(get_pull))
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/files",
            get(crate::pull_files::pull_files),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/merge",
            axum::routing::put(merge_pull),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/requested_reviewers",
            post(request_reviewers),
        )
        .route(
            "/repos/{owner}/{repo}/issues/{number}/comments",
            post(create_comment),
        )
        .route(
            "/repos/{owner}/{repo}/commits/{sha}/check-runs",
            get(commit_check_runs),
        )
        .route(
            "/repos/{owner}/{repo}/actions/runs",
            get(list_workflow_runs),
        )
        .route(
            "/repos/{owner}/{repo}/commits/{sha}/status",
            get(combined_status),
        )
        .route(
            "/repos/{owner}/{repo}/collaborators/{login}/permission",
            get(collaborator_permission),
        )
        .route(
            "/repos/{owner}/{repo}/actions/runs/{run_id}/rerun-failed-jobs",
            post(rerun_failed_jobs),
        )
        .route(
            "/repos/{owner}/{repo}/issues/{number}/labels",
            post(add_labels),
        )
        .route("/repos/{owner}/{repo}/contents/{*path}", get(contents))
        .route("/repos/{owner}/{repo}/check-runs", post(create_check_run))
        .route("/app/hook/deliveries", get(hook_deliveries))
        .route("/app/hook/deliveries/{id}/attempts", post(redeliver))
        .route("/_standin/calls", get(list_calls))
        .route("/_standin/knobs", post(set_knobs))
        .route("/_standin/head", get(head))
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
    // Bodies are small API requests; keep a copy so tests can check them against GitHub's
    // request schemas.
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    if !uri.path().starts_with("/_standin/calls") && !uri.path().starts_with("/_standin/knobs") {
        let auth = credential(&headers).as_str();
        if let Ok(mut calls) = inner.calls.lock() {
            calls.push(Call {
                method: method.to_string(),
                path: uri.path().to_string(),
                query: uri.query().map(str::to_string),
                auth: auth.to_string(),
                body: serde_json::from_slice(&bytes).ok(),
            });
        }
    }
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    if credential(&headers) == Credential::InstallationToken {
        if let Some(refused) = throttle_or_revoke(&inner, &headers) {
            return refused;
        }
    }
    next.run(request).await
}

/// What GitHub answers an installation instead of the API when its token was revoked or
/// its rate limit is spent, as GitHub documents them: 403 with `x-ratelimit-remaining: 0`
/// and `x-ratelimit-reset` for the primary limit; GitHub's documented 429 +
/// `retry-after` for secondary limits; 401 "Bad credentials" for a revoked token.
fn throttle_or_revoke(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    let number = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit('x').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    if number <= *inner.revoked_upto.lock().unwrap_or_else(|p| p.into_inner()) {
        return Some(github_error(StatusCode::UNAUTHORIZED, "Bad credentials"));
    }
    let mut knobs = inner.knobs.lock().unwrap_or_else(|p| p.into_inner());
    if knobs.rate_limit_next > 0 {
        knobs.rate_limit_next -= 1;
        // GitHub's documented wording for an installation over its primary rate limit.
        let message = "API rate limit exceeded for installation ID 1.";
        let reset = chrono::Utc::now().timestamp() + 1;
        let mut response = github_error(StatusCode::FORBIDDEN, message);
        let h = response.headers_mut();
        h.insert(
            "x-ratelimit-limit",
            axum::http::HeaderValue::from_static("5000"),
        );
        h.insert(
            "x-ratelimit-remaining",
            axum::http::HeaderValue::from_static("0"),
        );
        if let Ok(v) = axum::http::HeaderValue::from_str(&reset.to_string()) {
            h.insert("x-ratelimit-reset", v);
        }
        return Some(response);
    }
    if knobs.retry_after_next > 0 {
        knobs.retry_after_next -= 1;
        let mut response = github_error(
            StatusCode::TOO_MANY_REQUESTS,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        );
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        return Some(response);
    }
    None
}

fn knobs(inner: &Inner) -> Knobs {
    inner.knobs.lock().map(|k| k.clone()).unwrap_or_default()
}

pub(crate) fn github_error(status: StatusCode, message: &str) -> Response {
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

/// GitHub's documented example (201 with token, expires_at, permissions). The token and
/// expiry are adapted so the client sees a valid hour ahead.
async fn access_token(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Ok(mut requests) = inner.token_requests.lock() {
        requests.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    }
    if credential(&headers) != Credential::AppJwt {
        return github_error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    }
    let mut body = match inner.fixtures.example(
        "POST",
        "/app/installations/{installation_id}/access_tokens",
        201,
        "default",
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
    body["expires_at"] = Value::from(rfc3339_in(knobs(&inner).token_ttl_secs.unwrap_or(3600)));
    (StatusCode::CREATED, Json(body)).into_response()
}

/// GitHub's documented example (one green job, `build`). Adapted into a failing run's
/// listing: the run id, and a second copy of the job, `test`, failing at its "Run Tests"
/// step with the steps after it skipped.
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
    let mut body = match inner.fixtures.example(
        "GET",
        "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
        200,
        "default",
    ) {
        Ok(b) => b,
        Err(e) => return fixture_error(e),
    };
    let base = inner.base_url.clone();
    let Some(recorded) = body["jobs"].get(0).cloned() else {
        return github_error(StatusCode::INTERNAL_SERVER_ERROR, "example has no job");
    };
    let mut failing = recorded.clone();
    failing["id"] = Value::from(recorded["id"].as_i64().unwrap_or(0) + 1);
    failing["name"] = Value::from(knobs(&inner).failing_job.unwrap_or_else(|| "test".into()));
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
    let mut jobs = vec![recorded, failing];
    for job in &mut jobs {
        // The documented example predates `created_at`, which GitHub's schema now requires.
        job["created_at"] = job["started_at"].clone();
        job["run_id"] = Value::from(run_id);
        job["run_url"] = Value::from(format!("{base}/repos/{owner}/{repo}/actions/runs/{run_id}"));
    }
    body["total_count"] = Value::from(jobs.len());
    body["jobs"] = Value::from(jobs);
    Json(body).into_response()
}

/// The commit the served repository's default branch holds (for a replay from outside).
async fn head(State(inner): State<Arc<Inner>>) -> String {
    inner.head_sha.clone()
}

/// Cleanup steps GitHub runs even after a step failed.
fn is_post_step(step: &Value) -> bool {
    let name = step["name"].as_str().unwrap_or_default();
    name.starts_with("Post ") || name == "Complete job"
}

/// GitHub answers 302 to a pre-signed URL (its documented response).
async fn job_logs_redirect(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, job_id)): Path<(String, String, i64)>,
    headers: HeaderMap,
) -> Response {
    if credential(&headers) != Credential::InstallationToken {
        return github_error(StatusCode::UNAUTHORIZED, "Requires authentication");
    }
    let base = knobs(&inner)
        .signed_url_base
        .unwrap_or_else(|| inner.base_url.clone());
    let location =
        format!("{base}/_standin/logs/{job_id}?urlSigningMethod=HMACV1&urlSignature=standin");
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

/// GitHub answers 302 to the archive host (its documented response).
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

/// A gzipped tarball with one top-level directory `<owner>-<repo>-<sha7>/`, as GitHub's:
/// `git archive` of the stand-in's repository at the ref, or a directory set by a knob.
async fn tarball(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, git_ref)): Path<(String, String, String)>,
) -> Response {
    let short: String = git_ref.chars().take(7).collect();
    let top = format!("{owner}-{repo}-{short}");
    let archive = match knobs(&inner).repo_dir.map(std::path::PathBuf::from) {
        Some(dir) => {
            let build = || -> std::io::Result<Vec<u8>> {
                let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                let mut builder = tar::Builder::new(gz);
                builder.append_dir_all(&top, &dir)?;
                builder.into_inner()?.finish()
            };
            build().map_err(|e| e.to_string())
        }
        None => match inner.git.rev_parse(&format!("{git_ref}^{{commit}}")) {
            Some(sha) => inner.git.archive(&sha, &top).map_err(|e| e.to_string()),
            None => return github_error(StatusCode::NOT_FOUND, "Not Found"),
        },
    };
    match archive {
        Ok(bytes) => ([("content-type", "application/x-gzip")], bytes).into_response(),
        Err(e) => github_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("stand-in archive: {e}"),
        ),
    }
}

fn api_url(inner: &Inner, owner: &str, repo: &str, rest: &str) -> String {
    format!("{}/repos/{owner}/{repo}/{rest}", inner.base_url)
}

fn git_failed(e: crate::git::GitError) -> Response {
    github_error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string())
}

pub(crate) fn require_token(headers: &HeaderMap) -> Option<Response> {
    (credential(headers) != Credential::InstallationToken)
        .then(|| github_error(StatusCode::UNAUTHORIZED, "Requires authentication"))
}

/// GitHub's documented example, filled in from the bare repository's commit.
async fn git_commit(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let Ok(raw) = inner.git.git(&["cat-file", "commit", &sha], None) else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let tree = raw
        .lines()
        .find_map(|l| l.strip_prefix("tree "))
        .unwrap_or_default()
        .to_string();
    let parents: Vec<String> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("parent "))
        .map(str::to_string)
        .collect();
    let message = raw
        .split_once("\n\n")
        .map(|(_, m)| m.to_string())
        .unwrap_or_default();
    let mut body = match inner.fixtures.example(
        "GET",
        "/repos/{owner}/{repo}/git/commits/{commit_sha}",
        200,
        "default",
    ) {
        Ok(b) => b,
        Err(e) => return fixture_error(e),
    };
    fill_commit(
        &inner, &mut body, &owner, &repo, &sha, &tree, &parents, &message,
    );
    Json(body).into_response()
}

#[allow(clippy::too_many_arguments)]
fn fill_commit(
    inner: &Inner,
    body: &mut Value,
    owner: &str,
    repo: &str,
    sha: &str,
    tree: &str,
    parents: &[String],
    message: &str,
) {
    body["sha"] = Value::from(sha);
    body["url"] = Value::from(api_url(inner, owner, repo, &format!("git/commits/{sha}")));
    body["message"] = Value::from(message);
    body["tree"] =
        json!({"sha": tree, "url": api_url(inner, owner, repo, &format!("git/trees/{tree}"))});
    body["parents"] = Value::Array(
        parents
            .iter()
            .map(|p| json!({"sha": p, "url": api_url(inner, owner, repo, &format!("git/commits/{p}"))}))
            .collect(),
    );
}

#[derive(Deserialize)]
struct BlobRequest {
    content: String,
    #[serde(default)]
    encoding: Option<String>,
}

/// GitHub's documented example; the blob is written into the bare repository.
async fn git_blob(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    Json(req): Json<BlobRequest>,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let bytes = match req.encoding.as_deref() {
        Some("base64") => {
            use base64::Engine;
            match base64::engine::general_purpose::STANDARD.decode(req.content.replace('\n', "")) {
                Ok(b) => b,
                Err(e) => {
                    return github_error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &format!("bad base64: {e}"),
                    )
                }
            }
        }
        _ => req.content.into_bytes(),
    };
    let sha = match inner.git.write_blob(&bytes) {
        Ok(s) => s,
        Err(e) => return git_failed(e),
    };
    let mut body =
        match inner
            .fixtures
            .example("POST", "/repos/{owner}/{repo}/git/blobs", 201, "default")
        {
            Ok(b) => b,
            Err(e) => return fixture_error(e),
        };
    body["sha"] = Value::from(sha.clone());
    body["url"] = Value::from(api_url(&inner, &owner, &repo, &format!("git/blobs/{sha}")));
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Deserialize)]
struct TreeRequest {
    #[serde(default)]
    base_tree: Option<String>,
    tree: Vec<TreeEntry>,
}

#[derive(Deserialize)]
struct TreeEntry {
    path: String,
    mode: String,
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    content: Option<String>,
}

/// GitHub's documented example; the tree is written into the bare repository.
async fn git_tree(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    Json(req): Json<TreeRequest>,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let mut entries = Vec::new();
    for e in req.tree {
        let sha = match (e.sha, e.content) {
            (Some(sha), _) => Some(sha),
            (None, Some(content)) => match inner.git.write_blob(content.as_bytes()) {
                Ok(s) => Some(s),
                Err(err) => return git_failed(err),
            },
            (None, None) => None,
        };
        entries.push((e.path, e.mode, sha));
    }
    let sha = match inner.git.write_tree(req.base_tree.as_deref(), &entries) {
        Ok(s) => s,
        Err(e) => return git_failed(e),
    };
    let mut body =
        match inner
            .fixtures
            .example("POST", "/repos/{owner}/{repo}/git/trees", 201, "default")
        {
            Ok(b) => b,
            Err(e) => return fixture_error(e),
        };
    let listing = inner.git.git(&["ls-tree", &sha], None).unwrap_or_default();
    body["sha"] = Value::from(sha.clone());
    body["url"] = Value::from(api_url(&inner, &owner, &repo, &format!("git/trees/{sha}")));
    body["tree"] = Value::Array(
        listing
            .lines()
            .filter_map(|l| {
                let (meta, path) = l.split_once('\t')?;
                let mut parts = meta.split_whitespace();
                let (mode, kind, sha) = (parts.next()?, parts.next()?, parts.next()?);
                Some(json!({"path": path, "mode": mode, "type": kind, "sha": sha,
                    "url": api_url(&inner, &owner, &repo, &format!("git/{kind}s/{sha}"))}))
            })
            .collect(),
    );
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Deserialize)]
struct CommitRequest {
    message: String,
    tree: String,
    #[serde(default)]
    parents: Vec<String>,
}

/// GitHub's documented example; the commit is written into the bare repository. A
/// commit an app makes through the API, without its own author, is signed by GitHub.
async fn git_create_commit(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    Json(req): Json<CommitRequest>,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let sha = match inner.git.commit_tree(
        &req.tree,
        &req.parents,
        &req.message,
        "selfheal[bot]",
        "selfheal[bot]@users.noreply.github.com",
    ) {
        Ok(s) => s,
        Err(e) => return git_failed(e),
    };
    let mut body =
        match inner
            .fixtures
            .example("POST", "/repos/{owner}/{repo}/git/commits", 201, "default")
        {
            Ok(b) => b,
            Err(e) => return fixture_error(e),
        };
    fill_commit(
        &inner,
        &mut body,
        &owner,
        &repo,
        &sha,
        &req.tree,
        &req.parents,
        &req.message,
    );
    body["verification"] = json!({"verified": true, "reason": "valid", "signature": "-----BEGIN PGP SIGNATURE-----\nstand-in\n-----END PGP SIGNATURE-----", "payload": null});
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Deserialize)]
struct RefRequest {
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
}

fn ref_body(inner: &Inner, owner: &str, repo: &str, git_ref: &str, sha: &str) -> Value {
    json!({
        "ref": git_ref,
        "node_id": "MDM6UmVmcmVmcy9oZWFkcy9mZWF0dXJlQQ==",
        "url": api_url(inner, owner, repo, &format!("git/{git_ref}")),
        "object": {"type": "commit", "sha": sha, "url": api_url(inner, owner, repo, &format!("git/commits/{sha}"))}
    })
}

/// An existing ref is 422, as GitHub's.
async fn git_create_ref(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    Json(req): Json<RefRequest>,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    if inner.git.rev_parse(&req.git_ref).is_some() {
        return github_error(StatusCode::UNPROCESSABLE_ENTITY, "Reference already exists");
    }
    if let Err(e) = inner
        .git
        .git(&["update-ref", &req.git_ref, &req.sha, ""], None)
    {
        return git_failed(e);
    }
    (
        StatusCode::CREATED,
        Json(ref_body(&inner, &owner, &repo, &req.git_ref, &req.sha)),
    )
        .into_response()
}

async fn git_get_ref(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, git_ref)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let full = format!("refs/{git_ref}");
    match inner.git.rev_parse(&full) {
        Some(sha) => Json(ref_body(&inner, &owner, &repo, &full, &sha)).into_response(),
        None => github_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

#[derive(Deserialize)]
struct PullRequest {
    title: String,
    head: String,
    base: String,
    #[serde(default)]
    body: Option<String>,
}

/// Recorded: octocrab `pull_requests_list.json`. A second open PR for the same head is
/// GitHub's 422 "A pull request already exists".
async fn create_pull(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    Json(req): Json<PullRequest>,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let delay = knobs(&inner).pulls_delay_ms;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let head_ref = req.head.rsplit(':').next().unwrap_or(&req.head).to_string();
    let Some(head_sha) = inner.git.rev_parse(&format!("refs/heads/{head_ref}")) else {
        return github_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed: head does not exist",
        );
    };
    let mut pulls = inner.pulls.lock().unwrap_or_else(|p| p.into_inner());
    if pulls
        .iter()
        .any(|p| p["head"]["ref"] == head_ref.as_str() && p["state"] == "open")
    {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom",
                "message": format!("A pull request already exists for {owner}:{head_ref}.")}],
                "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"})),
        )
            .into_response();
    }
    // octocrab's recorded pull request (current shape).
    let mut body = match inner
        .fixtures
        .json("github-rest/octocrab/pull_requests_list.json")
    {
        Ok(list) => list[0].clone(),
        Err(e) => return fixture_error(e),
    };
    body["merged"] = Value::from(false);
    body["labels"] = Value::Array(Vec::new());
    body["requested_reviewers"] = Value::Array(Vec::new());
    let number = pulls.len() as i64 + 1;
    body["number"] = Value::from(number);
    body["title"] = Value::from(req.title);
    body["body"] = req.body.map(Value::from).unwrap_or(Value::Null);
    body["state"] = Value::from("open");
    body["html_url"] = Value::from(format!("{}/{owner}/{repo}/pull/{number}", inner.base_url));
    body["url"] = Value::from(api_url(&inner, &owner, &repo, &format!("pulls/{number}")));
    body["head"]["ref"] = Value::from(head_ref);
    body["head"]["sha"] = Value::from(head_sha);
    body["base"]["ref"] = Value::from(req.base);
    pulls.push(body.clone());
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Deserialize)]
struct PullsQuery {
    #[serde(default)]
    head: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

async fn list_pulls(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<PullsQuery>,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let head = q
        .head
        .as_deref()
        .map(|h| h.rsplit(':').next().unwrap_or(h).to_string());
    let state = q.state.unwrap_or_else(|| "open".into());
    let pulls: Vec<Value> = inner
        .pulls
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| head.as_ref().is_none_or(|h| p["head"]["ref"] == h.as_str()))
        .filter(|p| state == "all" || p["state"] == state.as_str())
        .collect();
    Json(pulls).into_response()
}

/// GitHub answers 201 with an empty object.
async fn rerun_failed_jobs(
    Path((_owner, _repo, _run_id)): Path<(String, String, i64)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    (StatusCode::CREATED, Json(json!({}))).into_response()
}

/// Recorded: octokit `get-content.json` with `Accept: …raw`: the file's bytes.
async fn contents(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, path)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    match (path.as_str(), knobs(&inner).repo_config) {
        (".github/selfheal.yml", Some(text)) => {
            ([("content-type", "application/vnd.github.raw")], text).into_response()
        }
        _ => github_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// Recorded: octocrab `commit_check_runs.json` (its first check run, adapted).
async fn create_check_run(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(req): Json<Value>,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let mut run = match inner
        .fixtures
        .json("github-rest/octocrab/commit_check_runs.json")
    {
        Ok(list) => list["check_runs"][0].clone(),
        Err(e) => return fixture_error(e),
    };
    let mut runs = inner.check_runs.lock().unwrap_or_else(|p| p.into_inner());
    run["id"] = Value::from(5000 + runs.len() as i64);
    for key in ["name", "head_sha", "status", "conclusion", "output"] {
        if let Some(v) = req.get(key) {
            run[key] = v.clone();
        }
    }
    runs.push(run.clone());
    (StatusCode::CREATED, Json(run)).into_response()
}

#[derive(Deserialize)]
struct LabelsRequest {
    labels: Vec<String>,
}

/// Labels on an issue or PR; each shaped like octokit's recorded label (`labels.json`).
async fn add_labels(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, number)): Path<(String, String, i64)>,
    headers: HeaderMap,
    Json(req): Json<LabelsRequest>,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let recorded = match inner
        .fixtures
        .json("github-rest/octokit-fixtures/labels.json")
    {
        Ok(Value::Array(exchanges)) => exchanges
            .into_iter()
            .find(|x| x["method"] == "post")
            .map(|x| x["response"].clone()),
        Ok(_) => None,
        Err(e) => return fixture_error(e),
    };
    let Some(template) = recorded else {
        return github_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "stand-in fixture: no recorded label",
        );
    };
    let mut pulls = inner.pulls.lock().unwrap_or_else(|p| p.into_inner());
    let Some(pr) = pulls.iter_mut().find(|p| p["number"] == number) else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let mut labels: Vec<Value> = pr["labels"].as_array().cloned().unwrap_or_default();
    for name in req.labels {
        if labels.iter().any(|l| l["name"] == name.as_str()) {
            continue;
        }
        let mut label = template.clone();
        label["id"] = Value::from(2000 + labels.len() as i64);
        label["name"] = Value::from(name.clone());
        label["url"] = Value::from(api_url(&inner, &owner, &repo, &format!("labels/{name}")));
        labels.push(label);
    }
    pr["labels"] = Value::Array(labels.clone());
    Json(labels).into_response()
}

/// Recorded: octocrab `hooks_delivery_list.json` (one delivery failed with 503, one OK).
async fn hook_deliveries(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    if credential(&headers) != Credential::AppJwt {
        return github_error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    }
    match inner
        .fixtures
        .json("github-rest/octocrab/hooks_delivery_list.json")
    {
        Ok(list) => Json(list).into_response(),
        Err(e) => fixture_error(e),
    }
}

/// GitHub accepts a redelivery request with 202.
async fn redeliver(Path(_id): Path<i64>, headers: HeaderMap) -> Response {
    if credential(&headers) != Credential::AppJwt {
        return github_error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    }
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
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

#[derive(Deserialize)]
struct UpdateRefRequest {
    sha: String,
    #[serde(default)]
    force: bool,
}

/// Recorded: octokit `git-refs.json` (PATCH …/git/refs/heads/test). Not a fast-forward
/// without `force` is GitHub's 422.
async fn git_update_ref(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, git_ref)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(req): Json<UpdateRefRequest>,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let full = format!("refs/{git_ref}");
    let Some(old) = inner.git.rev_parse(&full) else {
        return github_error(StatusCode::UNPROCESSABLE_ENTITY, "Reference does not exist");
    };
    let fast_forward = inner
        .git
        .git(&["merge-base", "--is-ancestor", &old, &req.sha], None)
        .is_ok();
    if !fast_forward && !req.force {
        return github_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Update is not a fast forward",
        );
    }
    if let Err(e) = inner.git.git(&["update-ref", &full, &req.sha, &old], None) {
        return git_failed(e);
    }
    if let Ok(mut pulls) = inner.pulls.lock() {
        for p in pulls
            .iter_mut()
            .filter(|p| p["head"]["ref"] == git_ref.trim_start_matches("heads/"))
        {
            p["head"]["sha"] = Value::from(req.sha.clone());
        }
    }
    Json(ref_body(&inner, &owner, &repo, &full, &req.sha)).into_response()
}

async fn get_pull(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, number)): Path<(String, String, i64)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let pulls = inner.pulls.lock().map(|p| p.clone()).unwrap_or_default();
    match pulls.into_iter().find(|p| p["number"] == number) {
        Some(pr) => Json(pr).into_response(),
        None => github_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

#[derive(Deserialize)]
struct MergeRequest {
    #[serde(default)]
    merge_method: Option<String>,
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    commit_title: Option<String>,
}

/// GitHub's documented example (`merged`, `message`, `sha`). The
/// merge is real: a squash (or merge) commit on the base branch of the bare repository.
/// A `sha` that is not the head's is GitHub's 409; a closed PR is its 405.
async fn merge_pull(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, number)): Path<(String, String, i64)>,
    headers: HeaderMap,
    Json(req): Json<MergeRequest>,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let mut pulls = inner.pulls.lock().unwrap_or_else(|p| p.into_inner());
    let Some(pr) = pulls.iter_mut().find(|p| p["number"] == number) else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    if pr["state"] != "open" {
        return github_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Pull Request is not mergeable",
        );
    }
    let head_sha = pr["head"]["sha"].as_str().unwrap_or_default().to_string();
    if req.sha.as_deref().is_some_and(|s| s != head_sha) {
        return github_error(
            StatusCode::CONFLICT,
            "Head branch was modified. Review and try the merge again.",
        );
    }
    let base = pr["base"]["ref"].as_str().unwrap_or("master").to_string();
    let Some(base_sha) = inner.git.rev_parse(&format!("refs/heads/{base}")) else {
        return github_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "base branch does not exist",
        );
    };
    let tree = match inner
        .git
        .git(&["rev-parse", &format!("{head_sha}^{{tree}}")], None)
    {
        Ok(t) => t.trim().to_string(),
        Err(e) => return git_failed(e),
    };
    let method = req.merge_method.unwrap_or_else(|| "merge".into());
    let parents = if method == "merge" {
        vec![base_sha.clone(), head_sha.clone()]
    } else {
        vec![base_sha.clone()]
    };
    let title = req
        .commit_title
        .unwrap_or_else(|| format!("{} (#{number})", pr["title"].as_str().unwrap_or_default()));
    let merged =
        match inner
            .git
            .commit_tree(&tree, &parents, &title, "GitHub", "noreply@github.com")
        {
            Ok(s) => s,
            Err(e) => return git_failed(e),
        };
    if let Err(e) = inner.git.git(
        &[
            "update-ref",
            &format!("refs/heads/{base}"),
            &merged,
            &base_sha,
        ],
        None,
    ) {
        return git_failed(e);
    }
    pr["state"] = Value::from("closed");
    pr["merged"] = Value::from(true);
    pr["merge_commit_sha"] = Value::from(merged.clone());
    pr["merged_at"] = Value::from(rfc3339_in(0));
    let mut body = match inner.fixtures.example(
        "PUT",
        "/repos/{owner}/{repo}/pulls/{pull_number}/merge",
        200,
        "response-if-merge-was-successful",
    ) {
        Ok(b) => b,
        Err(e) => return fixture_error(e),
    };
    body["sha"] = Value::from(merged);
    Json(body).into_response()
}

#[derive(Deserialize)]
struct ReviewersRequest {
    #[serde(default)]
    reviewers: Vec<String>,
    #[serde(default)]
    team_reviewers: Vec<String>,
}

/// GitHub answers with the pull request, its `requested_reviewers` filled in.
async fn request_reviewers(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, number)): Path<(String, String, i64)>,
    headers: HeaderMap,
    Json(req): Json<ReviewersRequest>,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let mut pulls = inner.pulls.lock().unwrap_or_else(|p| p.into_inner());
    let Some(pr) = pulls.iter_mut().find(|p| p["number"] == number) else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let user = pr["user"].clone();
    pr["requested_reviewers"] = Value::Array(
        req.reviewers
            .iter()
            .map(|login| {
                let mut u = user.clone();
                u["login"] = Value::from(login.as_str());
                u
            })
            .collect(),
    );
    pr["requested_teams"] = Value::Array(
        req.team_reviewers
            .iter()
            .map(|slug| json!({"slug": slug, "name": slug}))
            .collect(),
    );
    (StatusCode::CREATED, Json(pr.clone())).into_response()
}

#[derive(Deserialize)]
struct CommentRequest {
    body: String,
}

/// Recorded: the `comment` of octokit's `issue_comment.created` webhook payload, which is
/// GitHub's issue-comment object.
async fn create_comment(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, number)): Path<(String, String, i64)>,
    headers: HeaderMap,
    Json(req): Json<CommentRequest>,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let mut body = match inner
        .fixtures
        .json("github-webhooks/issue_comment/created.payload.json")
    {
        Ok(payload) => payload["comment"].clone(),
        Err(e) => return fixture_error(e),
    };
    body["issue_url"] = Value::from(api_url(&inner, &owner, &repo, &format!("issues/{number}")));
    let mut comments = inner.comments.lock().unwrap_or_else(|p| p.into_inner());
    body["id"] = Value::from(9000 + comments.len() as i64);
    body["body"] = Value::from(req.body);
    body["issue_number"] = Value::from(number);
    comments.push(body.clone());
    (StatusCode::CREATED, Json(body)).into_response()
}

/// Recorded: octocrab `commit_check_runs.json`, its first check run adapted to the commit
/// and to the `fix_checks` knob.
async fn commit_check_runs(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let template = match inner
        .fixtures
        .json("github-rest/octocrab/commit_check_runs.json")
    {
        Ok(list) => list["check_runs"][0].clone(),
        Err(e) => return fixture_error(e),
    };
    let wanted = knobs(&inner).fix_checks.unwrap_or_else(|| {
        vec![json!({"name": "test", "status": "completed", "conclusion": "success"})]
    });
    let mut runs = from_template(&template, &wanted, 7000, &["name", "status", "conclusion"]);
    for run in &mut runs {
        run["head_sha"] = Value::from(sha.clone());
    }
    Json(json!({"total_count": runs.len(), "check_runs": runs})).into_response()
}

/// GitHub's documented example (admin); the login and permission come from the
/// `permissions` knob.
async fn collaborator_permission(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, login)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let permission = knobs(&inner)
        .permissions
        .get(&login)
        .cloned()
        .unwrap_or_else(|| "read".into());
    // Someone with no access to a private repository is, to GitHub, not found there.
    if permission == "none" {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let mut body = match inner.fixtures.example(
        "GET",
        "/repos/{owner}/{repo}/collaborators/{username}/permission",
        200,
        "response-if-user-has-admin-permissions",
    ) {
        Ok(b) => b,
        Err(e) => return fixture_error(e),
    };
    // `permission` is the legacy coarse level; `role_name` the finer one (maintain, triage).
    let legacy = match permission.as_str() {
        "maintain" => "write",
        "triage" => "read",
        p => p,
    };
    body["permission"] = Value::from(legacy);
    body["role_name"] = Value::from(permission.clone());
    body["user"]["role_name"] = Value::from(permission);
    body["user"]["login"] = Value::from(login);
    Json(body).into_response()
}

#[derive(Deserialize)]
struct RunsQuery {
    #[serde(default)]
    head_sha: Option<String>,
}

/// Recorded: the `workflow_run` of octokit's `workflow_run.completed` webhook payload (the
/// same object the REST listing returns), adapted to the commit asked for and to the `fix_workflows` knob.
async fn list_workflow_runs(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<RunsQuery>,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let template = match inner
        .fixtures
        .json("github-webhooks/workflow_run/completed.payload.json")
    {
        Ok(payload) => payload["workflow_run"].clone(),
        Err(e) => return fixture_error(e),
    };
    let wanted = knobs(&inner).fix_workflows.unwrap_or_else(|| {
        vec![json!({"name": "CI", "status": "completed", "conclusion": "success"})]
    });
    let mut runs = from_template(&template, &wanted, 8000, &["name", "status", "conclusion"]);
    if let Some(sha) = &q.head_sha {
        for run in &mut runs {
            run["head_sha"] = Value::from(sha.clone());
        }
    }
    Json(json!({"total_count": runs.len(), "workflow_runs": runs})).into_response()
}

/// Recorded: octokit `create-status.json` (GET …/commits/{ref}/status), its statuses replaced
/// by the `fix_statuses` knob. With no status GitHub says `pending`, as recorded nowhere but
/// documented; selfheal looks at `total_count` first.
async fn combined_status(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = require_token(&headers) {
        return r;
    }
    let recorded = match inner
        .fixtures
        .json("github-rest/octokit-fixtures/create-status.json")
    {
        Ok(Value::Array(exchanges)) => exchanges
            .into_iter()
            .find(|x| {
                x["method"] == "get" && x["path"].as_str().is_some_and(|p| p.ends_with("/status"))
            })
            .map(|x| x["response"].clone()),
        Ok(_) => None,
        Err(e) => return fixture_error(e),
    };
    let Some(mut body) = recorded else {
        return github_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "stand-in fixture: no combined status",
        );
    };
    let template = body["statuses"][0].clone();
    let wanted = knobs(&inner).fix_statuses;
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

/// One copy of a recorded object per knob entry, numbered from `first_id`, with the entry's
/// `keys` copied over (null where the entry lacks one).
fn from_template(template: &Value, wanted: &[Value], first_id: i64, keys: &[&str]) -> Vec<Value> {
    wanted
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut item = template.clone();
            item["id"] = Value::from(first_id + i as i64);
            for key in keys {
                item[*key] = w.get(*key).cloned().unwrap_or(Value::Null);
            }
            item
        })
        .collect()
}
