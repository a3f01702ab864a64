//! Issues and comments, labels, and collaborators' permissions.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::{api_url, fixture_error, github_error, knobs, Inner, Page};

#[derive(Deserialize)]
pub(super) struct LabelsRequest {
    labels: Vec<String>,
}

/// Labels on an issue or PR; each shaped like octokit's recorded label (`labels.json`).
pub(super) async fn add_labels(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, number)): Path<(String, String, i64)>,
    Json(req): Json<LabelsRequest>,
) -> Response {
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

#[derive(Deserialize)]
pub(super) struct CommentRequest {
    body: String,
}

/// Recorded: the `comment` of octokit's `issue_comment.created` webhook payload, which is
/// GitHub's issue-comment object.
pub(super) async fn create_comment(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, number)): Path<(String, String, i64)>,
    Json(req): Json<CommentRequest>,
) -> Response {
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
    body["performed_via_github_app"] = super::app_object(&inner);
    if fail_before_write(&inner) {
        return github_error(StatusCode::BAD_GATEWAY, "Server Error");
    }
    comments.push(body.clone());
    drop(comments);
    if fail_after_write(&inner) {
        return github_error(StatusCode::BAD_GATEWAY, "Server Error");
    }
    (StatusCode::CREATED, Json(body)).into_response()
}

/// Whether this write is answered 502 without being made (the `fail_writes` knob).
pub(super) fn fail_before_write(inner: &Inner) -> bool {
    spend(inner, |k| &mut k.fail_writes)
}

/// Whether this write, already made, is answered 502 (the `fail_after_write` knob).
pub(super) fn fail_after_write(inner: &Inner) -> bool {
    spend(inner, |k| &mut k.fail_after_write)
}

/// Takes one from a knob that counts down the requests it applies to.
fn spend(inner: &Inner, counter: impl FnOnce(&mut super::Knobs) -> &mut u32) -> bool {
    let mut knobs = inner.knobs.lock().unwrap_or_else(|p| p.into_inner());
    let left = counter(&mut knobs);
    if *left == 0 {
        return false;
    }
    *left -= 1;
    true
}

/// The comments on an issue or PR, oldest first, paginated as GitHub's.
pub(super) async fn list_comments(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, number)): Path<(String, String, i64)>,
    Query(page): Query<Page>,
) -> Response {
    let all: Vec<Value> = inner
        .comments
        .lock()
        .map(|c| {
            c.iter()
                .filter(|c| c["issue_number"] == number)
                .map(|c| {
                    let mut c = c.clone();
                    // Not a field of GitHub's: the stand-in's own bookkeeping.
                    if let Some(o) = c.as_object_mut() {
                        o.remove("issue_number");
                    }
                    c
                })
                .collect()
        })
        .unwrap_or_default();
    let url = api_url(&inner, &owner, &repo, &format!("issues/{number}/comments"));
    let (slice, link) = page.slice(&all, &url);
    let mut response = Json(slice).into_response();
    if let Some(v) = link.and_then(|l| l.parse().ok()) {
        response.headers_mut().insert("link", v);
    }
    response
}

/// GitHub's documented example (admin); the login and permission come from the
/// `permissions` knob.
pub(super) async fn collaborator_permission(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, login)): Path<(String, String, String)>,
) -> Response {
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
    // `permission` is the coarse base level; `role_name` the role's own name: a built-in
    // one (maintain, triage) or an organisation's custom role (`deployer/write` in the knob:
    // named `deployer`, based on write).
    let (role, base) = match permission.split_once('/') {
        Some((role, base)) => (role.to_string(), base.to_string()),
        None => {
            let base = match permission.as_str() {
                "maintain" => "write",
                "triage" => "read",
                p => p,
            };
            (permission.clone(), base.to_string())
        }
    };
    body["permission"] = Value::from(base);
    body["role_name"] = Value::from(role.clone());
    body["user"]["role_name"] = Value::from(role);
    body["user"]["login"] = Value::from(login);
    Json(body).into_response()
}

/// GitHub's documented example of a commit comment, on the commit asked about (404 for a
/// commit the repository does not have).
pub(super) async fn create_commit_comment(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    Json(req): Json<CommentRequest>,
) -> Response {
    if inner
        .git
        .git(&["cat-file", "-e", &format!("{sha}^{{commit}}")], None)
        .is_err()
    {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let mut body = match inner.fixtures.example(
        "POST",
        "/repos/{owner}/{repo}/commits/{commit_sha}/comments",
        201,
        "default",
    ) {
        Ok(b) => b,
        Err(e) => return fixture_error(e),
    };
    let mut comments = inner.comments.lock().unwrap_or_else(|p| p.into_inner());
    body["id"] = Value::from(9000 + comments.len() as i64);
    body["body"] = Value::from(req.body);
    body["commit_id"] = Value::from(sha.clone());
    body["path"] = Value::Null;
    body["position"] = Value::Null;
    body["line"] = Value::Null;
    body["url"] = Value::from(api_url(
        &inner,
        &owner,
        &repo,
        &format!("comments/{}", body["id"]),
    ));
    let mut recorded = body.clone();
    recorded["commit_sha"] = Value::from(sha);
    comments.push(recorded);
    (StatusCode::CREATED, Json(body)).into_response()
}
