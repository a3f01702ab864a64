//! The model services a fix may be asked of when no deterministic strategy applies: Anthropic's
//! Messages API (streamed) and OpenAI-compatible chat completions (hosted, or a local
//! llama.cpp, vLLM or Ollama server). One request, one answer: the caller builds the prompt and
//! checks the answer ([`answer`]); this module carries it there and back, within a token budget,
//! retrying what the services say to retry.
//! The healing engine's model strategy (`heal::assist`) is its caller.

pub mod answer;
mod anthropic;
pub mod budget;
pub mod morph;
mod openai;

use std::time::Duration;

use secrecy::SecretString;
use serde::Serialize;

/// Which service, where, and with what key.
#[derive(Debug, Clone)]
pub enum Provider {
    /// `ANTHROPIC_BASE_URL` (default `https://api.anthropic.com`), `ANTHROPIC_API_KEY`.
    Anthropic {
        base_url: String,
        api_key: SecretString,
    },
    /// `OPENAI_BASE_URL` as the official SDKs take it (`…/v1`; requests go to
    /// `{base}/chat/completions`), `OPENAI_API_KEY` when the server wants one.
    OpenAiCompatible {
        base_url: String,
        api_key: Option<SecretString>,
    },
}

impl Provider {
    /// As recorded (`ai_spend.provider`, the evidence).
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Anthropic { .. } => "anthropic",
            Provider::OpenAiCompatible { .. } => "openai_compatible",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub provider: Provider,
    pub model: String,
    /// The answer may use at most this many tokens; an answer cut off there is refused.
    pub max_output_tokens: u32,
    /// Retries after a rate limit, an overload, a server error or a stream cut short.
    pub max_retries: u32,
    /// The first wait when the service does not say how long (doubled each time).
    pub backoff: Duration,
    /// The longest wait a `retry-after` is honoured for; a longer one fails the request.
    pub max_wait: Duration,
    pub request_timeout: Duration,
}

impl ModelConfig {
    pub fn new(provider: Provider, model: impl Into<String>) -> ModelConfig {
        ModelConfig {
            provider,
            model: model.into(),
            max_output_tokens: 8192,
            max_retries: 3,
            backoff: Duration::from_secs(2),
            max_wait: Duration::from_secs(120),
            request_timeout: Duration::from_secs(600),
        }
    }
}

/// What is asked: the instructions and the answer's contract (the same for every request),
/// this failure's particulars with the files chosen for it (the same for every request about
/// this failure), and what a re-ask adds. Kept apart so that the first two are one prefix,
/// which services that cache prompts read back at a fraction of the price.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub system: String,
    pub user: String,
    /// Why the previous answer was refused, when asking again.
    pub follow_up: Option<String>,
}

