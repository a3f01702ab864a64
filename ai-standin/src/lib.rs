//! Stand-ins for the model services, for tests: Anthropic's Messages API
//! (`POST /v1/messages`, streamed as server-sent events) and OpenAI-compatible chat
//! completions (`POST /v1/chat/completions`). Each answers from a script of replies the test
//! queues, in the services' documented shapes:
//! - Anthropic: the event sequence, its `usage` fields and its error bodies as
//!   https://docs.anthropic.com/en/api/messages-streaming and
//!   https://docs.anthropic.com/en/api/errors describe them (`message_start`,
//!   `content_block_start`, `ping`, `content_block_delta` with `input_json_delta`,
//!   `content_block_stop`, `message_delta` with the stop reason and cumulative
//!   `output_tokens`, `message_stop`; `{"type":"error","error":{...}}`; 529 `overloaded_error`;
//!   `retry-after` on 429).
//! - OpenAI: the `chat.completion` object and `{"error": {...}}` bodies of
//!   https://platform.openai.com/docs/api-reference/chat.
//! - Morph's apply model, which is OpenAI-compatible chat completions: its answer as
//!   https://docs.morphllm.com/api-reference/endpoint/apply shows it (the merged file as the
//!   message's content, starting with a line break; usage without cache details).
//!
//! Like the services, they refuse a missing or wrong key (401), a missing `anthropic-version`
//! or a body without `model`, `max_tokens` or `messages` (400), and record every request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// One scripted reply.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Server-sent events, `(event, data)`, sent whole.
    Events(Vec<(String, Value)>),
    /// An HTTP error with its JSON body and an optional `retry-after` (seconds).
    Status(u16, Option<u64>, Value),
    /// A JSON body with 200 (OpenAI's completion).
    Json(Value),
}

/// A request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    received: Vec<Received>,
}

struct Service {
    key: Option<String>,
    script: Mutex<Script>,
}

pub struct AiStandIn {
    /// `http://127.0.0.1:PORT`: Anthropic's base URL; OpenAI's is this with `/v1`.
    pub url: String,
    service: Arc<Service>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for AiStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Starts both services on one loopback port. `key`: the API key they accept (for OpenAI,
/// `None` is a local server that wants none).
pub async fn spawn(key: Option<&str>) -> AiStandIn {
    let service = Arc::new(Service {
        key: key.map(str::to_string),
        script: Mutex::default(),
    });
    let app = Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/chat/completions", post(chat))
        .with_state(service.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    AiStandIn {
        url,
        service,
        server,
    }
}

impl AiStandIn {
    pub fn push(&self, reply: Reply) {
        self.service.script.lock().unwrap().replies.push_back(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.service.script.lock().unwrap().received.clone()
    }
}

fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response()
}

fn openai_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": null, "code": null}})),
    )
        .into_response()
}

fn next(service: &Service, path: &str, headers: HeaderMap, body: Value) -> Option<Reply> {
    let mut script = service.script.lock().unwrap();
    script.received.push(Received {
        path: path.into(),
        headers,
        body,
    });
    script.replies.pop_front()
}

fn render(reply: Reply) -> Response {
    match reply {
        Reply::Events(events) => {
            let mut text = String::new();
            for (event, data) in events {
                text.push_str(&format!("event: {event}\ndata: {data}\n\n"));
            }
            (
                [
                    ("content-type", "text/event-stream"),
                    ("cache-control", "no-cache"),
                ],
                Body::from(text),
            )
                .into_response()
        }
        Reply::Status(status, after, body) => {
            let mut response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                Json(body),
            )
                .into_response();
            if let Some(after) = after {
                response
                    .headers_mut()
                    .insert("retry-after", after.to_string().parse().unwrap());
            }
            response
        }
        Reply::Json(body) => Json(body).into_response(),
    }
}

async fn messages(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if key.is_none() || key != service.key.as_deref() {
        return anthropic_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
    }
    if headers.get("anthropic-version").is_none() {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "The request body is not valid JSON.",
        );
    };
    for (field, ok) in [
        ("model", body["model"].is_string()),
        (
            "max_tokens",
            body["max_tokens"].as_u64().is_some_and(|n| n >= 1),
        ),
        (
            "messages",
            body["messages"].as_array().is_some_and(|m| !m.is_empty()),
        ),
    ] {
        if !ok {
            return anthropic_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("{field}: Field required"),
            );
        }
    }
    match next(&service, "/v1/messages", headers, body) {
        Some(reply) => render(reply),
        None => anthropic_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "the stand-in has no reply queued",
        ),
    }
}

async fn chat(State(service): State<Arc<Service>>, headers: HeaderMap, body: String) -> Response {
    if let Some(key) = &service.key {
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        if given != Some(format!("Bearer {key}").as_str()) {
            return openai_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "Incorrect API key provided.",
            );
        }
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "We could not parse the JSON body of your request.",
        );
    };
    for (field, ok) in [
        ("model", body["model"].is_string()),
        (
            "messages",
            body["messages"].as_array().is_some_and(|m| !m.is_empty()),
        ),
    ] {
        if !ok {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("you must provide a {field} parameter"),
            );
        }
    }
    match next(&service, "/v1/chat/completions", headers, body) {
        Some(reply) => render(reply),
        None => openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the stand-in has no reply queued",
        ),
    }
}

/// Anthropic's event sequence for a forced tool call whose input is `answer` (sent in
/// fragments), with the usage the docs show: input and cache counts in `message_start`, the
/// cumulative output count in `message_delta`.
pub fn anthropic_tool_answer(
    answer: &str,
    stop_reason: &str,
    cache_read: u64,
) -> Vec<(String, Value)> {
    let mut events = vec![
        (
            "message_start".to_string(),
            json!({"type": "message_start", "message": {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "content": [],
            "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 472, "cache_creation_input_tokens": if cache_read == 0 { 1024 } else { 0 },
                      "cache_read_input_tokens": cache_read, "output_tokens": 2}}}),
        ),
        (
            "content_block_start".to_string(),
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "propose_fix", "input": {}}}),
        ),
        ("ping".to_string(), json!({"type": "ping"})),
    ];
    let chars: Vec<char> = answer.chars().collect();
    for chunk in chars.chunks(40) {
        let partial: String = chunk.iter().collect();
        events.push((
            "content_block_delta".to_string(),
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": partial}}),
        ));
    }
    events.push((
        "content_block_stop".to_string(),
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(("message_delta".to_string(), json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": 89}})));
    events.push(("message_stop".to_string(), json!({"type": "message_stop"})));
    events
}

/// An OpenAI `chat.completion` whose message content is `content`.
pub fn openai_answer(content: &str, finish_reason: &str) -> Value {
    json!({"id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion", "created": 1741570283,
        "model": "gpt-4o-2024-08-06", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []},
            "logprobs": null, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
        "service_tier": "default"})
}

/// Morph's apply answer: the whole merged file as the content, as its documentation shows it.
pub fn morph_answer(merged: &str) -> Value {
    json!({"id": "chatcmpl-123", "object": "chat.completion", "created": 1677652288,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("\n{merged}")},
            "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 412, "completion_tokens": 318, "total_tokens": 730}})
}
