//! The stand-in's Git Data API writes into a real bare git repository on disk, so that what
//! selfheal commits can be read back with `git log`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Clone)]
pub struct GitRepo {
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("git {args}: {message}")]
pub struct GitError {
    pub args: String,
    pub message: String,
}

impl GitRepo {
    /// A bare repository whose `master` (the recorded repository's default branch) is one commit holding the files of `source`.
    pub fn import(source: &Path, dir: &Path) -> Result<(GitRepo, String), GitError> {
        let repo = GitRepo {
            dir: dir.to_path_buf(),
        };
        std::fs::create_dir_all(dir).map_err(|e| GitError {
            args: "mkdir".into(),
            message: e.to_string(),
        })?;
        repo.git(&["init", "-q", "--bare", "--initial-branch=master"], None)?;
        let index = dir.join("import.index");
        let work = source.display().to_string();
        let run = |args: &[&str]| -> Result<String, GitError> {
            let out = Command::new("git")
                .args([
                    "--git-dir",
                    &repo.dir.display().to_string(),
                    "--work-tree",
                    &work,
                ])
                .args(args)
                .env("GIT_INDEX_FILE", &index)
                .output()
                .map_err(|e| GitError {
                    args: args.join(" "),
                    message: e.to_string(),
                })?;
            if !out.status.success() {
                return Err(GitError {
                    args: args.join(" "),
                    message: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        run(&["add", "-A", "."])?;
        let tree = run(&["write-tree"])?;
        let _ = std::fs::remove_file(&index);
        let sha = repo.commit_tree(
            &tree,
            &[],
            "Import the example repository",
            "A Developer",
            "dev@example.com",
        )?;
        repo.git(&["update-ref", "refs/heads/master", &sha], None)?;
        Ok((repo, sha))
    }

    pub fn git(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<String, GitError> {
        self.git_env(args, stdin, &[])
    }

    /// The output as git wrote it, whitespace and carriage returns included (a diff's).
    pub fn git_untrimmed(&self, args: &[&str]) -> Result<String, GitError> {
        self.git_env_raw(args, None, &[])
    }

    fn git_env(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
        env: &[(&str, String)],
    ) -> Result<String, GitError> {
        self.git_env_raw(args, stdin, env)
            .map(|out| out.trim().to_string())
    }

    fn git_env_raw(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
        env: &[(&str, String)],
    ) -> Result<String, GitError> {
        let mut child = Command::new("git")
            .arg("--git-dir")
            .arg(&self.dir)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| GitError {
                args: args.join(" "),
                message: e.to_string(),
            })?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(data).map_err(|e| GitError {
                args: args.join(" "),
                message: e.to_string(),
            })?;
        }
        let out = child.wait_with_output().map_err(|e| GitError {
            args: args.join(" "),
            message: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(GitError {
                args: args.join(" "),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn commit_tree(
        &self,
        tree: &str,
        parents: &[String],
        message: &str,
        name: &str,
        email: &str,
    ) -> Result<String, GitError> {
        let mut args = vec!["commit-tree", tree];
        for p in parents {
            args.push("-p");
            args.push(p);
        }
        let env = [
            ("GIT_AUTHOR_NAME", name.to_string()),
            ("GIT_AUTHOR_EMAIL", email.to_string()),
            ("GIT_COMMITTER_NAME", "GitHub".to_string()),
            ("GIT_COMMITTER_EMAIL", "noreply@github.com".to_string()),
        ];
        self.git_env(&args, Some(message.as_bytes()), &env)
    }

    pub fn write_blob(&self, content: &[u8]) -> Result<String, GitError> {
        self.git(&["hash-object", "-w", "--stdin"], Some(content))
    }

    /// `base_tree` plus the entries (`sha: None` deletes the path), as the API's tree call.
    pub fn write_tree(
        &self,
        base_tree: Option<&str>,
        entries: &[(String, String, Option<String>)],
    ) -> Result<String, GitError> {
        // An index of its own per call: concurrent tree writes must not share one (git's
        // `index.lock` would refuse the second), as GitHub's API takes them concurrently.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let index = self
            .dir
            .join(format!("tree-{}-{n}.index", std::process::id()));
        let env = [("GIT_INDEX_FILE", index.display().to_string())];
        let result = (|| {
            match base_tree {
                Some(base) => self.git_env(&["read-tree", base], None, &env)?,
                None => self.git_env(&["read-tree", "--empty"], None, &env)?,
            };
            for (path, mode, sha) in entries {
                match sha {
                    Some(sha) => self.git_env(
                        &[
                            "update-index",
                            "--add",
                            "--cacheinfo",
                            &format!("{mode},{sha},{path}"),
                        ],
                        None,
                        &env,
                    )?,
                    // `--force-remove` wants a work tree; mode 0 through `--index-info` is the
                    // same removal in a bare repository.
                    None => self.git_env(
                        &["update-index", "--index-info"],
                        Some(format!("0 {}\t{path}\n", "0".repeat(40)).as_bytes()),
                        &env,
                    )?,
                };
            }
            self.git_env(&["write-tree"], None, &env)
        })();
        let _ = std::fs::remove_file(&index);
        result
    }

    /// `git archive` as a gzipped tarball under `prefix/`.
    pub fn archive(&self, sha: &str, prefix: &str) -> Result<Vec<u8>, GitError> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&self.dir)
            .args([
                "archive",
                "--format=tar.gz",
                &format!("--prefix={prefix}/"),
                sha,
            ])
            .output()
            .map_err(|e| GitError {
                args: "archive".into(),
                message: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(GitError {
                args: "archive".into(),
                message: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(out.stdout)
    }

    /// The tree of a three-way merge of `ours` and `theirs` (git's own merge, as GitHub's), or
    /// `None` when they conflict.
    pub fn merge_tree(&self, ours: &str, theirs: &str) -> Result<Option<String>, GitError> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&self.dir)
            .args(["merge-tree", "--write-tree", "--no-messages", ours, theirs])
            .output()
            .map_err(|e| GitError {
                args: "merge-tree".into(),
                message: e.to_string(),
            })?;
        match out.status.code() {
            Some(0) => Ok(Some(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            )),
            // 1: the merge has conflicts (the first line is still a tree, with markers).
            Some(1) => Ok(None),
            _ => Err(GitError {
                args: "merge-tree".into(),
                message: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
        }
    }

    /// Whether `ancestor` is `commit` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: &str, commit: &str) -> bool {
        self.git(&["merge-base", "--is-ancestor", ancestor, commit], None)
            .is_ok()
    }

    /// The commit a ref names exactly (`refs/heads/x`): no revision syntax (`x~1`, `@{1}`),
    /// as GitHub's ref API.
    pub fn exact_ref(&self, full: &str) -> Option<String> {
        if !full.starts_with("refs/") {
            return None;
        }
        self.git(&["show-ref", "--verify", "--hash", full], None)
            .ok()
    }

    pub fn rev_parse(&self, what: &str) -> Option<String> {
        self.git(&["rev-parse", "--verify", "-q", what], None).ok()
    }
}
