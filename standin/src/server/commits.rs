//! Commits as GitHub's REST API shows them, read from the stand-in's own git repository:
//! `GET /repos/{o}/{r}/compare/{base}...{head}` (the commits between, oldest first) and
//! `GET /repos/{o}/{r}/commits/{ref}` (one commit with its files and their patches). The
//! shapes are those of the OpenAPI description's "Commit Comparison" and "Commit"
//! (fixtures/github-openapi/rest-subset.json), for the fields a client reads.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{github_error, Inner};
use crate::git::GitRepo;

/// Git's empty tree: what a root commit is compared with.
const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
/// GitHub lists at most 250 commits in a comparison.
const MAX_COMMITS: usize = 250;

fn commit_summary(git: &GitRepo, sha: &str) -> Option<Value> {
    let raw = git
        .git(
            &[
                "show",
                "-s",
                "--format=%H%x00%P%x00%an%x00%ae%x00%aI%x00%B",
                sha,
            ],
            None,
        )
        .ok()?;
    let mut parts = raw.splitn(6, '\0');
    let sha = parts.next()?.to_string();
    let parents: Vec<Value> = parts
        .next()?
        .split_whitespace()
        .map(|p| json!({"sha": p}))
        .collect();
    let (name, email, date) = (parts.next()?, parts.next()?, parts.next()?);
    let message = parts.next().unwrap_or_default().trim_end();
    Some(json!({
        "sha": sha,
        "node_id": format!("C_{}", &sha[..12]),
        "commit": {
            "author": {"name": name, "email": email, "date": date},
            "committer": {"name": name, "email": email, "date": date},
            "message": message,
        },
        // The author's GitHub account: the stand-in knows none.
        "author": null,
        "parents": parents,
    }))
}

/// The files a commit changed against its first parent, as GitHub lists them: each with its
/// status and, for text, its `patch` (the hunks, without the diff's header lines). A file
/// moved is `renamed`, with its `previous_filename`, as GitHub detects renames (and a patch
/// only when its content changed too).
fn files(git: &GitRepo, sha: &str, parent: Option<&str>) -> Option<Vec<Value>> {
    let base = parent.unwrap_or(EMPTY_TREE);
    // As git wrote it: a diff's trailing blank context and carriage returns are content.
    let diff = git
        .git_untrimmed(&[
            "-c",
            "core.quotePath=false",
            "diff",
            "--no-color",
            "-M",
            "--no-ext-diff",
            base,
            sha,
        ])
        .ok()?;
    let mut out = Vec::new();
    for section in diff.split("\ndiff --git ").filter(|s| !s.is_empty()) {
        let section = section.strip_prefix("diff --git ").unwrap_or(section);
        let section = section.strip_suffix('\n').unwrap_or(section);
        let mut lines = section.split('\n');
        let header = lines.next()?;
        // `a/P b/P`, the same path twice: the second half (a rename names its paths below).
        let mut filename = header
            .get(header.len() / 2 + 1..)
            .and_then(|h| h.strip_prefix("b/"))
            .unwrap_or_default()
            .to_string();
        let mut status = "modified";
        let mut previous = None;
        let mut patch = Vec::new();
        let mut binary = false;
        let mut in_hunks = false;
        for line in lines {
            if in_hunks {
                patch.push(line);
            } else if line.starts_with("new file mode") {
                status = "added";
            } else if line.starts_with("deleted file mode") {
                status = "removed";
            } else if let Some(from) = line.strip_prefix("rename from ") {
                status = "renamed";
                previous = Some(from.to_string());
            } else if let Some(to) = line.strip_prefix("rename to ") {
                filename = to.to_string();
            } else if line.starts_with("Binary files") {
                binary = true;
            } else if line.starts_with("@@") {
                in_hunks = true;
                patch.push(line);
            }
        }
        if filename.is_empty() {
            return None;
        }
        let added = patch.iter().filter(|l| l.starts_with('+')).count();
        let deleted = patch.iter().filter(|l| l.starts_with('-')).count();
        let mut file = json!({
            "sha": null,
            "filename": filename,
            "status": status,
            "additions": added,
            "deletions": deleted,
            "changes": added + deleted,
        });
        if let Some(previous) = previous {
            file["previous_filename"] = json!(previous);
        }
        // Binary files have no patch, as on GitHub.
        if !binary && !patch.is_empty() {
            file["patch"] = json!(patch.join("\n"));
        }
        out.push(file);
    }
    Some(out)
}

pub(super) async fn commit(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, git_ref)): Path<(String, String, String)>,
) -> Response {
    let Some(sha) = inner.git.rev_parse(&format!("{git_ref}^{{commit}}")) else {
        return github_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("No commit found for SHA: {git_ref}"),
        );
    };
    let Some(mut commit) = commit_summary(&inner.git, &sha) else {
        return github_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "stand-in: git show failed",
        );
    };
    let parent = commit["parents"][0]["sha"].as_str().map(str::to_string);
    let Some(files) = files(&inner.git, &sha, parent.as_deref()) else {
        return github_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "stand-in: git diff failed",
        );
    };
    let (added, deleted) = files.iter().fold((0, 0), |(a, d), f| {
        (
            a + f["additions"].as_u64().unwrap_or(0),
            d + f["deletions"].as_u64().unwrap_or(0),
        )
    });
    commit["stats"] = json!({"additions": added, "deletions": deleted, "total": added + deleted});
    commit["files"] = json!(files);
    Json(commit).into_response()
}

pub(super) async fn compare(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, basehead)): Path<(String, String, String)>,
) -> Response {
    let Some((base, head)) = basehead.split_once("...") else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let resolve = |r: &str| inner.git.rev_parse(&format!("{r}^{{commit}}"));
    let (Some(base), Some(head)) = (resolve(base), resolve(head)) else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let count = |range: &str| -> usize {
        inner
            .git
            .git(&["rev-list", "--count", range], None)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let ahead = count(&format!("{base}..{head}"));
    let behind = count(&format!("{head}..{base}"));
    let status = match (ahead, behind) {
        (0, 0) => "identical",
        (_, 0) => "ahead",
        (0, _) => "behind",
        _ => "diverged",
    };
    let listed = inner
        .git
        .git(
            &[
                "rev-list",
                "--reverse",
                "--topo-order",
                &format!("{base}..{head}"),
            ],
            None,
        )
        .unwrap_or_default();
    let commits: Vec<Value> = listed
        .lines()
        .take(MAX_COMMITS)
        .filter_map(|sha| commit_summary(&inner.git, sha))
        .collect();
    Json(json!({
        "status": status,
        "ahead_by": ahead,
        "behind_by": behind,
        "total_commits": ahead,
        "base_commit": commit_summary(&inner.git, &base),
        "merge_base_commit": inner
            .git
            .git(&["merge-base", &base, &head], None)
            .ok()
            .and_then(|sha| commit_summary(&inner.git, &sha)),
        "commits": commits,
        "files": files(&inner.git, &head, Some(&base)).unwrap_or_default(),
    }))
    .into_response()
}
