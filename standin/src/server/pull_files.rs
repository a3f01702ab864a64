//! `GET /repos/{owner}/{repo}/pulls/{number}/files`: the files a pull request changes, as
//! GitHub lists them (the diff of its head against the merge base with its base branch), from
//! the stand-in's real git repository. Paginated like GitHub's: `per_page` (default 30, at
//! most 100), `page`, and a `Link` header naming the next page while there is one. Shape:
//! GitHub's OpenAPI description (`fixtures/github-openapi/pulls-files.json`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{github_error, Inner, Page};
use crate::git::GitRepo;

pub(crate) async fn pull_files(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, number)): Path<(String, String, i64)>,
    Query(page): Query<Page>,
) -> Response {
    let pr = inner
        .pulls
        .lock()
        .ok()
        .and_then(|p| p.iter().find(|p| p["number"] == number).cloned());
    let Some(pr) = pr else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let head = pr["head"]["sha"].as_str().unwrap_or_default().to_string();
    let base = pr["base"]["ref"].as_str().unwrap_or("master").to_string();
    let files = match files(&inner.git, &base, &head, &format!("{owner}/{repo}")) {
        Ok(f) => f,
        Err(e) => return github_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let url = format!(
        "{}/repos/{owner}/{repo}/pulls/{number}/files",
        inner.base_url
    );
    let (slice, link) = page.slice(&files, &url);
    let mut response = Json(slice).into_response();
    if let Some(v) = link.and_then(|l| l.parse().ok()) {
        response.headers_mut().insert("link", v);
    }
    response
}

fn files(git: &GitRepo, base: &str, head: &str, repo: &str) -> Result<Vec<Value>, String> {
    let merge_base = git
        .git(&["merge-base", base, head], None)
        .map_err(|e| e.to_string())?;
    let status = git
        .git(
            &["diff", "--no-renames", "--name-status", &merge_base, head],
            None,
        )
        .map_err(|e| e.to_string())?;
    let numstat = git
        .git(
            &["diff", "--no-renames", "--numstat", &merge_base, head],
            None,
        )
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (line, counts) in status.lines().zip(numstat.lines()) {
        let (code, path) = line.split_once('\t').unwrap_or(("M", line));
        let mut c = counts.split('\t');
        let additions = c.next().and_then(|n| n.parse::<i64>().ok());
        let deletions = c.next().and_then(|n| n.parse::<i64>().ok());
        let status = match code {
            "A" => "added",
            "D" => "removed",
            _ => "modified",
        };
        let side = if status == "removed" {
            &merge_base
        } else {
            head
        };
        let sha = git
            .git(&["rev-parse", &format!("{side}:{path}")], None)
            .unwrap_or_default();
        let mut file = json!({
            "sha": sha,
            "filename": path,
            "status": status,
            "additions": additions.unwrap_or(0),
            "deletions": deletions.unwrap_or(0),
            "changes": additions.unwrap_or(0) + deletions.unwrap_or(0),
            "blob_url": format!("https://github.com/{repo}/blob/{head}/{path}"),
            "raw_url": format!("https://github.com/{repo}/raw/{head}/{path}"),
            "contents_url": format!("https://api.github.com/repos/{repo}/contents/{path}?ref={head}"),
        });
        // Binary files have no counts and, as on GitHub, no `patch`.
        if additions.is_some() {
            let diff = git
                .git(
                    &["diff", "--no-renames", &merge_base, head, "--", path],
                    None,
                )
                .map_err(|e| e.to_string())?;
            if let Some(at) = diff.find("\n@@") {
                file["patch"] = Value::from(&diff[at + 1..]);
            }
        }
        out.push(file);
    }
    Ok(out)
}
