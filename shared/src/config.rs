//! Typed configuration, read once from the environment at start.

mod access;
mod ai;
mod events_out;

pub use access::{tls_or_loopback, AccessRole, OidcConfig, RoleMap};
pub use ai::{ai_config, AiBudget, AiConfig, AiProvider, MorphConfig, Prices};
pub use events_out::{EventsConfig, HttpSink};

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("missing environment variable {0}")]
    Missing(&'static str),
    #[error("environment variable {name} is malformed: {reason}")]
    Malformed { name: &'static str, reason: String },
}

/// Everything either process reads from the environment. Which variables are required
/// depends on the role: see [`Role`].
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: SecretString,
    pub redis_url: SecretString,
    /// Prefix of every Redis key selfheal writes, so several deployments (or tests) share a Redis.
    pub queue_prefix: String,
    pub bind: SocketAddr,
    /// `SELFHEAL_METRICS_BIND`: where `/metrics` is served, apart from the public port. Web
    /// serves it on `bind` when unset; a worker serves none.
    pub metrics_bind: Option<SocketAddr>,
    /// Current secret first; during a rotation the previous one is accepted as well.
    pub webhook_secrets: Vec<SecretString>,
    pub max_body_bytes: usize,
    /// Apply pending migrations when web or a worker starts. Off where they connect as the
    /// app role, which cannot change the schema: `selfheal migrate` runs as the owner then.
    pub migrate_at_start: bool,
    /// A webhook request taking longer is answered 408 (GitHub gives up after 10 s anyway).
    pub request_timeout: Duration,
    /// Webhook requests handled at once; more wait their turn (bounded memory and connections).
    pub max_in_flight: usize,
    pub github: GitHubConfig,
    pub worker: WorkerConfig,
    pub gates: Gates,
    /// `SELFHEAL_DASHBOARD_TOKEN`: the operators' token for web's `/dashboard`; without it the
    /// dashboard is off (404).
    pub dashboard_token: Option<SecretString>,
    /// `SELFHEAL_DASHBOARD_TOKEN_ROLE` (`viewer`): what the operators' token may do.
    pub dashboard_token_role: AccessRole,
    /// The OpenID Connect provider people and machines sign in with (web only).
    pub oidc: Option<OidcConfig>,
}

