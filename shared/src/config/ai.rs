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
    /// `SELFHEAL_AI_CONTEXT_TOKENS` (16,000): repository files one prompt may carry.
    pub context_tokens: u64,
    pub budget: AiBudget,
    /// What the service charges, when configured; without it the cost is left unknown
    /// rather than guessed from a price list that changes.
    pub prices: Option<Prices>,
    /// `SELFHEAL_AI_REDACT`: a regular expression whose matches are redacted from every
    /// prompt, besides the built-in secret shapes (an organisation's own token format).
    pub redact: Option<regex::Regex>,
    /// Morph's apply model, when `MORPH_API_KEY` is set.
    pub morph: Option<MorphConfig>,
}

impl AiConfig {
    /// One incident's allowance in tokens where nothing is recorded (`selfheal heal`): its
    /// token budget, and, with prices, its dollar budget at the dearest price.
    pub fn incident_allowance(&self) -> u64 {
        let by_dollars = match (self.budget.incident_usd, self.prices) {
            (Some(usd), Some(p)) if p.dearest_per_token() > 0.0 => {
                // As the worker's ledger rounds: a millionth of a token forgiven.
                (usd.max(0.0) / p.dearest_per_token() + 1e-6).floor() as u64
            }
            _ => u64::MAX,
        };
        self.budget.incident_tokens.min(by_dollars)
    }
}

/// Morph's apply model: the model asked for fixes may then answer with lazy edits, which
/// Morph merges into the files.
#[derive(Debug, Clone)]
pub struct MorphConfig {
    /// `MORPH_API_URL` (`https://api.morphllm.com/v1`), as the OpenAI SDKs take a base URL.
    pub base_url: String,
    /// `MORPH_API_KEY`.
    pub api_key: SecretString,
    /// `SELFHEAL_MORPH_MODEL` (`morph-v3-large`; `morph-v3-fast` and `auto` are the others).
    pub model: String,
}

/// Tokens the model service may be asked to process (input, cached or not, and output), and,
/// where prices are set, the US dollars they may cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AiBudget {
    /// `SELFHEAL_AI_INCIDENT_TOKENS` (200,000): over every run of one incident.
    pub incident_tokens: u64,
    /// `SELFHEAL_AI_INSTALLATION_DAILY_TOKENS` (2,000,000): per installation per UTC day.
    pub installation_daily_tokens: u64,
    /// `SELFHEAL_AI_INCIDENT_USD` (none): over every run of one incident; needs the prices.
    pub incident_usd: Option<f64>,
    /// `SELFHEAL_AI_INSTALLATION_DAILY_USD` (none): per installation per UTC day; needs the
    /// prices.
    pub installation_daily_usd: Option<f64>,
}

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// `SELFHEAL_AI_USD_PER_MTOK_INPUT`
    pub input: f64,
    /// `SELFHEAL_AI_USD_PER_MTOK_OUTPUT`
    pub output: f64,
    /// `SELFHEAL_AI_USD_PER_MTOK_CACHE_READ` (the input price when unset)
    pub cache_read: f64,
    /// `SELFHEAL_AI_USD_PER_MTOK_CACHE_WRITE` (the input price when unset)
    pub cache_write: f64,
}

impl Prices {
    /// The most one token can cost, in US dollars: what a reservation is priced at before the
    /// service says which kind its tokens were.
    pub fn dearest_per_token(&self) -> f64 {
        self.input
            .max(self.output)
            .max(self.cache_read)
            .max(self.cache_write)
            / 1_000_000.0
    }

    /// The cost in US dollars of tokens counted as the services count them: `input` is the
    /// input not read from or written to the cache.
    pub fn cost(&self, input: u64, output: u64, cache_read: u64, cache_write: u64) -> f64 {
        (input as f64 * self.input
            + output as f64 * self.output
            + cache_read as f64 * self.cache_read
            + cache_write as f64 * self.cache_write)
            / 1_000_000.0
    }
}

