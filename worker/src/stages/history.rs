//! A commit's change read from the repository's history, for the culprit candidates the API
//! cannot rebuild (a rename, a binary or too-large file, more files than one answer lists):
//! one shallow `git fetch` of the failing commit and as many of its ancestors as the oldest
//! such candidate needs, with the installation's token, then `git diff` of each against its
//! parent.
//!
//! The repository is hostile, and so is what git fetches from it; git is only asked to store
//! objects and to print diffs: into a fresh bare repository of the worker's own (no hooks,
//! no work tree, no attributes checked out), with the system and global config ignored, no
//! external diff or text conversion, and the token in a header from the environment, never
//! on a command line or in a URL (a process listing or git's own messages would show it).
//! The fetch is bounded in time and each diff in size.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

/// The longest a fetch may take.
const FETCH_TIME: Duration = Duration::from_secs(120);
/// The largest diff taken from one commit.
const MAX_DIFF_BYTES: usize = 16 * 1024 * 1024;

/// Where and how to fetch.
pub struct History<'a> {
    /// `https://github.com`, or a GitHub Enterprise Server's host.
    pub git_url: &'a str,
    /// `owner/name`.
    pub repository: &'a str,
    pub token: SecretString,
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Each of `shas` (commits `head` or its first `depth - 1` ancestors) as a git diff against
/// its parent, from one fetch; or why none could be read.
pub async fn diffs(
    history: &History<'_>,
    head: &str,
    depth: usize,
    shas: &[String],
) -> Result<HashMap<String, String>, String> {
    if !is_sha(head) || shas.iter().any(|s| !is_sha(s)) {
        return Err("a commit id is not a sha".into());
    }
    let (owner, name) = history
        .repository
        .split_once('/')
        .filter(|(o, n)| {
            let plain = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    && !s.starts_with('.')
            };
            plain(o) && plain(n)
        })
        .ok_or_else(|| format!("{:?} is not a repository name", history.repository))?;
    let dir = tempfile::tempdir().map_err(|e| format!("no scratch directory: {e}"))?;
    let git = Git {
        dir: dir.path(),
        token: &history.token,
    };
    git.run(&["init", "--quiet", "--bare", "."], Duration::from_secs(30))
        .await?;
    let url = format!(
        "{}/{owner}/{name}.git",
        history.git_url.trim_end_matches('/')
    );
    git.run(
        &[
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            &format!("--depth={depth}"),
            &url,
            head,
        ],
        FETCH_TIME,
    )
    .await
    .map_err(|e| format!("git fetch of {} failed: {e}", history.repository))?;
    let mut out = HashMap::new();
    for sha in shas {
        let parent = format!("{sha}^");
        let diff = git
            .run(
                &[
                    "diff",
                    "--binary",
                    "--full-index",
                    "--no-renames",
                    "--no-ext-diff",
                    "--no-textconv",
                    "--no-color",
                    &parent,
                    sha,
                ],
                Duration::from_secs(60),
            )
            .await
            .map_err(|e| format!("{} has no diff against its parent: {e}", &sha[..7]))?;
        out.insert(sha.clone(), diff);
    }
    Ok(out)
}

struct Git<'a> {
    dir: &'a std::path::Path,
    token: &'a SecretString,
}

impl Git<'_> {
    /// `git args` in the scratch repository: its standard output, or its last words.
    async fn run(&self, args: &[&str], limit: Duration) -> Result<String, String> {
        let header = format!(
            "Authorization: Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("x-access-token:{}", self.token.expose_secret()))
        );
        let child = tokio::process::Command::new("git")
            .args(["-c", "core.quotePath=false"])
            .args(args)
            .current_dir(self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir)
            .env("GIT_DIR", self.dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            // Never ask: a refused token fails the fetch.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_COUNT", "2")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env("GIT_CONFIG_VALUE_0", header)
            .env("GIT_CONFIG_KEY_1", "credential.helper")
            .env("GIT_CONFIG_VALUE_1", "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("git did not start: {e}"))?;
        let out = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| format!("git {} took longer than {limit:?}", args[0]))?
            .map_err(|e| format!("git {}: {e}", args[0]))?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr);
            let last = said
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            // Git does not print the header; the token is taken out all the same.
            return Err(last.replace(self.token.expose_secret(), "[REDACTED]"));
        }
        if out.stdout.len() > MAX_DIFF_BYTES {
            return Err(format!("more than {MAX_DIFF_BYTES} bytes"));
        }
        String::from_utf8(out.stdout).map_err(|_| "not text".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_from_outside_are_refused_before_git_runs() {
        let history = History {
            git_url: "http://127.0.0.1:9",
            repository: "acme/../../etc",
            token: SecretString::from("ghs_x"),
        };
        let sha = "a".repeat(40);
        let e = diffs(&history, &sha, 2, &[sha.clone()]).await.unwrap_err();
        assert!(e.contains("not a repository name"), "{e}");
        let history = History {
            repository: "acme/widgets",
            ..history
        };
        for bad in ["--upload-pack=touch /tmp/x", "HEAD", &"g".repeat(40)] {
            let e = diffs(&history, bad, 2, &[]).await.unwrap_err();
            assert!(e.contains("not a sha"), "{e}");
            let e = diffs(&history, &sha, 2, &[bad.to_string()])
                .await
                .unwrap_err();
            assert!(e.contains("not a sha"), "{e}");
        }
    }
}
