//! The Git Data API (blobs, trees, commits, refs), written into a real bare repository.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{api_url, fixture_error, github_error, knobs, Inner};

pub(super) fn git_failed(e: crate::git::GitError) -> Response {
    github_error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string())
}

/// GitHub's documented example, filled in from the bare repository's commit.
pub(super) async fn git_commit(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
) -> Response {
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
    // Signed by GitHub: what the app committed as itself, and GitHub's own merges.
    let author = raw
        .lines()
        .find_map(|l| l.strip_prefix("author "))
        .and_then(|a| a.split(" <").next())
        .unwrap_or_default();
    body["verification"] = if matches!(author, "GitHub" | "selfheal[bot]") {
        json!({"verified": true, "reason": "valid", "signature": "-----BEGIN PGP SIGNATURE-----\nstand-in\n-----END PGP SIGNATURE-----", "payload": null})
    } else {
        json!({"verified": false, "reason": "unsigned", "signature": null, "payload": null})
    };
    Json(body).into_response()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn fill_commit(
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
pub(super) struct BlobRequest {
    content: String,
    #[serde(default)]
    encoding: Option<String>,
}

/// GitHub's documented example; the blob is written into the bare repository.
pub(super) async fn git_blob(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    Json(req): Json<BlobRequest>,
) -> Response {
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
pub(super) struct TreeRequest {
    #[serde(default)]
    base_tree: Option<String>,
    tree: Vec<TreeEntry>,
}

#[derive(Deserialize)]
pub(super) struct TreeEntry {
    path: String,
    mode: String,
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    content: Option<String>,
}

/// GitHub's documented example; the tree is written into the bare repository.
pub(super) async fn git_tree(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    Json(req): Json<TreeRequest>,
) -> Response {
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
pub(super) struct CommitRequest {
    message: String,
    tree: String,
    #[serde(default)]
    parents: Vec<String>,
    #[serde(default)]
    author: Option<Value>,
    #[serde(default)]
    committer: Option<Value>,
}

/// GitHub's documented example; the commit is written into the bare repository. A
/// commit an app makes through the API, without its own author, is signed by GitHub.
pub(super) async fn git_create_commit(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    Json(req): Json<CommitRequest>,
) -> Response {
    // GitHub signs what an app commits as itself; a commit given its own author or
    // committer is the client's, and unsigned.
    let signed = req.author.is_none() && req.committer.is_none();
    let (name, email) = match &req.author {
        Some(a) => (
            a["name"].as_str().unwrap_or("unknown").to_string(),
            a["email"]
                .as_str()
                .unwrap_or("unknown@example.com")
                .to_string(),
        ),
        None => (
            "selfheal[bot]".to_string(),
            "selfheal[bot]@users.noreply.github.com".to_string(),
        ),
    };
    let sha = match inner
        .git
        .commit_tree(&req.tree, &req.parents, &req.message, &name, &email)
    {
        Ok(s) => s,
        Err(e) => return git_failed(e),
    };
    let delay = knobs(&inner).commits_delay_ms;
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
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
    body["verification"] = if signed {
        json!({"verified": true, "reason": "valid", "signature": "-----BEGIN PGP SIGNATURE-----\nstand-in\n-----END PGP SIGNATURE-----", "payload": null})
    } else {
        json!({"verified": false, "reason": "unsigned", "signature": null, "payload": null})
    };
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Deserialize)]
pub(super) struct RefRequest {
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
}

pub(super) fn ref_body(inner: &Inner, owner: &str, repo: &str, git_ref: &str, sha: &str) -> Value {
    json!({
        "ref": git_ref,
        "node_id": "MDM6UmVmcmVmcy9oZWFkcy9mZWF0dXJlQQ==",
        "url": api_url(inner, owner, repo, &format!("git/{git_ref}")),
        "object": {"type": "commit", "sha": sha, "url": api_url(inner, owner, repo, &format!("git/commits/{sha}"))}
    })
}

/// An existing ref is 422, as GitHub's.
pub(super) async fn git_create_ref(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    Json(req): Json<RefRequest>,
) -> Response {
    // GitHub: a fully qualified name with at least two slashes (`refs/heads/x`).
    if !req.git_ref.starts_with("refs/") || req.git_ref.matches('/').count() < 2 {
        return github_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Reference name is not valid",
        );
    }
    if inner.git.exact_ref(&req.git_ref).is_some() {
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

pub(super) async fn git_get_ref(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, git_ref)): Path<(String, String, String)>,
) -> Response {
    let full = format!("refs/{git_ref}");
    match inner.git.exact_ref(&full) {
        Some(sha) => Json(ref_body(&inner, &owner, &repo, &full, &sha)).into_response(),
        None => github_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

#[derive(Deserialize)]
pub(super) struct UpdateRefRequest {
    sha: String,
    #[serde(default)]
    force: bool,
}

/// Recorded: octokit `git-refs.json` (PATCH …/git/refs/heads/test). Not a fast-forward
/// without `force` is GitHub's 422.
pub(super) async fn git_update_ref(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, git_ref)): Path<(String, String, String)>,
    Json(req): Json<UpdateRefRequest>,
) -> Response {
    let full = format!("refs/{git_ref}");
    let Some(old) = inner.git.exact_ref(&full) else {
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

/// `DELETE /git/refs/{ref}`: 204, or GitHub's 422 for a ref that does not exist. A pull
/// request whose head branch is deleted is closed, as on GitHub.
pub(super) async fn git_delete_ref(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, git_ref)): Path<(String, String, String)>,
) -> Response {
    let full = format!("refs/{git_ref}");
    let Some(old) = inner.git.exact_ref(&full) else {
        return github_error(StatusCode::UNPROCESSABLE_ENTITY, "Reference does not exist");
    };
    if let Err(e) = inner.git.git(&["update-ref", "-d", &full, &old], None) {
        return git_failed(e);
    }
    if let Ok(mut pulls) = inner.pulls.lock() {
        for p in pulls.iter_mut().filter(|p| {
            p["state"] == "open" && p["head"]["ref"] == git_ref.trim_start_matches("heads/")
        }) {
            p["state"] = Value::from("closed");
        }
    }
    StatusCode::NO_CONTENT.into_response()
}
