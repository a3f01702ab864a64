//! Git over HTTP, for fetches: `GET /{owner}/{repo}.git/info/refs?service=git-upload-pack` and
//! `POST /{owner}/{repo}.git/git-upload-pack`, answered by git's own `git http-backend` over
//! the stand-in's bare repository, so that a real `git fetch` (any protocol version, shallow
//! or not) talks to it as it talks to GitHub.
//!
//! In front of it, GitHub's checks for an installation's git access
//! (https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/authenticating-as-a-github-app-installation#about-authentication-as-a-github-app-installation):
//! HTTP Basic with the installation token as the password (`x-access-token:TOKEN`); no
//! credentials, or a token that is unknown, expired or revoked, is 401 with
//! `WWW-Authenticate: Basic realm="GitHub"` (git then says "Authentication failed"); a
//! repository outside the token's scope is 404 "Repository not found." as it is to GitHub.
//! Pushes (`git-receive-pack`) are refused: selfheal writes through the API only.

use std::process::Stdio;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use tokio::io::AsyncWriteExt;

use super::auth::basic_password;
use super::Inner;

fn refused(status: StatusCode, message: &str) -> Response {
    let mut response = (status, format!("{message}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"GitHub\""),
        );
    }
    response
}

/// GitHub's answer to these credentials for `owner/repo`, when it is not to go ahead.
fn check(inner: &Inner, headers: &HeaderMap, owner: &str, repo: &str) -> Option<Response> {
    // Git prints the body after `remote: ` itself.
    const BAD: &str =
        "Invalid username or token. Password authentication is not supported for Git operations.";
    let Some(token) = basic_password(headers) else {
        return Some(refused(StatusCode::UNAUTHORIZED, BAD));
    };
    let issued = inner
        .tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .issued
        .get(&token)
        .cloned();
    let Some(issued) = issued else {
        return Some(refused(StatusCode::UNAUTHORIZED, BAD));
    };
    if issued.revoked || issued.expires_at <= Utc::now() {
        return Some(refused(StatusCode::UNAUTHORIZED, BAD));
    }
    let name = repo.strip_suffix(".git").unwrap_or(repo);
    let repository = format!("{owner}/{name}");
    if !issued
        .repositories
        .iter()
        .any(|r| r.eq_ignore_ascii_case(&repository))
        || !repository.eq_ignore_ascii_case(super::REPOSITORY)
    {
        return Some(refused(StatusCode::NOT_FOUND, "Repository not found."));
    }
    None
}

pub(super) async fn info_refs(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = check(&inner, &headers, &owner, &repo) {
        return refusal;
    }
    let query = query.unwrap_or_default();
    if query != "service=git-upload-pack" {
        return refused(
            StatusCode::FORBIDDEN,
            "the stand-in serves fetches (git-upload-pack) only",
        );
    }
    backend(&inner, "GET", "info/refs", &query, &headers, Bytes::new()).await
}

pub(super) async fn upload_pack(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = check(&inner, &headers, &owner, &repo) {
        return refusal;
    }
    backend(&inner, "POST", "git-upload-pack", "", &headers, body).await
}

pub(super) async fn receive_pack() -> Response {
    refused(
        StatusCode::FORBIDDEN,
        "the stand-in serves fetches (git-upload-pack) only",
    )
}

/// One request through `git http-backend` (CGI): the environment it reads, the body on its
/// input, and its CGI answer (headers, `Status:`, a blank line, the body) as the response.
async fn backend(
    inner: &Inner,
    method: &str,
    what: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let dir = &inner.git.dir;
    let (Some(root), Some(name)) = (dir.parent(), dir.file_name()) else {
        return refused(StatusCode::INTERNAL_SERVER_ERROR, "no repository");
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{}/{what}", name.to_string_lossy()))
        .env("REQUEST_METHOD", method)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        // GitHub lets a fetch ask for any commit reachable from a ref, by its sha.
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "uploadpack.allowReachableSHA1InWant")
        .env("GIT_CONFIG_VALUE_0", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let Ok(mut child) = command.spawn() else {
        return refused(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend");
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&body).await;
    }
    let Ok(out) = child.wait_with_output().await else {
        return refused(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend");
    };
    cgi_response(&out.stdout).unwrap_or_else(|| {
        refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            &String::from_utf8_lossy(&out.stderr),
        )
    })
}

fn cgi_response(out: &[u8]) -> Option<Response> {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    let split = split.or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)));
    let (end, gap) = split?;
    let head = std::str::from_utf8(&out[..end]).ok()?;
    let mut status = StatusCode::OK;
    let mut response = Response::new(axum::body::Body::from(out[end + gap..].to_vec()));
    for line in head.lines() {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value.split_whitespace().next()?.parse().ok()?;
        } else if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(name.trim()),
            HeaderValue::try_from(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    *response.status_mut() = status;
    Some(response)
}
