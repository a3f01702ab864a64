//! A commit's change read from the repository's history, for the culprit candidates the API
//! cannot rebuild (a rename, a binary or too-large file, more files than one answer lists):
//! one shallow `git fetch` of the failing commit and as many of its ancestors as the oldest
//! such candidate needs, with the installation's token, then `git diff` of each against its
//! parent.
//!
//! The repository is hostile, and so is what git fetches from it; git is only asked to store
//! objects and to print diffs: into a fresh bare repository of the worker's own (no hooks,
//! no work tree, no attributes checked out), with the system and global config ignored,
//! objects checked as they arrive, no external diff or text conversion, no redirect followed,
//! and the token in a header scoped to the git host, given through the environment to the
//! fetch alone (never on a command line or in a URL: a process listing or git's own messages
//! would show it), and never over plain HTTP beyond the loopback. The fetch is bounded in
//! time and in the size of any file it writes, each diff in size, and git's whole process
//! group is killed when a limit is passed.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncReadExt;

/// The longest a fetch may take.
const FETCH_TIME: Duration = Duration::from_secs(120);
/// The largest file git may write (the fetched pack is one): a repository too big for this
/// is not read.
const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;
/// The largest diff taken from one commit.
const MAX_DIFF_BYTES: usize = 16 * 1024 * 1024;
/// Commits fetched: the failing one and enough ancestors for every candidate a search looks
/// at and its parent, whatever order the comparison listed them in.
pub const DEPTH: usize = 11;

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

/// Whether the token may go to `url`: over HTTPS, or plain HTTP to this machine only.
fn may_carry_token(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    // Credentials of its own would make git talk to whatever host follows them.
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Domain(name))) => name == "localhost",
        _ => false,
    }
}

/// Each of `shas` (among `head` and its [`DEPTH`]` - 2` nearest ancestors) as a git diff
/// against its parent, or why it could not be read; or why nothing could be.
pub async fn diffs(
    history: &History<'_>,
    head: &str,
    shas: &[String],
) -> Result<HashMap<String, Result<String, String>>, String> {
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
    let base = history.git_url.trim_end_matches('/');
    if !may_carry_token(base) {
        return Err(format!(
            "{base} is not HTTPS: the installation's token is not sent there"
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| format!("no scratch directory: {e}"))?;
    let git = Git { dir: dir.path() };
    git.run(
        &["init", "--quiet", "--bare", "."],
        &[],
        Duration::from_secs(30),
    )
    .await?;
    let url = format!("{base}/{owner}/{name}.git");
    let header = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("x-access-token:{}", history.token.expose_secret()))
    );
    git.run(
        &[
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            &format!("--depth={DEPTH}"),
            &url,
            head,
        ],
        &[
            (format!("http.{base}/.extraHeader"), header),
            ("http.followRedirects".into(), "false".into()),
        ],
        FETCH_TIME,
    )
    .await
    .map_err(|e| {
        format!(
            "git fetch of {} failed: {}",
            history.repository,
            e.replace(history.token.expose_secret(), "[REDACTED]")
        )
    })?;
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
                &[],
                Duration::from_secs(60),
            )
            .await
            .map_err(|e| format!("no diff against its parent: {e}"));
        out.insert(sha.clone(), diff);
    }
    Ok(out)
}

struct Git<'a> {
    dir: &'a std::path::Path,
}

