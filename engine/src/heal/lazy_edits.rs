//! A model's fix given as lazy edits (only when Morph is configured): each file's update is
//! merged into the file by Morph's apply model, and the merged files become the git diff that
//! every fix is checked and applied as. Morph is a model service like any other: it gets no
//! file where secrets live, none whose text the redaction would change (a redacted file merged
//! back would lose its secret, or carry the marker into the fix), and the update redacted.

use std::path::Path;

use super::assist::{
    ask_failed, estimated_tokens, reserve, settle_after, Assistant, MorphEvidence,
};
use super::redaction::{read_inside, redact, regular_inside, sensitive};
use crate::ai::answer::Edit;
use crate::ai::{morph, ModelConfig};

/// The edits merged and written as one git diff, or why they cannot be.
pub(super) async fn merged_diff(
    assistant: &Assistant,
    morph: &ModelConfig,
    repo: &Path,
    root_cause: &str,
    edits: &[Edit],
    evidence: &mut MorphEvidence,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<String, String> {
    // Morph's prompts want the change described in the first person.
    let instruction: String = redact(
        &format!("I fix the failing build. {root_cause}"),
        &assistant.redaction,
    )
    .chars()
    .take(1000)
    .collect();
    let mut diff = String::new();
    for edit in edits {
        let path = edit.path.as_str();
        if path.starts_with(".github/") {
            return Err(format!("it edits {path}, a protected path"));
        }
        if sensitive(path) {
            return Err(format!(
                "it edits {path}, a file whose content is never sent to a model service"
            ));
        }
        if !regular_inside(repo, path) {
            return Err(format!("it edits {path}, which is not in the repository"));
        }
        let Some(code) = read_inside(repo, path) else {
            return Err(format!(
                "it edits {path}, which is too large or not text to send for merging"
            ));
        };
        if redact(&code, &assistant.redaction) != code {
            return Err(format!(
                "it edits {path}, which holds secret-shaped text that is never sent: give a patch"
            ));
        }
        let update = redact(&edit.update, &assistant.redaction);
        let message = morph::message(&instruction, &code, &update);
        // The merged file is about the original's size plus the update's.
        let need = estimated_tokens(message.len());
        let answer = estimated_tokens(code.len() + update.len()) + 256;
        let answer = u32::try_from(answer)
            .unwrap_or(u32::MAX)
            .min(morph.max_output_tokens);
        let (cap, grant) = reserve(
            assistant.budget.as_ref(),
            need,
            answer,
            u64::from(answer),
            "morph",
            &morph.model,
        )
        .await?;
        let mut config = morph.clone();
        config.max_output_tokens = cap;
        progress(&format!(
            "asking Morph ({}) to merge the edit of {path}",
            morph.model
        ));
        let merged = morph::apply(&assistant.http, &config, &instruction, &code, &update).await;
        settle_after(assistant.budget.as_ref(), grant, &merged, |m| {
            (&m.usage, m.requests)
        })
        .await;
        let merged = merged.map_err(|e| {
            format!(
                "Morph did not merge the edit of {path}: {}",
                ask_failed(&e, &assistant.redaction)
            )
        })?;
        evidence.files += 1;
        evidence.requests += merged.requests;
        evidence.usage.add(&merged.usage);
        if merged.code == code {
            return Err(format!("the edit of {path} changes nothing"));
        }
        diff.push_str(&git_diff(path, &code, &merged.code));
    }
    Ok(diff)
}

/// `old` to `new` of the file at `path` as a git-format unified diff.
fn git_diff(path: &str, old: &str, new: &str) -> String {
    let a = format!("a/{path}");
    let b = format!("b/{path}");
    let body = similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&a, &b)
        .to_string();
    format!("diff --git {a} {b}\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::answer::patched_paths;

    #[test]
    fn a_merged_file_becomes_a_diff_git_apply_reads() {
        let old = "fn a() {}\n\nfn b() {\n    call(1)\n}\n";
        let new = "fn a() {}\n\nfn b() {\n    call(1, 2)\n}\n";
        let diff = git_diff("src/lib.rs", old, new);
        assert!(
            diff.starts_with(
                "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ "
            ),
            "{diff}"
        );
        assert!(diff.contains("-    call(1)\n+    call(1, 2)\n"), "{diff}");
        assert_eq!(patched_paths(&diff).unwrap(), vec!["src/lib.rs"]);
        // A file without its last line break keeps it so, and the diff still reads.
        let diff = git_diff("x.py", "a = 1", "a = 2");
        assert_eq!(patched_paths(&diff).unwrap(), vec!["x.py"]);
        assert!(diff.contains("No newline at end of file"), "{diff}");
    }
}
