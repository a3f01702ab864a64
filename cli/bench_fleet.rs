//! `selfheal bench fleet`: the fleet on a backlog, for each worker count in turn, on a fresh
//! database each time. A backlog of failing runs is delivered before any worker starts, then
//! drained (runs per minute, and the ratio to one worker); then failures one at a time on the
//! idle fleet, for queue pickup (enqueue to the first stage's start, p50/p99) beside a Redis
//! round trip; worker memory idle and at its peak, and worker CPU per run.
//!
//! The runs need no sandbox: their log names no command selfheal can run again, so triage and
//! diagnose run in full and patch stops before Docker (no fix to try). That measures the queue,
//! Postgres and the workers' own work, which is what scale-out shares; sandbox time is per run
//! and is `bench heal`'s to show.

use std::time::{Duration, Instant};

use crate::bench_ingest::percentile;
use crate::demo::Stack;

/// A failure with nothing to re-run: a cancelled job.
const NO_COMMAND_LOG: &str = "2026-11-26T10:00:00.0000000Z ##[error]The operation was canceled.\n\
2026-11-26T10:00:00.0000000Z Cleaning up orphan processes\n";

struct Figures {
    workers: usize,
    runs_per_min: f64,
    drain: Duration,
    /// Spawning the workers to their first stage (connections, migrations check, first poll).
    startup: Duration,
    pickup: Vec<Duration>,
    rss_idle_kib: u64,
    rss_peak_kib: u64,
    cpu_per_run_ms: f64,
}

pub async fn fleet_bench(counts: &[usize], runs: usize, pickups: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        !counts.is_empty() && !counts.contains(&0),
        "--workers: counts of one worker or more"
    );
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:63799".into());
    let ping = redis_round_trips(&redis_url, 200).await?;
    let mut rows = Vec::new();
    for &n in counts {
        rows.push(one_fleet(n, runs, pickups).await?);
    }
    println!("fleet: {runs} failing runs as a backlog, then {pickups} one at a time (no sandbox)");
    println!(
        "  Redis PING round trip (this process)  p50 {:>7.2} ms  p99 {:>7.2} ms  (n={})",
        percentile(&ping, 0.5),
        percentile(&ping, 0.99),
        ping.len()
    );
    if let Some(cli) = redis_cli_latency(&redis_url) {
        println!("  redis-cli --latency (1 s)         {cli}");
    }
    let base = rows.first().map(|r| r.runs_per_min).unwrap_or(1.0);
    println!(
        "  pickup: run created (ingest) to its first stage started, through the outbox push and an\n  idle worker's poll (every SELFHEAL_POLL_INTERVAL_MS, {} ms here; apalis-redis does not wake\n  idle workers); drain: first stage started to last run finished, on Postgres' clock",
        std::env::var("SELFHEAL_POLL_INTERVAL_MS").unwrap_or_else(|_| "100".into())
    );
    println!("  workers  runs/min  ratio  drain s  start-up s  pickup p50 ms  max ms (n)  RSS idle MiB  peak MiB  worker CPU ms/run");
    for r in &rows {
        let mut pickup = r.pickup.clone();
        pickup.sort();
        println!(
            "  {:>7}  {:>8.0}  {:>4.2}x  {:>7.1}  {:>10.1}  {:>13.1}  {:>6.1} ({:>2})  {:>12.1}  {:>8.1}  {:>17.1}",
            r.workers,
            r.runs_per_min,
            r.runs_per_min / base,
            r.drain.as_secs_f64(),
            r.startup.as_secs_f64(),
            percentile(&pickup, 0.5),
            percentile(&pickup, 1.0),
            pickup.len(),
            r.rss_idle_kib as f64 / 1024.0,
            r.rss_peak_kib as f64 / 1024.0,
            r.cpu_per_run_ms,
        );
    }
    Ok(())
}

