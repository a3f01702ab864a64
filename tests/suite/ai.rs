//! The model services' client against stand-ins that replay their documented formats
//! (ai-standin): Anthropic streamed over server-sent events, OpenAI-compatible completions,
//! and what each does when the service limits, overloads, cuts a stream or refuses.

use std::time::{Duration, Instant};

use ai_standin::{anthropic_tool_answer, openai_answer, AiStandIn, Reply};
use selfheal_engine::ai::answer::Change;
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
        follow_up: None,
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
        &answer::schema(false),
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
    let parsed = answer::parse(&done.json, false).unwrap();
    assert_eq!(parsed.culprit_files[0].path, "src/lib.rs");
    assert_eq!(parsed.change, Change::Patch(PATCH.into()));
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
    // The cache breakpoint ends the failure's block, after the tools and the instructions.
    assert_eq!(
        request.body["messages"][0]["content"][0]["cache_control"]["type"],
        "ephemeral"
    );
    assert_eq!(request.body["tool_choice"]["name"], "propose_fix");
    assert_eq!(
        request.body["tools"][0]["input_schema"],
        answer::schema(false)
    );

    // The next request reads the cached prefix.
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
    assert_eq!(
        answer::parse(&done.json, false).unwrap().change,
        Change::Patch(PATCH.into())
    );
    // The cut attempt's tokens (its `message_start`: the prompt, 2 tokens of answer) are
    // counted with the answer's: they were paid for.
    assert_eq!(
        (
            done.usage.input_tokens,
            done.usage.cache_write_tokens,
            done.usage.output_tokens
        ),
        (2 * 472, 2 * 1024, 2 + 89),
        "{:?}",
        done.usage
    );

    // Cut every time: unavailable, with how many requests it took.
    let mut config = anthropic(&s, KEY);
    config.max_retries = 1;
    s.push(Reply::Events(cut.clone()));
    s.push(Reply::Events(cut.clone()));
    let err = ask(&config).await.unwrap_err();
    assert!(
        matches!(err, AiError::Unavailable { requests: 2, .. }),
        "{err}"
    );

    // Cut, then refused, or told to wait longer than allowed: a refusal or a rate limit alone
    // costs nothing, but the cut attempt was paid for, amount unknown: the whole grant counts.
    let charged = |err: AiError| {
        assert!(matches!(err, AiError::AfterPaid { .. }), "{err}");
        selfheal_engine::ai::Usage::charged(&Err::<(), _>(err), |_| unreachable!())
    };
    s.push(Reply::Events(cut.clone()));
    s.push(Reply::Status(
        400,
        None,
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}}),
    ));
    assert_eq!(charged(ask(&anthropic(&s, KEY)).await.unwrap_err()), None);
    s.push(Reply::Events(cut));
    s.push(Reply::Status(
        429,
        Some(3600),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
    ));
    assert_eq!(charged(ask(&anthropic(&s, KEY)).await.unwrap_err()), None);
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
    assert_eq!(answer::parse(&done.json, false).unwrap().confidence, 0.82);
    // prompt_tokens (1117) counts the cached ones: split, so that a budget counts each once.
    assert_eq!(done.usage.cached_input_tokens, 1024);
    assert_eq!(done.usage.input_tokens, 93);
    assert_eq!(done.usage.total(), 1163);
    let request = &local.received()[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert!(request.headers.get("authorization").is_none());
    assert_eq!(
        request.body["response_format"]["json_schema"]["schema"],
        answer::schema(false)
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
async fn a_reasoning_model_that_refuses_max_tokens_is_asked_with_max_completion_tokens() {
    let hosted = ai_standin::spawn(Some("sk-proj-abc")).await;
    // OpenAI's answer to `max_tokens` for o-series and GPT-5 models, as recorded in client
    // projects' issues (e.g. griptape-ai/ComfyUI-Griptape#312).
    hosted.push(Reply::Status(
        400,
        None,
        json!({"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}}),
    ));
    hosted.push(Reply::Json(openai_answer(&the_answer(), "stop")));
    let mut config = openai(&hosted, Some("sk-proj-abc"));
    config.max_output_tokens = 3000;
    let done = ask(&config).await.unwrap();
    assert_eq!(answer::parse(&done.json, false).unwrap().confidence, 0.82);
    let sent = hosted.received();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].body["max_tokens"], 3000);
    assert!(sent[1].body.get("max_tokens").is_none(), "{}", sent[1].body);
    assert_eq!(sent[1].body["max_completion_tokens"], 3000);
    // Any other 400 is a refusal, not asked again.
    hosted.push(Reply::Status(
        400,
        None,
        json!({"error": {"message": "Invalid value for 'model'", "type": "invalid_request_error", "param": "model", "code": "invalid_value"}}),
    ));
    let err = ask(&config).await.unwrap_err();
    assert!(matches!(err, AiError::Refused { status: 400, .. }), "{err}");
    assert_eq!(hosted.received().len(), 3);
}

#[tokio::test]
async fn an_openai_compatible_answer_outside_the_contract_fails_its_parse() {
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
        answer::parse(&done.json, false),
        Err(answer::AnswerError::Path(_))
    ));
    let done = ask(&openai(&s, None)).await.unwrap();
    assert!(matches!(
        answer::parse(&done.json, false),
        Err(answer::AnswerError::Shape(_))
    ));
}

