//! The model services' client against stand-ins that replay their documented formats
//! (ai-standin): Anthropic streamed over server-sent events, OpenAI-compatible completions,
//! and what each does when the service limits, overloads, cuts a stream or refuses.

use std::time::{Duration, Instant};

use ai_standin::{anthropic_tool_answer, openai_answer, AiStandIn, Reply};
use selfheal_engine::ai::{answer, complete, AiError, ModelConfig, Prompt, Provider};
use serde_json::json;

const KEY: &str = "sk-ant-test-0123456789";

const PATCH: &str = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1 @@\n-old\n+new\n";

fn the_answer() -> String {
    json!({"root_cause": "parse() now takes a &str; the call site passes a String",
        "culprit_files": [{"path": "src/lib.rs", "line": 12}], "confidence": 0.82, "patch": PATCH})
    .to_string()
}

fn prompt() -> Prompt {
    Prompt {
        system: "You fix failing builds. Answer with the propose_fix tool.".into(),
        user: "error[E0308]: mismatched types at src/lib.rs:12".into(),
    }
}

fn anthropic(s: &AiStandIn, key: &str) -> ModelConfig {
    let mut config = ModelConfig::new(
        Provider::Anthropic {
            base_url: s.url.clone(),
            api_key: key.to_string().into(),
        },
        "claude-sonnet-4-5",
    );
    config.max_output_tokens = 2048;
    config.backoff = Duration::from_millis(50);
    config
}

fn openai(s: &AiStandIn, key: Option<&str>) -> ModelConfig {
    let mut config = ModelConfig::new(
        Provider::OpenAiCompatible {
            base_url: format!("{}/v1", s.url),
            api_key: key.map(|k| k.to_string().into()),
        },
        "qwen2.5-coder",
    );
    config.backoff = Duration::from_millis(50);
    config
}

async fn ask(config: &ModelConfig) -> Result<selfheal_engine::ai::Completion, AiError> {
    complete(
        &reqwest::Client::new(),
        config,
        &prompt(),
        &answer::schema(),
    )
    .await
}

#[tokio::test]
async fn a_streamed_anthropic_answer_is_assembled_from_its_fragments_with_its_usage() {
    let s = ai_standin::spawn(Some(KEY)).await;
    s.push(Reply::Events(anthropic_tool_answer(
        &the_answer(),
        "tool_use",
        0,
    )));
    let done = ask(&anthropic(&s, KEY)).await.unwrap();
    let parsed = answer::parse(&done.json).unwrap();
    assert_eq!(parsed.culprit_files[0].path, "src/lib.rs");
    assert_eq!(parsed.patch, PATCH);
    assert_eq!(done.requests, 1);
    assert_eq!(done.usage.input_tokens, 472);
    assert_eq!(done.usage.cache_write_tokens, 1024);
    // message_delta's count is the cumulative one.
    assert_eq!(done.usage.output_tokens, 89);

    let request = &s.received()[0];
    assert_eq!(request.headers["x-api-key"], KEY);
    assert_eq!(request.headers["anthropic-version"], "2023-06-01");
    assert_eq!(request.body["max_tokens"], 2048);
    assert_eq!(request.body["stream"], true);
    assert_eq!(
        request.body["system"][0]["cache_control"]["type"],
        "ephemeral"
    );
    assert_eq!(request.body["tool_choice"]["name"], "propose_fix");
    assert_eq!(request.body["tools"][0]["input_schema"], answer::schema());

    // The next request reads the cached instructions.
    s.push(Reply::Events(anthropic_tool_answer(
        &the_answer(),
        "tool_use",
        1024,
    )));
    let again = ask(&anthropic(&s, KEY)).await.unwrap();
    assert_eq!(again.usage.cached_input_tokens, 1024);
}

