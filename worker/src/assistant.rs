//! The model service a configured worker asks for fixes, built from its config (the same
//! variables `selfheal heal` reads).

use secrecy::ExposeSecret;
use selfheal_shared::config::{AiConfig, AiProvider};
use selfheal_shared::Config;

use crate::heal::{Assistant, Redaction};
use selfheal_engine::ai::{ModelConfig, Provider};

/// The assistant for `ai`; `never_send` are values no prompt may carry (redacted first). Its
/// requests are not limited until a budget is given ([`crate::ai_spend::Ledger`] per run).
pub fn assistant(ai: &AiConfig, mut never_send: Vec<String>) -> Assistant {
    let provider = match ai.provider {
        AiProvider::Anthropic => Provider::Anthropic {
            base_url: ai.base_url.clone(),
            api_key: ai.api_key.clone().unwrap_or_else(|| String::new().into()),
        },
        AiProvider::OpenAiCompatible => Provider::OpenAiCompatible {
            base_url: ai.base_url.clone(),
            api_key: ai.api_key.clone(),
        },
    };
    if let Some(key) = &ai.api_key {
        never_send.push(key.expose_secret().to_string());
    }
    let morph = ai.morph.as_ref().map(|m| {
        never_send.push(m.api_key.expose_secret().to_string());
        let mut config = ModelConfig::new(
            Provider::OpenAiCompatible {
                base_url: m.base_url.clone(),
                api_key: Some(m.api_key.clone()),
            },
            m.model.clone(),
        );
        // Set per request from the file's size; this is only the ceiling.
        config.max_output_tokens = 16_384;
        config
    });
    let mut model = ModelConfig::new(provider, ai.model.clone());
    model.max_output_tokens = ai.max_output_tokens;
    Assistant {
        http: crate::heal::assist_http_client(),
        model,
        redaction: Redaction {
            values: never_send,
            pattern: ai.redact.clone(),
        },
        budget: None,
        morph,
        // Set per run (stages::patch).
        earlier_patches: Vec::new(),
        context_tokens: ai.context_tokens,
        // The operator's floor, set by the worker (`selfheal heal`: selfheal's defaults).
        invariants: Default::default(),
    }
}

/// The worker's own secrets, which no prompt may carry whatever a log or a file holds.
pub fn own_secrets(config: &Config) -> Vec<String> {
    let mut out = vec![
        config.database_url.expose_secret().to_string(),
        config.redis_url.expose_secret().to_string(),
    ];
    out.extend(
        config
            .webhook_secrets
            .iter()
            .map(|s| s.expose_secret().to_string()),
    );
    if let Some(key) = &config.github.app_private_key {
        out.extend(
            key.expose_secret()
                .lines()
                .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
                .map(str::to_string),
        );
    }
    out
}
