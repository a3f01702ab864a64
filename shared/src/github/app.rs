use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use octocrab::models::{AppId, InstallationId};
use octocrab::service::middleware::retry::{RateLimitMetrics, RetryConfig};
use octocrab::Octocrab;
use secrecy::ExposeSecret;

use super::installation::{Installation, SecondaryLimits};
use super::pace::WritePacer;
use crate::config::GitHubConfig;

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub App credentials are not configured (GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY)")]
    NotConfigured,
    #[error("GITHUB_APP_PRIVATE_KEY is not a usable RSA key: {0}")]
    BadKey(String),
    #[error("GitHub API error: {0}")]
    Api(#[from] octocrab::Error),
    #[error("GitHub answered {status} for {what}")]
    Status { status: u16, what: String },
    #[error("downloading {what} failed: {reason}")]
    Download { what: String, reason: String },
}

impl GitHubError {
    /// 4xx other than rate limits will not get better by retrying.
    pub fn is_permanent(&self) -> bool {
        match self {
            GitHubError::NotConfigured | GitHubError::BadKey(_) => true,
            GitHubError::Status { status, .. } => {
                (400..500).contains(status) && *status != 429 && *status != 403
            }
            _ => false,
        }
    }
}

/// Rate limits and retried errors go to the log: a stage that took long says why.
struct LogRateLimits;

impl RateLimitMetrics for LogRateLimits {
    fn retry_after_error(
        &self,
        req: &http::Request<octocrab::OctoBody>,
        status: http::StatusCode,
        retries_remaining: usize,
    ) {
        tracing::warn!(path = req.uri().path(), %status, retries_remaining, "GitHub request failed; retrying");
    }

    fn rate_limited(
        &self,
        req: &http::Request<octocrab::OctoBody>,
        status: http::StatusCode,
        retries_remaining: usize,
        waiting_seconds: u64,
    ) {
        tracing::warn!(path = req.uri().path(), %status, retries_remaining, waiting_seconds, "GitHub rate limit: waiting");
    }
}

/// One per process. Installation clients are kept so that their tokens are reused until
/// shortly before they expire, then refreshed by octocrab.
pub struct GitHubApp {
    app_id: u64,
    app: Octocrab,
    /// The same app without octocrab's retries, for writes that must not happen twice.
    app_once: Octocrab,
    api_url: String,
    git_url: String,
    installations: Mutex<HashMap<(i64, String), Arc<Octocrab>>>,
    installations_once: Mutex<HashMap<(i64, String), Arc<Octocrab>>>,
    http: reqwest::Client,
    pacer: Arc<WritePacer>,
    limits: SecondaryLimits,
}

/// Waits of a secondary rate limit without headers before its error goes to the stage
/// (1, 2, 4 and 8 times the minimum: a quarter of an hour at GitHub's minute).
const SECONDARY_LIMIT_WAITS: u32 = 4;

impl GitHubApp {
    pub fn new(config: &GitHubConfig) -> Result<Self, GitHubError> {
        let (Some(app_id), Some(key)) = (config.app_id, config.app_private_key.as_ref()) else {
            return Err(GitHubError::NotConfigured);
        };
        let build = |retry: RetryConfig| -> Result<Octocrab, GitHubError> {
            Octocrab::builder()
                .base_uri(config.api_url.as_str())?
                .set_connect_timeout(Some(Duration::from_secs(5)))
                .set_read_timeout(Some(Duration::from_secs(30)))
                .add_retry_config(retry)
                .app_from_rsa_pem(AppId(app_id), key.expose_secret().as_bytes())
                .map_err(|e| GitHubError::BadKey(e.to_string()))?
                .build()
                .map_err(GitHubError::from)
        };
        let app = build(RetryConfig::HandleRateLimits {
            metrics: Arc::new(LogRateLimits),
            max_retries: config.max_retries,
            // A secondary rate limit without a retry-after: GitHub asks for at least a minute.
            min_wait_seconds: config.rate_limit_min_wait.as_secs(),
            // A bare 403 may be a real refusal: only one with rate-limit headers waits.
            retry_on_forbidden: false,
        })?;
        let app_once = build(RetryConfig::None)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent("selfheal")
            .build()
            .map_err(|e| GitHubError::Download {
                what: "client".into(),
                reason: e.to_string(),
            })?;
        Ok(GitHubApp {
            app_id,
            app,
            app_once,
            api_url: config.api_url.clone(),
            git_url: config.git_url.clone(),
            installations: Mutex::new(HashMap::new()),
            installations_once: Mutex::new(HashMap::new()),
            http,
            pacer: Arc::new(WritePacer::unpaced()),
            limits: SecondaryLimits {
                min_wait: config.rate_limit_min_wait,
                max_waits: SECONDARY_LIMIT_WAITS,
            },
        })
    }

    /// Writes paced by `pacer` (one per installation across the fleet).
    pub fn with_pacer(mut self, pacer: WritePacer) -> Self {
        self.pacer = Arc::new(pacer);
        self
    }

    /// The App's id: what GitHub names as `performed_via_github_app` on what it did.
    pub fn app_id(&self) -> u64 {
        self.app_id
    }

    /// Authenticated as the app itself (its JWT), for app-level endpoints.
    pub fn app(&self) -> &Octocrab {
        &self.app
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Where git fetches the repositories (`{git_url}/{owner}/{repo}.git`).
    pub fn git_url(&self) -> &str {
        &self.git_url
    }

    /// A client acting as the installation, with its token narrowed to the one repository
    /// (`owner/name`) the run concerns: a token that leaks can touch nothing else.
    pub fn installation(
        &self,
        installation_id: i64,
        repository: &str,
    ) -> Result<Installation, GitHubError> {
        let crab = Self::scoped(&self.app, &self.installations, installation_id, repository)?;
        Ok(Installation::new(
            crab,
            installation_id,
            self.pacer.clone(),
            self.limits,
        ))
    }

    /// [`GitHubApp::installation`] without octocrab's retries: for a write that is not
    /// idempotent (a comment, a check run, a rerun), whose caller checks whether it happened
    /// before trying again, instead of repeating it blindly after a 5xx or a timeout.
    pub fn installation_once(
        &self,
        installation_id: i64,
        repository: &str,
    ) -> Result<Installation, GitHubError> {
        let crab = Self::scoped(
            &self.app_once,
            &self.installations_once,
            installation_id,
            repository,
        )?;
        Ok(Installation::new(
            crab,
            installation_id,
            self.pacer.clone(),
            self.limits,
        ))
    }

    fn scoped(
        app: &Octocrab,
        installations: &Mutex<HashMap<(i64, String), Arc<Octocrab>>>,
        installation_id: i64,
        repository: &str,
    ) -> Result<Arc<Octocrab>, GitHubError> {
        let key = (installation_id, repository.to_string());
        let mut cache = installations.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(crab) = cache.get(&key) {
            return Ok(crab.clone());
        }
        let name = repository
            .rsplit('/')
            .next()
            .unwrap_or(repository)
            .to_string();
        // One shared instance per key: a clone would not share the cached token.
        let crab = Arc::new(
            app.installation_builder(InstallationId(installation_id as u64))
                .repositories(vec![name])
                .build()?,
        );
        cache.insert(key, crab.clone());
        Ok(crab)
    }

    /// Plain HTTP client for GitHub's pre-signed download URLs, which take no credentials.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}