/// Safe-rollout gates that teams use to trial selfheal before they trust it.
#[derive(Debug, Clone, Default)]
pub struct Gates {
    /// Diagnose and validate, but never push, open a PR, rerun or merge.
    pub dry_run: bool,
    /// Workflows (names or `.github/workflows/…` paths) selfheal acts on; empty: all.
    pub workflows: Vec<String>,
    /// Runs selfheal starts per installation per hour; None: no limit.
    pub runs_per_hour: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct GitHubConfig {
    pub api_url: String,
    /// `GITHUB_GIT_URL`: where repositories are fetched with git (`{git_url}/{owner}/{repo}.git`).
    /// By default GitHub's (`https://github.com` for the public API, the host itself for
    /// GitHub Enterprise Server's `https://HOST/api/v3`), or the API's own URL otherwise.
    pub git_url: String,
    pub app_id: Option<u64>,
    /// PEM text (read from the file when the variable holds a path).
    pub app_private_key: Option<SecretString>,
    /// Retries of one GitHub request: after a rate limit (waiting as `retry-after` or
    /// `x-ratelimit-reset` say), a 5xx or a transport error.
    pub max_retries: usize,
    /// The wait after a rate limit that says nothing of when to come back (a 429 without
    /// `retry-after` or reset, a bare 403 that says "secondary rate limit"): GitHub asks for
    /// at least a minute.
    pub rate_limit_min_wait: Duration,
    /// The least time between two writes of one installation, across every worker (GitHub:
    /// "at least one second" between POST, PATCH, PUT and DELETE requests). Zero: unpaced.
    pub write_interval: Duration,
}

/// Where a worker runs its sandboxes.
#[derive(Debug, Clone, PartialEq)]
pub enum SandboxBackend {
    /// The Docker engine `DOCKER_HOST` names (or the local socket).
    Docker,
    /// One Job per run on the cluster the worker's kubeconfig or service account reaches.
    Kubernetes {
        /// `SELFHEAL_SANDBOX_NAMESPACE`; unset, the kubeconfig's (or the worker pod's) own.
        namespace: Option<String>,
        /// `SELFHEAL_SANDBOX_RUNTIME_CLASS`, e.g. `gvisor` or `kata`.
        runtime_class: Option<String>,
        /// `SELFHEAL_SANDBOX_CACHE_STORAGE_CLASS`: the dependency caches' StorageClass.
        cache_storage_class: Option<String>,
        /// `SELFHEAL_SANDBOX_CACHE_ACCESS_MODE`: `ReadWriteOnce` (one node, the default) or
        /// `ReadWriteMany` (runs on several nodes).
        cache_access_mode: String,
    },
}

/// Where fix memory looks for earlier fixes of a failure (`SELFHEAL_FIX_MEMORY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixMemory {
    /// No memory: every failure is healed afresh.
    Off,
    /// The failing repository's own merged fixes (the default).
    Repository,
    /// Any repository of the installation: one repository's merged diff may then be replayed
    /// into, or shown to a model for, another, whatever their visibility.
    Installation,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub concurrency: usize,
    /// Where lifecycle events go (`SELFHEAL_EVENTS_*`); nowhere by default.
    pub events: EventsConfig,
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    pub log_cap_bytes: usize,
    /// What a sandbox's work volume (checkout, build output, caches) may hold.
    pub sandbox_work_bytes: i64,
    /// The operator's own sandbox image for every language, instead of the built-in recipe's.
    pub sandbox_image: Option<String>,
    /// A Rust sysroot to mount in the sandbox instead of the one `rustc` on the PATH reports.
    pub sandbox_rust_toolchain: Option<String>,
    /// Where the sandboxes run (`SELFHEAL_SANDBOX_BACKEND`).
    pub sandbox_backend: SandboxBackend,
    /// The model service asked for fixes no deterministic strategy makes, if any.
    pub ai: Option<AiConfig>,
    pub fix_memory: FixMemory,
    /// Dependency caches are pruned past this total size, oldest first...
    pub deps_cache_max_bytes: u64,
    /// ...and past this age.
    pub deps_cache_max_age: Duration,
    pub relay_interval: Duration,
    /// A job pushed to Redis that no worker has started after this long is pushed again (0:
    /// never).
    pub requeue_after: Duration,
    /// How often an idle worker looks for jobs.
    pub poll_interval: Duration,
    pub shutdown_timeout: Duration,
    /// How long a worker starting while Postgres or Redis is away waits for them before it
    /// exits (`SELFHEAL_OUTAGE_WAIT_SECS`).
    pub outage_wait: Duration,
    /// Sandbox reruns before a patch (to reproduce, or find a flake) and after it (to prove it).
    pub reruns: usize,
    /// How often to look for webhook deliveries GitHub failed to make (0: never).
    pub redelivery_interval: Duration,
    /// A `selfheal.yml`-shaped file of org-wide defaults for every repository.
    pub repo_defaults: Option<std::path::PathBuf>,
    /// A fix whose own CI has not reported this long after selfheal pushed it is said to
    /// have none (workflows only on the default branch, path filters), on the PR (0: never).
    pub fix_ci_deadline: Duration,
    /// How often to delete the branches of selfheal's PRs that people merged or closed (0:
    /// never).
    pub branch_sweep_interval: Duration,
    /// One limit for every stage's attempt instead of each stage's own (`Stage::timeout`).
    pub stage_timeout: Option<Duration>,
}

/// Which process is starting: each requires only the variables it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Web,
    Worker,
    /// `migrate`, `verify-audit`: only the database.
    Admin,
}

impl Config {
    pub fn from_env(role: Role) -> Result<Self, ConfigError> {
        Self::from_lookup(role, |name| std::env::var(name).ok())
    }

