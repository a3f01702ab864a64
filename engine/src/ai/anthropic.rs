//! Anthropic's Messages API, streamed (https://docs.anthropic.com/en/api/messages-streaming):
//! the answer is a forced tool call whose input is the structured answer, arriving as
//! `input_json_delta` fragments; the instructions are a cached system block.

use std::collections::HashMap;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::{failed, retry_after, AiError, Attempt, Completion, ModelConfig, Prompt, Retry, Usage};

const VERSION: &str = "2023-06-01";
/// The tool whose input is the answer.
pub(super) const TOOL: &str = "propose_fix";

fn body(config: &ModelConfig, prompt: &Prompt, schema: &Value) -> Value {
    // The cache breakpoint ends the stable prefix (tools, instructions, the failure and its
    // files): a re-ask reads it back at a tenth of the price. The instructions alone are too
    // short for the cache (1,024 tokens at least), so they get no breakpoint of their own.
    let mut content = vec![json!({"type": "text", "text": prompt.user,
        "cache_control": {"type": "ephemeral"}})];
    if let Some(more) = &prompt.follow_up {
        content.push(json!({"type": "text", "text": more}));
    }
    json!({
        "model": config.model,
        "max_tokens": config.max_output_tokens,
        "stream": true,
        "system": [{"type": "text", "text": prompt.system}],
        "messages": [{"role": "user", "content": content}],
        "tools": [{
            "name": TOOL,
            "description": "Propose the fix for the failing build, in the required shape.",
            "input_schema": schema,
        }],
        "tool_choice": {"type": "tool", "name": TOOL},
    })
}

pub(super) async fn attempt(
    http: &reqwest::Client,
    config: &ModelConfig,
    base_url: &str,
    api_key: &SecretString,
    prompt: &Prompt,
    schema: &Value,
) -> Result<Attempt, AiError> {
    let url = format!("{}/v1/messages", base_url.trim_end_matches('/'));
    let response = http
        .post(url)
        .header("x-api-key", api_key.expose_secret())
        .header("anthropic-version", VERSION)
        .timeout(config.request_timeout)
        .json(&body(config, prompt, schema))
        .send()
        .await
        .map_err(reqwest::Error::without_url)?;
    let status = response.status().as_u16();
    if status != 200 {
        let after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        return failed(status, after, &text);
    }
    read_stream(response, config).await
}

