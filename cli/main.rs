//! `selfheal`: the one binary users run. Each subcommand wires config to one library.

mod bench;
#[cfg(feature = "dev")]
mod bench_fleet;
#[cfg(feature = "dev")]
mod bench_ingest;
#[cfg(feature = "dev")]
mod bench_observability;
// The stand-in, the demo and the replay are for trying selfheal and testing it: a production
// build leaves them out (`cargo build --release --no-default-features`).
#[cfg(feature = "dev")]
mod demo;
mod heal;
mod report;
mod telemetry;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use selfheal_shared::config::Role;
use selfheal_shared::{audit, db, Config};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "selfheal",
    version,
    about = "Self-healing CI: turns failed GitHub Actions runs into fixes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the webhook server (GITHUB_WEBHOOK_SECRET, DATABASE_URL, REDIS_URL).
    Web,
    /// Run a pipeline worker (DATABASE_URL, REDIS_URL, GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY).
    Worker,
    /// Apply database migrations (DATABASE_URL).
    Migrate,
    /// Print a report (DATABASE_URL): `mttr` per repository, week and failure class, `fix-rate`
    /// (incidents selfheal healed), `outcomes` (patches by class and strategy), `flaky` (flaky
    /// failures by fingerprint), `cost` (runs, tokens and sandbox minutes per installation).
    /// docs/reporting.md says what each counts.
    Report {
        #[arg(value_parser = ["mttr", "fix-rate", "outcomes", "accuracy", "precision", "time-to-green", "proofs", "flaky", "cost"], default_value = "mttr")]
        view: String,
        /// `cost` only: one installation (its GitHub id); all by default.
        #[arg(long)]
        installation: Option<i64>,
        /// One repository (`owner/name`); all by default.
        #[arg(long)]
        repo: Option<String>,
        /// How far back: `30d`, `12w`, `1year`.
        #[arg(long, default_value = "30d")]
        since: String,
        #[arg(long, value_parser = ["table", "csv", "json"], default_value = "table")]
        format: String,
    },
    /// Install (Debian packages) and start or stop Postgres, Redis and dockerd on this machine.
    Services {
        #[arg(value_parser = ["up", "down"])]
        action: String,
    },
    /// Check the audit log's hash chain; exits 1 if a row was edited or removed.
    VerifyAudit,
    /// Run the local GitHub stand-in (tests and the demo only).
    #[cfg(feature = "dev")]
    Standin {
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: String,
        /// The URL other hosts reach it at (in the URLs it hands out); default: the bind address.
        #[arg(long)]
        public_url: Option<String>,
        /// The folder served as the repository (default: examples/rust-format of this checkout).
        #[arg(long)]
        repo: Option<std::path::PathBuf>,
        /// The recorded fixtures (default: fixtures/ of this checkout).
        #[arg(long)]
        fixtures: Option<std::path::PathBuf>,
    },
    #[cfg(feature = "dev")]
    /// Sign and send the recorded failing run to a running `selfheal web` (demo and compose
    /// check only): its head commit is the stand-in's.
    Replay {
        /// The webhook endpoint, e.g. http://localhost:3000/webhooks/github.
        #[arg(long)]
        url: String,
        /// The stand-in, to ask which commit failed.
        #[arg(long)]
        standin: String,
        #[arg(long, default_value_t = 4242)]
        installation: i64,
        #[arg(long, default_value_t = 1)]
        run_id: i64,
    },
    /// Replay a recorded failing run through web, two workers and the GitHub stand-in.
    #[cfg(feature = "dev")]
    Demo,
    /// Evaluate one repository policy (a JSON request on stdin, the answer on stdout): the
    /// worker runs its repository's policies this way, each in a process of its own with
    /// limits on memory and time (docs/invariants.md).
    #[command(hide = true)]
    PolicyEval,
    /// Diagnose a saved CI job log.
    Diagnose {
        #[arg(long)]
        log: std::path::PathBuf,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        format: String,
    },
    /// Diagnose, patch and validate a failure on a local checkout (no GitHub, Redis or Postgres).
    Heal {
        #[arg(long)]
        repo: std::path::PathBuf,
        /// The failing command (taken from the log's failed step when omitted).
        #[arg(long)]
        cmd: Option<String>,
        /// A saved CI job log of the failure.
        #[arg(long)]
        log: Option<std::path::PathBuf>,
        /// Write the validated patch to the work tree.
        #[arg(long)]
        apply: bool,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        format: String,
        /// Reruns before and after the patch.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The Docker sandbox that patches are proven in.
    Sandbox {
        #[command(subcommand)]
        what: SandboxCommand,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// Build the sandbox images if missing (debootstrap + docker import); print their tags.
    Image {
        /// rust, python, node, go or java; repeat for several (default: rust and python).
        #[arg(long = "language")]
        languages: Vec<String>,
    },
    /// Run a command on a copy of a directory in the sandbox.
    Run {
        #[arg(long)]
        repo: std::path::PathBuf,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    #[cfg(feature = "dev")]
    /// Webhook -> validated patch for each example, cold and warm dependency cache, through
    /// the whole stack (min/median/max), with the cache hit rate and image sizes.
    Heal {
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// rust-format, rust-deps, python-deps, node-format, go-format (default: all).
        #[arg(long = "example")]
        examples: Vec<String>,
    },
    #[cfg(feature = "dev")]
    /// Webhook ingest beside a bare receiver (HMAC, one INSERT, one LPUSH) on the same
    /// Postgres and Redis: requests per second, p50, p99 and the ratio, alternating rounds.
    Ingest {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Also a paced round each at this many requests per second (0: none), whose
        /// latencies count from when each request was due.
        #[arg(long, default_value_t = 500)]
        rate: u32,
    },
    #[cfg(feature = "dev")]
    /// What traces and metrics cost ingest: two selfheal web processes, one traced over OTLP
    /// and scraped every second, one not, driven alternately with the same deliveries.
    Observability {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 4)]
        rounds: usize,
    },
    #[cfg(feature = "dev")]
    /// The fleet on a backlog for each worker count (fresh database each): runs per minute and
    /// the ratio to the first count, queue pickup p50/p99 beside a Redis round trip, worker
    /// memory idle and at peak, worker CPU per run. The runs need no sandbox.
    Fleet {
        /// Worker counts, in turn.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 200)]
        runs: usize,
        #[arg(long, default_value_t = 20)]
        pickups: usize,
    },
    /// Sandbox start overhead: a no-op in a fresh container beside the same no-op direct.
    Sandbox {
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Diagnosis accuracy over labelled logs and parsing throughput beside grep -E.
    Diagnose {
        /// A folder with `labels.json` or `manifest.json` and the logs it labels
        /// (default: fixtures/corpus, then fixtures/ci-logs).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 200)]
        rounds: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A repository policy's child: no runtime, no telemetry, nothing on stdout but the answer,
    // within its memory limit.
    if let Command::PolicyEval = cli.command {
        return match selfheal_engine::invariants::isolated::serve(
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let telemetry = telemetry::init(match cli.command {
        Command::Web => Some("selfheal-web"),
        Command::Worker => Some("selfheal-worker"),
        _ => None,
    });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    drop(runtime);
    telemetry.shutdown();
    code
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Web => {
            let config = Config::from_env(Role::Web)?;
            let listener = TcpListener::bind(config.bind)
                .await
                .with_context(|| format!("cannot listen on {}", config.bind))?;
            selfheal_web::serve(config, listener, shutdown_signal()).await?;
        }
        Command::Worker => {
            let config = Config::from_env(Role::Worker)?;
            selfheal_worker::run(config, shutdown_signal()).await?;
        }
        Command::Migrate => {
            let config = Config::from_env(Role::Admin)?;
            let pool = db::pool(config.database_url(), 2)?;
            let applied = db::migrate(&pool).await?;
            println!("migrations applied: {applied}");
        }
        Command::Report {
            view,
            installation,
            repo,
            since,
            format,
        } => {
            let back = humantime::parse_duration(&since)
                .with_context(|| format!("--since {since:?} is not a duration such as 30d"))?;
            let since = chrono::Duration::from_std(back)
                .ok()
                .and_then(|back| chrono::Utc::now().checked_sub_signed(back))
                .with_context(|| format!("--since {since:?} is too long"))?;
            let config = Config::from_env(Role::Admin)?;
            let pool = db::pool(config.database_url(), 2)?;
            let client = pool.get().await?;
            let client = &**client;
            let repo = repo.as_deref();
            let failed = |e: tokio_postgres::Error| {
                let hint = match e.code() {
                    Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                        " (its view is missing: run `selfheal migrate`)"
                    }
                    _ => "",
                };
                anyhow::Error::new(e).context(format!("reading the {view} report{hint}"))
            };
            use selfheal_shared::reports;
            let text = match view.as_str() {
                "fix-rate" => report::render(
                    &reports::fix_rate(client, repo, since)
                        .await
                        .map_err(failed)?,
                    &format,
                )?,
                "outcomes" => report::render(
                    &reports::patch_outcomes(client, repo, since)
                        .await
                        .map_err(failed)?,
                    &format,
                )?,
                "precision" => report::render(
                    &reports::precision(client, repo, since)
                        .await
                        .map_err(failed)?,
                    &format,
                )?,
                "time-to-green" => report::render(
                    &reports::time_to_green(client, repo, since)
                        .await
                        .map_err(failed)?,
                    &format,
                )?,
                "proofs" => report::render(
                    &reports::proofs(client, repo, since).await.map_err(failed)?,
                    &format,
                )?,
                "accuracy" => report::render(
                    &reports::diagnosis_accuracy(client, repo, since)
                        .await
                        .map_err(failed)?,
                    &format,
                )?,
                "cost" => report::render(
                    &reports::cost_weekly(client, installation, since)
                        .await
                        .map_err(failed)?,
                    &format,
                )?,
                "flaky" => report::render(
                    &reports::flaky_tests(client, repo, since)
                        .await
                        .map_err(failed)?,
                    &format,
                )?,
                _ => report::render_mttr(
                    &reports::mttr_weekly(client, repo, since)
                        .await
                        .map_err(failed)?,
                    &format,
                )?,
            };
            print!("{text}");
        }
        Command::Services { action } => {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");
            let status = std::process::Command::new("bash")
                .arg(script)
                .arg(&action)
                .status()?;
            if !status.success() {
                anyhow::bail!("{script} {action} failed ({status})");
            }
        }
        Command::VerifyAudit => {
            let config = Config::from_env(Role::Admin)?;
            let pool = db::pool(config.database_url(), 2)?;
            let report = audit::verify(&pool.get().await?).await?;
            let head = match &report.head {
                Some((seq, hash)) => format!("head: row {seq} sha256:{}", hex::encode(hash)),
                None => "head: none (empty log)".into(),
            };
            // Rows are numbered by their place in the chain (`audit_log.chain_seq`).
            if report.is_intact() {
                println!("audit log intact: {} rows", report.rows);
                println!("{head}");
                if report.unlinked > 0 {
                    println!(
                        "{} rows committed meanwhile are not linked yet (checked next time)",
                        report.unlinked
                    );
                }
            } else {
                println!("audit log BROKEN ({} rows checked):", report.rows);
                for b in &report.breaks {
                    match b {
                        audit::ChainBreak::Edited { seq } => {
                            println!("  row {seq}: content does not match its hash (edited)")
                        }
                        audit::ChainBreak::Unlinked { seq } => {
                            println!("  row {seq}: does not link to the previous row (a row was removed or inserted)")
                        }
                    }
                }
                println!("{head}");
                return Ok(ExitCode::from(1));
            }
        }
        #[cfg(feature = "dev")]
        Command::Standin {
            bind,
            public_url,
            repo,
            fixtures,
        } => {
            let listener = TcpListener::bind(&bind)
                .await
                .with_context(|| format!("cannot listen on {bind}"))?;
            let standin = github_standin::spawn_with(
                listener,
                github_standin::Fixtures::new(
                    fixtures.unwrap_or_else(github_standin::fixtures_dir),
                ),
                public_url,
                &repo.unwrap_or_else(github_standin::default_repo_dir),
            )
            .await?;
            println!("{}", standin.url());
            shutdown_signal().await;
        }
        #[cfg(feature = "dev")]
        Command::Demo => demo::run().await?,
        #[cfg(feature = "dev")]
        Command::Replay {
            url,
            standin,
            installation,
            run_id,
        } => {
            let secret = std::env::var("GITHUB_WEBHOOK_SECRET")
                .context("GITHUB_WEBHOOK_SECRET: the secret the web server verifies with")?;
            let (status, body) =
                demo::replay_to(&url, &secret, &standin, installation, run_id).await?;
            println!("{status} {body}");
            if !status.is_success() {
                return Ok(ExitCode::from(1));
            }
        }
        Command::PolicyEval => unreachable!("answered before the runtime starts"),
        Command::Diagnose { log, format } => {
            let bytes =
                std::fs::read(&log).with_context(|| format!("cannot read {}", log.display()))?;
            let d = selfheal_engine::diagnose::diagnose(&String::from_utf8_lossy(&bytes));
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print_diagnosis(&d);
            }
        }
        Command::Sandbox { what } => return sandbox_command(what).await,
        #[cfg(feature = "dev")]
        Command::Bench {
            what: BenchCommand::Heal { runs, examples },
        } => bench::heal_bench(runs, &examples).await?,
        Command::Bench {
            what: BenchCommand::Sandbox { runs },
        } => bench::sandbox_bench(runs).await?,
        #[cfg(feature = "dev")]
        Command::Bench {
            what:
                BenchCommand::Ingest {
                    seconds,
                    connections,
                    rounds,
                    rate,
                },
        } => bench_ingest::ingest_bench(seconds, connections, rounds, rate).await?,
        #[cfg(feature = "dev")]
        Command::Bench {
            what:
                BenchCommand::Observability {
                    seconds,
                    connections,
                    rounds,
                },
        } => bench_observability::observability_bench(seconds, connections, rounds).await?,
        #[cfg(feature = "dev")]
        Command::Bench {
            what:
                BenchCommand::Fleet {
                    workers,
                    runs,
                    pickups,
                },
        } => bench_fleet::fleet_bench(&workers, runs, pickups).await?,
        Command::Heal {
            repo,
            cmd,
            log,
            apply,
            format,
            runs,
        } => {
            return heal::run(heal::Args {
                repo,
                cmd,
                log,
                apply,
                json: format == "json",
                runs,
            })
            .await;
        }
        Command::Bench {
            what: BenchCommand::Diagnose { dir, rounds },
        } => {
            // By default the labelled corpus (many languages and CIs) and the older
            // GitHub-only fixtures, one after the other.
            let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
            let dirs = match dir {
                Some(dir) => vec![dir],
                None => vec![fixtures.join("corpus"), fixtures.join("ci-logs")],
            };
            for dir in dirs {
                bench::diagnose_bench(&dir, rounds)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn sandbox_command(what: SandboxCommand) -> anyhow::Result<ExitCode> {
    use selfheal_engine::sandbox::{ensure_image, Language, Limits};
    let images = heal::images_from_env();
    match what {
        SandboxCommand::Image { languages } => {
            let docker = bollard::Docker::connect_with_local_defaults()?
                .negotiate_version()
                .await?;
            let wanted = if languages.is_empty() {
                vec!["rust".to_string(), "python".to_string()]
            } else {
                languages
            };
            for name in wanted {
                let language = Language::parse(&name).with_context(|| {
                    format!("unknown language {name:?} (rust, python, node, go, java)")
                })?;
                println!("{}", ensure_image(&docker, &images, language).await?);
            }
        }
        SandboxCommand::Run {
            repo,
            timeout_secs,
            command,
        } => {
            let limits = Limits {
                timeout: std::time::Duration::from_secs(timeout_secs),
                ..Limits::default()
            };
            let sandbox = heal::connect_sandbox(limits).await?;
            let (run, _) = sandbox.run(&repo, &command.join(" "), None).await?;
            print!("{}", run.output);
            eprintln!(
                "exit {} in {:.1}s{}{}",
                run.exit_code,
                run.duration.as_secs_f64(),
                if run.timed_out { " (timed out)" } else { "" },
                if run.oom_killed {
                    " (killed: out of memory)"
                } else {
                    ""
                }
            );
            return Ok(if run.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_diagnosis(d: &selfheal_engine::diagnose::Diagnosis) {
    let culprit = match (&d.culprit_file, d.culprit_line) {
        (Some(f), Some(l)) => format!("{f}:{l}"),
        (Some(f), None) => f.clone(),
        _ => "(not shown in the log)".into(),
    };
    println!("class        {}", d.class.as_str());
    println!("tool         {}", d.tool.as_deref().unwrap_or("(unknown)"));
    println!("culprit      {culprit}");
    if let Some(c) = &d.command {
        println!("command      {c}");
    }
    if !d.failing_tests.is_empty() {
        println!("failing      {}", d.failing_tests.join(", "));
    }
    println!(
        "ci           {}",
        serde_json::to_value(d.ci)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    );
    println!("fingerprint  {}", d.fingerprint);
    println!("excerpt:");
    for (number, line) in d.excerpt_lines.iter().zip(d.excerpt.lines()) {
        println!("  {number:>5} | {line}");
    }
}

/// SIGTERM (replicas being scaled down) or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
