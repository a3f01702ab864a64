//! `selfheal bench observability`: what traces and metrics cost webhook ingest. Two `selfheal
//! web` processes (this binary, the same settings, one database and Redis): one with nothing
//! watching it, one exporting its spans over OTLP to a receiver in this bench (which counts and
//! drops them) and scraped for `/metrics` every second (a fleet read from Postgres every 10 s,
//! as Prometheus would cause). Driven alternately (ABBA) with the same signed deliveries:
//! requests per second, p50, p99 and the ratios, side by side in one run.
//!
//! Metrics have no off switch (their counters are always counted, a few nanoseconds each): "on"
//! is "scraped", which is their cost beyond that.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use uuid::Uuid;

use crate::bench_ingest::{audit_drain, drive, figures, table, template, Round};

/// A child process that ends with the bench.
struct Web(Child);

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn ready(url: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if reqwest::get(format!("{url}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("selfheal web never became ready at {url}")
}

pub async fn observability_bench(
    seconds: u64,
    connections: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let admin_url = std::env::var("SELFHEAL_ADMIN_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:54329/postgres".into());
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:63799".into());
    let tag = format!("bench_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let database_url = crate::demo::create_database(&admin_url, &tag).await?;
    let secret = Uuid::new_v4().simple().to_string();
    let migrated = selfheal_shared::db::pool(&database_url, 2)?;
    selfheal_shared::db::migrate(&migrated).await?;

    // The OTLP receiver: counts what it is sent, answers 200.
    let spans_bytes = Arc::new(AtomicU64::new(0));
    let exports = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let collector = format!("http://{}", listener.local_addr()?);
    let app =
        axum::Router::new()
            .route(
                "/v1/traces",
                post(
                    |State((bytes, count)): State<(Arc<AtomicU64>, Arc<AtomicU64>)>,
                     body: Bytes| async move {
                        bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                        count.fetch_add(1, Ordering::Relaxed);
                        ""
                    },
                ),
            )
            .with_state((spans_bytes.clone(), exports.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let exe = std::env::current_exe()?;
    let start = |observed: bool| -> anyhow::Result<(Web, String)> {
        let port = free_port()?;
        let mut command = Command::new(&exe);
        command
            .arg("web")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("DATABASE_URL", &database_url)
            .env("REDIS_URL", &redis_url)
            .env("GITHUB_WEBHOOK_SECRET", &secret)
            .env("SELFHEAL_QUEUE_PREFIX", &tag)
            .env("SELFHEAL_BIND", format!("127.0.0.1:{port}"))
            .env("SELFHEAL_MIGRATE_AT_START", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if observed {
            command.env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector);
        }
        Ok((Web(command.spawn()?), format!("http://127.0.0.1:{port}")))
    };
    let (plain_web, plain_url) = start(false)?;
    let (observed_web, observed_url) = start(true)?;
    ready(&plain_url).await?;
    ready(&observed_url).await?;

    let template = template()?;
    let next_id = Arc::new(std::sync::atomic::AtomicI64::new(1_000_000));
    let pool = selfheal_shared::db::pool(&database_url, 2)?;
    // Prometheus, for the observed one: a scrape a second while it is driven.
    let scrapes = Arc::new(AtomicU64::new(0));
    let scrape_loop = |url: String, scrapes: Arc<AtomicU64>| {
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if http
                    .get(format!("{url}/metrics"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    for url in [&plain_url, &observed_url] {
        let hook = format!("{url}/webhooks/github");
        drive(&hook, &secret, &template, 1, connections, next_id.clone()).await?;
        audit_drain(&pool).await?;
    }
    let (mut plain, mut observed): (Vec<Round>, Vec<Round>) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for watched in order {
            let url = if watched { &observed_url } else { &plain_url };
            let scraper = watched.then(|| scrape_loop(url.clone(), scrapes.clone()));
            let hook = format!("{url}/webhooks/github");
            let mut done = drive(
                &hook,
                &secret,
                &template,
                seconds,
                connections,
                next_id.clone(),
            )
            .await?;
            if let Some(scraper) = scraper {
                scraper.abort();
            }
            // Both link their audit rows the same way: the round lasts until they are.
            done.elapsed += audit_drain(&pool).await?;
            if watched {
                observed.push(done);
            } else {
                plain.push(done);
            }
        }
    }
    // The last spans reach the receiver within the SDK's batch delay (5 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    drop((plain_web, observed_web));
    drop(pool);
    drop(migrated);
    let redis = redis::Client::open(redis_url.as_str())?;
    let mut redis = redis.get_multiplexed_async_connection().await?;
    crate::bench_ingest::forget_keys(&mut redis, &tag).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    crate::demo::drop_database(&admin_url, &tag).await?;

    let (p, o) = (figures(&plain), figures(&observed));
    let exported = exports.load(Ordering::Relaxed);
    println!(
        "observability: {rounds} alternating rounds of {seconds} s, {connections} connections, signed {} KB workflow_run failures, a new run each request; two selfheal web processes, the same binary and settings on one database",
        template.len() / 1024
    );
    table(
        "selfheal web",
        &[
            ("unobserved (no traces, not scraped)", p),
            ("traced (OTLP) and scraped every second", o),
        ],
    );
    println!(
        "  ratio observed / unobserved: {:.2}x throughput, p50 {:.2}x, p99 {:.2}x ({exported} OTLP exports, {} KB of spans; {} scrapes)",
        o.0 / p.0.max(f64::EPSILON),
        o.1 / p.1.max(f64::EPSILON),
        o.2 / p.2.max(f64::EPSILON),
        spans_bytes.load(Ordering::Relaxed) / 1024,
        scrapes.load(Ordering::Relaxed),
    );
    anyhow::ensure!(
        exported > 0,
        "the observed web exported no span: the comparison would be of nothing"
    );
    anyhow::ensure!(
        p.3 + o.3 == 0,
        "requests were refused: the figures above are not a fair comparison"
    );
    Ok(())
}