    /// Reads through `lookup` so tests need not mutate the process environment.
    pub fn from_lookup(
        role: Role,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let database_url = env.required("DATABASE_URL")?;
        let needs_redis = role != Role::Admin;
        let redis_url = if needs_redis {
            env.required("REDIS_URL")?
        } else {
            env.optional("REDIS_URL").unwrap_or_default()
        };
        let mut webhook_secrets = Vec::new();
        if role == Role::Web {
            webhook_secrets.push(SecretString::from(env.required("GITHUB_WEBHOOK_SECRET")?));
        } else if let Some(s) = env.optional("GITHUB_WEBHOOK_SECRET") {
            webhook_secrets.push(SecretString::from(s));
        }
        if let Some(previous) = env.optional("GITHUB_WEBHOOK_SECRET_PREVIOUS") {
            webhook_secrets.push(SecretString::from(previous));
        }

        let dashboard_token = match env.optional("SELFHEAL_DASHBOARD_TOKEN") {
            // A guessable token would leave the wrong-token delay as the only defence, and the
            // right token is never delayed.
            Some(token)
                if token.trim().len() < 24 || {
                    let distinct: std::collections::BTreeSet<char> = token.chars().collect();
                    distinct.len() < 8
                } =>
            {
                return Err(ConfigError::Malformed {
                    name: "SELFHEAL_DASHBOARD_TOKEN",
                    reason:
                        "at least 24 characters, 8 of them different (e.g. `openssl rand -hex 16`)"
                            .into(),
                })
            }
            token => token.map(SecretString::from),
        };

        let api_url = env
            .optional("GITHUB_API_URL")
            .unwrap_or_else(|| "https://api.github.com".into())
            .trim_end_matches('/')
            .to_string();
        let (app_id, app_private_key) = if role == Role::Worker {
            (
                Some(
                    env.parsed::<u64>("GITHUB_APP_ID")?
                        .ok_or(ConfigError::Missing("GITHUB_APP_ID"))?,
                ),
                Some(read_private_key(&env.required("GITHUB_APP_PRIVATE_KEY")?)?),
            )
        } else {
            let key = env
                .optional("GITHUB_APP_PRIVATE_KEY")
                .map(|k| read_private_key(&k))
                .transpose()?;
            (env.parsed::<u64>("GITHUB_APP_ID")?, key)
        };

        Ok(Config {
            database_url: SecretString::from(database_url),
            redis_url: SecretString::from(redis_url),
            queue_prefix: env
                .optional("SELFHEAL_QUEUE_PREFIX")
                .unwrap_or_else(|| "selfheal".into()),
            bind: env
                .parsed("SELFHEAL_BIND")?
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 3000))),
            metrics_bind: env.parsed("SELFHEAL_METRICS_BIND")?,
            webhook_secrets,
            max_body_bytes: env
                .parsed("SELFHEAL_MAX_BODY_BYTES")?
                .unwrap_or(25 * 1024 * 1024),
            migrate_at_start: env.parsed("SELFHEAL_MIGRATE_AT_START")?.unwrap_or(true),
            request_timeout: Duration::from_secs(
                env.parsed("SELFHEAL_REQUEST_TIMEOUT_SECS")?.unwrap_or(10),
            ),
            max_in_flight: env.parsed("SELFHEAL_MAX_IN_FLIGHT")?.unwrap_or(256),
            github: GitHubConfig {
                git_url: match env.optional("GITHUB_GIT_URL") {
                    Some(url) => url.trim_end_matches('/').to_string(),
                    None => git_url_of(&api_url),
                },
                api_url,
                app_id,
                app_private_key,
                max_retries: env.parsed("SELFHEAL_GITHUB_MAX_RETRIES")?.unwrap_or(5),
                rate_limit_min_wait: Duration::from_secs(
                    env.parsed("SELFHEAL_GITHUB_RATE_LIMIT_MIN_WAIT_SECS")?
                        .unwrap_or(60),
                ),
                write_interval: Duration::from_millis(
                    env.parsed("SELFHEAL_GITHUB_WRITE_INTERVAL_MS")?
                        .unwrap_or(1000),
                ),
            },
            dashboard_token,
            dashboard_token_role: match env.optional("SELFHEAL_DASHBOARD_TOKEN_ROLE") {
                Some(role) => role.parse().map_err(|reason| ConfigError::Malformed {
                    name: "SELFHEAL_DASHBOARD_TOKEN_ROLE",
                    reason,
                })?,
                None => AccessRole::Viewer,
            },
            oidc: match role {
                Role::Web => access::oidc_from_env(&env)?,
                _ => None,
            },
            gates: Gates {
                dry_run: env.parsed("SELFHEAL_DRY_RUN")?.unwrap_or(false),
                workflows: env
                    .optional("SELFHEAL_WORKFLOWS")
                    .map(|v| {
                        v.split(',')
                            .map(|w| w.trim().to_string())
                            .filter(|w| !w.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                runs_per_hour: env.parsed("SELFHEAL_RUNS_PER_HOUR")?,
            },
            worker: WorkerConfig {
                concurrency: env.parsed("SELFHEAL_WORKER_CONCURRENCY")?.unwrap_or(4),
                events: match role {
                    Role::Worker => events_out::from_env(&env)?,
                    _ => EventsConfig::default(),
                },
                heartbeat: Duration::from_secs(env.parsed("SELFHEAL_HEARTBEAT_SECS")?.unwrap_or(1)),
                missed_heartbeats: env.parsed("SELFHEAL_MISSED_HEARTBEATS")?.unwrap_or(3),
                log_cap_bytes: env
                    .parsed("SELFHEAL_LOG_CAP_BYTES")?
                    .unwrap_or(8 * 1024 * 1024),
                sandbox_work_bytes: env
                    .parsed("SELFHEAL_SANDBOX_WORK_BYTES")?
                    .unwrap_or(8 << 30),
                sandbox_image: env.parsed("SELFHEAL_SANDBOX_IMAGE")?,
                sandbox_rust_toolchain: env.parsed("SELFHEAL_SANDBOX_RUST_TOOLCHAIN")?,
                sandbox_backend: sandbox_backend(&env)?,
                // Only workers ask a model; web starts whatever the AI variables say.
                ai: match role {
                    Role::Worker => ai::from_env(&env)?,
                    _ => None,
                },
                deps_cache_max_bytes: env
                    .parsed("SELFHEAL_DEPS_CACHE_MAX_BYTES")?
                    .unwrap_or(20 << 30),
                deps_cache_max_age: Duration::from_secs(
                    86_400
                        * env
                            .parsed::<u64>("SELFHEAL_DEPS_CACHE_MAX_AGE_DAYS")?
                            .unwrap_or(14),
                ),
                relay_interval: Duration::from_millis(
                    env.parsed("SELFHEAL_RELAY_INTERVAL_MS")?.unwrap_or(1000),
                ),
                poll_interval: Duration::from_millis(
                    env.parsed("SELFHEAL_POLL_INTERVAL_MS")?.unwrap_or(100),
                ),
                requeue_after: Duration::from_secs(
                    env.parsed("SELFHEAL_REQUEUE_AFTER_SECS")?.unwrap_or(120),
                ),
                shutdown_timeout: Duration::from_secs(
                    env.parsed("SELFHEAL_SHUTDOWN_TIMEOUT_SECS")?.unwrap_or(30),
                ),
                outage_wait: Duration::from_secs(
                    env.parsed("SELFHEAL_OUTAGE_WAIT_SECS")?.unwrap_or(300),
                ),
                reruns: env.parsed("SELFHEAL_RERUNS")?.unwrap_or(3),
                fix_memory: match env
                    .optional("SELFHEAL_FIX_MEMORY")
                    .as_deref()
                    .map(str::trim)
                {
                    None | Some("repository") => FixMemory::Repository,
                    Some("installation") => FixMemory::Installation,
                    Some("off") => FixMemory::Off,
                    Some(other) => {
                        return Err(ConfigError::Malformed {
                            name: "SELFHEAL_FIX_MEMORY",
                            reason: format!("{other:?}: repository, installation or off"),
                        })
                    }
                },
                redelivery_interval: Duration::from_secs(
                    env.parsed("SELFHEAL_REDELIVERY_INTERVAL_SECS")?
                        .unwrap_or(300),
                ),
                repo_defaults: env.optional("SELFHEAL_REPO_DEFAULTS").map(Into::into),
                stage_timeout: env
                    .parsed("SELFHEAL_STAGE_TIMEOUT_SECS")?
                    .map(Duration::from_secs),
                branch_sweep_interval: Duration::from_secs(
                    env.parsed("SELFHEAL_BRANCH_SWEEP_INTERVAL_SECS")?
                        .unwrap_or(60),
                ),
                fix_ci_deadline: Duration::from_secs(
                    env.parsed("SELFHEAL_FIX_CI_DEADLINE_SECS")?.unwrap_or(3600),
                ),
            },
        })
    }