impl Git<'_> {
    /// `git args` in the scratch repository with `config` added: its standard output (at most
    /// [`MAX_DIFF_BYTES`]), or its last words.
    async fn run(
        &self,
        args: &[&str],
        config: &[(String, String)],
        limit: Duration,
    ) -> Result<String, String> {
        let mut settings: Vec<(String, String)> = vec![
            ("credential.helper".into(), String::new()),
            ("transfer.fsckObjects".into(), "true".into()),
            ("gc.auto".into(), "0".into()),
            ("maintenance.auto".into(), "false".into()),
            ("core.quotePath".into(), "false".into()),
        ];
        settings.extend(config.iter().cloned());
        let mut command = tokio::process::Command::new("git");
        command
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
            .env("GIT_CONFIG_COUNT", settings.len().to_string());
        for (i, (key, value)) in settings.iter().enumerate() {
            command
                .env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that a timeout kills the helpers git starts as well.
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                let cap = libc::rlimit {
                    rlim_cur: MAX_FILE_BYTES,
                    rlim_max: MAX_FILE_BYTES,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &cap) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("git did not start: {e}"))?;
        let group = child.id();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err("git's output is not readable".into());
        };
        let kill = move || {
            if let Some(pid) = group.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) on the process group git leads (not reaped yet: its id is
                // not anyone else's); it harms nothing else.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        };
        // Git's words: the first 64 KiB kept, the rest drained, so that it never blocks on a
        // full pipe.
        let stderr = tokio::spawn(async move {
            let mut err = Vec::new();
            let mut stderr = stderr;
            (&mut stderr).take(64 * 1024).read_to_end(&mut err).await?;
            tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await?;
            Ok::<_, std::io::Error>(err)
        });
        let outcome = tokio::time::timeout(limit, async {
            let mut out = Vec::new();
            stdout
                .take(MAX_DIFF_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .await?;
            if out.len() > MAX_DIFF_BYTES {
                // Git would block on the full pipe: stopped now, not at the timeout.
                kill();
                return Ok((None, out, Vec::new()));
            }
            let status = child.wait().await?;
            let err = stderr.await.map_err(std::io::Error::other)??;
            Ok::<_, std::io::Error>((Some(status), out, err))
        })
        .await;
        let (status, out, err) = match outcome {
            Err(_) => {
                kill();
                return Err(format!("git {} took longer than {limit:?}", args[0]));
            }
            Ok(Err(e)) => {
                kill();
                return Err(format!("git {}: {e}", args[0]));
            }
            Ok(Ok(done)) => done,
        };
        let Some(status) = status else {
            return Err(format!("more than {MAX_DIFF_BYTES} bytes"));
        };
        if !status.success() {
            let said = String::from_utf8_lossy(&err);
            let last = said
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            return Err(last.to_string());
        }
        String::from_utf8(out).map_err(|_| "not text".to_string())
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
        let e = diffs(&history, &sha, std::slice::from_ref(&sha))
            .await
            .unwrap_err();
        assert!(e.contains("not a repository name"), "{e}");
        let history = History {
            repository: "acme/widgets",
            ..history
        };
        for bad in ["--upload-pack=touch /tmp/x", "HEAD", &"g".repeat(40)] {
            let e = diffs(&history, bad, &[]).await.unwrap_err();
            assert!(e.contains("not a sha"), "{e}");
            let e = diffs(&history, &sha, &[bad.to_string()]).await.unwrap_err();
            assert!(e.contains("not a sha"), "{e}");
        }
        // The token goes over HTTPS, or plain HTTP to this machine only.
        for url in [
            "http://ghe.example.com",
            "ftp://github.com",
            "file:///tmp/x",
        ] {
            let history = History {
                git_url: url,
                repository: "acme/widgets",
                token: SecretString::from("ghs_x"),
            };
            let e = diffs(&history, &sha, &[]).await.unwrap_err();
            assert!(e.contains("not HTTPS"), "{e}");
        }
        assert!(may_carry_token("https://github.com"));
        assert!(may_carry_token("http://127.0.0.1:8080"));
        assert!(may_carry_token("http://[::1]:8080"));
        assert!(may_carry_token("http://localhost:8080"));
        for url in [
            "http://127.0.0.1.evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1:x@evil.example",
            "http://[::1]@evil.example",
            "https://x-access-token:ghs_old@github.com",
            "http://10.0.0.8",
        ] {
            assert!(!may_carry_token(url), "{url}");
        }
    }

    /// Output past the cap stops git there and then (its pipe would be full): the answer says
    /// so, rather than waiting for the time limit and calling it slow.
    #[tokio::test]
    async fn output_past_the_cap_stops_git_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let git = Git { dir: dir.path() };
        git.run(
            &["init", "--quiet", "--bare", "."],
            &[],
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_DIFF_BYTES + 4096]).unwrap();
        let sha = git
            .run(
                &["hash-object", "-w", big.to_str().unwrap()],
                &[],
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        let e = git
            .run(
                &["cat-file", "-p", sha.trim()],
                &[],
                Duration::from_secs(30),
            )
            .await
            .unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }
}
