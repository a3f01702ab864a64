//! What selfheal's pull request holds right now, read from GitHub when a merge is decided:
//! its head, the files it changes and the checks on that head. A merge is judged on this, not
//! on what selfheal recorded pushing, because anyone with write access can push to the branch.

use selfheal_shared::github::Installation;
use serde::Deserialize;
use serde_json::{json, Value};

use super::download::api_error;
use super::StageError;

pub use selfheal_shared::runs::last_pushed;

/// One entry of `GET /repos/{owner}/{repo}/pulls/{n}/files`, the fields selfheal reads.
#[derive(Debug, Clone, Deserialize)]
pub struct PrFile {
    pub filename: String,
    pub status: String,
    pub additions: i64,
    pub deletions: i64,
    /// Absent for binary files and for diffs too large for GitHub to show.
    #[serde(default)]
    pub patch: Option<String>,
    #[serde(default)]
    pub previous_filename: Option<String>,
}

/// Every file the pull request changes, all pages (GitHub lists at most 3,000).
pub async fn pr_files(
    crab: &Installation,
    repo: &str,
    number: i32,
) -> Result<Vec<PrFile>, StageError> {
    let what = format!("PR #{number}'s files");
    let items = all_pages(
        crab,
        &format!("/repos/{repo}/pulls/{number}/files"),
        None,
        &[],
        &what,
        30,
    )
    .await?;
    serde_json::from_value(Value::Array(items))
        .map_err(|e| StageError::Permanent(format!("{what} are unreadable: {e}")))
}

/// The pull request's change as one unified diff, for the guard and the line count.
pub fn as_diff(files: &[PrFile]) -> String {
    let mut out = String::new();
    for f in files {
        let old = f.previous_filename.as_deref().unwrap_or(&f.filename);
        let from = if f.status == "added" {
            "/dev/null".to_string()
        } else {
            format!("a/{old}")
        };
        let to = if f.status == "removed" {
            "/dev/null".to_string()
        } else {
            format!("b/{}", f.filename)
        };
        out.push_str(&format!(
            "diff --git a/{old} b/{}\n--- {from}\n+++ {to}\n",
            f.filename
        ));
        if let Some(patch) = &f.patch {
            out.push_str(patch);
            out.push('\n');
        }
    }
    out
}

