//! `selfheal bench ingest`: selfheal's webhook ingest beside a bare receiver on the same
//! Postgres and Redis, driven with the same signed payloads in alternating rounds (the
//! machine is shared and noisy: a ratio from one run says more than figures from two).
//! The bare receiver does the least a receiver can: verify the HMAC, one INSERT, one LPUSH.
//! selfheal's webhook stores a failed run with the outbox row of its admission and pushes it;
//! the admission itself (the gates, the incident, the run, the audit rows) is a worker's, and
//! is measured after the rounds on the backlog they left, so the work that moved is shown
//! beside the work that stayed. Loopback only; bounded by `--seconds` per round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use redis::aio::ConnectionManager;
use sha2::Sha256;
use tokio::net::TcpListener;
use uuid::Uuid;

struct Bare {
    pool: deadpool_postgres::Pool,
    redis: ConnectionManager,
    secret: String,
    key: String,
}

async fn bare_receive(
    State(bare): State<Arc<Bare>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|v| hex::decode(v).ok());
    let Some(signature) = signature else {
        return StatusCode::UNAUTHORIZED;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(bare.secret.as_bytes()) else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    mac.update(&body);
    if mac.verify_slice(&signature).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers
        .get("x-github-delivery")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let Ok(text) = std::str::from_utf8(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let Ok(client) = bare.pool.get().await else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    // Prepared once per connection, as selfheal's statements are: otherwise the comparison
    // would charge the bare receiver a parse per request that selfheal does not pay.
    let Ok(insert) = client
        .prepare_cached(
            "INSERT INTO bare_deliveries (delivery_id, payload) VALUES ($1, $2::text::jsonb)
             ON CONFLICT DO NOTHING",
        )
        .await
    else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    if client.execute(&insert, &[&id, &text]).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let mut redis = bare.redis.clone();
    let pushed: Result<i64, _> = redis::cmd("LPUSH")
        .arg(&bare.key)
        .arg(&id)
        .query_async(&mut redis)
        .await;
    match pushed {
        Ok(_) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Serves on a runtime of its own, two threads (as a process of its own would have on this
/// machine), so that neither receiver waits behind the load driver's tasks or the other
/// receiver's: in one runtime with the driver, each of selfheal's pipelined steps queued
/// behind every request the driver was signing.
fn on_own_runtime<F, Fut>(
    name: &str,
    listener: std::net::TcpListener,
    serve: F,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>>
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()?;
    Ok(std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            runtime.block_on(async move { serve(TcpListener::from_std(listener)?).await })
        })?)
}

/// One round's answers: each accepted request's latency, and how many were not accepted.
pub(crate) struct Round {
    latencies: Vec<Duration>,
    refused: usize,
    pub(crate) elapsed: Duration,
}

/// A signed delivery of a new run of its own repository, branch and workflow: many
/// incidents, as an installation's traffic is, not one incident's row for all.
fn signed(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    template: &str,
    next_id: &std::sync::atomic::AtomicI64,
) -> reqwest::RequestBuilder {
    let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = template
        .replace("999999999999", &id.to_string())
        .replace("888888888888", &(id % 997).to_string())
        .replace("777777777777", &(id % 13).to_string())
        .replace("bench-branch", &format!("branch-{}", id % 31));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    http.post(url)
        .header("x-github-event", "workflow_run")
        .header("x-github-delivery", Uuid::new_v4().to_string())
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(body)
}

/// `rate` requests a second for `seconds`, each sent when due whatever the answers before
/// it (an open loop): latency counts from when the request was due, so a receiver that falls
/// behind shows it in p99 instead of slowing the load down (no coordinated omission).
async fn drive_paced(
    url: &str,
    secret: &str,
    template: &str,
    seconds: u64,
    rate: u32,
    next_id: Arc<std::sync::atomic::AtomicI64>,
) -> anyhow::Result<Round> {
    let http = reqwest::Client::new();
    let every = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let total = u64::from(rate) * seconds;
    let started = tokio::time::Instant::now();
    let mut sent = tokio::task::JoinSet::new();
    for k in 0..total {
        let due = started + every * k as u32;
        tokio::time::sleep_until(due).await;
        let request = signed(&http, url, secret, template, &next_id);
        sent.spawn(async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => Some(due.elapsed()),
                _ => None,
            }
        });
    }
    let mut round = Round {
        latencies: Vec::new(),
        refused: 0,
        elapsed: Duration::ZERO,
    };
    while let Some(answer) = sent.join_next().await {
        match answer? {
            Some(latency) => round.latencies.push(latency),
            None => round.refused += 1,
        }
    }
    round.elapsed = started.elapsed();
    Ok(round)
}

