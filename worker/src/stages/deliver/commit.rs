//! A fix as a commit made through the Git Data API, so that GitHub signs it.

use base64::Engine;
use selfheal_shared::github::Installation;
use selfheal_shared::runs::Run;
use serde_json::{json, Value};

use crate::changes::{check_path, ChangeSet};
use crate::stages::download::api_error;
use crate::stages::StageError;

/// Writes the validated change on top of the failing commit: a blob per changed file, a tree
/// on the commit's tree, a commit. No diff is applied here and no file of this machine is
/// read: the change set carries the new contents, the same ones validation ran.
pub async fn make_commit(
    crab: &Installation,
    run: &Run,
    changes: &ChangeSet,
    message: &str,
) -> Result<String, StageError> {
    let repo = &run.repository_full_name;
    let head: Value = crab
        .get(
            format!("/repos/{repo}/git/commits/{}", run.head_sha),
            None::<&()>,
        )
        .await
        .map_err(|e| api_error(e, "the failing commit"))?;
    let base_tree = head["tree"]["sha"]
        .as_str()
        .ok_or_else(|| StageError::Transient("the failing commit has no tree".into()))?
        .to_string();
    let entries = tree_entries(crab, repo, changes).await?;
    let tree: Value = crab
        .post(
            format!("/repos/{repo}/git/trees"),
            Some(&json!({"base_tree": base_tree, "tree": entries})),
        )
        .await
        .map_err(|e| api_error(e, "creating the tree"))?;
    let tree_sha = tree["sha"]
        .as_str()
        .ok_or_else(|| StageError::Transient("tree without a sha".into()))?;
    if tree_sha == base_tree {
        return Err(StageError::Permanent(
            "refused: the change makes no difference to the failing commit's tree".into(),
        ));
    }
    // A git trailer names the run that made it: `git log` leads from the fix to its record.
    let message = format!("{message}\n\nSelfheal-Run: {}", run.id);
    // No author or committer: GitHub then signs the commit as the app and marks it verified.
    let commit: Value = crab
        .post(
            format!("/repos/{repo}/git/commits"),
            Some(&json!({"message": message, "tree": tree_sha, "parents": [run.head_sha]})),
        )
        .await
        .map_err(|e| api_error(e, "creating the commit"))?;
    commit["sha"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| StageError::Transient("commit without a sha".into()))
}

/// A tree entry per changed path: a new blob, or `sha: null` for a deleted file.
async fn tree_entries(
    crab: &Installation,
    repo: &str,
    changes: &ChangeSet,
) -> Result<Vec<Value>, StageError> {
    if changes.is_empty() {
        return Err(StageError::Permanent(
            "refused: the recorded change is empty".into(),
        ));
    }
    let mut entries = Vec::new();
    for change in &changes.files {
        // Checked when the change was made; checked again, since it came back from storage.
        let path =
            check_path(&change.path).map_err(|e| StageError::Permanent(format!("refused: {e}")))?;
        let mode = if change.executable {
            "100755"
        } else {
            "100644"
        };
        match &change.content {
            Some(content) => {
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
            None => entries.push(json!({"path": path, "mode": mode, "type": "blob", "sha": null})),
        }
    }
    Ok(entries)
}