#[tokio::test]
async fn a_stream_cut_short_is_asked_again_and_never_half_used() {
    let s = ai_standin::spawn(Some(KEY)).await;
    let mut cut = anthropic_tool_answer(&the_answer(), "tool_use", 0);
    cut.truncate(5);
    s.push(Reply::Events(cut.clone()));
    s.push(Reply::Events(anthropic_tool_answer(
        &the_answer(),
        "tool_use",
        0,
    )));
    let done = ask(&anthropic(&s, KEY)).await.unwrap();
    assert_eq!(done.requests, 2);
    assert_eq!(answer::parse(&done.json).unwrap().patch, PATCH);

    // Cut every time: unavailable, with how many requests it took.
    let mut config = anthropic(&s, KEY);
    config.max_retries = 1;
    s.push(Reply::Events(cut.clone()));
    s.push(Reply::Events(cut));
    let err = ask(&config).await.unwrap_err();
    assert!(
        matches!(err, AiError::Unavailable { requests: 2, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn rate_limits_and_overloads_are_waited_out_as_the_service_says() {
    let s = ai_standin::spawn(Some(KEY)).await;
    let limited = json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}});
    s.push(Reply::Status(429, Some(1), limited.clone()));
    s.push(Reply::Events(anthropic_tool_answer(
        &the_answer(),
        "tool_use",
        0,
    )));
    let started = Instant::now();
    let done = ask(&anthropic(&s, KEY)).await.unwrap();
    assert_eq!(done.requests, 2);
    // retry-after: 1 was honoured, not the 50 ms backoff.
    assert!(started.elapsed() >= Duration::from_secs(1));

    // 529 (overloaded) then an overload inside a started stream: both asked again.
    let overloaded =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    s.push(Reply::Status(529, None, overloaded.clone()));
    let mut mid = anthropic_tool_answer(&the_answer(), "tool_use", 0);
    mid.truncate(3);
    mid.push(("error".into(), overloaded.clone()));
    s.push(Reply::Events(mid));
    s.push(Reply::Events(anthropic_tool_answer(
        &the_answer(),
        "tool_use",
        0,
    )));
    assert_eq!(ask(&anthropic(&s, KEY)).await.unwrap().requests, 3);

    // Overloaded past every retry.
    let mut config = anthropic(&s, KEY);
    config.max_retries = 2;
    for _ in 0..3 {
        s.push(Reply::Status(529, None, overloaded.clone()));
    }
    let err = ask(&config).await.unwrap_err();
    assert!(
        matches!(
            &err,
            AiError::Unavailable {
                requests: 3,
                status: 529,
                ..
            }
        ),
        "{err}"
    );

    // A wait longer than allowed is not slept through.
    let mut config = anthropic(&s, KEY);
    config.max_wait = Duration::from_secs(30);
    s.push(Reply::Status(429, Some(3600), limited));
    let err = ask(&config).await.unwrap_err();
    assert!(matches!(err, AiError::WaitTooLong(_)), "{err}");
}

#[tokio::test]
async fn refusals_are_not_retried_and_a_cut_off_answer_is_not_taken() {
    let s = ai_standin::spawn(Some(KEY)).await;
    // The stand-in refuses a wrong key itself, as the service does.
    let err = ask(&anthropic(&s, "sk-ant-wrong")).await.unwrap_err();
    assert!(
        matches!(&err, AiError::Refused { status: 401, kind, .. } if kind == "authentication_error"),
        "{err}"
    );
    assert_eq!(s.received().len(), 0);

    s.push(Reply::Status(400, None, json!({"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"}})));
    let err = ask(&anthropic(&s, KEY)).await.unwrap_err();
    assert!(err.to_string().contains("prompt is too long"), "{err}");
    assert_eq!(s.received().len(), 1);

    // At the token budget the tool input is unfinished JSON: refused, not parsed.
    let half = &the_answer()[..60];
    s.push(Reply::Events(anthropic_tool_answer(half, "max_tokens", 0)));
    let err = ask(&anthropic(&s, KEY)).await.unwrap_err();
    assert!(matches!(err, AiError::OverBudget(2048)), "{err}");
}

#[tokio::test]
async fn an_openai_compatible_server_answers_under_the_json_schema() {
    // A local server without a key: no Authorization header is sent.
    let local = ai_standin::spawn(None).await;
    local.push(Reply::Json(openai_answer(&the_answer(), "stop")));
    let done = ask(&openai(&local, None)).await.unwrap();
    assert_eq!(answer::parse(&done.json).unwrap().confidence, 0.82);
    assert_eq!(done.usage.cached_input_tokens, 1024);
    let request = &local.received()[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert!(request.headers.get("authorization").is_none());
    assert_eq!(
        request.body["response_format"]["json_schema"]["schema"],
        answer::schema()
    );
    assert_eq!(
        request.body["response_format"]["json_schema"]["strict"],
        true
    );
    assert_eq!(request.body["messages"][0]["role"], "system");

    // A hosted one with a key, rate-limited once, then cut at the budget.
    let hosted = ai_standin::spawn(Some("sk-proj-abc")).await;
    hosted.push(Reply::Status(429, Some(0), json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})));
    hosted.push(Reply::Json(openai_answer(&the_answer(), "stop")));
    let done = ask(&openai(&hosted, Some("sk-proj-abc"))).await.unwrap();
    assert_eq!(done.requests, 2);
    assert_eq!(
        hosted.received()[0].headers["authorization"],
        "Bearer sk-proj-abc"
    );
    hosted.push(Reply::Json(openai_answer("{\"root_cause\": \"x", "length")));
    let err = ask(&openai(&hosted, Some("sk-proj-abc")))
        .await
        .unwrap_err();
    assert!(matches!(err, AiError::OverBudget(_)), "{err}");
    let err = ask(&openai(&hosted, Some("sk-wrong"))).await.unwrap_err();
    assert!(matches!(err, AiError::Refused { status: 401, .. }), "{err}");
}

#[tokio::test]
async fn an_answer_outside_the_contract_is_refused_before_anything_uses_it() {
    let s = ai_standin::spawn(None).await;
    let hallucinated = json!({"root_cause": "x", "culprit_files": [{"path": "../../etc/passwd", "line": null}],
        "confidence": 0.9, "patch": PATCH});
    s.push(Reply::Json(openai_answer(
        &hallucinated.to_string(),
        "stop",
    )));
    s.push(Reply::Json(openai_answer(
        "I think the fix is to update the call site.",
        "stop",
    )));
    let done = ask(&openai(&s, None)).await.unwrap();
    assert!(matches!(
        answer::parse(&done.json),
        Err(answer::AnswerError::Path(_))
    ));
    let done = ask(&openai(&s, None)).await.unwrap();
    assert!(matches!(
        answer::parse(&done.json),
        Err(answer::AnswerError::Shape(_))
    ));
}
