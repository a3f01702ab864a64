//! Pull requests: create, list, read, merge (with GitHub's refusals), reviewers.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::checks;
use super::git_data::git_failed;
use super::{api_url, fixture_error, github_error, knobs, rfc3339_in, Inner};

#[derive(Deserialize)]
pub(super) struct PullRequest {
    title: String,
    head: String,
    base: String,
    #[serde(default)]
    body: Option<String>,
}

/// Recorded: octocrab `pull_requests_list.json`. A second open PR for the same head is
/// GitHub's 422 "A pull request already exists".
pub(super) async fn create_pull(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    Json(req): Json<PullRequest>,
) -> Response {
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
    // Opened with an installation token: by the App's bot account, as on GitHub.
    body["user"]["login"] = Value::from("selfheal[bot]");
    body["user"]["type"] = Value::from("Bot");
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
pub(super) struct PullsQuery {
    #[serde(default)]
    head: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

pub(super) async fn list_pulls(
    State(inner): State<Arc<Inner>>,
    axum::extract::Query(q): axum::extract::Query<PullsQuery>,
) -> Response {
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

pub(super) async fn get_pull(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, number)): Path<(String, String, i64)>,
) -> Response {
    let pulls = inner.pulls.lock().map(|p| p.clone()).unwrap_or_default();
    let Some(pr) = pulls.into_iter().find(|p| p["number"] == number) else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    Json(shown(&inner, pr)).into_response()
}

/// A pull request as GitHub shows one (the full `pull-request` shape): its diff's counts,
/// commits and comments, and whether it can merge now, computed like the merge itself.
fn shown(inner: &Inner, mut pr: Value) -> Value {
    let number = pr["number"].as_i64().unwrap_or_default();
    let head = pr["head"]["sha"].as_str().unwrap_or_default().to_string();
    let base = pr["base"]["ref"].as_str().unwrap_or("master").to_string();
    let base_sha = inner.git.rev_parse(&format!("refs/heads/{base}"));
    let (mut additions, mut deletions, mut files, mut commits) = (0, 0, 0, 0);
    if let Some(base_sha) = &base_sha {
        if let Ok(merge_base) = inner.git.git(&["merge-base", base_sha, &head], None) {
            let numstat = inner
                .git
                .git(
                    &["diff", "--no-renames", "--numstat", &merge_base, &head],
                    None,
                )
                .unwrap_or_default();
            for line in numstat.lines() {
                let mut c = line.split('\t');
                additions += c.next().and_then(|n| n.parse::<i64>().ok()).unwrap_or(0);
                deletions += c.next().and_then(|n| n.parse::<i64>().ok()).unwrap_or(0);
                files += 1;
            }
            commits = inner
                .git
                .git(
                    &["rev-list", "--count", &format!("{merge_base}..{head}")],
                    None,
                )
                .ok()
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or(0);
        }
    }
    let comments = inner
        .comments
        .lock()
        .map(|c| c.iter().filter(|c| c["issue_number"] == number).count())
        .unwrap_or(0);
    pr["additions"] = Value::from(additions);
    pr["deletions"] = Value::from(deletions);
    pr["changed_files"] = Value::from(files);
    pr["commits"] = Value::from(commits);
    pr["comments"] = Value::from(comments);
    pr["review_comments"] = Value::from(0);
    pr["maintainer_can_modify"] = Value::from(false);
    if pr.get("merged_by").is_none() {
        pr["merged_by"] = Value::Null;
    }
    pr["mergeable"] = Value::Null;
    pr["mergeable_state"] = Value::from("unknown");
    if let (true, Some(base_sha)) = (pr["state"] == "open", base_sha) {
        let clean = matches!(inner.git.merge_tree(&base_sha, &head), Ok(Some(_)));
        let state = if !clean {
            "dirty"
        } else {
            match unmergeable(inner, number, &head, &base_sha) {
                Some(why) if why.contains("not up to date") => "behind",
                Some(_) => "blocked",
                None => "clean",
            }
        };
        pr["mergeable"] = Value::from(clean);
        pr["mergeable_state"] = Value::from(state);
    }
    pr
}

#[derive(Deserialize)]
pub(super) struct MergeRequest {
    #[serde(default)]
    merge_method: Option<String>,
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    commit_title: Option<String>,
}

/// Why GitHub would not merge pull request `pr` into its base at `base_sha` now (405, with
/// GitHub's wording), under the `protection` knob.
fn unmergeable(inner: &Inner, number: i64, head_sha: &str, base_sha: &str) -> Option<String> {
    let k = knobs(inner);
    let protection = k.protection.unwrap_or_default();
    let outcomes = checks::outcomes(inner, head_sha);
    for name in &protection.required_checks {
        match outcomes.iter().find(|(n, _)| n == name) {
            None => return Some(format!("Required status check \"{name}\" is expected.")),
            Some((_, false)) => {
                return Some(format!("Required status check \"{name}\" is failing."))
            }
            Some((_, true)) => {}
        }
    }
    if protection.required_review && !k.approved_pulls.contains(&number) {
        return Some(
            "At least 1 approving review is required by reviewers with write access.".into(),
        );
    }
    if protection.strict && !inner.git.is_ancestor(base_sha, head_sha) {
        return Some("Head branch is not up to date with the base branch.".into());
    }
    None
}

/// GitHub's documented example (`merged`, `message`, `sha`). The merge is real, on the
/// bare repository: a three-way merge of the head into the base as it is now (a conflict is
/// 405), committed as a squash (one parent) or a merge (two). GitHub's refusals: a closed or
/// unmergeable PR (branch protection: required checks, review, up to date) is 405; a `sha`
/// that is not the head's is 409.
pub(super) async fn merge_pull(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, number)): Path<(String, String, i64)>,
    Json(req): Json<MergeRequest>,
) -> Response {
    let answer = merge_now(&inner, number, req);
    let delay = knobs(&inner).merge_answer_delay_ms;
    if answer.status().is_success() && delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    answer
}