/// The configured model service, if any.
pub fn ai_config(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<AiConfig>, ConfigError> {
    let env = Env(&lookup);
    from_env(&env)
}

pub(super) fn from_env<F: Fn(&str) -> Option<String>>(
    env: &Env<'_, F>,
) -> Result<Option<AiConfig>, ConfigError> {
    let morph = env.optional("MORPH_API_KEY").map(|key| MorphConfig {
        base_url: env
            .optional("MORPH_API_URL")
            .unwrap_or_else(|| "https://api.morphllm.com/v1".into()),
        api_key: SecretString::from(key),
        model: env
            .optional("SELFHEAL_MORPH_MODEL")
            .unwrap_or_else(|| "morph-v3-large".into()),
    });
    if let Some(morph) = &morph {
        check_url("MORPH_API_URL", &morph.base_url)?;
    }
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
            // Morph merges another model's edits: alone it has nothing to merge.
            (false, false) if morph.is_some() => {
                return Err(ConfigError::Malformed {
                    name: "MORPH_API_KEY",
                    reason: "Morph applies the edits of a model that is not configured: set ANTHROPIC_API_KEY or OPENAI_BASE_URL too".into(),
                })
            }
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
    let context_tokens = env.parsed("SELFHEAL_AI_CONTEXT_TOKENS")?.unwrap_or(16_000);
    let prices = prices(env)?;
    let dollars = |name: &'static str| -> Result<Option<f64>, ConfigError> {
        match env.parsed::<f64>(name)? {
            Some(d) if !(d.is_finite() && d >= 0.0) => Err(ConfigError::Malformed {
                name,
                reason: "a budget in US dollars, 0 or more".into(),
            }),
            // A cost is known only at known prices: a budget in dollars without them would
            // look enforced and not be.
            Some(_) if prices.is_none() => Err(ConfigError::Malformed {
                name,
                reason: "a budget in dollars needs the prices: set SELFHEAL_AI_USD_PER_MTOK_INPUT and SELFHEAL_AI_USD_PER_MTOK_OUTPUT".into(),
            }),
            d => Ok(d),
        }
    };
    let budget = AiBudget {
        incident_tokens: env
            .parsed("SELFHEAL_AI_INCIDENT_TOKENS")?
            .unwrap_or(200_000),
        installation_daily_tokens: env
            .parsed("SELFHEAL_AI_INSTALLATION_DAILY_TOKENS")?
            .unwrap_or(2_000_000),
        incident_usd: dollars("SELFHEAL_AI_INCIDENT_USD")?,
        installation_daily_usd: dollars("SELFHEAL_AI_INSTALLATION_DAILY_USD")?,
    };
    let redact = env
        .optional("SELFHEAL_AI_REDACT")
        .map(|p| {
            regex::Regex::new(&p).map_err(|e| ConfigError::Malformed {
                name: "SELFHEAL_AI_REDACT",
                // The pattern may itself be secret-shaped: the error names where, not what.
                reason: format!(
                    "not a regular expression ({})",
                    e.to_string().lines().last().unwrap_or("invalid")
                ),
            })
        })
        .transpose()?;
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
            context_tokens,
            budget,
            prices,
            redact,
            morph: morph.clone(),
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
            context_tokens,
            budget,
            prices,
            redact,
            morph: morph.clone(),
        },
    };
    let name = match config.provider {
        AiProvider::Anthropic => "ANTHROPIC_BASE_URL",
        AiProvider::OpenAiCompatible => "OPENAI_BASE_URL",
    };
    check_url(name, &config.base_url)?;
    Ok(Some(config))
}

/// The key and the prompt travel in the clear over http: only to this machine.
fn check_url(name: &'static str, url: &str) -> Result<(), ConfigError> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|l| {
            url.strip_prefix(l).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with(':') || rest.starts_with('/')
            })
        });
    if url.starts_with("https://") || loopback {
        Ok(())
    } else {
        Err(ConfigError::Malformed {
            name,
            reason: "an https URL (http only to 127.0.0.1, localhost or [::1])".into(),
        })
    }
}