/// Every path the pull request touches, a rename's old name included.
pub fn touched_paths(files: &[PrFile]) -> Vec<String> {
    let mut paths: Vec<String> = files
        .iter()
        .flat_map(|f| std::iter::once(f.filename.clone()).chain(f.previous_filename.clone()))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Files whose change GitHub does not show (binary, or too large): nobody can judge them.
pub fn unreadable_paths(files: &[PrFile]) -> Vec<String> {
    files
        .iter()
        // A pure rename has no patch and needs none; anything else without one is opaque.
        .filter(|f| f.patch.is_none() && !(f.status == "renamed" && f.additions + f.deletions == 0))
        .map(|f| f.filename.clone())
        .collect()
}

/// The checks on a commit: GitHub Actions workflow runs, check runs and commit statuses.
#[derive(Debug, Clone)]
pub struct Checks {
    /// Workflow runs not completed yet (their check runs may not exist yet).
    pub running_workflows: Vec<String>,
    /// `{"name", "status", "conclusion"}` for every check run and commit status.
    pub all: Vec<Value>,
}

impl Checks {
    pub fn pending(&self) -> Vec<&str> {
        self.all
            .iter()
            .filter(|c| c["status"] != "completed")
            .filter_map(|c| c["name"].as_str())
            .collect()
    }

    pub fn failed(&self) -> Vec<&str> {
        self.all
            .iter()
            .filter(|c| c["status"] == "completed")
            .filter(|c| {
                !matches!(
                    c["conclusion"].as_str(),
                    Some("success" | "neutral" | "skipped")
                )
            })
            .filter_map(|c| c["name"].as_str())
            .collect()
    }

    /// Every check completed and passed, and there was at least one.
    pub fn green(&self) -> bool {
        self.running_workflows.is_empty()
            && self.pending().is_empty()
            && self.failed().is_empty()
            && !self.all.is_empty()
    }
}

/// Statuses of a context `.github/selfheal.yml` pins to a login (`external_statuses`) count
/// only as that login posted them. The combined status keeps the latest status of each context
/// from anyone who may write statuses, so a green one someone else posted would hide the real
/// CI's red (or its silence). Until the pinned login reports, the context is still running,
/// whether anyone else posted under it or nobody did.
pub async fn pin_statuses(
    crab: &Installation,
    repo: &str,
    head: &str,
    pins: &std::collections::BTreeMap<String, String>,
    checks: &mut Checks,
) -> Result<(), StageError> {
    if pins.is_empty() {
        return Ok(());
    }
    // Newest first, as GitHub lists them.
    let posted = all_pages(
        crab,
        &format!("/repos/{repo}/commits/{head}/statuses"),
        None,
        &[],
        "the fix's statuses",
        10,
    )
    .await?;
    for (context, login) in pins {
        let theirs = posted.iter().find(|s| {
            s["context"] == context.as_str()
                && s["creator"]["login"]
                    .as_str()
                    .is_some_and(|l| same_login(l, login))
        });
        let (status, conclusion) = match theirs.and_then(|s| s["state"].as_str()) {
            Some("success") => ("completed", Value::from("success")),
            Some("failure" | "error") => ("completed", Value::from("failure")),
            // Not reported by its poster (yet): the repository's CI still has to speak.
            _ => ("in_progress", Value::Null),
        };
        let entry = json!({"name": context, "status": status, "conclusion": conclusion,
                           "kind": "status", "posted_by": login});
        match checks
            .all
            .iter()
            .position(|c| c["kind"] == "status" && c["name"] == context.as_str())
        {
            Some(i) => checks.all[i] = entry,
            None => checks.all.push(entry),
        }
    }
    Ok(())
}

/// A pinned login matches its poster, GitHub Apps' `[bot]` suffix or not, in any case.
fn same_login(poster: &str, pinned: &str) -> bool {
    let bare = |l: &str| l.trim_end_matches("[bot]").to_ascii_lowercase();
    bare(poster) == bare(pinned)
}

/// Every item of a paginated list, all pages: a red check or a protected file on page two
/// counts as much as one on page one. Each page is `key` of the answer, or the answer itself
/// when it is a list; GitHub's `total_count`, where given, ends the walk early.
pub async fn all_pages(
    crab: &Installation,
    path: &str,
    key: Option<&str>,
    query: &[(&str, &str)],
    what: &str,
    max_pages: usize,
) -> Result<Vec<Value>, StageError> {
    const PAGE: usize = 100;
    let mut items: Vec<Value> = Vec::new();
    for page in 1..=max_pages {
        let page = page.to_string();
        let mut q: Vec<(&str, &str)> = query.to_vec();
        q.extend([("per_page", "100"), ("page", page.as_str())]);
        let answer: Value = crab
            .get(path, Some(&q))
            .await
            .map_err(|e| api_error(e, what))?;
        let batch = match key {
            Some(key) => &answer[key],
            None => &answer,
        }
        .as_array()
        .cloned()
        .unwrap_or_default();
        let n = batch.len();
        items.extend(batch);
        let total = answer["total_count"].as_u64();
        if n < PAGE || total.is_some_and(|t| items.len() as u64 >= t) {
            return Ok(items);
        }
    }
    Err(StageError::Permanent(format!(
        "{what}: more than {} entries; selfheal does not judge that many",
        PAGE * max_pages
    )))
}

pub async fn checks_on(crab: &Installation, repo: &str, head: &str) -> Result<Checks, StageError> {
    // A workflow that has not created its check runs yet shows only here: without this, the
    // first workflow to finish could see "all green" and merge early.
    let running_workflows = all_pages(
        crab,
        &format!("/repos/{repo}/actions/runs"),
        Some("workflow_runs"),
        &[("head_sha", head)],
        "the fix's workflow runs",
        10,
    )
    .await?
    .iter()
    .filter(|r| r["status"] != "completed")
    .filter_map(|r| r["name"].as_str().map(str::to_string))
    .collect();
    let mut all: Vec<Value> = all_pages(
        crab,
        &format!("/repos/{repo}/commits/{head}/check-runs"),
        Some("check_runs"),
        &[],
        "the fix's check runs",
        10,
    )
    .await?
    .iter()
    .map(|c| json!({"name": c["name"], "status": c["status"], "conclusion": c["conclusion"]}))
    .collect();
    // CI that reports commit statuses (not check runs) counts the same way.
    let statuses = all_pages(
        crab,
        &format!("/repos/{repo}/commits/{head}/status"),
        Some("statuses"),
        &[],
        "the fix's commit statuses",
        10,
    )
    .await?;
    for st in &statuses {
        let (status, conclusion) = match st["state"].as_str() {
            Some("success") => ("completed", Value::from("success")),
            Some("pending") => ("in_progress", Value::Null),
            _ => ("completed", Value::from("failure")),
        };
        all.push(json!({"name": st["context"], "status": status, "conclusion": conclusion, "kind": "status"}));
    }
    Ok(Checks {
        running_workflows,
        all,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, status: &str, patch: Option<&str>) -> PrFile {
        PrFile {
            filename: name.into(),
            status: status.into(),
            additions: 1,
            deletions: 1,
            patch: patch.map(str::to_string),
            previous_filename: None,
        }
    }

    #[test]
    fn a_pinned_login_matches_with_or_without_its_bot_suffix() {
        assert!(same_login("jenkins-bot", "jenkins-bot"));
        assert!(same_login("circleci[bot]", "circleci"));
        assert!(same_login("CircleCI[bot]", "circleci[bot]"));
        assert!(!same_login("mallory", "jenkins-bot"));
        assert!(!same_login("jenkins-bot-evil", "jenkins-bot"));
    }

    #[test]
    fn reads_the_pull_requests_own_files() {
        let files = vec![
            file("src/lib.rs", "modified", Some("@@ -1 +1 @@\n-a\n+b")),
            file("tests/it.rs", "removed", Some("@@ -1 +0,0 @@\n-#[test]")),
            file("logo.png", "added", None),
        ];
        let diff = as_diff(&files);
        assert!(
            diff.contains("--- a/tests/it.rs\n+++ /dev/null\n"),
            "{diff}"
        );
        assert!(
            crate::heal::refuses(&diff).is_some(),
            "a removed test shows"
        );
        assert_eq!(unreadable_paths(&files), ["logo.png"]);
        let mut renamed = file("b.rs", "renamed", Some("@@ -1 +1 @@\n-a\n+b"));
        renamed.previous_filename = Some(".github/workflows/ci.yml".into());
        assert_eq!(
            touched_paths(&[renamed]),
            [".github/workflows/ci.yml", "b.rs"]
        );
    }
}