/// Tokens as the service counted them, in Anthropic's terms whichever the service: the three
/// kinds of input are disjoint (OpenAI's `prompt_tokens` includes its cached tokens, and is
/// split here).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Input neither read from nor written to the cache.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Read from the service's prompt cache.
    pub cached_input_tokens: u64,
    /// Written to it (Anthropic).
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Every token the service processed: what a budget counts.
    /// Saturating: the counts are the service's word, and a hostile one could overflow them.
    pub fn total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cached_input_tokens)
            .saturating_add(self.cache_write_tokens)
    }

    pub fn add(&mut self, other: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(other.cached_input_tokens);
        self.cache_write_tokens = self
            .cache_write_tokens
            .saturating_add(other.cache_write_tokens);
    }

    /// What a request's outcome says it cost: its counts (none reported means unknown), nothing
    /// for a request the service refused or never answered, unknown for an answer cut off,
    /// declined or malformed after the service produced it (and so charged for it).
    pub fn charged<T>(outcome: &Result<T, AiError>, usage: impl Fn(&T) -> &Usage) -> Option<Usage> {
        match outcome {
            Ok(done) => Some(usage(done).clone()).filter(|u| u.total() > 0),
            Err(e) => Usage::charged_for(e),
        }
    }

    fn charged_for(e: &AiError) -> Option<Usage> {
        match e {
            AiError::Refused { .. } | AiError::Http(_) | AiError::WaitTooLong(_) => {
                Some(Usage::default())
            }
            // Rate limits and overloads are not charged; a stream cut short may have been.
            AiError::Unavailable { status, .. } if *status != 200 => Some(Usage::default()),
            // Attempts cut short were paid for beyond what they reported before the cut (as a
            // stream cut every time is): unknown, so the whole grant counts.
            _ => None,
        }
    }
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The structured answer's JSON, as the service produced it (a forced tool's input, or the
    /// message's content under a JSON schema); for a request without a schema (Morph's), the
    /// message's content.
    pub json: String,
    pub usage: Usage,
    /// How many requests it took (1 without retries).
    pub requests: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum AiError {
    #[error("the model service is unreachable: {0}")]
    Http(#[from] reqwest::Error),
    /// A refusal the service gave (bad request, key, permission, model), not retried.
    #[error("the model service refused the request ({status} {kind}): {message}")]
    Refused {
        status: u16,
        kind: String,
        message: String,
    },
    /// Still rate-limited, overloaded or failing after every retry.
    #[error(
        "the model service is unavailable after {requests} requests ({status} {kind}): {message}"
    )]
    Unavailable {
        requests: u32,
        status: u16,
        kind: String,
        message: String,
    },
    #[error("the model service asks to wait {0:?}, more than allowed")]
    WaitTooLong(Duration),
    /// The answer reached the token budget before it ended.
    #[error("the answer was cut off at the budget of {0} output tokens")]
    OverBudget(u32),
    #[error("the model declined to answer ({0})")]
    Declined(String),
    /// A failure that costs nothing of itself, after attempts the service was paid for
    /// (streams cut short and asked again): what they cost is not known, as for a stream cut
    /// every time, and the request counts its whole grant.
    #[error("{source} (after attempts cut short that used {} tokens)", spent.total())]
    AfterPaid {
        #[source]
        source: Box<AiError>,
        spent: Usage,
    },
    #[error("the model service's answer does not follow its documented format: {0}")]
    Malformed(String),
}

/// A try that may be made again, and how long to wait first (the service's word, if any).
struct Retry {
    status: u16,
    kind: String,
    message: String,
    after: Option<Duration>,
    /// What the failed attempt is known to have used: a stream cut short after
    /// `message_start` was paid for up to there.
    spent: Usage,
}

enum Attempt {
    Done(Completion),
    Again(Retry),
}

/// Sends `prompt` and returns the structured answer's JSON, retrying 429, 529, 5xx and
/// streams cut short with backoff (honouring `retry-after`).
pub async fn complete(
    http: &reqwest::Client,
    config: &ModelConfig,
    prompt: &Prompt,
    schema: &serde_json::Value,
) -> Result<Completion, AiError> {
    retrying(config, || async {
        match &config.provider {
            Provider::Anthropic { base_url, api_key } => {
                anthropic::attempt(http, config, base_url, api_key, prompt, schema).await
            }
            Provider::OpenAiCompatible { base_url, api_key } => {
                openai::attempt(
                    http,
                    config,
                    base_url,
                    api_key.as_ref(),
                    prompt,
                    Some(schema),
                )
                .await
            }
        }
    })
    .await
}

/// Makes attempts until one is done, one is refused, or the retries or the wait run out.
async fn retrying<F, Fut>(config: &ModelConfig, mut attempt: F) -> Result<Completion, AiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Attempt, AiError>>,
{
    let mut wait = config.backoff;
    let mut requests = 0;
    // Tokens of attempts cut short: the answer that finally comes carries them too, so that
    // budgets and costs count every token paid for.
    let mut spent = Usage::default();
    // An error that would count nothing carries what earlier attempts are known to have used.
    let paid = |e: AiError, spent: &Usage| match Usage::charged_for(&e) {
        Some(nothing) if nothing.total() == 0 && spent.total() > 0 => AiError::AfterPaid {
            source: Box::new(e),
            spent: spent.clone(),
        },
        _ => e,
    };
    loop {
        requests += 1;
        let retry = match attempt().await.map_err(|e| paid(e, &spent))? {
            Attempt::Done(mut done) => {
                done.requests = requests;
                done.usage.add(&spent);
                return Ok(done);
            }
            Attempt::Again(retry) => retry,
        };
        spent.add(&retry.spent);
        if requests > config.max_retries {
            let e = AiError::Unavailable {
                requests,
                status: retry.status,
                kind: retry.kind,
                message: retry.message,
            };
            return Err(paid(e, &spent));
        }
        let pause = retry.after.unwrap_or(wait);
        if pause > config.max_wait {
            return Err(paid(AiError::WaitTooLong(pause), &spent));
        }
        tracing::info!(status = retry.status, kind = %retry.kind, wait_ms = pause.as_millis() as u64, "the model service asks to try again");
        tokio::time::sleep(pause).await;
        wait = (wait * 2).min(config.max_wait);
    }
}