fn merge_now(inner: &Inner, number: i64, req: MergeRequest) -> Response {
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
    let method = req.merge_method.unwrap_or_else(|| "merge".into());
    if !matches!(method.as_str(), "merge" | "squash" | "rebase") {
        return github_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request.\n\nmerge_method must be one of merge, squash, rebase.",
        );
    }
    // The head is the branch as it is now, not as the PR was last seen.
    let head_ref = pr["head"]["ref"].as_str().unwrap_or_default().to_string();
    let Some(head_sha) = inner.git.exact_ref(&format!("refs/heads/{head_ref}")) else {
        return github_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Pull Request is not mergeable",
        );
    };
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
    if let Some(why) = unmergeable(inner, number, &head_sha, &base_sha) {
        return github_error(StatusCode::METHOD_NOT_ALLOWED, &why);
    }
    let tree = match inner.git.merge_tree(&base_sha, &head_sha) {
        Ok(Some(tree)) => tree,
        Ok(None) => {
            return github_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Pull Request is not mergeable",
            )
        }
        Err(e) => return git_failed(e),
    };
    // A squash or a rebase of the PR's commits leaves one parent (the stand-in writes a
    // rebase as one commit: the tree is the same); a merge two.
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
    // Compare-and-swap on the base: a push that landed meanwhile makes this one fail, as
    // GitHub's would, instead of being overwritten.
    if let Err(e) = inner.git.git(
        &[
            "update-ref",
            &format!("refs/heads/{base}"),
            &merged,
            &base_sha,
        ],
        None,
    ) {
        return github_error(
            StatusCode::CONFLICT,
            &format!("Base branch was modified: {e}"),
        );
    }
    pr["state"] = Value::from("closed");
    pr["merged"] = Value::from(true);
    pr["merged_by"] = pr["user"].clone();
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

#[derive(Deserialize, Default)]
pub(super) struct UpdateBranchRequest {
    #[serde(default)]
    expected_head_sha: Option<String>,
}

