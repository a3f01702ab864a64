//! Test helpers: each test gets its own database, Redis key prefix, webhook secret and
//! GitHub stand-in, so tests run in parallel against the one Postgres and Redis that
//! scripts/services.sh started.
#![allow(dead_code)]

pub mod own_services;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use github_standin::{fixtures_dir, webhooks, Fixtures, StandIn};
use selfheal_shared::config::Role;
use selfheal_shared::Config;
use serde_json::Value;
use tokio::net::TcpListener;
use uuid::Uuid;

pub const INSTALLATION_ID: i64 = github_standin::INSTALLATION_ID;

/// Verify's verdict on a run, and its reason.
pub async fn verdict(env: &TestEnv, run: Uuid) -> (String, String) {
    let row = env
        .db()
        .await
        .query_one(
            "SELECT verdict, reason FROM verifications WHERE run_id = $1",
            &[&run],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The check a fix's CI reports, green: the stand-in, like GitHub, shows no check on a new
/// commit until a CI reports one.
pub fn green_checks() -> Option<Vec<Value>> {
    Some(vec![
        serde_json::json!({"name": "test", "status": "completed", "conclusion": "success"}),
    ])
}

/// A JWT for App `app_id`, signed RS256 by the PEM key at `key` (relative to the repository),
/// issued `iat` seconds from now and expiring `exp` seconds from now (GitHub: at most ten
/// minutes apart).
pub fn app_jwt_with(app_id: u64, key: &str, iat: i64, exp: i64) -> String {
    let pem = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(key)).unwrap();
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &serde_json::json!({"iat": now + iat, "exp": now + exp, "iss": app_id}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// The demo App's JWT, as octocrab makes it (issued a minute ago, nine minutes left).
pub fn app_jwt() -> String {
    app_jwt_with(1, "standin/demo-app-key.pem", -60, 540)
}

fn next_comment_id() -> i64 {
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    // GitHub's comment ids are unique across repositories; so are ours across test processes.
    (std::process::id() as i64) * 1_000_000
        + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// `git --git-dir DIR ARGS…` (the stand-in's bare repository), its trimmed output.
pub fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn admin_url() -> String {
    std::env::var("SELFHEAL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:54329/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("SELFHEAL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:63799".into())
}

pub async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("Postgres at {url} (run scripts/services.sh up): {e}"));
    tokio::spawn(conn);
    client
}

/// A fresh database for one test.
pub async fn fresh_database(tag: &str) -> String {
    fresh_database_on(&admin_url(), tag).await
}

/// A fresh database on the server `admin` connects to.
pub async fn fresh_database_on(admin: &str, tag: &str) -> String {
    pg(admin)
        .await
        .batch_execute(&format!("CREATE DATABASE {tag}"))
        .await
        .expect("create database");
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .expect("admin URL has a database");
    format!("{base}/{tag}")
}

pub struct TestEnv {
    pub tag: String,
    pub database_url: String,
    pub redis_url: String,
    pub secret: String,
    pub fixtures: Fixtures,
    pub standin: StandIn,
    pub vars: HashMap<String, String>,
    /// Set for the worker processes only (on top of `vars`).
    pub worker_vars: HashMap<String, String>,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        Self::with_redis(&redis_url()).await
    }

    pub async fn with_redis(redis_url: &str) -> TestEnv {
        Self::on(&admin_url(), redis_url).await
    }

    /// On a Postgres server (`admin`: a URL with rights to create a database) and a Redis of
    /// the test's own (support::own_services).
    pub async fn on(admin: &str, redis_url: &str) -> TestEnv {
        let tag = format!("t_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let database_url = fresh_database_on(admin, &tag).await;
        let fixtures = Fixtures::new(fixtures_dir());
        let standin = github_standin::spawn(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            fixtures.clone(),
        )
        .await
        .unwrap();
        let secret = Uuid::new_v4().simple().to_string();
        let key = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("standin/demo-app-key.pem");
        let vars: HashMap<String, String> = [
            ("DATABASE_URL", database_url.clone()),
            ("REDIS_URL", redis_url.to_string()),
            ("SELFHEAL_QUEUE_PREFIX", tag.clone()),
            ("GITHUB_WEBHOOK_SECRET", secret.clone()),
            ("GITHUB_APP_ID", "1".into()),
            ("GITHUB_APP_PRIVATE_KEY", key.display().to_string()),
            ("GITHUB_API_URL", standin.url()),
            ("SELFHEAL_BIND", "127.0.0.1:0".into()),
            ("SELFHEAL_RELAY_INTERVAL_MS", "300".into()),
            ("SELFHEAL_REQUEUE_AFTER_SECS", "10".into()),
            // Paced through Redis like a deployment, but briefly: tests/suite/resilience.rs shows
            // the pacing itself against the stand-in's write limit.
            ("SELFHEAL_GITHUB_WRITE_INTERVAL_MS", "20".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        TestEnv {
            tag,
            database_url,
            redis_url: redis_url.to_string(),
            secret,
            fixtures,
            standin,
            vars,
            worker_vars: HashMap::new(),
        }
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.vars.insert(key.to_string(), value.to_string());
    }

    pub fn config(&self, role: Role) -> Config {
        Config::from_lookup(role, |k| self.vars.get(k).cloned()).expect("test config")
    }

    /// The web server, in process, on an ephemeral port.
    pub async fn spawn_web(&self) -> App {
        let config = self.config(Role::Web);
        let listener = TcpListener::bind(config.bind).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(selfheal_web::serve(config, listener, async move {
            let _ = rx.await;
        }));
        App {
            url,
            http: reqwest::Client::new(),
            secret: self.secret.clone(),
            _stop: tx,
        }
    }

    /// Where worker `name`'s log goes.
    fn worker_log_path(&self, name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("worker-logs")
            .join(format!("{}-{name}.log", self.tag))
    }

    /// Worker `name`'s log as read, without the terminal colours tracing writes around field
    /// names.
    pub fn worker_log(&self, name: &str) -> String {
        let log = std::fs::read_to_string(self.worker_log_path(name)).unwrap();
        let mut out = String::with_capacity(log.len());
        let mut chars = log.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                // CSI: ESC [ parameters, ended by a letter.
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// A worker as its own process, so it can be killed like a real replica.
    pub fn spawn_worker(&self, name: &str) -> Worker {
        let extra: Vec<(&str, String)> = self
            .worker_vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        self.spawn_process("worker", name, &extra)
    }

    /// `selfheal <command>` as its own process with this environment (and `extra`), its log
    /// in `worker_log(name)`.
    fn spawn_process(&self, command: &str, name: &str, extra: &[(&str, String)]) -> Worker {
        let path = self.worker_log_path(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let log = std::fs::File::create(path).unwrap();
        Command::new(env!("CARGO_BIN_EXE_selfheal"))
            .arg(command)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,apalis=info")
            .envs(&self.vars)
            .envs(extra.iter().map(|(k, v)| (*k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(Worker)
            .expect("spawn selfheal")
    }

    /// Web as its own process (for what only a process has: its own tracer, its exit), ready.
    pub async fn spawn_web_process(&self, name: &str) -> (App, Worker) {
        let port = own_services::free_port();
        let process = self.spawn_process(
            "web",
            name,
            &[("SELFHEAL_BIND", format!("127.0.0.1:{port}"))],
        );
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = std::time::Instant::now();
        while http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "web never became ready: {}",
                self.worker_log(name)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (tx, _rx) = tokio::sync::oneshot::channel();
        (
            App {
                url,
                http,
                secret: self.secret.clone(),
                _stop: tx,
            },
            process,
        )
    }

    /// `selfheal args` run to its end with this database and nothing else in its environment
    /// (a command an operator runs: `migrate`, `verify-audit`, `report`).
    pub fn selfheal(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_selfheal"))
            .args(args)
            .env_clear()
            .env("DATABASE_URL", &self.database_url)
            .output()
            .unwrap()
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        pg(&self.database_url).await
    }

    /// The recorded failing run, at the commit the stand-in's repository holds.
    pub fn failing_run(&self, run_id: i64, completed_at: &str) -> Value {
        let mut payload = github_standin::failing_workflow_run(
            &self.fixtures,
            INSTALLATION_ID,
            run_id,
            completed_at,
        )
        .unwrap();
        payload["workflow_run"]["head_sha"] = Value::from(self.standin.head_sha());
        payload
    }

    pub fn green_run(&self, run_id: i64, completed_at: &str) -> Value {
        github_standin::successful_workflow_run(
            &self.fixtures,
            INSTALLATION_ID,
            run_id,
            completed_at,
        )
        .unwrap()
    }

    /// The recorded run payload as a run of the fix's own CI on selfheal's branch.
    pub fn fix_run(&self, run_id: i64, branch: &str, head_sha: &str, conclusion: &str) -> Value {
        let mut payload = self.failing_run(run_id, &now());
        let run = &mut payload["workflow_run"];
        run["head_branch"] = Value::from(branch);
        run["head_sha"] = Value::from(head_sha);
        run["conclusion"] = Value::from(conclusion);
        run["event"] = Value::from("pull_request");
        payload
    }

    /// octokit's recorded `check_suite.completed` (an external CI app, `octocoders-linter`),
    /// adapted: suite `id` on `branch` at `head_sha`, with `conclusion`.
    pub fn check_suite(&self, id: i64, branch: &str, head_sha: &str, conclusion: &str) -> Value {
        let mut payload = self
            .fixtures
            .json("github-webhooks/check_suite/completed.payload.json")
            .unwrap();
        payload["repository"] = self.failing_run(1, &now())["repository"].clone();
        payload["installation"] = self.failing_run(1, &now())["installation"].clone();
        let suite = &mut payload["check_suite"];
        suite["id"] = Value::from(id);
        suite["head_branch"] = Value::from(branch);
        suite["head_sha"] = Value::from(head_sha);
        suite["conclusion"] = Value::from(conclusion);
        suite["app"]["slug"] = Value::from("octocoders-linter");
        payload
    }

    /// octokit's recorded `check_run.completed` (an external CI app, `octocoders-linter`, whose
    /// recorded app has no slug: GitHub sends one), adapted: check run `id` on `branch` at
    /// `head_sha`, with `conclusion`.
    pub fn check_run(&self, id: i64, branch: &str, head_sha: &str, conclusion: &str) -> Value {
        let mut payload = self
            .fixtures
            .json("github-webhooks/check_run/completed.payload.json")
            .unwrap();
        payload["repository"] = self.failing_run(1, &now())["repository"].clone();
        payload["installation"] = self.failing_run(1, &now())["installation"].clone();
        let run = &mut payload["check_run"];
        run["id"] = Value::from(id);
        run["head_sha"] = Value::from(head_sha);
        run["conclusion"] = Value::from(conclusion);
        run["app"]["slug"] = Value::from("octocoders-linter");
        run["check_suite"]["head_branch"] = Value::from(branch);
        run["check_suite"]["head_sha"] = Value::from(head_sha);
        payload
    }

    /// octokit's recorded `status` (with installation), adapted: status `id` of `context` in
    /// `state` on `sha`, which `branches` contain, posted by `creator`.
    pub fn status(
        &self,
        id: i64,
        sha: &str,
        (state, context, creator): (&str, &str, &str),
        branches: &[&str],
    ) -> Value {
        let mut payload = self
            .fixtures
            .json("github-webhooks/status/with-installation.payload.json")
            .unwrap();
        payload["repository"] = self.failing_run(1, &now())["repository"].clone();
        payload["installation"]["id"] = Value::from(INSTALLATION_ID);
        payload["id"] = Value::from(id);
        payload["sha"] = Value::from(sha);
        payload["commit"]["sha"] = Value::from(sha);
        payload["state"] = Value::from(state);
        payload["context"] = Value::from(context);
        payload["sender"]["login"] = Value::from(creator);
        // Recorded before GitHub added `verified_at` (the schema requires it, null when unsigned).
        payload["commit"]["commit"]["verification"]["verified_at"] = Value::Null;
        let template = payload["branches"][0].clone();
        payload["branches"] = branches
            .iter()
            .map(|name| {
                let mut b = template.clone();
                b["name"] = Value::from(*name);
                b["commit"]["sha"] = Value::from(sha);
                b
            })
            .collect();
        payload
    }

    /// octokit's recorded `issue_comment.created` (with installation), adapted: a comment by
    /// `login` on pull request `number` of the stand-in's repository.
    pub fn comment(&self, number: i64, login: &str, body: &str) -> Value {
        let mut payload = self
            .fixtures
            .json("github-webhooks/issue_comment/created.with-installation.payload.json")
            .unwrap();
        let repo = self.failing_run(1, &now())["repository"].clone();
        payload["repository"] = repo;
        payload["installation"]["id"] = Value::from(INSTALLATION_ID);
        payload["issue"]["number"] = Value::from(number);
        payload["issue"]["pull_request"] = serde_json::json!({"url": "stand-in"});
        payload["comment"]["body"] = Value::from(body);
        // Every comment a test writes is a new comment (a replay reuses its payload instead).
        payload["comment"]["id"] = Value::from(next_comment_id());
        payload["comment"]["created_at"] = Value::from(now());
        payload["comment"]["user"]["login"] = Value::from(login);
        payload["sender"]["login"] = Value::from(login);
        payload
    }

    /// octokit's recorded `pull_request.closed`, adapted to PR `number` on `branch` of the
    /// stand-in's repository, closed (or merged) by `by`.
    pub fn pr_closed(&self, number: i64, branch: &str, merged: bool, by: &str) -> Value {
        let mut payload = self
            .fixtures
            .json("github-webhooks/pull_request/closed.payload.json")
            .unwrap();
        payload["repository"] = self.failing_run(1, &now())["repository"].clone();
        payload["installation"]["id"] = Value::from(INSTALLATION_ID);
        payload["number"] = Value::from(number);
        let sender = payload["sender"].clone();
        let pr = &mut payload["pull_request"];
        pr["number"] = Value::from(number);
        pr["head"]["ref"] = Value::from(branch);
        pr["merged"] = Value::from(merged);
        if merged {
            pr["merged_by"] = sender;
            pr["merged_by"]["login"] = Value::from(by);
        }
        payload["sender"]["login"] = Value::from(by);
        payload
    }

    /// The recorded failing run `run` delivered to `app` and healed to its end (its PR open).
    pub async fn fail_and_heal(&self, app: &App, run: i64) {
        let (_, body) = app
            .deliver("workflow_run", &self.failing_run(run, &now()))
            .await;
        self.wait_run(self.run_of(&body).await, Duration::from_secs(60))
            .await;
    }

    /// The fix's branch and head as the stand-in's open pull request `number` shows them.
    /// How many times selfheal asked the stand-in to merge PR `number`.
    pub fn merges_asked(&self, number: i64) -> usize {
        let path = format!("/pulls/{number}/merge");
        self.standin
            .calls()
            .iter()
            .filter(|c| c.method == "PUT" && c.path.ends_with(&path))
            .count()
    }

    pub fn pull(&self, number: i64) -> (String, String) {
        let pr = self
            .standin
            .pulls()
            .into_iter()
            .find(|p| p["number"] == number)
            .unwrap_or_else(|| panic!("no PR #{number}"));
        (
            pr["head"]["ref"].as_str().unwrap().to_string(),
            pr["head"]["sha"].as_str().unwrap().to_string(),
        )
    }

    /// Waits until a `/selfheal` command is handled; returns its status.
    pub async fn command_status(&self, id: i64) -> String {
        self.wait_until(
            &format!("SELECT status <> 'queued' FROM commands WHERE id = {id}"),
            Duration::from_secs(30),
        )
        .await;
        self.db()
            .await
            .query_one("SELECT status FROM commands WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0)
    }

    /// A failed run's delivery the webhook accepted (`answer`), admitted here as a worker
    /// admits it (`failed_run::admit_and_push`, its first stage pushed); one a worker admitted
    /// already answers what it came to. Returns `{"outcome", "run_id", "reason"}`; any other
    /// answer is returned as it is.
    pub async fn admit(&self, answer: &Value) -> Value {
        if answer["status"] != "accepted" {
            return answer.clone();
        }
        let delivery = answer["delivery"]
            .as_str()
            .unwrap_or_else(|| panic!("no delivery in {answer}"));
        let config = self.config(Role::Worker);
        let pool = selfheal_shared::db::pool(config.database_url(), 2).unwrap();
        let queue = selfheal_shared::queue::JobQueue::new(
            config.redis_url(),
            selfheal_shared::queue::storage_config(
                &config.queue_prefix,
                config.worker.heartbeat,
                config.worker.missed_heartbeats,
            ),
        );
        selfheal_shared::failed_run::admit_and_push(&pool, &queue, delivery)
            .await
            .unwrap_or_else(|e| panic!("admitting {delivery}: {e}"))
            .summary()
    }

    /// What a failed run's delivery (`answer`, `accepted`) came to once a worker process
    /// admitted it, waited for and read from Postgres (nothing is admitted here):
    /// `{"outcome", "run_id", "reason"}`.
    pub async fn admission_by_worker(&self, answer: &Value) -> Value {
        let delivery = answer["delivery"]
            .as_str()
            .unwrap_or_else(|| panic!("no delivery in {answer}"));
        self.wait_until(
            &format!(
                "SELECT outcome <> 'accepted' FROM webhook_deliveries WHERE delivery_id = '{delivery}'"
            ),
            Duration::from_secs(60),
        )
        .await;
        let row = self
            .db()
            .await
            .query_one(
                "SELECT outcome, run_id, reason FROM webhook_deliveries WHERE delivery_id = $1",
                &[&delivery],
            )
            .await
            .unwrap();
        serde_json::json!({
            "outcome": row.get::<_, String>(0),
            "run_id": row.get::<_, Option<Uuid>>(1),
            "reason": row.get::<_, Option<String>>(2),
        })
    }

    /// The run a failed run's delivery came to once a worker process admitted it.
    pub async fn admitted_by_worker(&self, answer: &Value) -> Uuid {
        run_id_of(&self.admission_by_worker(answer).await)
    }

    /// The run a delivery created or found: admitted first (`admit`) if it is a failed run's.
    pub async fn run_of(&self, answer: &Value) -> Uuid {
        run_id_of(&self.admit(answer).await)
    }

    /// Waits until the run is finished; returns its status.
    pub async fn wait_run(&self, run_id: Uuid, timeout: Duration) -> String {
        let db = self.db().await;
        let deadline = Instant::now() + timeout;
        loop {
            let status: String = db
                .query_one("SELECT status FROM runs WHERE id = $1", &[&run_id])
                .await
                .unwrap()
                .get(0);
            if matches!(status.as_str(), "succeeded" | "incomplete" | "failed") {
                return status;
            }
            assert!(Instant::now() < deadline, "run {run_id} still {status} after {timeout:?} (worker logs in target/tmp/worker-logs/{}-*)", self.tag);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `sql` (one bool column) is true.
    pub async fn wait_until(&self, sql: &str, timeout: Duration) {
        let db = self.db().await;
        let deadline = Instant::now() + timeout;
        while !db.query_one(sql, &[]).await.unwrap().get::<_, bool>(0) {
            assert!(Instant::now() < deadline, "timed out waiting for: {sql}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `n` workers have registered with the queue in Redis.
    pub async fn wait_workers_registered(&self, n: usize) {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let key = format!("{}:jobs:workers", self.tag);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let registered: usize = redis::cmd("ZCARD")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            if registered >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {registered} of {n} workers registered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db().await.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// The schema in place before anything reads it (web migrates as it starts, but a test
    /// may read or seed the tables first).
    pub fn migrate(&self) {
        let out = self.selfheal(&["migrate"]);
        assert!(out.status.success(), "selfheal migrate: {out:?}");
    }

    /// Has the workers spawned from now on serve `/metrics` (web keeps its own on its port);
    /// the address to scrape.
    pub fn worker_metrics(&mut self) -> String {
        let addr = format!("127.0.0.1:{}", own_services::free_port());
        self.worker_vars
            .insert("SELFHEAL_METRICS_BIND".into(), addr.clone());
        format!("http://{addr}/metrics")
    }
}

/// A `/metrics` page, its value for the sample named exactly `sample` (name and labels as
/// Prometheus prints them), or None when the page has no such sample.
pub async fn scrape(url: &str, sample: &str) -> Option<f64> {
    let page = reqwest::get(url).await.unwrap().text().await.unwrap();
    sample_value(&page, sample)
}

pub fn sample_value(page: &str, sample: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        let value = line.strip_prefix(sample)?.strip_prefix(' ')?;
        Some(value.trim().parse().expect("a sample's value is a number"))
    })
}

pub struct App {
    pub url: String,
    pub http: reqwest::Client,
    pub secret: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl App {
    pub fn hook(&self) -> String {
        format!("{}/webhooks/github", self.url)
    }

    /// Sends a delivery signed with the configured secret; returns status and JSON body.
    pub async fn deliver(&self, event: &str, payload: &Value) -> (u16, Value) {
        self.deliver_as(event, &Uuid::new_v4().to_string(), payload)
            .await
    }

    pub async fn deliver_as(
        &self,
        event: &str,
        delivery_id: &str,
        payload: &Value,
    ) -> (u16, Value) {
        let body = serde_json::to_vec(payload).unwrap();
        let r = webhooks::deliver(
            &self.http,
            &self.hook(),
            &self.secret,
            event,
            delivery_id,
            body,
        )
        .await
        .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Sends raw bytes with explicit headers.
    pub async fn post_raw(&self, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
        let mut req = self.http.post(self.hook()).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// A `Set-Cookie` that browsers keep only as `__Host-` allows (RFC 6265bis): the name,
/// `Secure`, `Path=/` and no `Domain`, and here also `HttpOnly` and the given `SameSite`.
pub fn assert_host_only(set_cookie: &str, name: &str, same_site: &str) {
    let mut parts = set_cookie.split(';').map(str::trim);
    let (got, _) = parts.next().unwrap().split_once('=').unwrap();
    assert_eq!(got, name, "{set_cookie}");
    let attributes: Vec<&str> = parts.collect();
    for wanted in ["Path=/", "Secure", "HttpOnly", same_site] {
        assert!(attributes.contains(&wanted), "{wanted} in {set_cookie}");
    }
    assert!(
        !attributes
            .iter()
            .any(|a| a.to_ascii_lowercase().starts_with("domain")),
        "{set_cookie}"
    );
}

pub fn run_id_of(body: &Value) -> Uuid {
    body["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run_id in {body}"))
        .parse()
        .unwrap()
}

/// SIGKILL or SIGTERM a worker process.
/// A worker process that dies with its test, even one that fails half-way.
pub struct Worker(Child);

impl std::ops::Deref for Worker {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Worker {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

impl App {
    /// Another client for the same server, signing with `secret`.
    pub fn signing_with(&self, secret: &str) -> App {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        App {
            url: self.url.clone(),
            http: self.http.clone(),
            secret: secret.to_string(),
            _stop: tx,
        }
    }
}

/// The stand-in's Git Data API as a client holding the installation's token uses it: commits
/// made and branches moved the way a person's push would, for tests that need a history.
pub struct GitData {
    http: reqwest::Client,
    api: String,
    auth: String,
}

impl GitData {
    pub fn new(env: &TestEnv) -> GitData {
        GitData {
            http: reqwest::Client::new(),
            api: format!("{}/repos/octo-org/octo-repo/git", env.standin.url()),
            auth: format!(
                "token {}",
                env.standin.installation_token(INSTALLATION_ID).unwrap()
            ),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Value {
        let response = request
            .header("authorization", &self.auth)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.unwrap()
    }

    /// The tree of commit `sha`.
    pub async fn tree_of(&self, sha: &str) -> Value {
        let commit = self
            .send(self.http.get(format!("{}/commits/{sha}", self.api)))
            .await;
        commit["tree"]["sha"].clone()
    }

    /// A tree of `files` (path, content) over `base` (a tree), or alone.
    pub async fn tree(&self, base: Option<Value>, files: &[(&str, &str)]) -> Value {
        self.tree_without(base, files, &[]).await
    }

    /// [`GitData::tree`] with the paths `deleted` removed (`"sha": null`, as GitHub takes it).
    pub async fn tree_without(
        &self,
        base: Option<Value>,
        files: &[(&str, &str)],
        deleted: &[&str],
    ) -> Value {
        let mut entries: Vec<Value> = files
            .iter()
            .map(|(path, content)| {
                serde_json::json!({"path": path, "mode": "100644", "type": "blob", "content": content})
            })
            .collect();
        entries.extend(deleted.iter().map(
            |path| serde_json::json!({"path": path, "mode": "100644", "type": "blob", "sha": null}),
        ));
        let mut request = serde_json::json!({"tree": entries});
        if let Some(base) = base {
            request["base_tree"] = base;
        }
        let tree = self
            .send(self.http.post(format!("{}/trees", self.api)).json(&request))
            .await;
        tree["sha"].clone()
    }

    /// A commit of `tree` on `parents` (two for a merge), by `author` when given.
    pub async fn commit(
        &self,
        tree: Value,
        parents: &[&str],
        message: &str,
        author: Option<&str>,
    ) -> String {
        let mut request = serde_json::json!({"message": message, "tree": tree, "parents": parents});
        if let Some(author) = author {
            request["author"] = serde_json::json!({"name": author, "email": "dev@example.com", "date": "2026-11-20T09:00:00Z"});
        }
        let commit = self
            .send(
                self.http
                    .post(format!("{}/commits", self.api))
                    .json(&request),
            )
            .await;
        commit["sha"].as_str().unwrap().to_string()
    }

    /// `branch` moved to `sha` (`force`: even when that is not a fast-forward).
    pub async fn move_branch(&self, branch: &str, sha: &str, force: bool) {
        self.send(
            self.http
                .patch(format!("{}/refs/heads/{branch}", self.api))
                .json(&serde_json::json!({"sha": sha, "force": force})),
        )
        .await;
    }
}