/// How long linking the audit rows a round left unlinked takes: part of what a round of
/// ingest costs, so it is added to the round's time. Linked here rather than waited for, so
/// that the relay's idle wait until its next tick is not counted as work.
pub(crate) async fn audit_drain(pool: &deadpool_postgres::Pool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let client = pool.get().await?;
    loop {
        // 0 when the relay is linking at the moment: then it is, and the count below says.
        selfheal_shared::audit::chain(&client, 10_000).await?;
        let unlinked = selfheal_shared::audit::unlinked(&client).await?;
        if unlinked == 0 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "{unlinked} audit rows still unlinked after two minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Admits every delivery the rounds left `accepted`, `concurrency` at a time, as that many
/// worker jobs would (`failed_run::admit`, without pushing the runs' first stages), then links
/// their audit rows: how many, and how long it all took.
async fn admit_backlog(
    database_url: &str,
    concurrency: usize,
) -> anyhow::Result<(usize, Duration)> {
    let pool = selfheal_shared::db::pool(database_url, concurrency)?;
    let ids: Vec<String> = pool
        .get()
        .await?
        .query(
            "SELECT delivery_id FROM webhook_deliveries WHERE outcome = 'accepted'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let admitted = ids.len();
    let started = Instant::now();
    let mut shares = tokio::task::JoinSet::new();
    for share in ids.chunks(ids.len().div_ceil(concurrency.max(1)).max(1)) {
        let (pool, share) = (pool.clone(), share.to_vec());
        shares.spawn(async move {
            for id in share {
                let admission = selfheal_shared::failed_run::admit(pool.get().await?, &id).await?;
                anyhow::ensure!(
                    admission.run_id().is_some(),
                    "delivery {id} was not admitted: {}",
                    admission.summary()
                );
            }
            anyhow::Ok(())
        });
    }
    while let Some(share) = shares.join_next().await {
        share??;
    }
    audit_drain(&pool).await?;
    Ok((admitted, started.elapsed()))
}

/// `connections` clients posting for `seconds`, each request a new run (a new workflow run id
/// and delivery id), signed.
pub(crate) async fn drive(
    url: &str,
    secret: &str,
    template: &str,
    seconds: u64,
    connections: usize,
    next_id: Arc<std::sync::atomic::AtomicI64>,
) -> anyhow::Result<Round> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (http, url, secret, template, next_id) = (
            http.clone(),
            url.to_string(),
            secret.to_string(),
            template.to_string(),
            next_id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut refused = 0;
            while Instant::now() < deadline {
                let request = signed(&http, &url, &secret, &template, &next_id);
                let sent = Instant::now();
                match request.send().await {
                    Ok(r) if r.status().is_success() => latencies.push(sent.elapsed()),
                    _ => refused += 1,
                }
            }
            (latencies, refused)
        }));
    }
    let mut round = Round {
        latencies: Vec::new(),
        refused: 0,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (latencies, refused) = task.await?;
        round.latencies.extend(latencies);
        round.refused += refused;
    }
    round.elapsed = started.elapsed();
    Ok(round)
}

/// The `p` quantile of sorted durations, in ms (the index `(n - 1) * p`, rounded).
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// (requests per second, p50 ms, p99 ms, refused) over all rounds of one receiver.
pub(crate) type Figures = (f64, f64, f64, usize);

pub(crate) fn figures(rounds: &[Round]) -> Figures {
    let mut all: Vec<Duration> = rounds.iter().flat_map(|r| r.latencies.clone()).collect();
    all.sort();
    let seconds: f64 = rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    let refused = rounds.iter().map(|r| r.refused).sum();
    (
        all.len() as f64 / seconds.max(f64::EPSILON),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        refused,
    )
}

/// The figures of each receiver, a row each under a header naming the first column.
pub(crate) fn table(first: &str, rows: &[(&str, Figures)]) {
    let width = rows
        .iter()
        .map(|(name, _)| name.len())
        .chain([first.len(), 40])
        .max()
        .unwrap_or(40);
    println!(
        "  {first:<width$} {:>9} {:>9} {:>9} {:>8}",
        "req/s", "p50 ms", "p99 ms", "refused"
    );
    for (name, f) in rows {
        println!(
            "  {name:<width$} {:>9.0} {:>9.1} {:>9.1} {:>8}",
            f.0, f.1, f.2, f.3
        );
    }
}

/// Removes a bench's Redis keys (its queue prefix), best effort.
pub(crate) async fn forget_keys(redis: &mut impl redis::aio::ConnectionLike, tag: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{tag}*"))
        .query_async(redis)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query_async(redis).await;
    }
}

