//! OpenAI-compatible chat completions (https://platform.openai.com/docs/api-reference/chat):
//! the answer is the message's content under a strict JSON schema (`response_format`), which
//! OpenAI, vLLM, llama.cpp's server and Ollama all take.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::{
    excerpt, failed, retry_after, AiError, Attempt, Completion, ModelConfig, Prompt, Usage,
};

/// The request: under `schema` when given; with no system message when the prompt has none
/// (Morph's apply model takes one user message).
fn body(config: &ModelConfig, prompt: &Prompt, schema: Option<&Value>) -> Value {
    // The stable prefix first: services that cache prompts (OpenAI's automatic cache, vLLM's
    // prefix cache) reuse it.
    let mut messages = Vec::new();
    if !prompt.system.is_empty() {
        messages.push(json!({"role": "system", "content": prompt.system}));
    }
    let user = match &prompt.follow_up {
        Some(more) => format!("{}\n{more}", prompt.user),
        None => prompt.user.clone(),
    };
    messages.push(json!({"role": "user", "content": user}));
    let mut body = json!({
        "model": config.model,
        "max_tokens": config.max_output_tokens,
        "messages": messages,
    });
    if let Some(schema) = schema {
        body["response_format"] = json!({
            "type": "json_schema",
            "json_schema": {"name": super::anthropic::TOOL, "strict": true, "schema": schema},
        });
    }
    body
}

/// OpenAI's refusal of `max_tokens` for a model that takes `max_completion_tokens` only:
/// `{"error": {"type": "invalid_request_error", "param": "max_tokens", "code":
/// "unsupported_parameter", ...}}`.
fn wants_max_completion_tokens(body: &str) -> bool {
    let error: Value = serde_json::from_str(body).unwrap_or_default();
    error["error"]["param"] == "max_tokens" && error["error"]["code"] == "unsupported_parameter"
}

pub(super) async fn attempt(
    http: &reqwest::Client,
    config: &ModelConfig,
    base_url: &str,
    api_key: Option<&SecretString>,
    prompt: &Prompt,
    schema: Option<&Value>,
) -> Result<Attempt, AiError> {
    let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
    let mut body = body(config, prompt, schema);
    let send = |body: &Value| {
        let mut request = http.post(&url).timeout(config.request_timeout).json(body);
        if let Some(key) = api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        async move {
            let response = request.send().await.map_err(reqwest::Error::without_url)?;
            let status = response.status().as_u16();
            let after = retry_after(response.headers());
            let text = response.text().await.map_err(reqwest::Error::without_url)?;
            Ok::<_, AiError>((status, after, text))
        }
    };
    let (mut status, mut after, mut text) = send(&body).await?;
    if status == 400 && wants_max_completion_tokens(&text) {
        // OpenAI's reasoning models (o-series, GPT-5) refuse `max_tokens`, which local servers
        // take, and ask for `max_completion_tokens`: the same budget under its newer name.
        if let Some(map) = body.as_object_mut() {
            map.remove("max_tokens");
            map.insert(
                "max_completion_tokens".into(),
                json!(config.max_output_tokens),
            );
        }
        (status, after, text) = send(&body).await?;
    }
    if status != 200 {
        return failed(status, after, &text);
    }
    let answer: Value = serde_json::from_str(&text)
        .map_err(|e| AiError::Malformed(format!("the completion is not JSON: {e}")))?;
    let choice = &answer["choices"][0];
    if choice.is_null() {
        return Err(AiError::Malformed("the completion has no choices".into()));
    }
    match choice["finish_reason"].as_str() {
        Some("length") => return Err(AiError::OverBudget(config.max_output_tokens)),
        Some("content_filter") => return Err(AiError::Declined("content_filter".into())),
        _ => {}
    }
    if let Some(refusal) = choice["message"]["refusal"].as_str() {
        return Err(AiError::Declined(excerpt(refusal)));
    }
    let Some(content) = choice["message"]["content"].as_str() else {
        return Err(AiError::Malformed("the message has no content".into()));
    };
    let u = &answer["usage"];
    // `prompt_tokens` counts the cached ones too.
    let cached = u["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0);
    Ok(Attempt::Done(Completion {
        json: content.to_string(),
        usage: Usage {
            input_tokens: u["prompt_tokens"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(cached),
            output_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
            cached_input_tokens: cached,
            cache_write_tokens: 0,
        },
        requests: 0,
    }))
}
