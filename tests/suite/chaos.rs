//! Chaos: the whole fleet under faults, bounded, stopping by itself. Web (in process), three
//! worker processes, a Postgres server and a Redis of the test's own, the GitHub stand-in; a
//! failing run per branch (each branch its own commit) while workers are SIGKILLed at random
//! moments and started again, Redis is killed and started again without its data, Postgres is
//! crashed and left down, deliveries come twice (same id; the same run under a new id), a green
//! run older than the failure arrives after it, and deliveries refused with 503 are made again
//! as GitHub would. The fix's CI reports green (twice for some) and the branch goes green after
//! each merge. At the end, from Postgres and the stand-in: nothing accepted is lost, every run
//! is final, no side effect happened twice, every resolved incident has its MTTR.
//!
//! Short in every CI run (this file's defaults). Long: `bash scripts/chaos.sh`, or these
//! variables: SELFHEAL_CHAOS_BRANCHES, SELFHEAL_CHAOS_KILLS, SELFHEAL_CHAOS_PG_DOWN_SECS,
//! SELFHEAL_CHAOS_BRANCH_EVERY_MS, SELFHEAL_CHAOS_KILL_EVERY_MS, SELFHEAL_CHAOS_DEADLINE_SECS, SELFHEAL_CHAOS_SEED (the run
//! prints its seed).

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use github_standin::Knobs;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use support::own_services::{OwnPostgres, OwnRedis};
use support::*;

