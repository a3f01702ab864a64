//! Morph's apply model (https://docs.morphllm.com/api-reference/endpoint/apply): OpenAI-
//! compatible chat completions at `MORPH_API_URL` (`https://api.morphllm.com/v1`) whose one user
//! message is `<instruction>…</instruction>\n<code>…</code>\n<update>…</update>`, answered
//! with the whole merged file as the message's content. The update is a model's lazy edit: the
//! changed lines, with `// ... existing code ...` standing for what stays.

use super::{openai, retrying, AiError, ModelConfig, Prompt, Provider, Usage};

/// The marker a lazy edit uses for unchanged code; a merged file that still has one (and the
/// original did not) was not merged.
pub const MARKER: &str = "... existing code ...";

/// A merged file, with what it cost.
#[derive(Debug, Clone)]
pub struct Merged {
    pub code: String,
    pub usage: Usage,
    pub requests: u32,
}

/// The one user message Morph's apply model takes.
pub fn message(instruction: &str, code: &str, update: &str) -> String {
    format!(
        "<instruction>{instruction}</instruction>\n<code>{code}</code>\n<update>{update}</update>"
    )
}

/// Merges `update` into `code` with Morph (`config`: Morph's URL, key and model), retrying as
/// for the other services.
pub async fn apply(
    http: &reqwest::Client,
    config: &ModelConfig,
    instruction: &str,
    code: &str,
    update: &str,
) -> Result<Merged, AiError> {
    let Provider::OpenAiCompatible { base_url, api_key } = &config.provider else {
        return Err(AiError::Malformed(
            "Morph is reached as an OpenAI-compatible service".into(),
        ));
    };
    let prompt = Prompt {
        system: String::new(),
        user: message(instruction, code, update),
        follow_up: None,
    };
    let done = retrying(config, || {
        openai::attempt(http, config, base_url, api_key.as_ref(), &prompt, None)
    })
    .await?;
    let merged = normalised(code, done.json);
    if merged.contains(MARKER) && !code.contains(MARKER) {
        return Err(AiError::Malformed(format!(
            "the merged file still has the lazy-edit marker `{MARKER}`"
        )));
    }
    Ok(Merged {
        code: merged,
        usage: done.usage,
        requests: done.requests,
    })
}

/// Morph's documented answer starts with a line break the code did not have, and may drop or
/// add the final one: both follow the original, so that the diff is the edit and nothing else.
fn normalised(original: &str, merged: String) -> String {
    let mut merged = match merged.strip_prefix('\n') {
        Some(rest) if !original.starts_with('\n') => rest.to_string(),
        _ => merged,
    };
    match (original.ends_with('\n'), merged.ends_with('\n')) {
        (true, false) => merged.push('\n'),
        (false, true) => {
            merged.pop();
        }
        _ => {}
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_answer_keeps_the_originals_line_breaks() {
        let original = "def total(items):\n    return sum(items)\n";
        // As in Morph's example: a leading line break, the final one kept.
        let merged = normalised(
            original,
            "\ndef total(items):\n    return sum(items) * 1.1\n".into(),
        );
        assert_eq!(merged, "def total(items):\n    return sum(items) * 1.1\n");
        assert_eq!(normalised(original, "x = 1".into()), "x = 1\n");
        assert_eq!(normalised("x = 1", "x = 2\n".into()), "x = 2");
        assert_eq!(normalised("\nx\n", "\ny\n".into()), "\ny\n");
    }

    #[test]
    fn the_message_is_in_the_documented_tags() {
        assert_eq!(
            message("I add a default", "a\n", "// ... existing code ...\nb\n"),
            "<instruction>I add a default</instruction>\n<code>a\n</code>\n<update>// ... existing code ...\nb\n</update>"
        );
    }
}