/// Reads the events to `message_stop`, every documented type handled and unknown ones passed
/// over (the API may add types).
async fn read_stream(
    response: reqwest::Response,
    config: &ModelConfig,
) -> Result<Attempt, AiError> {
    let mut events = response.bytes_stream().eventsource();
    let mut blocks: HashMap<u64, String> = HashMap::new();
    let mut text = String::new();
    let mut tool_input = String::new();
    let mut usage = Usage::default();
    let mut stop_reason: Option<String> = None;
    let cut = |why: String, spent: &Usage| {
        Ok(Attempt::Again(Retry {
            status: 200,
            kind: "stream_cut".into(),
            message: why,
            after: None,
            spent: spent.clone(),
        }))
    };
    loop {
        let event = match events.next().await {
            Some(Ok(event)) => event,
            Some(Err(e)) => return cut(format!("the stream broke: {e}"), &usage),
            None => return cut("the stream ended before message_stop".into(), &usage),
        };
        let data: Value = match serde_json::from_str(&event.data) {
            Ok(v) => v,
            Err(e) => {
                return Err(AiError::Malformed(format!(
                    "event {} is not JSON: {e}",
                    event.event
                )))
            }
        };
        match event.event.as_str() {
            "message_start" => {
                let u = &data["message"]["usage"];
                usage.input_tokens = u["input_tokens"].as_u64().unwrap_or(0);
                usage.output_tokens = u["output_tokens"].as_u64().unwrap_or(0);
                usage.cached_input_tokens = u["cache_read_input_tokens"].as_u64().unwrap_or(0);
                usage.cache_write_tokens = u["cache_creation_input_tokens"].as_u64().unwrap_or(0);
            }
            "content_block_start" => {
                let index = data["index"].as_u64().unwrap_or(0);
                let kind = data["content_block"]["type"].as_str().unwrap_or_default();
                blocks.insert(index, kind.to_string());
                if kind == "text" {
                    text.push_str(data["content_block"]["text"].as_str().unwrap_or_default());
                }
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap_or(0);
                let delta = &data["delta"];
                match (
                    blocks.get(&index).map(String::as_str),
                    delta["type"].as_str(),
                ) {
                    (Some("text"), Some("text_delta")) => {
                        text.push_str(delta["text"].as_str().unwrap_or_default())
                    }
                    (Some("tool_use"), Some("input_json_delta")) => {
                        tool_input.push_str(delta["partial_json"].as_str().unwrap_or_default())
                    }
                    // Thinking, signatures, citations: not part of the answer.
                    (Some(_), _) => {}
                    (None, _) => {
                        return Err(AiError::Malformed(format!(
                            "a delta for block {index}, which never started"
                        )))
                    }
                }
            }
            "content_block_stop" | "ping" => {}
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    stop_reason = Some(reason.to_string());
                }
                // Cumulative: the last one counts.
                if let Some(out) = data["usage"]["output_tokens"].as_u64() {
                    usage.output_tokens = out;
                }
            }
            "message_stop" => break,
            "error" => {
                let kind = data["error"]["type"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_string();
                let message = data["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                // An overload or a server error after the stream started: the whole request is
                // asked again (nothing of a partial answer is kept).
                return match kind.as_str() {
                    "overloaded_error" | "api_error" | "rate_limit_error" => {
                        Ok(Attempt::Again(Retry {
                            status: if kind == "overloaded_error" { 529 } else { 500 },
                            kind,
                            message,
                            after: None,
                            spent: usage,
                        }))
                    }
                    _ => Err(AiError::Refused {
                        status: 200,
                        kind,
                        message,
                    }),
                };
            }
            _ => {}
        }
    }
    match stop_reason.as_deref() {
        Some("max_tokens" | "model_context_window_exceeded") => {
            return Err(AiError::OverBudget(config.max_output_tokens))
        }
        Some("refusal") => return Err(AiError::Declined("refusal".into())),
        _ => {}
    }
    let json = if tool_input.trim().is_empty() {
        text
    } else {
        tool_input
    };
    Ok(Attempt::Done(Completion {
        json,
        usage,
        requests: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_forces_the_answer_tool_and_caches_the_failure_not_the_re_ask() {
        let config = ModelConfig::new(
            super::super::Provider::OpenAiCompatible {
                base_url: String::new(),
                api_key: None,
            },
            "claude-x",
        );
        let mut prompt = Prompt {
            system: "instructions".into(),
            user: "the failure".into(),
            follow_up: None,
        };
        let first = body(&config, &prompt, &json!({"type": "object"}));
        assert_eq!(first["stream"], true);
        assert_eq!(first["max_tokens"], 8192);
        assert_eq!(first["tool_choice"]["name"], TOOL);
        assert_eq!(first["tools"][0]["input_schema"]["type"], "object");
        prompt.follow_up = Some("refused: no such file".into());
        let again = body(&config, &prompt, &json!({"type": "object"}));
        // The re-ask repeats the first request's blocks up to the breakpoint, and adds after it.
        let blocks = again["messages"][0]["content"].as_array().unwrap();
        assert_eq!(blocks[0], first["messages"][0]["content"][0]);
        assert_eq!(blocks[0]["text"], "the failure");
        assert_eq!(blocks[0]["cache_control"]["type"], "ephemeral");
        assert_eq!(blocks[1]["text"], "refused: no such file");
        assert!(blocks[1].get("cache_control").is_none());
        assert_eq!(again["system"], first["system"]);
    }
}