/// Prices come as a pair (input and output) or not at all: half a price list would make a
/// cost that looks known and is not.
fn prices<F: Fn(&str) -> Option<String>>(env: &Env<'_, F>) -> Result<Option<Prices>, ConfigError> {
    let price = |name: &'static str| -> Result<Option<f64>, ConfigError> {
        match env.parsed::<f64>(name)? {
            Some(p) if !(p.is_finite() && p >= 0.0) => Err(ConfigError::Malformed {
                name,
                reason: "a price in US dollars per million tokens, 0 or more".into(),
            }),
            p => Ok(p),
        }
    };
    let input = price("SELFHEAL_AI_USD_PER_MTOK_INPUT")?;
    let output = price("SELFHEAL_AI_USD_PER_MTOK_OUTPUT")?;
    let cache_read = price("SELFHEAL_AI_USD_PER_MTOK_CACHE_READ")?;
    let cache_write = price("SELFHEAL_AI_USD_PER_MTOK_CACHE_WRITE")?;
    match (input, output) {
        (Some(input), Some(output)) => Ok(Some(Prices {
            input,
            output,
            cache_read: cache_read.unwrap_or(input),
            cache_write: cache_write.unwrap_or(input),
        })),
        (None, None) if cache_read.is_none() && cache_write.is_none() => Ok(None),
        (Some(_), None) => Err(ConfigError::Missing("SELFHEAL_AI_USD_PER_MTOK_OUTPUT")),
        _ => Err(ConfigError::Missing("SELFHEAL_AI_USD_PER_MTOK_INPUT")),
    }
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

    #[test]
    fn budgets_prices_and_the_redaction_pattern_are_read_and_checked() {
        let a = with(&[("ANTHROPIC_API_KEY", "k")]).unwrap().unwrap();
        assert_eq!(a.budget.incident_tokens, 200_000);
        assert_eq!(a.budget.installation_daily_tokens, 2_000_000);
        assert!(a.prices.is_none() && a.redact.is_none());
        let a = with(&[
            ("ANTHROPIC_API_KEY", "k"),
            ("SELFHEAL_AI_INCIDENT_TOKENS", "5000"),
            ("SELFHEAL_AI_INSTALLATION_DAILY_TOKENS", "90000"),
            ("SELFHEAL_AI_USD_PER_MTOK_INPUT", "3"),
            ("SELFHEAL_AI_USD_PER_MTOK_OUTPUT", "15"),
            ("SELFHEAL_AI_USD_PER_MTOK_CACHE_READ", "0.3"),
            ("SELFHEAL_AI_REDACT", r"acme_[a-z0-9]{8}"),
            ("SELFHEAL_AI_INCIDENT_USD", "2.5"),
            ("SELFHEAL_AI_INSTALLATION_DAILY_USD", "40"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.budget.incident_tokens, 5000);
        assert_eq!(a.budget.installation_daily_tokens, 90_000);
        assert_eq!(a.budget.incident_usd, Some(2.5));
        // `selfheal heal`'s allowance is the smaller budget: 5,000 tokens beside $2.50 (166,666
        // tokens at $15 a million); $0.03 is 2,000; without prices, dollars count for nothing.
        assert_eq!(a.incident_allowance(), 5000);
        let mut dear = a.clone();
        dear.budget.incident_usd = Some(0.03);
        assert_eq!(dear.incident_allowance(), 2000);
        dear.prices = None;
        assert_eq!(dear.incident_allowance(), 5000);
        assert_eq!(a.budget.installation_daily_usd, Some(40.0));
        let p = a.prices.unwrap();
        // A token is priced at the dearest kind before the service says which it was.
        assert!((p.dearest_per_token() - 15e-6).abs() < 1e-15);
        // Cache writes default to the input price; a million of each priced once.
        assert_eq!(p.cache_write, 3.0);
        let cost = p.cost(1_000_000, 1_000_000, 1_000_000, 1_000_000);
        assert!((cost - 21.3).abs() < 1e-9, "{cost}");
        assert!(a.redact.unwrap().is_match("key acme_0a1b2c3d"));
        for (vars, name) in [
            (
                vec![("SELFHEAL_AI_INCIDENT_TOKENS", "lots")],
                "SELFHEAL_AI_INCIDENT_TOKENS",
            ),
            (
                vec![("SELFHEAL_AI_USD_PER_MTOK_INPUT", "3")],
                "SELFHEAL_AI_USD_PER_MTOK_OUTPUT",
            ),
            (
                vec![("SELFHEAL_AI_USD_PER_MTOK_CACHE_READ", "1")],
                "SELFHEAL_AI_USD_PER_MTOK_INPUT",
            ),
            (
                vec![
                    ("SELFHEAL_AI_USD_PER_MTOK_INPUT", "-1"),
                    ("SELFHEAL_AI_USD_PER_MTOK_OUTPUT", "1"),
                ],
                "SELFHEAL_AI_USD_PER_MTOK_INPUT",
            ),
            (vec![("SELFHEAL_AI_REDACT", "acme_[")], "SELFHEAL_AI_REDACT"),
            // A budget in dollars needs prices, and is a number of dollars.
            (
                vec![("SELFHEAL_AI_INCIDENT_USD", "5")],
                "SELFHEAL_AI_INCIDENT_USD",
            ),
            (
                vec![
                    ("SELFHEAL_AI_USD_PER_MTOK_INPUT", "3"),
                    ("SELFHEAL_AI_USD_PER_MTOK_OUTPUT", "15"),
                    ("SELFHEAL_AI_INSTALLATION_DAILY_USD", "-2"),
                ],
                "SELFHEAL_AI_INSTALLATION_DAILY_USD",
            ),
        ] {
            let mut vars = vars;
            vars.push(("ANTHROPIC_API_KEY", "k"));
            let err = with(&vars).unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        // Morph needs a model whose edits it merges, and an https URL.
        let m = with(&[("ANTHROPIC_API_KEY", "k"), ("MORPH_API_KEY", "mk")])
            .unwrap()
            .unwrap()
            .morph
            .unwrap();
        assert_eq!(m.base_url, "https://api.morphllm.com/v1");
        assert_eq!(m.model, "morph-v3-large");
        let err = with(&[("MORPH_API_KEY", "mk")]).unwrap_err();
        assert!(err.to_string().contains("MORPH_API_KEY"), "{err}");
        let err = with(&[
            ("ANTHROPIC_API_KEY", "k"),
            ("MORPH_API_KEY", "mk"),
            ("MORPH_API_URL", "http://morph.internal/v1"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("MORPH_API_URL"), "{err}");
        // A bad pattern is named, never echoed: it may be a secret's shape.
        let err = with(&[
            ("ANTHROPIC_API_KEY", "k"),
            ("SELFHEAL_AI_REDACT", "hunter2("),
        ])
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
