//! A fix as a commit made through the Git Data API, so that GitHub signs it.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use octocrab::Octocrab;
use selfheal_shared::runs::Run;
use serde_json::{json, Value};

use crate::stages::checkout::checkout;
use crate::stages::download::api_error;
use crate::stages::StageError;
use crate::WorkerContext;

/// Applies the diff to the files at the failing SHA (diffy, in memory) and writes the result
/// through the Git Data API: a blob per changed file, a tree on the commit's tree, a commit.
pub async fn make_commit(
    ctx: &WorkerContext,
    crab: &Octocrab,
    run: &Run,
    diff: &str,
    message: &str,
) -> Result<String, StageError> {
    let repo = &run.repository_full_name;
    let work = checkout(ctx, run).await?;
    let changes = apply_in_memory(work.path(), diff)?;
    let head: Value = crab
        .get(
            format!("/repos/{repo}/git/commits/{}", run.head_sha),
            None::<&()>,
        )
        .await
        .map_err(|e| api_error(e, "the failing commit"))?;
    let base_tree = head["tree"]["sha"].as_str().unwrap_or_default().to_string();
    let mut entries = Vec::new();
    for (path, change) in changes {
        match change {
            Some((content, mode)) => {
                let blob: Value = crab
                    .post(
                        format!("/repos/{repo}/git/blobs"),
                        Some(&json!({"content": base64::engine::general_purpose::STANDARD.encode(content), "encoding": "base64"})),
                    )
                    .await
                    .map_err(|e| api_error(e, "creating a blob"))?;
                entries
                    .push(json!({"path": path, "mode": mode, "type": "blob", "sha": blob["sha"]}));
            }
            None => {
                entries.push(json!({"path": path, "mode": "100644", "type": "blob", "sha": null}))
            }
        }
    }
    let tree: Value = crab
        .post(
            format!("/repos/{repo}/git/trees"),
            Some(&json!({"base_tree": base_tree, "tree": entries})),
        )
        .await
        .map_err(|e| api_error(e, "creating the tree"))?;
    // No author or committer: GitHub then signs the commit as the app and marks it verified.
    let commit: Value = crab
        .post(
            format!("/repos/{repo}/git/commits"),
            Some(&json!({"message": message, "tree": tree["sha"], "parents": [run.head_sha]})),
        )
        .await
        .map_err(|e| api_error(e, "creating the commit"))?;
    commit["sha"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| StageError::Transient("commit without a sha".into()))
}

/// Path -> new (content, mode), or None for a deleted file.
type Changes = BTreeMap<String, Option<(Vec<u8>, &'static str)>>;

/// Applies a multi-file unified diff with diffy. Renames and binary changes are refused with
/// the reason: deterministic strategies do not make them.
pub fn apply_in_memory(root: &Path, diff: &str) -> Result<Changes, StageError> {
    let mut out = Changes::new();
    for section in diff.split("diff --git ").filter(|s| !s.trim().is_empty()) {
        let body = match section.find("\n--- ") {
            Some(i) => &section[i + 1..],
            None => {
                return Err(StageError::Permanent(format!(
                    "cannot deliver a change without a text diff: {}",
                    section.lines().next().unwrap_or_default()
                )))
            }
        };
        let patch = diffy::Patch::from_str(body)
            .map_err(|e| StageError::Permanent(format!("unreadable patch: {e}")))?;
        let target = patch
            .modified()
            .map(|p| p.trim_start_matches("b/").to_string());
        let source = patch
            .original()
            .map(|p| p.trim_start_matches("a/").to_string());
        match (source.as_deref(), target.as_deref()) {
            (Some(_), Some("/dev/null")) | (Some(_), None) => {
                out.insert(source.unwrap_or_default(), None);
            }
            (src, Some(path)) => {
                let original = match src {
                    Some("/dev/null") | None => String::new(),
                    Some(p) => std::fs::read_to_string(root.join(p))
                        .map_err(|e| StageError::Permanent(format!("{p}: {e}")))?,
                };
                let patched = diffy::apply(&original, &patch).map_err(|e| {
                    StageError::Permanent(format!("patch does not apply to {path}: {e}"))
                })?;
                let executable = file_is_executable(&root.join(path));
                out.insert(
                    path.to_string(),
                    Some((
                        patched.into_bytes(),
                        if executable { "100755" } else { "100644" },
                    )),
                );
            }
            _ => return Err(StageError::Permanent("patch names no file".into())),
        }
    }
    Ok(out)
}

fn file_is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::apply_in_memory;

    #[test]
    fn applies_a_git_diff_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "fn a(){}\nfn b() {}\n").unwrap();
        let diff = "diff --git a/src/lib.rs b/src/lib.rs\nindex 1..2 100644\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,2 +1,2 @@\n-fn a(){}\n+fn a() {}\n fn b() {}\n";
        let changes = apply_in_memory(dir.path(), diff).unwrap();
        let (content, mode) = changes["src/lib.rs"].clone().unwrap();
        assert_eq!(
            String::from_utf8(content).unwrap(),
            "fn a() {}\nfn b() {}\n"
        );
        assert_eq!(mode, "100644");
        let bad = diff.replace("-fn a(){}", "-fn z(){}");
        assert!(apply_in_memory(dir.path(), &bad)
            .unwrap_err()
            .to_string()
            .contains("does not apply"));
    }
}
