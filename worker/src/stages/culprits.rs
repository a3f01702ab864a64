//! The commits that may have turned a branch red: those since the workflow's last successful
//! run on it, read from GitHub (the workflow's runs, the comparison of the two commits, then
//! each candidate's files with their patches), newest first and as git diffs the engine can
//! revert in the sandbox (`heal::culprit`). A commit whose diff the API cannot give whole (a
//! rename, a binary or too-large file, more files than one answer lists) is read from the
//! repository's history instead, by one shallow fetch for all of them (`history`). Merge
//! commits are never offered: a merge is never reverted blindly.

use selfheal_shared::github::Installation;
use serde::Deserialize;

use super::download::api_error;
use super::green_log;
use super::history::{self, History};
use super::StageError;
use crate::heal::{Candidate, MAX_CANDIDATES};

#[derive(Deserialize)]
struct Comparison {
    status: String,
    total_commits: usize,
    commits: Vec<CommitRef>,
}

#[derive(Deserialize)]
struct CommitRef {
    sha: String,
    commit: CommitInfo,
    /// Only counted: one parent, or a merge.
    parents: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct CommitInfo {
    author: Option<Person>,
    message: String,
}

#[derive(Deserialize)]
struct Person {
    name: String,
}

#[derive(Deserialize)]
struct CommitDetail {
    #[serde(default)]
    files: Vec<FileChange>,
    stats: Option<Stats>,
}

#[derive(Deserialize)]
struct Stats {
    total: u64,
}

#[derive(Deserialize)]
struct FileChange {
    filename: String,
    status: String,
    #[serde(default)]
    changes: u64,
    patch: Option<String>,
}

/// Commits looked at (merges and unrebuildable ones included) before giving up.
const MAX_INSPECTED: usize = 10;

/// The candidates, newest first, and the commits (or the reason) left out.
#[derive(Debug, Default)]
pub struct Listed {
    pub candidates: Vec<Candidate>,
    pub skipped: Vec<String>,
}

/// A commit kept as a candidate: its diff from the API, or to be read from history (why).
enum Kept {
    Ready(Candidate),
    FromHistory { candidate: Candidate, why: String },
}

// The fetch reaches every commit looked at, and its parent.
const _: () = assert!(history::DEPTH > MAX_INSPECTED);

pub async fn since_last_green(
    crab: &Installation,
    git_url: &str,
    repo: &str,
    workflow_id: i64,
    branch: &str,
    head_sha: &str,
) -> Result<Listed, StageError> {
    let mut listed = Listed::default();
    // Pushes only: the commits since the branch's last green push are what turned it red.
    let green = green_log::green_runs(crab, repo, workflow_id, branch, "push")
        .await?
        .into_iter()
        .next()
        .map(|r| r.head_sha);
    let Some(green) = green else {
        listed.skipped.push(format!(
            "no successful run of the workflow on {branch} to start from"
        ));
        return Ok(listed);
    };
    if green == head_sha {
        return Ok(listed);
    }
    let comparison: Comparison = crab
        .get(
            format!("/repos/{repo}/compare/{green}...{head_sha}"),
            None::<&()>,
        )
        .await
        .map_err(|e| api_error(e, "the commits since the last green run"))?;
    match comparison.status.as_str() {
        "ahead" => {}
        "behind" | "identical" => {
            listed.skipped.push(
                "the last green run is not older than the failing commit: nothing since it to revert"
                    .into(),
            );
            return Ok(listed);
        }
        other => {
            listed.skipped.push(format!(
                "the failing commit is {other} from the last green one: the branch was rewritten"
            ));
            return Ok(listed);
        }
    }
    // One comparison lists the oldest 250 commits: past that, the newest are not in it.
    if comparison.total_commits > comparison.commits.len() {
        listed.skipped.push(format!(
            "{} commits since the last green run, more than one comparison lists",
            comparison.total_commits
        ));
        return Ok(listed);
    }
    let mut kept: Vec<Kept> = Vec::new();
    for (inspected, commit) in comparison.commits.iter().rev().enumerate() {
        if kept.len() == MAX_CANDIDATES || inspected == MAX_INSPECTED {
            break;
        }
        let short: String = commit.sha.chars().take(7).collect();
        if commit.parents.len() != 1 {
            listed
                .skipped
                .push(format!("{short} is a merge commit, never reverted blindly"));
            continue;
        }
        let detail: CommitDetail = crab
            .get(
                format!("/repos/{repo}/commits/{}", commit.sha),
                Some(&[("per_page", "100")]),
            )
            .await
            .map_err(|e| api_error(e, "a candidate commit's files"))?;
        let candidate = |diff: String| Candidate {
            sha: commit.sha.clone(),
            author: commit
                .commit
                .author
                .as_ref()
                .map(|a| a.name.clone())
                .unwrap_or_default(),
            title: commit
                .commit
                .message
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect(),
            diff,
        };
        // The files come a page at a time: unless this page's changes add up to the commit's,
        // some are missing, and a revert of part of a commit is no revert.
        let listed_changes: u64 = detail.files.iter().map(|f| f.changes).sum();
        let whole = detail
            .stats
            .as_ref()
            .is_some_and(|s| s.total == listed_changes);
        if whole && detail.files.is_empty() {
            listed.skipped.push(format!("{short}: it changes no file"));
            continue;
        }
        let rebuilt = if whole {
            git_diff(&detail.files)
        } else {
            Err("its files are not all in one answer".to_string())
        };
        kept.push(match rebuilt {
            Ok(diff) => Kept::Ready(candidate(diff)),
            Err(why) => Kept::FromHistory {
                candidate: candidate(String::new()),
                why,
            },
        });
    }
    let read = from_history(crab, git_url, repo, head_sha, &kept).await;
    for kept in kept {
        match kept {
            Kept::Ready(candidate) => listed.candidates.push(candidate),
            Kept::FromHistory {
                mut candidate, why, ..
            } => {
                let short: String = candidate.sha.chars().take(7).collect();
                let diff = match &read {
                    Ok(diffs) => diffs
                        .get(&candidate.sha)
                        .cloned()
                        .unwrap_or_else(|| Err("not fetched".into())),
                    Err(e) => Err(format!("its history is not readable: {e}")),
                };
                match diff.and_then(|d| text_only(&d).map(|()| d)) {
                    Ok(diff) => {
                        candidate.diff = diff;
                        listed.candidates.push(candidate);
                    }
                    Err(e) => listed
                        .skipped
                        .push(format!("{short}: {why}; from git: {e}")),
                }
            }
        }
    }
    Ok(listed)
}

/// The diffs of the commits kept for history, from one shallow fetch.
async fn from_history(
    crab: &Installation,
    git_url: &str,
    repo: &str,
    head_sha: &str,
    kept: &[Kept],
) -> Result<std::collections::HashMap<String, Result<String, String>>, String> {
    let shas: Vec<String> = kept
        .iter()
        .filter_map(|k| match k {
            Kept::FromHistory { candidate, .. } => Some(candidate.sha.clone()),
            Kept::Ready(_) => None,
        })
        .collect();
    if shas.is_empty() {
        return Ok(Default::default());
    }
    let token = crab
        .git_token()
        .await
        .map_err(|e| format!("no installation token: {e}"))?;
    history::diffs(
        &History {
            git_url,
            repository: repo,
            token,
        },
        head_sha,
        &shas,
    )
    .await
}

/// Why a diff from git cannot be a fix: selfheal delivers text changes to regular files only,
/// so a revert that would bring back a binary file, a link or a submodule is refused later
/// anyway, and a candidate that cannot be tried would stop the search.
fn text_only(diff: &str) -> Result<(), String> {
    if diff.trim().is_empty() {
        return Err("it changes nothing".into());
    }
    for line in diff.lines() {
        if line == "GIT binary patch" || line.starts_with("Binary files ") {
            return Err("it changes a binary file".into());
        }
        let mode = line
            .strip_prefix("new file mode ")
            .or_else(|| line.strip_prefix("deleted file mode "))
            .or_else(|| line.strip_prefix("old mode "))
            .or_else(|| line.strip_prefix("new mode "))
            .or_else(|| {
                line.strip_prefix("index ")
                    .and_then(|l| l.split(' ').nth(1))
            });
        if mode.is_some_and(|m| m.starts_with("120000") || m.starts_with("160000")) {
            return Err("it changes a link or a submodule".into());
        }
    }
    Ok(())
}

/// A commit's files as one git diff `git apply` takes, or why it cannot be rebuilt.
fn git_diff(files: &[FileChange]) -> Result<String, String> {
    if files.is_empty() {
        return Err("it changes no file".into());
    }
    let mut out = String::new();
    for file in files {
        let name = &file.filename;
        // Paths git would quote in a header (and anything stranger) are not rebuilt here.
        if name.is_empty()
            || name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
        {
            return Err(format!("{name:?} is a path this diff cannot name"));
        }
        let Some(patch) = &file.patch else {
            return Err(format!("{name} has no text patch (binary, or too large)"));
        };
        let (mode, old, new) = match file.status.as_str() {
            "modified" => (String::new(), format!("a/{name}"), format!("b/{name}")),
            "added" => (
                "new file mode 100644\n".to_string(),
                "/dev/null".to_string(),
                format!("b/{name}"),
            ),
            "removed" => (
                "deleted file mode 100644\n".to_string(),
                format!("a/{name}"),
                "/dev/null".to_string(),
            ),
            other => return Err(format!("{name} is {other}, which is not rebuilt")),
        };
        out.push_str(&format!(
            "diff --git a/{name} b/{name}\n{mode}--- {old}\n+++ {new}\n{patch}\n"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, status: &str, patch: Option<&str>) -> FileChange {
        FileChange {
            filename: name.into(),
            status: status.into(),
            changes: 2,
            patch: patch.map(str::to_string),
        }
    }

    #[test]
    fn a_commits_files_become_a_git_diff_or_the_reason_they_cannot() {
        let diff = git_diff(&[
            file("src/lib.rs", "modified", Some("@@ -1 +1 @@\n-a\n+b")),
            file("NOTES.md", "added", Some("@@ -0,0 +1 @@\n+x")),
        ])
        .unwrap();
        assert_eq!(
            diff,
            "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1 @@\n-a\n+b\n\
             diff --git a/NOTES.md b/NOTES.md\nnew file mode 100644\n--- /dev/null\n+++ b/NOTES.md\n@@ -0,0 +1 @@\n+x\n"
        );
        assert!(git_diff(&[file("logo.png", "modified", None)])
            .unwrap_err()
            .contains("no text patch"));
        assert!(git_diff(&[file("a b.rs", "modified", Some("@@ -1 +1 @@\n-a\n+b"))]).is_err());
        assert!(git_diff(&[file("new.rs", "renamed", Some("@@ -1 +1 @@\n-a\n+b"))]).is_err());
        assert!(git_diff(&[]).is_err());
    }

    #[test]
    fn a_diff_from_git_is_taken_only_when_its_revert_can_be_delivered() {
        let text = "diff --git a/a.md b/a.md\nnew file mode 100644\nindex 0000000..e69de29\n--- /dev/null\n+++ b/a.md\n@@ -0,0 +1 @@\n+x\n";
        assert_eq!(text_only(text), Ok(()));
        let binary = "diff --git a/logo.png b/logo.png\nindex 1111111..2222222 100644\nGIT binary patch\nliteral 5\n";
        assert!(text_only(binary).unwrap_err().contains("binary"));
        let link = "diff --git a/current b/current\nnew file mode 120000\nindex 0000000..3333333\n--- /dev/null\n+++ b/current\n@@ -0,0 +1 @@\n+/etc/passwd\n\\ No newline at end of file\n";
        assert!(text_only(link).unwrap_err().contains("link"));
        let submodule = "diff --git a/vendor/lib b/vendor/lib\nindex 4444444..5555555 160000\n--- a/vendor/lib\n+++ b/vendor/lib\n@@ -1 +1 @@\n-Subproject commit 4444444\n+Subproject commit 5555555\n";
        assert!(text_only(submodule).unwrap_err().contains("submodule"));
        let deleted_link =
            "diff --git a/current b/current\ndeleted file mode 120000\nindex 3333333..0000000\n";
        assert!(text_only(deleted_link).unwrap_err().contains("link"));
        let made_link = "diff --git a/run b/run\nold mode 100644\nnew mode 120000\n";
        assert!(text_only(made_link).unwrap_err().contains("link"));
        let without_binary = "diff --git a/a.bin b/a.bin\nindex 1111111..2222222 100644\nBinary files a/a.bin and b/a.bin differ\n";
        assert!(text_only(without_binary).unwrap_err().contains("binary"));
        assert!(text_only("").is_err());
    }
}