/// Statuses both services document as worth another try.
fn retryable(status: u16) -> bool {
    matches!(status, 408 | 409 | 429 | 500 | 502 | 503 | 504 | 529)
}

/// `retry-after` in seconds (both services send seconds; an HTTP date is not waited on).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// A non-200 answer: retried when the status says so, else refused. Both services put their
/// error under `error` (Anthropic: `type` and `message`; OpenAI: `type` or `code`, `message`);
/// a body in neither shape is quoted, kept short.
fn failed(status: u16, after: Option<Duration>, body: &str) -> Result<Attempt, AiError> {
    let error: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let kind = error["error"]["type"]
        .as_str()
        .or(error["error"]["code"].as_str())
        .unwrap_or("unknown")
        .to_string();
    let message = error["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| excerpt(body));
    if retryable(status) {
        Ok(Attempt::Again(Retry {
            status,
            kind,
            message,
            after,
            spent: Usage::default(),
        }))
    } else {
        Err(AiError::Refused {
            status,
            kind,
            message,
        })
    }
}

/// A service's error body, kept short: it is logged and recorded.
fn excerpt(body: &str) -> String {
    body.chars().filter(|c| !c.is_control()).take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_request_cost_is_known_only_when_the_service_said_or_never_answered() {
        let counted = Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        };
        let ok: Result<Usage, AiError> = Ok(counted.clone());
        assert_eq!(Usage::charged(&ok, |u| u), Some(counted.clone()));
        // An answer without usage, one cut off at the budget or declined: paid, amount unknown.
        let silent: Result<Usage, AiError> = Ok(Usage::default());
        assert_eq!(Usage::charged(&silent, |u| u), None);
        for paid in [
            AiError::OverBudget(10),
            AiError::Declined("content_filter".into()),
            AiError::Malformed("x".into()),
        ] {
            assert_eq!(Usage::charged(&Err::<Usage, _>(paid), |u| u), None);
        }
        // Refused, rate-limited to the end, or a stream cut every time.
        let refused = AiError::Refused {
            status: 401,
            kind: "authentication_error".into(),
            message: "invalid x-api-key".into(),
        };
        assert_eq!(
            Usage::charged(&Err::<Usage, _>(refused), |u| u),
            Some(Usage::default())
        );
        let limited = AiError::Unavailable {
            requests: 4,
            status: 429,
            kind: "rate_limit_error".into(),
            message: "".into(),
        };
        assert_eq!(
            Usage::charged(&Err::<Usage, _>(limited), |u| u),
            Some(Usage::default())
        );
        let cut = AiError::Unavailable {
            requests: 4,
            status: 200,
            kind: "stream cut".into(),
            message: "".into(),
        };
        assert_eq!(Usage::charged(&Err::<Usage, _>(cut), |u| u), None);
        // Refused after a stream cut short: paid, amount unknown.
        let after = AiError::AfterPaid {
            source: Box::new(AiError::WaitTooLong(Duration::from_secs(60))),
            spent: counted.clone(),
        };
        assert_eq!(Usage::charged(&Err::<Usage, _>(after), |u| u), None);
        let huge = Usage {
            input_tokens: u64::MAX,
            output_tokens: 1,
            ..Usage::default()
        };
        assert_eq!(huge.total(), u64::MAX);
    }
}