    pub fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }

    pub fn redis_url(&self) -> &str {
        self.redis_url.expose_secret()
    }
}

struct Env<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    fn optional(&self, name: &'static str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    fn parsed<T: std::str::FromStr>(&self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.optional(name)
            .map(|v| {
                v.trim().parse::<T>().map_err(|e| ConfigError::Malformed {
                    name,
                    reason: e.to_string(),
                })
            })
            .transpose()
    }
}

fn sandbox_backend<F: Fn(&str) -> Option<String>>(
    env: &Env<'_, F>,
) -> Result<SandboxBackend, ConfigError> {
    let namespace = env.optional("SELFHEAL_SANDBOX_NAMESPACE");
    let runtime_class = env.optional("SELFHEAL_SANDBOX_RUNTIME_CLASS");
    let storage_class = env.optional("SELFHEAL_SANDBOX_CACHE_STORAGE_CLASS");
    let access_mode = env.optional("SELFHEAL_SANDBOX_CACHE_ACCESS_MODE");
    let backend = env.optional("SELFHEAL_SANDBOX_BACKEND");
    match backend.as_deref().map(str::trim) {
        None | Some("docker") => {
            // Settings for a backend that is not used are a mistake, not a default.
            if let Some(name) = [
                ("SELFHEAL_SANDBOX_NAMESPACE", &namespace),
                ("SELFHEAL_SANDBOX_RUNTIME_CLASS", &runtime_class),
                ("SELFHEAL_SANDBOX_CACHE_STORAGE_CLASS", &storage_class),
                ("SELFHEAL_SANDBOX_CACHE_ACCESS_MODE", &access_mode),
            ]
            .iter()
            .find_map(|(name, v)| v.is_some().then_some(*name))
            {
                return Err(ConfigError::Malformed {
                    name,
                    reason: "only with SELFHEAL_SANDBOX_BACKEND=kubernetes".into(),
                });
            }
            Ok(SandboxBackend::Docker)
        }
        Some("kubernetes") => {
            // The cluster's nodes pull the images from a registry, and a Job mounts none of the
            // worker's files.
            if env.optional("SELFHEAL_SANDBOX_IMAGE").is_none() {
                return Err(ConfigError::Malformed {
                    name: "SELFHEAL_SANDBOX_IMAGE",
                    reason: "required with SELFHEAL_SANDBOX_BACKEND=kubernetes: the images the \
                             cluster pulls (`{language}` for the language)"
                        .into(),
                });
            }
            if env.optional("SELFHEAL_SANDBOX_RUST_TOOLCHAIN").is_some() {
                return Err(ConfigError::Malformed {
                    name: "SELFHEAL_SANDBOX_RUST_TOOLCHAIN",
                    reason: "a Job cannot mount the worker's toolchain: put it in the image".into(),
                });
            }
            Ok(SandboxBackend::Kubernetes {
                namespace: namespace.map(|n| n.trim().to_string()),
                runtime_class: runtime_class.map(|r| r.trim().to_string()),
                cache_storage_class: storage_class.map(|c| c.trim().to_string()),
                cache_access_mode: match access_mode.as_deref().map(str::trim) {
                    None => "ReadWriteOnce".into(),
                    // The fetch writes the claim: ReadOnlyMany cannot be one.
                    Some(m @ ("ReadWriteOnce" | "ReadWriteMany")) => m.into(),
                    Some(other) => {
                        return Err(ConfigError::Malformed {
                            name: "SELFHEAL_SANDBOX_CACHE_ACCESS_MODE",
                            reason: format!("{other:?}: ReadWriteOnce or ReadWriteMany"),
                        })
                    }
                },
            })
        }
        Some(other) => Err(ConfigError::Malformed {
            name: "SELFHEAL_SANDBOX_BACKEND",
            reason: format!("{other:?}: docker or kubernetes"),
        }),
    }
}

