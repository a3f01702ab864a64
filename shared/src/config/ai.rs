//! The model service a worker (and `selfheal heal`) asks for fixes no deterministic strategy
//! makes: read from the same variables in both, failing fast with the variable's name. None
//! configured is the default: such failures are handed to people.

use secrecy::SecretString;

use super::{ConfigError, Env};

#[derive(Debug, Clone, PartialEq)]
pub enum AiProvider {
    Anthropic,
    /// OpenAI itself, or a local llama.cpp, vLLM or Ollama server.
    OpenAiCompatible,
}

#[derive(Debug, Clone)]
pub struct AiConfig {
    pub provider: AiProvider,
    /// `ANTHROPIC_BASE_URL` (`https://api.anthropic.com`), or `OPENAI_BASE_URL`
    /// (`https://api.openai.com/v1`; a local server's `http://127.0.0.1:8080/v1`).
    pub base_url: String,
    /// `ANTHROPIC_API_KEY` (required for Anthropic) or `OPENAI_API_KEY` (optional).
    pub api_key: Option<SecretString>,
    /// `SELFHEAL_AI_MODEL`.
    pub model: String,
    /// `SELFHEAL_AI_MAX_OUTPUT_TOKENS`: an answer cut off there is refused.
    pub max_output_tokens: u32,
}

/// The configured model service, if any.
pub fn ai_config(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<AiConfig>, ConfigError> {
    let env = Env(&lookup);
    from_env(&env)
}

pub(super) fn from_env<F: Fn(&str) -> Option<String>>(
    env: &Env<'_, F>,
) -> Result<Option<AiConfig>, ConfigError> {
    let anthropic = env.optional("ANTHROPIC_API_KEY");
    let openai =
        env.optional("OPENAI_BASE_URL").is_some() || env.optional("OPENAI_API_KEY").is_some();
    let provider = match env
        .optional("SELFHEAL_AI_PROVIDER")
        .as_deref()
        .map(str::trim)
    {
        Some("anthropic") => AiProvider::Anthropic,
        Some("openai") => AiProvider::OpenAiCompatible,
        Some(other) => {
            return Err(ConfigError::Malformed {
                name: "SELFHEAL_AI_PROVIDER",
                reason: format!("{other:?}: anthropic or openai"),
            })
        }
        None => match (anthropic.is_some(), openai) {
            (false, false) => return Ok(None),
            (true, false) => AiProvider::Anthropic,
            (false, true) => AiProvider::OpenAiCompatible,
            (true, true) => return Err(ConfigError::Malformed {
                name: "SELFHEAL_AI_PROVIDER",
                reason:
                    "both ANTHROPIC_API_KEY and OPENAI_* are set: say which (anthropic or openai)"
                        .into(),
            }),
        },
    };
    let max_output_tokens = env.parsed("SELFHEAL_AI_MAX_OUTPUT_TOKENS")?.unwrap_or(8192);
    let config = match provider {
        AiProvider::Anthropic => AiConfig {
            provider,
            base_url: env
                .optional("ANTHROPIC_BASE_URL")
                .unwrap_or_else(|| "https://api.anthropic.com".into()),
            api_key: Some(SecretString::from(env.required("ANTHROPIC_API_KEY")?)),
            model: env
                .optional("SELFHEAL_AI_MODEL")
                .unwrap_or_else(|| "claude-sonnet-4-5".into()),
            max_output_tokens,
        },
        AiProvider::OpenAiCompatible => AiConfig {
            provider,
            base_url: env
                .optional("OPENAI_BASE_URL")
                .unwrap_or_else(|| "https://api.openai.com/v1".into()),
            api_key: env.optional("OPENAI_API_KEY").map(SecretString::from),
            // A local server serves whatever it loaded: no default worth guessing.
            model: env.required("SELFHEAL_AI_MODEL")?,
            max_output_tokens,
        },
    };
    let name = match config.provider {
        AiProvider::Anthropic => "ANTHROPIC_BASE_URL",
        AiProvider::OpenAiCompatible => "OPENAI_BASE_URL",
    };
    // The key and the prompt travel in the clear over http: only to this machine.
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|l| {
            config.base_url.strip_prefix(l).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with(':') || rest.starts_with('/')
            })
        });
    if !(config.base_url.starts_with("https://") || loopback) {
        return Err(ConfigError::Malformed {
            name,
            reason: "an https URL (http only to 127.0.0.1, localhost or [::1])".into(),
        });
    }
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Result<Option<AiConfig>, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ai_config(move |k| map.get(k).cloned())
    }

    #[test]
    fn the_provider_follows_the_variables_the_official_sdks_read() {
        assert!(with(&[]).unwrap().is_none());
        let a = with(&[("ANTHROPIC_API_KEY", "sk-ant-x")]).unwrap().unwrap();
        assert_eq!(a.provider, AiProvider::Anthropic);
        assert_eq!(a.base_url, "https://api.anthropic.com");
        assert_eq!(a.api_key.unwrap().expose_secret(), "sk-ant-x");
        let local = with(&[
            ("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1"),
            ("SELFHEAL_AI_MODEL", "qwen2.5-coder"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(local.provider, AiProvider::OpenAiCompatible);
        assert!(local.api_key.is_none());
        // A local server's model must be named; two providers must be chosen between.
        let err = with(&[("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")]).unwrap_err();
        assert_eq!(err, ConfigError::Missing("SELFHEAL_AI_MODEL"));
        let err = with(&[("ANTHROPIC_API_KEY", "k"), ("OPENAI_API_KEY", "k")]).unwrap_err();
        assert!(err.to_string().contains("SELFHEAL_AI_PROVIDER"), "{err}");
        let err = with(&[
            ("ANTHROPIC_API_KEY", "k"),
            ("ANTHROPIC_BASE_URL", "api.anthropic.com"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("ANTHROPIC_BASE_URL"), "{err}");
        let err = with(&[
            ("ANTHROPIC_API_KEY", "k"),
            ("ANTHROPIC_BASE_URL", "http://proxy.internal:8080"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
        let err = with(&[("SELFHEAL_AI_PROVIDER", "anthropic")]).unwrap_err();
        assert_eq!(err, ConfigError::Missing("ANTHROPIC_API_KEY"));
    }
}
