//! The stand-in's HTTP server: one module per GitHub resource, one authentication layer per
//! kind of caller (see `auth`), and the recorded calls and knobs tests use.

mod actions;
mod auth;
mod checks;
mod commits;
mod contents;
mod git_data;
mod git_http;
mod hooks;
mod issues;
mod knobs;
mod pull_files;
mod pulls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::fixtures::Fixtures;
use crate::git::GitRepo;

pub use knobs::{Knobs, Protection, WriteLimit, INSTALLATION_ID, REPOSITORY};

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
    /// When it arrived, in milliseconds since the stand-in started.
    #[serde(default)]
    pub at_ms: u64,
    /// The status the stand-in answered (none while it is being answered).
    #[serde(default)]
    pub status: Option<u16>,
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
    app: auth::AppIdentity,
    tokens: Mutex<auth::Tokens>,
    token_requests: Mutex<Vec<Value>>,
    comments: Mutex<Vec<Value>>,
    /// Reruns asked for, by workflow run id: each one is a new attempt of the run.
    reruns: Mutex<std::collections::HashMap<i64, i64>>,
    started: std::time::Instant,
    /// When each installation's recent writes were made, for the `write_limit` knob.
    writes: Mutex<std::collections::HashMap<i64, std::collections::VecDeque<std::time::Instant>>>,
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
        let mut tokens = self.inner.tokens.lock().unwrap_or_else(|p| p.into_inner());
        for issued in tokens.issued.values_mut() {
            issued.revoked = true;
        }
    }

    /// A comment by a person (`login`) on issue or PR `number`, made outside selfheal.
    pub fn comment_as(&self, number: i64, login: &str, body: &str) {
        let mut comments = self
            .inner
            .comments
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let id = 9000 + comments.len() as i64;
        comments.push(json!({"id": id, "body": body, "issue_number": number,
            "user": {"login": login, "type": "User"}, "performed_via_github_app": null}));
    }

    /// A token for `installation` as a token exchange would issue it (all its repositories),
    /// for a test acting as someone else with access (a person pushing to a branch).
    pub fn installation_token(&self, installation: i64) -> Option<String> {
        auth::issue(&self.inner, installation, None)
            .ok()
            .map(|(token, _)| token)
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
        app: auth::AppIdentity::demo(),
        tokens: Mutex::new(auth::Tokens::default()),
        token_requests: Mutex::new(Vec::new()),
        comments: Mutex::new(Vec::new()),
        reruns: Mutex::new(std::collections::HashMap::new()),
        started: std::time::Instant::now(),
        writes: Mutex::new(std::collections::HashMap::new()),
    });
    // Every route says who may call it: the App (its JWT), an installation (a token scoped
    // to the repository in the path), or anyone (the stand-in's own controls and the
    // pre-signed URLs, which carry their own signatures).
    let app_routes = Router::new()
        .route(
            "/app/installations/{id}/access_tokens",
            post(auth::access_token),
        )
        .route("/app/hook/deliveries", get(hooks::hook_deliveries))
        .route("/app/hook/deliveries/{id}/attempts", post(hooks::redeliver))
        .route_layer(from_fn_with_state(inner.clone(), auth::require_app));
    let repo_routes = Router::new()
        .route(
            "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
            get(actions::run_jobs),
        )
        .route(
            "/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt}/jobs",
            get(actions::attempt_jobs),
        )
        .route(
            "/repos/{owner}/{repo}/actions/jobs/{job_id}/logs",
            get(actions::job_logs_redirect),
        )
        .route(
            "/repos/{owner}/{repo}/actions/runs",
            get(actions::list_workflow_runs),
        )
        .route(
            "/repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs",
            get(actions::list_runs_of_workflow),
        )
        .route(
            "/repos/{owner}/{repo}/compare/{basehead}",
            get(commits::compare),
        )
        .route(
            "/repos/{owner}/{repo}/commits/{git_ref}",
            get(commits::commit),
        )
        .route(
            "/repos/{owner}/{repo}/actions/runs/{run_id}",
            get(actions::get_run),
        )
        .route(
            "/repos/{owner}/{repo}/actions/runs/{run_id}/rerun-failed-jobs",
            post(actions::rerun_failed_jobs),
        )
        .route(
            "/repos/{owner}/{repo}/tarball/{*git_ref}",
            get(contents::tarball_redirect),
        )
        .route(
            "/repos/{owner}/{repo}/contents/{*path}",
            get(contents::contents),
        )
        .route(
            "/repos/{owner}/{repo}/git/commits/{sha}",
            get(git_data::git_commit),
        )
        .route("/repos/{owner}/{repo}/git/blobs", post(git_data::git_blob))
        .route("/repos/{owner}/{repo}/git/trees", post(git_data::git_tree))
        .route(
            "/repos/{owner}/{repo}/git/commits",
            post(git_data::git_create_commit),
        )
        .route(
            "/repos/{owner}/{repo}/git/refs",
            post(git_data::git_create_ref),
        )
        .route(
            "/repos/{owner}/{repo}/git/ref/{*git_ref}",
            get(git_data::git_get_ref),
        )
        .route(
            "/repos/{owner}/{repo}/git/refs/{*git_ref}",
            patch(git_data::git_update_ref).delete(git_data::git_delete_ref),
        )
        .route(
            "/repos/{owner}/{repo}/pulls",
            post(pulls::create_pull).get(pulls::list_pulls),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}",
            get(pulls::get_pull).patch(pulls::update_pull),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/files",
            get(pull_files::pull_files),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/merge",
            put(pulls::merge_pull),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/update-branch",
            put(pulls::update_branch),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/requested_reviewers",
            post(pulls::request_reviewers),
        )
        .route(
            "/repos/{owner}/{repo}/issues/{number}/comments",
            post(issues::create_comment).get(issues::list_comments),
        )
        .route(
            "/repos/{owner}/{repo}/commits/{sha}/comments",
            post(issues::create_commit_comment),
        )
        .route(
            "/repos/{owner}/{repo}/issues/{number}/labels",
            post(issues::add_labels),
        )
        .route(
            "/repos/{owner}/{repo}/collaborators/{login}/permission",
            get(issues::collaborator_permission),
        )
        .route(
            "/repos/{owner}/{repo}/commits/{sha}/check-runs",
            get(checks::commit_check_runs),
        )
        .route(
            "/repos/{owner}/{repo}/commits/{sha}/status",
            get(checks::combined_status),
        )
        .route(
            "/repos/{owner}/{repo}/commits/{sha}/statuses",
            get(checks::list_statuses),
        )
        .route(
            "/repos/{owner}/{repo}/check-runs",
            post(checks::create_check_run),
        )
        .route_layer(from_fn_with_state(
            inner.clone(),
            auth::require_installation,
        ));
    let open_routes = Router::new()
        .route("/_standin/logs/{job_id}", get(actions::signed_log))
        .route(
            "/_standin/codeload/{owner}/{repo}/{git_ref}",
            get(contents::tarball),
        )
        .route("/_standin/calls", get(list_calls))
        .route("/_standin/knobs", post(set_knobs))
        .route("/_standin/head", get(head))
        // Git over HTTP checks its own credentials (Basic, not the API's bearer).
        .route("/{owner}/{repo}/info/refs", get(git_http::info_refs))
        .route(
            "/{owner}/{repo}/git-upload-pack",
            post(git_http::upload_pack),
        )
        .route(
            "/{owner}/{repo}/git-receive-pack",
            post(git_http::receive_pack),
        );
    let app = Router::new()
        .merge(app_routes)
        .merge(repo_routes)
        .merge(open_routes)
        .fallback(not_found)
        .layer(from_fn_with_state(inner.clone(), record))
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
    let mut index = None;
    if !uri.path().starts_with("/_standin/calls") && !uri.path().starts_with("/_standin/knobs") {
        let auth = auth::credential(&headers).as_str();
        if let Ok(mut calls) = inner.calls.lock() {
            index = Some(calls.len());
            calls.push(Call {
                method: method.to_string(),
                path: uri.path().to_string(),
                query: uri.query().map(str::to_string),
                auth: auth.to_string(),
                body: serde_json::from_slice(&bytes).ok(),
                at_ms: inner.started.elapsed().as_millis() as u64,
                status: None,
            });
        }
    }
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    let response = next.run(request).await;
    if let (Some(i), Ok(mut calls)) = (index, inner.calls.lock()) {
        if let Some(call) = calls.get_mut(i) {
            call.status = Some(response.status().as_u16());
        }
    }
    response
}