/// `GITHUB_APP_PRIVATE_KEY` holds either the PEM itself or a path to it.
/// Where git reaches the repositories of the API at `api_url`: GitHub's own host beside its
/// API's, a GitHub Enterprise Server's host beside its `/api/v3`, or else the same server.
fn git_url_of(api_url: &str) -> String {
    if api_url == "https://api.github.com" {
        "https://github.com".into()
    } else if let Some(host) = api_url.strip_suffix("/api/v3") {
        host.to_string()
    } else if let Some(sub) = api_url
        .strip_prefix("https://api.")
        .filter(|h| h.ends_with(".ghe.com"))
    {
        // GitHub Enterprise Cloud with data residency: `api.SUB.ghe.com` beside `SUB.ghe.com`.
        format!("https://{sub}")
    } else {
        api_url.to_string()
    }
}

fn read_private_key(value: &str) -> Result<SecretString, ConfigError> {
    let pem = if value.trim_start().starts_with("-----BEGIN") {
        value.replace("\\n", "\n")
    } else {
        std::fs::read_to_string(value.trim()).map_err(|e| ConfigError::Malformed {
            name: "GITHUB_APP_PRIVATE_KEY",
            reason: format!("neither a PEM nor a readable file ({e})"),
        })?
    };
    if !pem.contains("PRIVATE KEY-----") {
        return Err(ConfigError::Malformed {
            name: "GITHUB_APP_PRIVATE_KEY",
            reason: "not a PEM private key".into(),
        });
    }
    Ok(SecretString::from(pem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\\nabc\\n-----END RSA PRIVATE KEY-----";

    #[test]
    fn missing_variable_names_itself() {
        let err =
            Config::from_lookup(Role::Web, lookup(&[("REDIS_URL", "redis://x")])).unwrap_err();
        assert_eq!(err, ConfigError::Missing("DATABASE_URL"));
        assert_eq!(err.to_string(), "missing environment variable DATABASE_URL");

        let err = Config::from_lookup(
            Role::Web,
            lookup(&[("DATABASE_URL", "postgres://x"), ("REDIS_URL", "redis://x")]),
        )
        .unwrap_err();
        assert_eq!(err, ConfigError::Missing("GITHUB_WEBHOOK_SECRET"));

        let err = Config::from_lookup(
            Role::Worker,
            lookup(&[
                ("DATABASE_URL", "postgres://x"),
                ("REDIS_URL", "redis://x"),
                ("GITHUB_APP_ID", "1"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err, ConfigError::Missing("GITHUB_APP_PRIVATE_KEY"));
    }

    #[test]
    fn malformed_variable_names_itself() {
        let err = Config::from_lookup(
            Role::Worker,
            lookup(&[
                ("DATABASE_URL", "postgres://x"),
                ("REDIS_URL", "redis://x"),
                ("GITHUB_APP_ID", "twelve"),
                ("GITHUB_APP_PRIVATE_KEY", KEY),
            ]),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Malformed {
                    name: "GITHUB_APP_ID",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("GITHUB_APP_ID"));
    }

    #[test]
    fn fix_memory_stays_in_the_repository_unless_the_installation_is_asked_for() {
        let base = [
            ("DATABASE_URL", "postgres://x"),
            ("REDIS_URL", "redis://x"),
            ("GITHUB_APP_ID", "1"),
            ("GITHUB_APP_PRIVATE_KEY", KEY),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let vars: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
            Config::from_lookup(Role::Worker, lookup(&vars)).map(|c| c.worker.fix_memory)
        };
        assert_eq!(with(&[]).unwrap(), FixMemory::Repository);
        let scope = |v| with(&[("SELFHEAL_FIX_MEMORY", v)]);
        assert_eq!(scope("installation").unwrap(), FixMemory::Installation);
        assert_eq!(scope("off").unwrap(), FixMemory::Off);
        let err = scope("org").unwrap_err();
        assert!(err.to_string().contains("SELFHEAL_FIX_MEMORY"), "{err}");
    }

    #[test]
    fn the_sandbox_backend_is_docker_unless_kubernetes_is_asked_for() {
        let base = [
            ("DATABASE_URL", "postgres://x"),
            ("REDIS_URL", "redis://x"),
            ("GITHUB_APP_ID", "1"),
            ("GITHUB_APP_PRIVATE_KEY", KEY),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let vars: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
            Config::from_lookup(Role::Worker, lookup(&vars)).map(|c| c.worker.sandbox_backend)
        };
        assert_eq!(with(&[]).unwrap(), SandboxBackend::Docker);
        let kubernetes = [
            ("SELFHEAL_SANDBOX_BACKEND", "kubernetes"),
            ("SELFHEAL_SANDBOX_NAMESPACE", "sandboxes"),
            ("SELFHEAL_SANDBOX_RUNTIME_CLASS", "gvisor"),
            (
                "SELFHEAL_SANDBOX_IMAGE",
                "registry.example/sandbox-{language}:1",
            ),
        ];
        assert_eq!(
            with(&kubernetes).unwrap(),
            SandboxBackend::Kubernetes {
                namespace: Some("sandboxes".into()),
                runtime_class: Some("gvisor".into()),
                cache_storage_class: None,
                cache_access_mode: "ReadWriteOnce".into(),
            }
        );
        let err = with(&[("SELFHEAL_SANDBOX_BACKEND", "podman")]).unwrap_err();
        assert!(
            err.to_string().contains("SELFHEAL_SANDBOX_BACKEND"),
            "{err}"
        );
        // Settings for Kubernetes with Docker would be silently ignored: refused instead.
        for name in [
            "SELFHEAL_SANDBOX_NAMESPACE",
            "SELFHEAL_SANDBOX_RUNTIME_CLASS",
            "SELFHEAL_SANDBOX_CACHE_STORAGE_CLASS",
            "SELFHEAL_SANDBOX_CACHE_ACCESS_MODE",
        ] {
            let err = with(&[(name, "x")]).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        // On a cluster the images come from a registry, and the worker's toolchain stays home.
        let err = with(&kubernetes[..3]).unwrap_err();
        assert!(err.to_string().contains("SELFHEAL_SANDBOX_IMAGE"), "{err}");
        let mut bad_mode = kubernetes.to_vec();
        bad_mode.push(("SELFHEAL_SANDBOX_CACHE_ACCESS_MODE", "ReadWriteSometimes"));
        let err = with(&bad_mode).unwrap_err();
        assert!(
            err.to_string()
                .contains("SELFHEAL_SANDBOX_CACHE_ACCESS_MODE"),
            "{err}"
        );
        let mut with_rust = kubernetes.to_vec();
        with_rust.push(("SELFHEAL_SANDBOX_RUST_TOOLCHAIN", "/opt/rust"));
        let err = with(&with_rust).unwrap_err();
        assert!(
            err.to_string().contains("SELFHEAL_SANDBOX_RUST_TOOLCHAIN"),
            "{err}"
        );
    }

    #[test]
    fn a_dashboard_token_must_be_long_and_varied() {
        let with = |token: &str| {
            Config::from_lookup(
                Role::Web,
                lookup(&[
                    ("DATABASE_URL", "postgres://db/x"),
                    ("REDIS_URL", "redis://r"),
                    ("GITHUB_WEBHOOK_SECRET", "whsecret"),
                    ("SELFHEAL_DASHBOARD_TOKEN", token),
                ]),
            )
        };
        assert!(with("3f9c1a7e5b2d8c4f6a0e9b1d7c3a5f2e").is_ok());
        for weak in [
            "short-token",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "abababababababababababab",
        ] {
            let err = with(weak).unwrap_err();
            assert!(
                err.to_string().contains("SELFHEAL_DASHBOARD_TOKEN"),
                "{weak}: {err}"
            );
        }
    }

    #[test]
    fn secrets_never_print() {
        let config = Config::from_lookup(
            Role::Worker,
            lookup(&[
                ("DATABASE_URL", "postgres://u:hunter2@db/x"),
                ("REDIS_URL", "redis://:redispass@r"),
                ("GITHUB_WEBHOOK_SECRET", "whsecret"),
                ("GITHUB_APP_ID", "12"),
                ("GITHUB_APP_PRIVATE_KEY", KEY),
            ]),
        )
        .unwrap();
        let printed = format!("{config:?}");
        for secret in ["hunter2", "redispass", "whsecret", "abc"] {
            assert!(!printed.contains(secret), "{secret} leaked in {printed}");
        }
        assert_eq!(config.github.app_id, Some(12));
        assert_eq!(config.github.api_url, "https://api.github.com");
        assert_eq!(config.github.git_url, "https://github.com");
    }

    #[test]
    fn oidc_fails_fast_naming_the_variable_and_its_secret_never_prints() {
        let base = [
            ("DATABASE_URL", "postgres://x"),
            ("REDIS_URL", "redis://x"),
            ("GITHUB_WEBHOOK_SECRET", "s"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let vars: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
            Config::from_lookup(Role::Web, lookup(&vars))
        };
        let oidc = [
            ("OIDC_PROVIDER_URL", "https://id.example.com/realms/eng/"),
            ("OIDC_CLIENT_ID", "selfheal"),
            ("OIDC_CLIENT_SECRET", "oidc-client-secret-value"),
            (
                "SELFHEAL_SESSION_KEY",
                "session-key-0123456789abcdef0123456789",
            ),
            ("SELFHEAL_PUBLIC_URL", "https://selfheal.example.com"),
            ("SELFHEAL_OIDC_OPERATORS", "sre, oncall"),
        ];
        let config = with(&oidc).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("oidc-client-secret-value"), "{printed}");
        assert!(!printed.contains("session-key-0123"), "{printed}");
        let o = config.oidc.unwrap();
        assert_eq!(
            o.issuer, "https://id.example.com/realms/eng/",
            "kept as written"
        );
        assert_eq!(o.audience, "selfheal");
        assert_eq!(o.roles.claim, "groups");
        assert_eq!(
            o.roles.grants,
            vec![(AccessRole::Operator, vec!["sre".into(), "oncall".into()])]
        );
        assert_eq!(config.dashboard_token_role, AccessRole::Viewer);

        let named = |extra: &[(&'static str, &'static str)]| match with(extra).unwrap_err() {
            ConfigError::Missing(n) | ConfigError::Malformed { name: n, .. } => n,
        };
        assert_eq!(named(&oidc[..1]), "OIDC_CLIENT_ID");
        assert_eq!(named(&oidc[..2]), "OIDC_CLIENT_SECRET");
        assert_eq!(named(&oidc[..3]), "SELFHEAL_SESSION_KEY");
        assert_eq!(named(&oidc[..4]), "SELFHEAL_PUBLIC_URL");
        let mut short = oidc;
        short[3].1 = "too-short";
        assert_eq!(named(&short), "SELFHEAL_SESSION_KEY");
        assert_eq!(named(&oidc[..5]), "SELFHEAL_OIDC_VIEWERS");
        assert_eq!(named(&oidc[1..3]), "OIDC_CLIENT_ID");
        let mut plain = oidc;
        plain[0].1 = "http://id.example.com";
        assert_eq!(named(&plain), "OIDC_PROVIDER_URL");
        plain[0].1 = "http://127.0.0.1:8080";
        assert!(with(&plain).is_ok(), "loopback may be plain http");
        plain[4].1 = "http://selfheal.example.com";
        assert_eq!(named(&plain), "SELFHEAL_PUBLIC_URL");
        assert_eq!(
            named(&[("SELFHEAL_DASHBOARD_TOKEN_ROLE", "root")]),
            "SELFHEAL_DASHBOARD_TOKEN_ROLE"
        );
    }

    #[test]
    fn git_is_reached_beside_the_api() {
        assert_eq!(
            git_url_of("https://ghe.example.com/api/v3"),
            "https://ghe.example.com"
        );
        assert_eq!(
            git_url_of("https://api.octocorp.ghe.com"),
            "https://octocorp.ghe.com"
        );
        assert_eq!(git_url_of("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
    }
}