/// The recorded failing run (19 KB), its ids placeholders each request replaces (`signed`).
pub(crate) fn template() -> anyhow::Result<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut payload: serde_json::Value = serde_json::from_slice(&std::fs::read(
        root.join("fixtures/github-webhooks/workflow_run/completed.payload.json"),
    )?)?;
    payload["workflow_run"]["id"] = serde_json::json!(999_999_999_999i64);
    payload["workflow_run"]["conclusion"] = serde_json::json!("failure");
    payload["workflow_run"]["workflow_id"] = serde_json::json!(777_777_777_777i64);
    payload["workflow_run"]["head_branch"] = serde_json::json!("bench-branch");
    payload["repository"]["id"] = serde_json::json!(888_888_888_888i64);
    payload["workflow_run"]["head_repository"]["id"] = serde_json::json!(888_888_888_888i64);
    payload["installation"] = serde_json::json!({"id": 4242});
    Ok(serde_json::to_string(&payload)?)
}

/// Admissions at a time after the rounds: a worker's default concurrency
/// (`SELFHEAL_WORKER_CONCURRENCY`).
const ADMITTERS: usize = 4;

pub async fn ingest_bench(
    seconds: u64,
    connections: usize,
    rounds: usize,
    rate: u32,
) -> anyhow::Result<()> {
    let admin_url = std::env::var("SELFHEAL_ADMIN_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:54329/postgres".into());
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:63799".into());
    let tag = format!("bench_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let database_url = crate::demo::create_database(&admin_url, &tag).await?;
    let secret = Uuid::new_v4().simple().to_string();

    // selfheal web, in process, on its own fresh database.
    let vars: std::collections::HashMap<&str, String> = [
        ("DATABASE_URL", database_url.clone()),
        ("REDIS_URL", redis_url.clone()),
        ("GITHUB_WEBHOOK_SECRET", secret.clone()),
        ("SELFHEAL_QUEUE_PREFIX", tag.clone()),
        ("SELFHEAL_BIND", "127.0.0.1:0".into()),
    ]
    .into_iter()
    .collect();
    let config = selfheal_shared::Config::from_lookup(selfheal_shared::config::Role::Web, |k| {
        vars.get(k).cloned()
    })?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let selfheal_url = format!("http://{}/webhooks/github", listener.local_addr()?);
    let (stop_web, stopped) = tokio::sync::oneshot::channel::<()>();
    let web = on_own_runtime("selfheal-web", listener, move |listener| async move {
        selfheal_web::serve(config, listener, async move {
            let _ = stopped.await;
        })
        .await
    })?;

    // The bench's own connections: the bare receiver's table, and linking selfheal's audit rows.
    let pool = selfheal_shared::db::pool(&database_url, 2)?;
    let redis = ConnectionManager::new(redis::Client::open(redis_url.as_str())?).await?;
    // The bare receiver, on the same Postgres and Redis.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let bare_url = format!("http://{}/webhooks/github", listener.local_addr()?);
    let (stop_bare, bare_stopped) = tokio::sync::oneshot::channel::<()>();
    let bare = {
        let (database_url, redis_url, secret, key) = (
            database_url.clone(),
            redis_url.clone(),
            secret.clone(),
            format!("{tag}:bare"),
        );
        on_own_runtime("bare", listener, move |listener| async move {
            let bare = Arc::new(Bare {
                // As many connections as selfheal web's own pool.
                pool: selfheal_shared::db::pool(&database_url, selfheal_web::DB_POOL_SIZE)?,
                redis: ConnectionManager::new(redis::Client::open(redis_url.as_str())?).await?,
                secret,
                key,
            });
            let app = axum::Router::new()
                .route("/webhooks/github", post(bare_receive))
                .with_state(bare);
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = bare_stopped.await;
                })
                .await?;
            Ok(())
        })?
    };

    let template = template()?;
    let next_id = Arc::new(std::sync::atomic::AtomicI64::new(1_000_000));

    // selfheal answering (migrated, connected) before anything is timed.
    let ready = format!(
        "{}/readyz",
        selfheal_url.trim_end_matches("/webhooks/github")
    );
    let mut answered = false;
    for _ in 0..100 {
        if reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(answered, "selfheal web never became ready at {ready}");
    // A receiver that could not start (its Redis or Postgres refused) says why, here.
    if bare.is_finished() {
        let why = match bare.join() {
            Ok(Err(e)) => format!("{e:#}"),
            _ => "it panicked or stopped".to_string(),
        };
        anyhow::bail!("the bare receiver stopped before the rounds began: {why}");
    }
    // The body stored as selfheal stores it: the same type and the same compression
    // (migrations/V17), so the comparison is of everything else.
    let client = pool.get().await?;
    let compression: String = client
        .query_one(
            "SELECT CASE attcompression WHEN 'l' THEN 'lz4' WHEN 'p' THEN 'pglz' ELSE 'default' END
             FROM pg_attribute WHERE attrelid = 'webhook_deliveries'::regclass AND attname = 'payload'",
            &[],
        )
        .await?
        .get(0);
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS bare_deliveries (delivery_id TEXT PRIMARY KEY, payload JSONB {} NOT NULL)",
            if compression == "default" { String::new() } else { format!("COMPRESSION {compression}") }
        ))
        .await?;
    drop(client);
    // Both warmed, then rounds in ABBA order (whatever one round leaves behind, such as
    // selfheal's relay work, falls on both alike).
    for url in [&bare_url, &selfheal_url] {
        drive(url, &secret, &template, 1, connections, next_id.clone()).await?;
    }
    let (mut bare_rounds, mut selfheal_rounds) = (Vec::new(), Vec::new());
    let (mut bare_paced, mut selfheal_paced) = (Vec::new(), Vec::new());
    let mut linking = Duration::ZERO;
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for selfheal in order {
            let url = if selfheal { &selfheal_url } else { &bare_url };
            let mut done = drive(
                url,
                &secret,
                &template,
                seconds,
                connections,
                next_id.clone(),
            )
            .await?;
            let mut paced = if rate > 0 {
                Some(drive_paced(url, &secret, &template, seconds, rate, next_id.clone()).await?)
            } else {
                None
            };
            if selfheal {
                // The round lasts until its audit rows are in the chain.
                let drain = audit_drain(&pool).await?;
                linking += drain;
                done.elapsed += drain;
                selfheal_rounds.push(done);
                selfheal_paced.extend(paced.take());
            } else {
                bare_rounds.push(done);
                bare_paced.extend(paced.take());
            }
        }
    }
    let _ = (stop_web.send(()), stop_bare.send(()));
    // With the web stopped, the backlog it accepted is admitted as workers would admit it.
    let (admitted, admitting) = admit_backlog(&database_url, ADMITTERS).await?;
    for (name, server) in [("selfheal web", web), ("the bare receiver", bare)] {
        let stopped = tokio::task::spawn_blocking(move || server.join()).await?;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("{name} failed: {e:#}"),
            Err(_) => anyhow::bail!("{name} panicked"),
        }
    }
    // Its relay stops with it; then nothing is left behind: the database and this run's Redis keys.
    let mut redis = redis;
    forget_keys(&mut redis, &tag).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    crate::demo::drop_database(&admin_url, &tag).await?;
    let b = figures(&bare_rounds);
    let s = figures(&selfheal_rounds);
    println!(
        "ingest: {rounds} alternating rounds of {seconds} s, {connections} connections, signed {} KB workflow_run failures, a new run each request, bodies stored as jsonb ({compression} compression) by both",
        template.len() / 1024
    );
    table(
        "receiver",
        &[
            ("bare (HMAC, INSERT, LPUSH)", b),
            ("selfheal web (delivery, outbox row, push)", s),
        ],
    );
    println!(
        "  ratio selfheal / bare: {:.2}x throughput, p99 {:.1}x (selfheal's rounds last until its audit rows are linked: {:.2} s of them in all)",
        s.0 / b.0.max(f64::EPSILON),
        s.2 / b.2.max(f64::EPSILON),
        linking.as_secs_f64()
    );
    // The work the answer no longer waits for, measured on what the rounds left behind.
    let admit_rate = admitted as f64 / admitting.as_secs_f64().max(f64::EPSILON);
    println!(
        "admission (a worker's share: gates, incident, run, first stage, audit rows), after the rounds, {ADMITTERS} at a time: {admitted} deliveries in {:.1} s, {admit_rate:.0}/s",
        admitting.as_secs_f64()
    );
    let sustained = 1.0 / (1.0 / s.0.max(f64::EPSILON) + 1.0 / admit_rate.max(f64::EPSILON));
    println!(
        "  answer and admission one after the other on this machine: {sustained:.0}/s, {:.2}x the bare receiver (what a steady stream sustains; the answer alone is what GitHub waits for)",
        sustained / b.0.max(f64::EPSILON)
    );
    let mut refused = b.3 + s.3;
    if rate > 0 {
        let (bp, sp) = (figures(&bare_paced), figures(&selfheal_paced));
        println!(
            "paced: {rate} requests/s for {seconds} s each round, latency from when each was due"
        );
        table("receiver", &[("bare", bp), ("selfheal web", sp)]);
        refused += bp.3 + sp.3;
    }
    anyhow::ensure!(
        refused == 0,
        "requests were refused: the figures above are not a fair comparison"
    );
    Ok(())
}