fn var(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: a reproducible stream from the printed seed (no need for a crate here).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What the test made happen, counted as it went.
#[derive(Default, Debug)]
struct Sent {
    attempts: u64,
    refused_503: u64,
    accepted: BTreeSet<String>,
    /// GitHub run ids of the green runs older than the failure they follow.
    older_greens: Vec<i64>,
}

/// Delivers as GitHub does: a 503 (Postgres away) is delivered again, later, same id.
async fn deliver(app: &App, sent: &mut Sent, event: &str, id: &str, payload: &Value) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        sent.attempts += 1;
        let (status, body) = app.deliver_as(event, id, payload).await;
        match status {
            200 | 202 => {
                sent.accepted.insert(id.to_string());
                return;
            }
            503 => {
                sent.refused_503 += 1;
                assert!(Instant::now() < deadline, "503 for two minutes: {body}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => panic!("delivery {id} answered {other}: {body}"),
        }
    }
}

/// A commit of its own on a new branch of the stand-in's repository (same tree as its head, so
/// the recorded failure's log holds for it).
fn branch_with_commit(env: &TestEnv, branch: &str) -> String {
    let git_dir = env.standin.git_dir();
    let head = env.standin.head_sha();
    let sha = git(
        &git_dir,
        &[
            "-c",
            "user.name=chaos",
            "-c",
            "user.email=chaos@example.com",
            "commit-tree",
            &format!("{head}^{{tree}}"),
            "-p",
            &head,
            "-m",
            &format!("work on {branch}"),
        ],
    );
    git(
        &git_dir,
        &["update-ref", &format!("refs/heads/{branch}"), &sha],
    );
    sha
}

fn on_branch(mut payload: Value, branch: &str, sha: &str) -> Value {
    payload["workflow_run"]["head_branch"] = json!(branch);
    payload["workflow_run"]["head_sha"] = json!(sha);
    payload
}

struct Fleet {
    workers: Vec<Worker>,
    generation: usize,
    kills: u64,
    exited_by_themselves: u64,
}

impl Fleet {
    fn spawn(env: &TestEnv, slot: usize, generation: usize) -> Worker {
        env.spawn_worker(&format!("w{slot}-{generation}"))
    }

    /// Any worker that exited without being killed is counted, and replaced.
    fn check(&mut self, env: &TestEnv) {
        for slot in 0..self.workers.len() {
            if self.workers[slot].try_wait().unwrap().is_some() {
                self.exited_by_themselves += 1;
                self.generation += 1;
                self.workers[slot] = Self::spawn(env, slot, self.generation);
            }
        }
    }

    fn kill_one(&mut self, env: &TestEnv, rng: &mut Rng) {
        self.check(env);
        let slot = rng.below(self.workers.len() as u64) as usize;
        signal(&self.workers[slot], Signal::SIGKILL);
        self.workers[slot].wait().ok();
        self.kills += 1;
        self.generation += 1;
        self.workers[slot] = Self::spawn(env, slot, self.generation);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_under_kills_and_outages_loses_nothing_and_does_nothing_twice() {
    let branches = var("SELFHEAL_CHAOS_BRANCHES", 8);
    let kills = var("SELFHEAL_CHAOS_KILLS", 12);
    let pg_down = Duration::from_secs(var("SELFHEAL_CHAOS_PG_DOWN_SECS", 8));
    // Failures arrive spread out, so that some meet the outages.
    let branch_every = Duration::from_millis(var("SELFHEAL_CHAOS_BRANCH_EVERY_MS", 1000));
    let deadline = Instant::now() + Duration::from_secs(var("SELFHEAL_CHAOS_DEADLINE_SECS", 300));
    let seed = var(
        "SELFHEAL_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    println!("chaos: seed {seed}, {branches} branches, {kills} kills, Postgres down {pg_down:?}");
    let mut rng = Rng(seed);

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let postgres = std::sync::Arc::new(OwnPostgres::start(dir.path()));
    let mut redis = OwnRedis::start(dir.path());
    let mut env = TestEnv::on(&postgres.admin_url(), &redis.url()).await;
    // Recovery within the test's time: a job pushed and never started is pushed again soon.
    env.set("SELFHEAL_REQUEUE_AFTER_SECS", "5");
    env.standin.set_knobs(Knobs {
        fix_checks: green_checks(),
        // GitHub's answer to a merge comes a little after the merge: a kill may land between.
        merge_answer_delay_ms: 300,
        ..Knobs::default()
    });
    let app = env.spawn_web().await;
    let mut fleet = Fleet {
        workers: (0..3).map(|slot| Fleet::spawn(&env, slot, 0)).collect(),
        generation: 0,
        kills: 0,
        exited_by_themselves: 0,
    };
    env.wait_workers_registered(3).await;

    let mut sent = Sent::default();
    let started = Instant::now();
    // The mean time between kills (each one at a random moment around it).
    let kill_every = Duration::from_millis(var("SELFHEAL_CHAOS_KILL_EVERY_MS", 900));
    let mut next_kill = started + kill_every;
    let redis_restart_at = started + Duration::from_secs(3);
    let mut redis_restarted = false;
    // Postgres goes down 6 s in and comes back on its own clock: deliveries refused meanwhile
    // are being made again (as GitHub would) and must not hold its return.
    let pg_back = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pg_outage = std::thread::spawn({
        let (postgres, pg_back) = (postgres.clone(), pg_back.clone());
        move || {
            std::thread::sleep(Duration::from_secs(6));
            postgres.crash();
            std::thread::sleep(pg_down);
            postgres.start_again();
            pg_back.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let pg_is_back = || pg_back.load(std::sync::atomic::Ordering::SeqCst);
    let mut branch_sha: BTreeMap<String, String> = BTreeMap::new();
    let mut delivered = 0u64;
    let mut next_branch = started;
    let mut fix_reported: BTreeSet<String> = BTreeSet::new();
    let mut greened: BTreeSet<i64> = BTreeSet::new();
    let mut next_run_id = 100_000i64;
    let mut last_change = (Instant::now(), String::new());

    loop {
        let now_i = Instant::now();
        assert!(
            now_i < deadline,
            "not settled by the deadline (seed {seed}); {sent:?}"
        );
        // Faults.
        if fleet.kills < kills && now_i >= next_kill {
            fleet.kill_one(&env, &mut rng);
            let spread = kill_every.as_millis() as u64;
            next_kill = now_i + kill_every / 2 + Duration::from_millis(rng.below(spread));
        }
        if !redis_restarted && now_i >= redis_restart_at {
            redis.kill();
            tokio::time::sleep(Duration::from_millis(300)).await;
            redis.start_again();
            redis_restarted = true;
        }
        fleet.check(&env);

        // A failing run per branch, with duplicates and an older green now and then.
        if delivered < branches && now_i >= next_branch {
            next_branch = now_i + branch_every;
            let branch = format!("feature-{delivered}");
            let sha = branch_with_commit(&env, &branch);
            branch_sha.insert(branch.clone(), sha.clone());
            next_run_id += 1;
            let failing = on_branch(env.failing_run(next_run_id, &now()), &branch, &sha);
            let id = uuid::Uuid::new_v4().to_string();
            deliver(&app, &mut sent, "workflow_run", &id, &failing).await;
            if rng.chance(30) {
                // GitHub's redelivery: the same id again.
                deliver(&app, &mut sent, "workflow_run", &id, &failing).await;
            }
            if rng.chance(30) {
                // The same run under a new delivery id (a manual redelivery from the UI).
                let other = uuid::Uuid::new_v4().to_string();
                deliver(&app, &mut sent, "workflow_run", &other, &failing).await;
            }
            if rng.chance(30) {
                // A green run that finished before the failure, delivered after it.
                next_run_id += 1;
                let earlier = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
                let green = on_branch(env.green_run(next_run_id, &earlier), &branch, &sha);
                sent.older_greens.push(next_run_id);
                let id = uuid::Uuid::new_v4().to_string();
                deliver(&app, &mut sent, "workflow_run", &id, &green).await;
            }
            delivered += 1;
        }

        // GitHub's side of the loop: the fix's CI goes green; after a merge, the branch does.
        if now_i < started + Duration::from_secs(6) || pg_is_back() {
            for pr in env.standin.pulls() {
                let head_ref = pr["head"]["ref"].as_str().unwrap_or_default().to_string();
                let head_sha = pr["head"]["sha"].as_str().unwrap_or_default().to_string();
                let number = pr["number"].as_i64().unwrap_or_default();
                if pr["state"] == "open" && fix_reported.insert(head_sha.clone()) {
                    let times = if rng.chance(30) { 2 } else { 1 };
                    for _ in 0..times {
                        next_run_id += 1;
                        let fix = env.fix_run(next_run_id, &head_ref, &head_sha, "success");
                        let id = uuid::Uuid::new_v4().to_string();
                        deliver(&app, &mut sent, "workflow_run", &id, &fix).await;
                    }
                }
                if pr["merged"] == true && greened.insert(number) {
                    let base = pr["base"]["ref"].as_str().unwrap_or_default().to_string();
                    let merged_head = git(
                        &env.standin.git_dir(),
                        &["rev-parse", &format!("refs/heads/{base}")],
                    );
                    next_run_id += 1;
                    let green = on_branch(env.green_run(next_run_id, &now()), &base, &merged_head);
                    let id = uuid::Uuid::new_v4().to_string();
                    deliver(&app, &mut sent, "workflow_run", &id, &green).await;
                }
            }
        }

        // Settled: everything sent, the faults done, every run final, nothing moving for 5 s.
        if delivered == branches && fleet.kills >= kills && pg_is_back() {
            let db = env.db().await;
            let row = db
                .query_one(
                    "SELECT (SELECT count(*) FROM runs WHERE status IN ('queued', 'running'))
                          + (SELECT count(*) FROM webhook_deliveries WHERE outcome = 'accepted'),
                            (SELECT count(*) FROM runs),
                            (SELECT count(*) FROM stage_attempts),
                            (SELECT count(*) FROM incidents WHERE status = 'resolved')",
                    &[],
                )
                .await;
            if let Ok(row) = row {
                let open: i64 = row.get(0);
                let snapshot = format!(
                    "{}/{}/{}/{}/{}",
                    row.get::<_, i64>(1),
                    row.get::<_, i64>(2),
                    row.get::<_, i64>(3),
                    env.standin.pulls().len(),
                    greened.len()
                );
                if snapshot != last_change.1 {
                    last_change = (Instant::now(), snapshot);
                } else if open == 0 && last_change.0.elapsed() > Duration::from_secs(5) {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    pg_outage.join().unwrap();

    // The counts, from Postgres and the stand-in.
    let db = env.db().await;
    let stored: BTreeSet<String> = db
        .query("SELECT delivery_id FROM webhook_deliveries", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost = sent.accepted.difference(&stored).count();
    // Stored, but never admitted by a worker (its run neither created nor found).
    let unadmitted = env
        .count("SELECT count(*) FROM webhook_deliveries WHERE outcome = 'accepted'")
        .await;
    let runs = env.count("SELECT count(*) FROM runs").await;
    let not_final = env
        .count(
            "SELECT count(*) FROM runs WHERE status NOT IN ('succeeded', 'incomplete', 'failed')",
        )
        .await;
    let failed_runs = db
        .query(
            "SELECT coalesce(failure_reason, '') FROM runs WHERE status = 'failed'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>();
    let runs_twice = env
        .count(
            "SELECT count(*) FROM (SELECT github_run_id FROM runs GROUP BY github_run_id, trigger
             HAVING count(*) > 1) t",
        )
        .await;
    let pulls = env.standin.pulls();
    let mut per_base: BTreeMap<String, u64> = BTreeMap::new();
    for pr in &pulls {
        *per_base
            .entry(pr["base"]["ref"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    let prs_twice: u64 = per_base.values().map(|n| n.saturating_sub(1)).sum();
    let calls = env.standin.calls();
    let mut merged_already: BTreeSet<String> = BTreeSet::new();
    let (mut merges, mut asked_after_merge) = (0u64, 0u64);
    for c in calls
        .iter()
        .filter(|c| c.method == "PUT" && c.path.ends_with("/merge"))
    {
        if merged_already.contains(&c.path) {
            asked_after_merge += 1;
        }
        if c.status.is_some_and(|s| (200..300).contains(&s)) {
            merges += 1;
            merged_already.insert(c.path.clone());
        }
    }
    let mut comment_bodies: BTreeMap<(i64, String), u64> = BTreeMap::new();
    for c in env.standin.comments() {
        *comment_bodies
            .entry((
                c["issue_number"].as_i64().unwrap_or_default(),
                c["body"].as_str().unwrap_or_default().to_string(),
            ))
            .or_default() += 1;
    }
    let comments_twice: u64 = comment_bodies.values().map(|n| n.saturating_sub(1)).sum();
    let incidents = env.count("SELECT count(*) FROM incidents").await;
    let resolved = env
        .count("SELECT count(*) FROM incidents WHERE status = 'resolved'")
        .await;
    let resolved_without_mttr = env
        .count(
            "SELECT count(*) FROM incident_mttr WHERE status = 'resolved' AND mttr_seconds IS NULL",
        )
        .await;
    let resolved_by_older_green = db
        .query_one(
            "SELECT count(*) FROM incidents WHERE resolved_by_run_id = ANY($1)",
            &[&sent.older_greens],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);

    println!(
        "chaos after {took:.1?} (seed {seed}): deliveries sent {} / refused 503 {} / accepted {} / lost {lost} / never admitted {unadmitted}",
        sent.attempts,
        sent.refused_503,
        sent.accepted.len()
    );
    println!(
        "  runs {runs} / not final {not_final} / failed {} / same GitHub run twice {runs_twice}",
        failed_runs.len()
    );
    println!(
        "  PRs {} / duplicates {prs_twice}; merges {merges} / asked again after the merge {asked_after_merge}; comments {} / duplicates {comments_twice}",
        pulls.len(),
        env.standin.comments().len()
    );
    println!(
        "  incidents {incidents} / resolved {resolved} / resolved without MTTR {resolved_without_mttr} / resolved by an older green {resolved_by_older_green}"
    );
    println!(
        "  workers killed {} / exited by themselves {}; Redis restarted {redis_restarted}; Postgres down {pg_down:?}",
        fleet.kills, fleet.exited_by_themselves
    );
    for reason in &failed_runs {
        println!("  failed run: {reason}");
    }

    assert_eq!(lost, 0, "accepted deliveries lost");
    assert_eq!(unadmitted, 0, "accepted deliveries never admitted");
    assert_eq!(not_final, 0, "runs not final");
    assert_eq!(runs_twice, 0, "a GitHub run taken up twice");
    assert_eq!(
        prs_twice, 0,
        "more than one PR for a branch's incident: {per_base:?}"
    );
    assert_eq!(
        asked_after_merge, 0,
        "merge asked again after GitHub made it"
    );
    assert_eq!(comments_twice, 0, "the same comment twice");
    assert_eq!(resolved_without_mttr, 0);
    assert_eq!(
        resolved_by_older_green, 0,
        "an older green resolved a newer failure"
    );
    assert_eq!(
        fleet.exited_by_themselves, 0,
        "workers that exited without being killed"
    );
    assert!(resolved >= 1, "not one incident healed under chaos");
    assert_eq!(incidents, branches as i64, "an incident per failing branch");
    // Every incident is healed, or its run failed with a reason (checked below).
    let unexplained = env
        .count(
            "SELECT count(*) FROM incidents i WHERE status = 'open'
             AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.incident_id = i.id AND r.status = 'failed')",
        )
        .await;
    if unexplained > 0 {
        // What each such incident's runs ended with, to tell why from a CI log.
        for r in db
            .query(
                "SELECT i.branch, r.github_run_id, r.fix_branch IS NOT NULL, r.conclusion, r.status,
                        coalesce(v.verdict || ': ' || v.reason, '(no verdict)'),
                        coalesce(r.failure_reason, '')
                 FROM incidents i JOIN runs r ON r.incident_id = i.id
                 LEFT JOIN verifications v ON v.run_id = r.id
                 WHERE i.status = 'open' ORDER BY i.branch, r.created_at",
                &[],
            )
            .await
            .unwrap()
        {
            println!(
                "  open {}: run {} fix {} {} -> {} {} {}",
                r.get::<_, String>(0),
                r.get::<_, i64>(1),
                r.get::<_, bool>(2),
                r.get::<_, String>(3),
                r.get::<_, String>(4),
                r.get::<_, String>(5),
                r.get::<_, String>(6)
            );
        }
    }
    assert_eq!(unexplained, 0, "open incidents whose run did not fail");
    let merge_audits_twice = env
        .count(
            "SELECT count(*) FROM (SELECT subject FROM audit_log WHERE action = 'pull_request.merged'
             GROUP BY subject HAVING count(*) > 1) t",
        )
        .await;
    assert_eq!(merge_audits_twice, 0, "a merge recorded twice");
    // Every failed run says why; the one reason chaos may cause is the bound on a stage whose
    // worker keeps dying under it.
    for reason in &failed_runs {
        assert!(
            reason.contains("abandoned") || reason.contains("interrupted"),
            "a run failed for a reason chaos does not explain: {reason}"
        );
    }
}