/// `PUT /pulls/{n}/update-branch`: the base merged into the head branch (a real merge
/// commit on the head; a conflict is refused), answered 202 as GitHub documents. GitHub's
/// 422s: an `expected_head_sha` that is not the head, nothing new on the base, a conflict.
pub(super) async fn update_branch(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, number)): Path<(String, String, i64)>,
    body: axum::body::Bytes,
) -> Response {
    let req: UpdateBranchRequest = serde_json::from_slice(&body).unwrap_or_default();
    let mut pulls = inner.pulls.lock().unwrap_or_else(|p| p.into_inner());
    let Some(pr) = pulls.iter_mut().find(|p| p["number"] == number) else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let unprocessable = |m: &str| github_error(StatusCode::UNPROCESSABLE_ENTITY, m);
    if pr["state"] != "open" {
        return unprocessable("Pull request is closed.");
    }
    let head_ref = pr["head"]["ref"].as_str().unwrap_or_default().to_string();
    let head_sha = pr["head"]["sha"].as_str().unwrap_or_default().to_string();
    if req
        .expected_head_sha
        .as_deref()
        .is_some_and(|s| s != head_sha)
    {
        return unprocessable("expected head sha didn't match current head ref.");
    }
    let base = pr["base"]["ref"].as_str().unwrap_or("master").to_string();
    let Some(base_sha) = inner.git.rev_parse(&format!("refs/heads/{base}")) else {
        return unprocessable("base branch does not exist");
    };
    if inner.git.is_ancestor(&base_sha, &head_sha) {
        return unprocessable("There are no new commits on the base branch.");
    }
    let tree = match inner.git.merge_tree(&head_sha, &base_sha) {
        Ok(Some(tree)) => tree,
        Ok(None) => return unprocessable("merge conflict between base and head"),
        Err(e) => return git_failed(e),
    };
    let message = format!("Merge branch '{base}' into {head_ref}");
    let merged = match inner.git.commit_tree(
        &tree,
        &[head_sha.clone(), base_sha],
        &message,
        "GitHub",
        "noreply@github.com",
    ) {
        Ok(s) => s,
        Err(e) => return git_failed(e),
    };
    if let Err(e) = inner.git.git(
        &[
            "update-ref",
            &format!("refs/heads/{head_ref}"),
            &merged,
            &head_sha,
        ],
        None,
    ) {
        return unprocessable(&format!("head branch was modified: {e}"));
    }
    pr["head"]["sha"] = Value::from(merged);
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "message": "Updating pull request branch.",
            "url": pr["html_url"].clone(),
        })),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct ReviewersRequest {
    #[serde(default)]
    reviewers: Vec<String>,
    #[serde(default)]
    team_reviewers: Vec<String>,
}

/// GitHub answers with the pull request, its `requested_reviewers` filled in.
pub(super) async fn request_reviewers(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, number)): Path<(String, String, i64)>,
    Json(req): Json<ReviewersRequest>,
) -> Response {
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
pub(super) struct UpdatePull {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    body: Option<String>,
}

/// `PATCH /pulls/{n}`: state (`open`/`closed`), title, body; a merged PR cannot be reopened
/// (GitHub's 422). Answers with the pull request.
pub(super) async fn update_pull(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, number)): Path<(String, String, i64)>,
    Json(req): Json<UpdatePull>,
) -> Response {
    let mut pulls = inner.pulls.lock().unwrap_or_else(|p| p.into_inner());
    let Some(pr) = pulls.iter_mut().find(|p| p["number"] == number) else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    if let Some(state) = req.state {
        if !matches!(state.as_str(), "open" | "closed") {
            return github_error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
        }
        if pr["merged"] == true && state == "open" {
            return github_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Validation Failed: a merged pull request cannot be reopened",
            );
        }
        pr["state"] = Value::from(state.as_str());
        pr["closed_at"] = if state == "closed" {
            Value::from(rfc3339_in(0))
        } else {
            Value::Null
        };
    }
    if let Some(title) = req.title {
        pr["title"] = Value::from(title);
    }
    if let Some(body) = req.body {
        pr["body"] = Value::from(body);
    }
    let pr = pr.clone();
    drop(pulls);
    Json(shown(&inner, pr)).into_response()
}