async fn one_fleet(workers: usize, runs: usize, pickups: usize) -> anyhow::Result<Figures> {
    let mut stack = Stack::start_with(false, 0).await?;
    stack.standin.set_knobs(github_standin::Knobs {
        log_text: Some(NO_COMMAND_LOG.into()),
        ..Default::default()
    });
    let pool = selfheal_shared::db::pool(&stack.database_url, 2)?;
    let db = pool.get().await?;
    // The backlog, before any worker: 16 deliveries at a time.
    let mut next = 0i64;
    for chunk in (0..runs).collect::<Vec<_>>().chunks(16) {
        let sent = chunk.iter().map(|_| {
            next += 1;
            stack.deliver_failure(600_000 + next, 500_000 + next)
        });
        for answer in futures::future::join_all(sent).await {
            let (status, body) = answer?;
            anyhow::ensure!(status.as_u16() == 202, "webhook answered {status}: {body}");
        }
    }
    let started = Instant::now();
    stack.add_workers(workers)?;
    let pids = stack.worker_pids();
    let mut rss_peak = 0;
    loop {
        rss_peak = rss_peak.max(pids.iter().map(|p| rss_kib(*p)).sum());
        let open = open_runs(&db).await?;
        if open == 0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "{open} runs still open after 900 s with {workers} workers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = pids.iter().map(|p| cpu_ms(*p)).sum::<f64>();
    // Every backlog run took the path this bench is about: failed at patch for want of a
    // command, no patch recorded (that row is written only after the sandbox ran).
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM patches),
                    (SELECT count(*) FROM runs),
                    (SELECT count(*) FROM runs WHERE status = 'failed' AND failure_reason LIKE 'patch:%')",
            &[],
        )
        .await?;
    let (patched, total, as_meant): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    anyhow::ensure!(
        patched == 0 && total == runs as i64 && as_meant == total,
        "the backlog did not go as meant: {total} runs of {runs}, {as_meant} stopped at patch, {patched} reached the sandbox"
    );
    // The drain on the database's clock: first stage started to last run finished (worker
    // start-up, a fixed cost, is left out).
    let drain: f64 = db
        .query_one(
            "SELECT extract(epoch FROM (SELECT max(finished_at) FROM runs) - (SELECT min(started_at) FROM stage_attempts))::float8",
            &[],
        )
        .await?
        .get(0);
    let drain = Duration::from_secs_f64(drain.max(0.001));
    let startup = started.elapsed().saturating_sub(drain);

    // Pickup on the idle fleet: one failure at a time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = pids.iter().map(|p| rss_kib(*p)).sum();
    let mut pickup = Vec::new();
    for _ in 0..pickups {
        next += 1;
        let (status, body) = stack
            .deliver_failure(600_000 + next, 500_000 + next)
            .await?;
        anyhow::ensure!(status.as_u16() == 202, "webhook answered {status}: {body}");
        let run = stack.admitted(&body).await?;
        let waited = Instant::now();
        let ms: f64 = loop {
            let row = db
                .query_one(
                    "SELECT (SELECT extract(epoch FROM min(a.started_at) - r.created_at) * 1000
                             FROM stage_attempts a WHERE a.run_id = r.id)::float8
                     FROM runs r WHERE r.id = $1",
                    &[&run],
                )
                .await?;
            if let Some(ms) = row.get::<_, Option<f64>>(0) {
                break ms;
            }
            anyhow::ensure!(
                waited.elapsed() < Duration::from_secs(60),
                "run {run} never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        pickup.push(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
        // Let it finish, so the next one meets an idle fleet.
        loop {
            let open = open_runs(&db).await?;
            if open == 0 {
                break;
            }
            anyhow::ensure!(
                waited.elapsed() < Duration::from_secs(120),
                "run {run} never finished"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stack.stop();
    Ok(Figures {
        workers,
        runs_per_min: runs as f64 / drain.as_secs_f64() * 60.0,
        drain,
        startup,
        pickup,
        rss_idle_kib: rss_idle,
        rss_peak_kib: rss_peak,
        cpu_per_run_ms: cpu / runs.max(1) as f64,
    })
}

/// Runs no worker has finished yet.
async fn open_runs(db: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(db
        .query_one(
            "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')",
            &[],
        )
        .await?
        .get(0))
}

/// Resident memory of a process, from /proc (0 if it is gone).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used, in ms, from /proc: start-up and background
/// loops included. Clock ticks of 10 ms (USER_HZ is 100 on Linux's mainstream architectures).
fn cpu_ms(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) start after its closing parenthesis.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; after the ')' field 3 (state) is [0].
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 * 10.0
}

async fn redis_round_trips(url: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times)
}

/// `redis-cli --latency --raw`: it samples for a second and prints one summary line (None
/// without redis-cli).
fn redis_cli_latency(url: &str) -> Option<String> {
    let out = std::process::Command::new("timeout")
        .args(["5", "redis-cli", "-u", url, "--latency", "--raw"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().rfind(|l| !l.trim().is_empty())?;
    // --raw prints "min max avg samples".
    let f: Vec<&str> = last.split_whitespace().collect();
    (f.len() == 4).then(|| {
        format!(
            "min {} ms  max {} ms  avg {} ms  ({} samples; whole ms)",
            f[0], f[1], f[2], f[3]
        )
    })
}