fn knobs(inner: &Inner) -> Knobs {
    inner.knobs.lock().map(|k| k.clone()).unwrap_or_default()
}

/// The App as GitHub names it on what it did (`performed_via_github_app`, a check run's
/// `app`): the recorded integration of octokit's `check_suite` payload, as the stand-in's App.
pub(crate) fn app_object(inner: &Inner) -> Value {
    let mut app = inner
        .fixtures
        .json("github-webhooks/check_suite/completed.payload.json")
        .map(|p| p["check_suite"]["app"].clone())
        .unwrap_or_else(|_| json!({}));
    app["id"] = Value::from(inner.app.id);
    app["slug"] = Value::from("selfheal");
    app["name"] = Value::from("selfheal");
    app
}

/// A refusal in GitHub's words (status and message), answered as GitHub's error body.
pub(crate) struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        github_error(self.0, &self.1)
    }
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

/// The commit the served repository's default branch holds (for a replay from outside).
async fn head(State(inner): State<Arc<Inner>>) -> String {
    inner.head_sha.clone()
}

fn api_url(inner: &Inner, owner: &str, repo: &str, rest: &str) -> String {
    format!("{}/repos/{owner}/{repo}/{rest}", inner.base_url)
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

/// GitHub's pagination of a list: `per_page` (default 30, at most 100) and `page` (from 1);
/// a `Link` header names the next page while there is one.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Page {
    #[serde(default)]
    per_page: Option<usize>,
    #[serde(default)]
    page: Option<usize>,
}

impl Page {
    /// This page of `all`, and the `Link` header value for the next one (`url`: the list's
    /// address without a query).
    pub(crate) fn slice<T: Clone>(&self, all: &[T], url: &str) -> (Vec<T>, Option<String>) {
        let per_page = self.per_page.unwrap_or(30).clamp(1, 100);
        let n = self.page.unwrap_or(1).max(1);
        let slice = all
            .iter()
            .skip((n - 1) * per_page)
            .take(per_page)
            .cloned()
            .collect();
        // The list's own filters (in `url`) stay in the next page's address, as GitHub's do.
        let join = if url.contains('?') { '&' } else { '?' };
        let next = (n * per_page < all.len()).then(|| {
            format!(
                "<{url}{join}per_page={per_page}&page={}>; rel=\"next\"",
                n + 1
            )
        });
        (slice, next)
    }
}