// The model strategy in the healing engine: a real compile error in the Docker sandbox, the
// model's answers from the stand-in, checked, applied and validated.

mod healing {
    use super::*;
    use selfheal_engine::ai::budget::Allowance;
    use selfheal_engine::heal::{self, Assistant, HealOptions, Strategy, Verdict};
    use selfheal_engine::sandbox::{Images, Limits, Sandbox};
    use selfheal_engine::workflow::StepCommand;
    use std::sync::Arc;

    const DEPLOY_KEY: &str = "ghp_R2d2C3poBb8Ww1Xx9Yy0Zz7Qq6Pp5Oo4Nn3M";

    /// An API change whose call site was not updated: `parse_port` gained a default.
    fn broken_crate() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"ports\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(
            dir.path().join("src/lib.rs"),
            format!(
                "pub fn parse_port(text: &str, default: u16) -> u16 {{\n    text.trim().parse().unwrap_or(default)\n}}\n\npub fn listen_address(host: &str, port_text: &str) -> String {{\n    format!(\"{{host}}:{{}}\", parse_port(port_text))\n}}\n\n// deploy key for the staging box: {DEPLOY_KEY}\n// ci asks the model with {KEY} here\n// ci: DB_PASSWORD=pg-Hunter2x session=8fJ2kQz9Lw3Xv7Rt1Ny5Bm0C\n\n#[cfg(test)]\nmod tests {{\n    #[test]\n    fn falls_back_to_the_default() {{\n        assert_eq!(super::listen_address(\"localhost\", \"x\"), \"localhost:8080\");\n    }}\n}}\n\npub mod defaults;\n"
            ),
        )
        .unwrap();
        // Referenced, not named by the log: sent as context, and redacted like the rest.
        std::fs::write(
            dir.path().join("src/defaults.rs"),
            format!("/// The port services listen on when none is given.\npub const PORT: u16 = 8080;\n// rotated: {DEPLOY_KEY}\n"),
        )
        .unwrap();
        dir
    }

    const FIX: &str = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -5,3 +5,3 @@\n pub fn listen_address(host: &str, port_text: &str) -> String {\n-    format!(\"{host}:{}\", parse_port(port_text))\n+    format!(\"{host}:{}\", parse_port(port_text, 8080))\n }\n";

    fn reply(patch: &str, path: &str) -> Reply {
        let answer = json!({"root_cause": "parse_port now takes a default; listen_address still calls it with one argument",
            "culprit_files": [{"path": path, "line": 6}], "confidence": 0.9, "patch": patch});
        Reply::Events(anthropic_tool_answer(&answer.to_string(), "tool_use", 0))
    }

    fn options(s: &AiStandIn) -> HealOptions {
        HealOptions {
            reproduce_runs: 1,
            validate_runs: 2,
            assistant: Some(Assistant {
                http: heal::assist_http_client(),
                model: anthropic(s, KEY),
                redaction: heal::Redaction {
                    values: vec![KEY.to_string()],
                    pattern: None,
                },
                budget: None,
                morph: None,
                earlier_patches: Vec::new(),
                context_tokens: heal::CONTEXT_TOKENS,
                invariants: Default::default(),
            }),
            memory: None,
            culprits: Vec::new(),
            culprits_skipped: Vec::new(),
        }
    }

    async fn heal(dir: &std::path::Path, options: &HealOptions) -> heal::HealReport {
        let sandbox = Sandbox::connect(Images::Recipe, Limits::default())
            .await
            .expect("Docker (scripts/services.sh up)");
        heal::heal(
            &sandbox,
            dir,
            "local:ai",
            &StepCommand::given("cargo test"),
            None,
            options,
            &|_| {},
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_compile_error_is_fixed_by_the_models_patch_after_a_hallucinated_path_is_refused() {
        let s = ai_standin::spawn(Some(KEY)).await;
        // First an answer about a file that does not exist, then the fix.
        s.push(reply(
            &FIX.replace("src/lib.rs", "src/net.rs"),
            "src/net.rs",
        ));
        s.push(reply(FIX, "src/lib.rs"));
        let dir = broken_crate();
        let report = heal(dir.path(), &options(&s)).await;
        assert!(
            matches!(report.verdict, Verdict::Fixed),
            "{:?}",
            report.verdict
        );
        assert_eq!(report.strategy, Strategy::AiPatch);
        assert_eq!(report.after.as_ref().unwrap().passed, 2);
        assert!(report
            .patch
            .as_deref()
            .unwrap()
            .contains("parse_port(port_text, 8080)"));
        let ai = report.ai.as_ref().unwrap();
        assert_eq!(ai.asked, 2);
        assert!(ai.refused[0].contains("src/net.rs"), "{:?}", ai.refused);
        assert_eq!(ai.usage.output_tokens, 178);

        // What was sent: the failure and the culprit file, with no secret of the repository's
        // or of selfheal's; the second request says why the first answer was refused.
        let received = s.received();
        assert_eq!(received.len(), 2);
        for request in &received {
            let body = request.body.to_string();
            assert!(
                body.contains("E0061") || body.contains("this function takes 2 arguments"),
                "{body}"
            );
            assert!(body.contains("pub fn listen_address"), "{body}");
            assert!(
                body.contains("File src/defaults.rs (referenced by src/lib.rs)")
                    && body.contains("pub const PORT: u16 = 8080;"),
                "{body}"
            );
            // A token format, the configured key (too short for any pattern: only the
            // never-send list catches it), a secret-named value and a random token.
            for secret in [DEPLOY_KEY, KEY, "pg-Hunter2x", "8fJ2kQz9Lw3Xv7Rt1Ny5Bm0C"] {
                assert!(!body.contains(secret), "{secret} was sent");
            }
        }
        // The re-ask repeats the first request's cached prefix block for block, and says why
        // after it.
        let first = &received[0].body["messages"][0]["content"];
        let second = &received[1].body["messages"][0]["content"];
        assert_eq!(second[0], first[0]);
        assert_eq!(second[0]["cache_control"]["type"], "ephemeral");
        let why = second[1]["text"].as_str().unwrap();
        assert!(why.contains("Your previous answer was refused"), "{why}");
    }

    /// A CI log no parser recognises, beside the same job's green log: the model is shown the
    /// lines the green run did not print, not the error words every run prints.
    #[tokio::test]
    async fn an_unknown_ci_failure_is_shown_to_the_model_by_what_its_green_run_did_not_print() {
        let s = ai_standin::spawn(Some(KEY)).await;
        s.push(reply(FIX, "src/lib.rs"));
        let dir = broken_crate();
        let sandbox = Sandbox::connect(Images::Recipe, Limits::default())
            .await
            .expect("Docker (scripts/services.sh up)");
        let step = "##[group]Run cargo test\ncargo test\n##[endgroup]\n";
        // The log is the CI's, and as hostile as anything else: a token it printed, and a
        // value of the worker's own never-send list, both among the lines that explain it.
        let failed = format!("{step}checking error pages: 4 found\nthe listen address lost its port argument\nretrying with GITHUB_TOKEN={DEPLOY_KEY} and key {KEY}\n##[error]Process completed with exit code 101.\n");
        let green = format!("{step}checking error pages: 3 found\nall addresses listen\n");
        let report = heal::propose(
            &sandbox,
            dir.path(),
            "local:ai",
            &StepCommand::given("cargo test"),
            Some(&heal::JobLog {
                log: &failed,
                window: None,
                green: Some(&green),
            }),
            &options(&s),
            &|_| {},
        )
        .await
        .unwrap();
        assert!(report.diagnosis.since_green, "{:?}", report.diagnosis);
        assert_eq!(report.strategy, Strategy::AiPatch);
        let received = s.received();
        let body = received[0].body.to_string();
        assert!(
            body.contains("the listen address lost its port argument"),
            "{body}"
        );
        assert!(body.contains("retrying with GITHUB_TOKEN="), "{body}");
        assert!(!body.contains("checking error pages"), "{body}");
        for secret in [DEPLOY_KEY, KEY] {
            assert!(!body.contains(secret), "{secret} from the log was sent");
        }
    }

    /// A change the sandbox would pass but verify would never deliver (the test's assertion
    /// removed along with the fix) is refused before validation, so the model is asked again
    /// while it still can be.
    #[tokio::test]
    async fn a_fix_that_weakens_a_test_is_refused_before_validation_and_asked_again() {
        let s = ai_standin::spawn(Some(KEY)).await;
        let weakened = format!(
            "{FIX}@@ -16,3 +16,3 @@\n     fn falls_back_to_the_default() {{\n-        assert_eq!(super::listen_address(\"localhost\", \"x\"), \"localhost:8080\");\n+        let _ = super::listen_address(\"localhost\", \"x\");\n     }}\n"
        );
        s.push(reply(&weakened, "src/lib.rs"));
        s.push(reply(FIX, "src/lib.rs"));
        let dir = broken_crate();
        let report = heal(dir.path(), &options(&s)).await;
        assert!(
            matches!(report.verdict, Verdict::Fixed),
            "{:?}",
            report.verdict
        );
        let ai = report.ai.as_ref().unwrap();
        assert_eq!(ai.asked, 2, "{ai:?}");
        assert!(
            ai.refused[0].contains("tests-kept: removes 1 assertion"),
            "{:?}",
            ai.refused
        );
        let patch = report.patch.as_deref().unwrap();
        assert!(patch.contains("parse_port(port_text, 8080)"), "{patch}");
        assert!(!patch.contains("let _ = super::listen_address"), "{patch}");
        let received = s.received();
        let why = received[1].body["messages"][0]["content"][1]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(why.contains("tests-kept"), "{why}");
    }

    /// An answer that is not JSON at all is refused and asked again once, saying why.
    #[tokio::test]
    async fn an_answer_that_is_not_json_is_asked_again_with_the_reason() {
        let s = ai_standin::spawn(Some(KEY)).await;
        s.push(Reply::Events(anthropic_tool_answer(
            "I think the fix is to pass 8080 to parse_port.",
            "tool_use",
            0,
        )));
        s.push(reply(FIX, "src/lib.rs"));
        let dir = broken_crate();
        let report = heal(dir.path(), &options(&s)).await;
        assert!(
            matches!(report.verdict, Verdict::Fixed),
            "{:?}",
            report.verdict
        );
        let ai = report.ai.as_ref().unwrap();
        assert_eq!(ai.asked, 2, "{ai:?}");
        assert_eq!(ai.refused.len(), 1, "{:?}", ai.refused);
        assert!(
            ai.refused[0].contains("not the required JSON object"),
            "{:?}",
            ai.refused
        );
        let received = s.received();
        let why = received[1].body["messages"][0]["content"][1]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(why.contains("Your previous answer was refused"), "{why}");
        assert!(why.contains(&ai.refused[0]), "{why}");
    }

    #[tokio::test]
    async fn the_token_budget_cuts_the_answer_short_and_stops_a_request_it_cannot_hold() {
        let s = ai_standin::spawn(Some(KEY)).await;
        let dir = broken_crate();
        // Too little for the prompt: nothing is sent, and the grant comes back.
        let small = Arc::new(Allowance::new(1_000));
        let mut o = options(&s);
        o.assistant.as_mut().unwrap().budget = Some(small.clone());
        let report = heal(dir.path(), &o).await;
        let Verdict::HandedOff { reason } = &report.verdict else {
            panic!("{:?}", report.verdict);
        };
        assert!(reason.contains("the token budget is spent"), "{reason}");
        assert!(s.received().is_empty(), "a request was sent");
        assert_eq!(small.left(), 1_000);

        // Enough for the prompt and 1,500 tokens of answer: the request asks for no more than
        // that (2,048 are configured), and what the service counted is taken off.
        let need: u64 = reason
            .split("about ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no estimate in {reason}"));
        s.push(reply(FIX, "src/lib.rs"));
        let enough = Arc::new(Allowance::new(need + 1_500));
        o.assistant.as_mut().unwrap().budget = Some(enough.clone());
        let report = heal(dir.path(), &o).await;
        assert!(
            matches!(report.verdict, Verdict::Fixed),
            "{:?}",
            report.verdict
        );
        let max_tokens = s.received()[0].body["max_tokens"].as_u64().unwrap();
        // The same prompt both times, but for the sandbox's output, which may differ by a few
        // bytes between runs.
        assert!((1_400..=1_600).contains(&max_tokens), "{max_tokens}");
        let spent = report.ai.as_ref().unwrap().usage.total();
        assert!(spent > 0);
        assert_eq!(enough.left(), (need + 1_500).saturating_sub(spent));
    }

    const MORPH_KEY: &str = "morph-test-key-0123456789";

    /// The broken crate without the secrets planted in it.
    fn clean_crate() -> tempfile::TempDir {
        let dir = broken_crate();
        let lib = dir.path().join("src/lib.rs");
        let text = std::fs::read_to_string(&lib).unwrap();
        let clean: String = text
            .lines()
            .filter(|l| !l.starts_with("// "))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&lib, clean).unwrap();
        dir
    }

    fn with_morph(s: &AiStandIn, morph: &AiStandIn) -> HealOptions {
        let mut o = options(s);
        let assistant = o.assistant.as_mut().unwrap();
        let mut config = ModelConfig::new(
            Provider::OpenAiCompatible {
                base_url: format!("{}/v1", morph.url),
                api_key: Some(MORPH_KEY.to_string().into()),
            },
            "morph-v3-large",
        );
        config.backoff = Duration::from_millis(50);
        assistant.morph = Some(config);
        assistant.redaction.values.push(MORPH_KEY.into());
        o
    }

    const UPDATE: &str = "// ... existing code ...\npub fn listen_address(host: &str, port_text: &str) -> String {\n    format!(\"{host}:{}\", parse_port(port_text, 8080))\n}\n// ... existing code ...\n";

    fn edits(path: &str) -> Reply {
        let answer = json!({"root_cause": "parse_port now takes a default; listen_address still calls it with one argument",
            "culprit_files": [{"path": path, "line": 6}], "confidence": 0.9, "patch": null,
            "edits": [{"path": path, "update": UPDATE}]});
        Reply::Events(anthropic_tool_answer(&answer.to_string(), "tool_use", 0))
    }

    #[tokio::test]
    async fn lazy_edits_are_merged_by_morph_checked_and_validated_like_any_patch() {
        let s = ai_standin::spawn(Some(KEY)).await;
        let morph = ai_standin::spawn(Some(MORPH_KEY)).await;
        let dir = clean_crate();
        let original = std::fs::read_to_string(dir.path().join("src/lib.rs")).unwrap();
        let fixed = original.replace("parse_port(port_text))", "parse_port(port_text, 8080))");
        assert_ne!(fixed, original);
        // Morph's merge of a first answer drops the test; the second is the fix.
        s.push(edits("src/lib.rs"));
        morph.push(Reply::Json(ai_standin::morph_answer(
            &fixed.replace("    #[test]\n", ""),
        )));
        s.push(edits("src/lib.rs"));
        let mut o = with_morph(&s, &morph);
        let allowance = Arc::new(Allowance::new(100_000));
        o.assistant.as_mut().unwrap().budget = Some(allowance.clone());
        let report = heal(dir.path(), &o).await;
        // The same edits twice: the merge is not asked again.
        let Verdict::HandedOff { reason } = &report.verdict else {
            panic!("{:?}", report.verdict);
        };
        assert!(
            reason.contains("the same patch was proposed twice"),
            "{reason}"
        );
        let ai = report.ai.as_ref().unwrap();
        assert!(ai.refused[0].contains("removes a test"), "{:?}", ai.refused);
        assert_eq!(morph.received().len(), 1);

        // Now the merge is right: it is validated and becomes the fix.
        let s = ai_standin::spawn(Some(KEY)).await;
        let morph = ai_standin::spawn(Some(MORPH_KEY)).await;
        s.push(edits("src/lib.rs"));
        morph.push(Reply::Json(ai_standin::morph_answer(&fixed)));
        let mut o = with_morph(&s, &morph);
        let allowance = Arc::new(Allowance::new(100_000));
        o.assistant.as_mut().unwrap().budget = Some(allowance.clone());
        let report = heal(dir.path(), &o).await;
        assert!(
            matches!(report.verdict, Verdict::Fixed),
            "{:?}",
            report.verdict
        );
        assert_eq!(report.strategy, Strategy::AiPatch);
        let patch = report.patch.as_deref().unwrap();
        assert!(
            patch.contains("+    format!(\"{host}:{}\", parse_port(port_text, 8080))"),
            "{patch}"
        );
        assert_eq!(
            patch
                .lines()
                .filter(|l| l.starts_with(['+', '-'])
                    && !l.starts_with("+++")
                    && !l.starts_with("---"))
                .count(),
            2,
            "one line changed: {patch}"
        );
        // The model was offered edits; Morph got the documented message, with its own key.
        let asked = &s.received()[0].body;
        assert!(asked["tools"][0]["input_schema"]["properties"]["edits"].is_object());
        let merge = &morph.received()[0];
        assert_eq!(merge.path, "/v1/chat/completions");
        assert_eq!(
            merge.headers["authorization"],
            format!("Bearer {MORPH_KEY}")
        );
        assert_eq!(merge.body["model"], "morph-v3-large");
        assert!(merge.body.get("response_format").is_none());
        let messages = merge.body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["role"], "user");
        let content = messages[0]["content"].as_str().unwrap();
        assert!(
            content.starts_with(
                "<instruction>I fix the failing build. parse_port now takes a default"
            ),
            "{content}"
        );
        assert!(
            content.contains(&format!(
                "</instruction>\n<code>{original}</code>\n<update>{UPDATE}</update>"
            )),
            "{content}"
        );
        // Both services' tokens are counted against the one allowance.
        let ai = report.ai.as_ref().unwrap();
        let merged = ai.morph.as_ref().unwrap();
        assert_eq!((merged.files, merged.requests), (1, 1));
        assert_eq!(merged.usage.output_tokens, 318);
        assert_eq!(
            allowance.left(),
            100_000 - ai.usage.total() - merged.usage.total()
        );
    }

    #[tokio::test]
    async fn an_edit_of_a_file_holding_secrets_is_never_sent_to_morph() {
        let s = ai_standin::spawn(Some(KEY)).await;
        let morph = ai_standin::spawn(Some(MORPH_KEY)).await;
        // The broken crate's src/lib.rs has a deploy key in a comment: merging it would send
        // the key, or write the redaction marker over it. Asked again, the model gives a patch.
        s.push(edits("src/lib.rs"));
        s.push(reply(FIX, "src/lib.rs"));
        let dir = broken_crate();
        let report = heal(dir.path(), &with_morph(&s, &morph)).await;
        assert!(
            matches!(report.verdict, Verdict::Fixed),
            "{:?}",
            report.verdict
        );
        let ai = report.ai.as_ref().unwrap();
        assert!(
            ai.refused[0].contains("holds secret-shaped text that is never sent"),
            "{:?}",
            ai.refused
        );
        assert!(morph.received().is_empty(), "the file went to Morph");
        for request in s.received() {
            assert!(!request.body.to_string().contains(DEPLOY_KEY));
        }
    }

    fn remembered(patch: &str) -> heal::Remembered {
        heal::Remembered {
            run_id: "0b7d4d1e-5f00-4c3a-9d2e-1f0e5c9a7b21".into(),
            repository: "acme/ports-legacy".into(),
            strategy: Strategy::AiPatch,
            patch: Some(patch.into()),
        }
    }

    #[tokio::test]
    async fn a_remembered_fix_is_replayed_without_a_model_and_validated() {
        // A model is configured, with no answer queued: the replay must not ask it.
        let s = ai_standin::spawn(Some(KEY)).await;
        let dir = broken_crate();
        let options = HealOptions {
            memory: Some(remembered(FIX)),
            ..options(&s)
        };
        let report = heal(dir.path(), &options).await;
        assert!(
            matches!(report.verdict, Verdict::Fixed),
            "{:?}",
            report.verdict
        );
        assert_eq!(report.strategy, Strategy::AiPatch);
        assert!(report.ai.is_none(), "no model was asked");
        assert!(s.received().is_empty(), "the model service was called");
        let memory = report.memory.as_ref().unwrap();
        assert_eq!(memory.used, heal::MemoryUse::Replayed);
        assert_eq!(memory.repository, "acme/ports-legacy");
        assert!(report
            .patch
            .as_deref()
            .unwrap()
            .contains("parse_port(port_text, 8080)"));

        // A remembered patch is checked like a model's answer: one that removes a test (or
        // touches .github/) is not replayed, whatever the database says.
        let cheat = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -13,3 +13,2 @@\n mod tests {\n-    #[test]\n     fn falls_back_to_the_default() {\n";
        // A .github/ file the checkout has, so that only the protected-path rule refuses it.
        let workflows = dir.path().join(".github/workflows");
        std::fs::create_dir_all(&workflows).unwrap();
        std::fs::write(workflows.join("ci.yml"), "on: push\n").unwrap();
        let protected = "diff --git a/.github/workflows/ci.yml b/.github/workflows/ci.yml\n--- a/.github/workflows/ci.yml\n+++ b/.github/workflows/ci.yml\n@@ -1 +1 @@\n-on: push\n+on: [push, pull_request]\n";
        for (bad, why) in [
            (cheat.to_string(), "removes a test"),
            (protected.to_string(), "a protected path"),
        ] {
            let options = HealOptions {
                memory: Some(remembered(&bad)),
                assistant: None,
                ..options.clone()
            };
            let report = heal(dir.path(), &options).await;
            let Verdict::HandedOff { .. } = &report.verdict else {
                panic!("{:?}", report.verdict);
            };
            let memory = report.memory.as_ref().unwrap();
            assert_eq!(memory.used, heal::MemoryUse::NotUsed);
            assert!(
                memory.reason.as_deref().unwrap().contains(why),
                "{memory:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_remembered_fix_that_does_not_apply_is_shown_to_the_model() {
        let s = ai_standin::spawn(Some(KEY)).await;
        s.push(reply(FIX, "src/lib.rs"));
        let stale = FIX.replace("parse_port(port_text))", "parse_port(port))");
        let dir = broken_crate();
        let options = HealOptions {
            memory: Some(remembered(&stale)),
            ..options(&s)
        };
        let report = heal(dir.path(), &options).await;
        assert!(
            matches!(report.verdict, Verdict::Fixed),
            "{:?}",
            report.verdict
        );
        let memory = report.memory.as_ref().unwrap();
        assert_eq!(memory.used, heal::MemoryUse::Example);
        assert!(
            memory.reason.as_deref().unwrap().contains("does not apply"),
            "{memory:?}"
        );
        let sent = s.received()[0].body["messages"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            sent.contains("was fixed before in acme/ports-legacy")
                && sent.contains("parse_port(port))"),
            "{sent}"
        );
    }

    #[tokio::test]
    async fn a_patch_that_removes_the_test_is_refused_and_the_same_one_twice_stops() {
        let s = ai_standin::spawn(Some(KEY)).await;
        let cheat = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -13,3 +13,2 @@\n mod tests {\n-    #[test]\n     fn falls_back_to_the_default() {\n";
        s.push(reply(cheat, "src/lib.rs"));
        s.push(reply(cheat, "src/lib.rs"));
        let dir = broken_crate();
        let report = heal(dir.path(), &options(&s)).await;
        let Verdict::HandedOff { reason } = &report.verdict else {
            panic!("{:?}", report.verdict);
        };
        assert!(
            reason.contains("the same patch was proposed twice"),
            "{reason}"
        );
        let ai = report.ai.as_ref().unwrap();
        assert!(ai.refused[0].contains("removes a test"), "{:?}", ai.refused);
        assert!(report.patch.is_none());
    }

    #[tokio::test]
    async fn a_patch_that_does_not_apply_is_asked_again_and_no_answer_is_handed_off() {
        let s = ai_standin::spawn(Some(KEY)).await;
        let stale = FIX.replace("parse_port(port_text))", "parse_port(port))");
        s.push(reply(&stale, "src/lib.rs"));
        let overloaded = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        for _ in 0..4 {
            s.push(Reply::Status(529, None, overloaded.clone()));
        }
        let dir = broken_crate();
        let report = heal(dir.path(), &options(&s)).await;
        let Verdict::HandedOff { reason } = &report.verdict else {
            panic!("{:?}", report.verdict);
        };
        assert!(reason.contains("no answer"), "{reason}");
        let ai = report.ai.as_ref().unwrap();
        assert!(ai.refused[0].contains("does not apply"), "{:?}", ai.refused);
    }
}
