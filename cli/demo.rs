//! `selfheal demo`: the whole foundation on real services with no keys and no GitHub. The
//! GitHub stand-in plays GitHub; a recorded failing `workflow_run` is replayed into the web
//! server; two worker processes take the run through its stages; Postgres tells the story.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use github_standin::{
    failing_workflow_run, fixtures_dir, successful_workflow_run, webhooks, Fixtures,
};
use selfheal_shared::config::Role;
use selfheal_shared::{db, runs, Config};
use tokio::net::TcpListener;
use uuid::Uuid;

const INSTALLATION_ID: i64 = 4242;

/// Web (in process), two worker processes and the GitHub stand-in, on a fresh database.
pub struct Stack {
    pub tag: String,
    pub web_url: String,
    pub secret: String,
    pub database_url: String,
    pub fixtures: Fixtures,
    pub standin: github_standin::StandIn,
    workers: Vec<Child>,
    /// What a worker is started with: its environment, and where its log goes.
    env: HashMap<String, String>,
    log_dir: PathBuf,
    verbose: bool,
}

impl Stack {
    pub async fn start(verbose: bool) -> anyhow::Result<Stack> {
        Self::start_with(verbose, 2).await
    }

    /// With `workers` worker processes (none: add them later, `add_workers`).
    pub async fn start_with(verbose: bool, workers: usize) -> anyhow::Result<Stack> {
        let admin_url = std::env::var("SELFHEAL_ADMIN_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:54329/postgres".into());
        let redis_url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:63799".into());
        let tag = format!("demo_{}", &Uuid::new_v4().simple().to_string()[..8]);
        let database_url = create_database(&admin_url, &tag).await?;
        let secret = Uuid::new_v4().simple().to_string();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let log_dir = root.join("target/demo").join(&tag);
        std::fs::create_dir_all(&log_dir)?;

        let fixtures = Fixtures::new(fixtures_dir());
        let standin =
            github_standin::spawn(TcpListener::bind("127.0.0.1:0").await?, fixtures.clone())
                .await?;
        let env: HashMap<String, String> = [
            ("DATABASE_URL", database_url.clone()),
            ("REDIS_URL", redis_url),
            ("SELFHEAL_QUEUE_PREFIX", tag.clone()),
            ("GITHUB_WEBHOOK_SECRET", secret.clone()),
            ("GITHUB_APP_ID", "1".into()),
            (
                "GITHUB_APP_PRIVATE_KEY",
                root.join("standin/demo-app-key.pem").display().to_string(),
            ),
            ("GITHUB_API_URL", standin.url()),
            ("SELFHEAL_BIND", "127.0.0.1:0".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();

        let config = Config::from_lookup(Role::Web, |k| env.get(k).cloned())?;
        let listener = TcpListener::bind(config.bind).await?;
        let web_url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(selfheal_web::serve(
            config,
            listener,
            std::future::pending(),
        ));
        if verbose {
            println!("GitHub stand-in   {}", standin.url());
            println!("selfheal web      {web_url}");
        }
        let mut stack = Stack {
            tag,
            web_url,
            secret,
            database_url,
            fixtures,
            standin,
            workers: Vec::new(),
            env,
            log_dir,
            verbose,
        };
        stack.add_workers(workers)?;
        Ok(stack)
    }

    /// Starts `n` more worker processes.
    pub fn add_workers(&mut self, n: usize) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        for _ in 0..n {
            let i = self.workers.len() + 1;
            let path = self.log_dir.join(format!("worker-{i}.log"));
            let child = Command::new(&exe)
                .arg("worker")
                .envs(&self.env)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&path)?)
                .spawn()
                .context("starting a worker")?;
            if self.verbose {
                println!(
                    "selfheal worker   pid {} (log: {})",
                    child.id(),
                    path.display()
                );
            }
            self.workers.push(child);
        }
        Ok(())
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().map(Child::id).collect()
    }

    /// The dependency-cache scope the workers give the stand-in's repository.
    pub fn dependency_scope(&self) -> String {
        format!("github:{INSTALLATION_ID}:octo-org/octo-repo")
    }

    /// Replays the recorded failing run (as `github_run_id` of workflow `workflow_id`); returns
    /// the run selfheal created.
    pub async fn deliver_failure(
        &self,
        github_run_id: i64,
        workflow_id: i64,
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        self.deliver_failure_at(github_run_id, workflow_id, &self.standin.head_sha())
            .await
    }

    /// The recorded failure as a run of `workflow_id` at commit `head_sha`.
    pub async fn deliver_failure_at(
        &self,
        github_run_id: i64,
        workflow_id: i64,
        head_sha: &str,
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        let failed_at = chrono::Utc::now() - chrono::Duration::seconds(1);
        let mut payload = failing_workflow_run(
            &self.fixtures,
            INSTALLATION_ID,
            github_run_id,
            &failed_at.to_rfc3339(),
        )?;
        payload["workflow_run"]["workflow_id"] = workflow_id.into();
        payload["workflow_run"]["head_sha"] = head_sha.into();
        self.deliver(&payload).await
    }

    pub async fn deliver(
        &self,
        payload: &serde_json::Value,
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        let response = webhooks::deliver(
            &reqwest::Client::new(),
            &format!("{}/webhooks/github", self.web_url),
            &self.secret,
            "workflow_run",
            &Uuid::new_v4().to_string(),
            serde_json::to_vec(payload)?,
        )
        .await?;
        let status = response.status();
        Ok((status, response.json().await?))
    }

    /// The run a failed run's delivery came to, once a worker admitted it (the webhook only
    /// stores it: `failed_run`); an error saying why when it came to no run.
    pub async fn admitted(&self, answer: &serde_json::Value) -> anyhow::Result<Uuid> {
        let delivery = answer["delivery"]
            .as_str()
            .with_context(|| format!("not an accepted failed run: {answer}"))?;
        let pool = db::pool(&self.database_url, 1)?;
        let client = pool.get().await?;
        let started = Instant::now();
        loop {
            let row = client
                .query_one(
                    "SELECT outcome, run_id, reason FROM webhook_deliveries WHERE delivery_id = $1",
                    &[&delivery],
                )
                .await?;
            let (outcome, run_id, reason): (String, Option<Uuid>, Option<String>) =
                (row.get(0), row.get(1), row.get(2));
            if outcome != selfheal_shared::failed_run::ACCEPTED {
                return run_id.with_context(|| {
                    format!(
                        "delivery {delivery} came to {outcome}, no run: {}",
                        reason.unwrap_or_default()
                    )
                });
            }
            anyhow::ensure!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "no worker admitted delivery {delivery} within a minute"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM the workers (they finish what they hold) and wait for them.
    pub fn stop(mut self) {
        for w in &self.workers {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(w.id().to_string())
                .status();
        }
        for w in &mut self.workers {
            let _ = w.wait();
        }
        self.workers.clear();
    }
}

/// A stack dropped on an error path takes its workers with it (`stop` is the graceful way).
impl Drop for Stack {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// Signs and sends the recorded failing run to a web server started elsewhere (the compose
/// check): its failing commit is the one the stand-in at `standin` serves.
pub async fn replay_to(
    url: &str,
    secret: &str,
    standin: &str,
    installation: i64,
    run_id: i64,
) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
    let http = reqwest::Client::new();
    let head = http
        .get(format!("{}/_standin/head", standin.trim_end_matches('/')))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .context("asking the stand-in for its head commit")?
        .text()
        .await?;
    let failed_at = chrono::Utc::now() - chrono::Duration::seconds(1);
    let mut payload = failing_workflow_run(
        &Fixtures::new(fixtures_dir()),
        installation,
        run_id,
        &failed_at.to_rfc3339(),
    )?;
    payload["workflow_run"]["head_sha"] = head.trim().into();
    let response = webhooks::deliver(
        &http,
        url,
        secret,
        "workflow_run",
        &Uuid::new_v4().to_string(),
        serde_json::to_vec(&payload)?,
    )
    .await?;
    let status = response.status();
    Ok((status, response.json().await.unwrap_or_default()))
}

pub async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let stack = Stack::start(true).await?;
    let result = replay(&stack).await;
    let calls = stack.standin.calls();
    let tag = stack.tag.clone();
    stack.stop();
    println!("\nGitHub API calls the stand-in received:");
    for call in calls {
        println!("  {:<5} {} (auth: {})", call.method, call.path, call.auth);
    }
    println!(
        "\ndemo finished in {:.1}s; database {tag} kept for inspection",
        started.elapsed().as_secs_f64()
    );
    result
}

/// Waits for the run to finish; returns its status and reason.
pub async fn wait_finished(
    client: &deadpool_postgres::Client,
    run_id: Uuid,
) -> anyhow::Result<(String, Option<String>)> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let row = client
            .query_one(
                "SELECT status, failure_reason FROM runs WHERE id = $1",
                &[&run_id],
            )
            .await?;
        let status: String = row.get(0);
        if matches!(status.as_str(), "succeeded" | "incomplete" | "failed") {
            return Ok((status, row.get(1)));
        }
        if Instant::now() > deadline {
            bail!("run {run_id} still {status} after 180 s; see the worker logs");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Drops a database `create_database` made (its connections closed first).
pub async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}

pub async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .with_context(|| "cannot reach Postgres (run `bash scripts/services.sh up` first)")?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let mut config: tokio_postgres::Config = admin_url.parse()?;
    config.dbname(name);
    let (host, port) = match (config.get_hosts().first(), config.get_ports().first()) {
        (Some(tokio_postgres::config::Host::Tcp(h)), Some(p)) => (h.clone(), *p),
        _ => bail!("SELFHEAL_ADMIN_DATABASE_URL must name a TCP host and port"),
    };
    let user = config.get_user().unwrap_or("postgres");
    Ok(format!("postgres://{user}@{host}:{port}/{name}"))
}

async fn replay(stack: &Stack) -> anyhow::Result<()> {
    println!("\n-> replaying recorded workflow_run (completed, conclusion: failure) for octo-org/octo-repo");
    let sent = Instant::now();
    let (status, body) = stack.deliver_failure(289782451, 2823525).await?;
    println!("<- {status} {body}");
    let run_id = stack.admitted(&body).await?;
    println!("admitted by a worker: run {run_id}");
    let pool = db::pool(&stack.database_url, 2)?;
    let client = pool.get().await?;
    let (status, reason) = wait_finished(&client, run_id).await?;
    let elapsed = sent.elapsed();
    println!(
        "\nrun {run_id}: {status}{}",
        reason.map(|r| format!(" ({r})")).unwrap_or_default()
    );
    println!(
        "{:<9} {:>3} {:<10} {:>9}  {:<28} detail",
        "stage", "try", "outcome", "ms", "worker"
    );
    for a in runs::attempts(&client, run_id).await? {
        let ms = a
            .finished_at
            .map(|f| (f - a.started_at).num_milliseconds())
            .unwrap_or(-1);
        println!(
            "{:<9} {:>3} {:<10} {:>9}  {:<28} {}",
            a.stage,
            a.attempt,
            a.outcome,
            ms,
            a.worker_id,
            a.detail.or(a.error).unwrap_or_default()
        );
    }
    println!("webhook -> run finished: {} ms", elapsed.as_millis());
    print_healing(&client, run_id).await?;
    print_delivery(stack, &client, run_id).await?;

    let merge_commit = merge_after_green_fix(stack, &client, run_id).await?;

    let mut green = successful_workflow_run(
        &stack.fixtures,
        INSTALLATION_ID,
        289782453,
        &chrono::Utc::now().to_rfc3339(),
    )?;
    green["workflow_run"]["workflow_id"] = 2823525.into();
    if let Some(sha) = &merge_commit {
        green["workflow_run"]["head_sha"] = sha.as_str().into();
    }
    println!(
        "\n-> replaying recorded workflow_run (completed, conclusion: success) on master{}",
        merge_commit
            .as_deref()
            .map(|s| format!(" at the merge commit {}", &s[..s.len().min(7)]))
            .unwrap_or_default()
    );
    let (status, body) = stack.deliver(&green).await?;
    println!("<- {status} {body}");
    let row = client
        .query_one(
            "SELECT repository, branch, status, mttr_seconds FROM incident_mttr ORDER BY first_failed_at DESC LIMIT 1",
            &[],
        )
        .await?;
    println!(
        "incident on {} @ {}: {}, MTTR {:.1}s (from the incident_mttr view)",
        row.get::<_, String>(0),
        row.get::<_, String>(1),
        row.get::<_, String>(2),
        row.get::<_, Option<f64>>(3).unwrap_or(f64::NAN)
    );
    Ok(())
}

/// The fix's own CI goes green on selfheal's branch (the recorded run, replayed at the fix's
/// commit): verify checks the PR's checks and the merge policy, deliver merges. Returns the
/// merge commit.
async fn merge_after_green_fix(
    stack: &Stack,
    client: &deadpool_postgres::Client,
    run_id: Uuid,
) -> anyhow::Result<Option<String>> {
    let Some(d) = client
        .query_opt(
            "SELECT branch, commit_sha FROM deliveries WHERE run_id = $1 AND kind = 'pull_request'",
            &[&run_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let (branch, sha): (String, String) =
        (d.get(0), d.get::<_, Option<String>>(1).unwrap_or_default());
    let mut payload = successful_workflow_run(
        &stack.fixtures,
        INSTALLATION_ID,
        289782452,
        &chrono::Utc::now().to_rfc3339(),
    )?;
    payload["workflow_run"]["workflow_id"] = 2823525.into();
    payload["workflow_run"]["head_branch"] = branch.as_str().into();
    payload["workflow_run"]["head_sha"] = sha.as_str().into();
    payload["workflow_run"]["event"] = "pull_request".into();
    // The fix's CI reports its check and its workflow run on the commit, as GitHub would
    // show them (the stand-in shows none until told).
    let green =
        vec![serde_json::json!({"name": "CI", "status": "completed", "conclusion": "success"})];
    stack.standin.set_knobs(github_standin::Knobs {
        fix_checks: Some(green.clone()),
        fix_workflows: Some(green),
        ..Default::default()
    });
    println!(
        "\n-> replaying recorded workflow_run (completed, conclusion: success) on {branch} at the fix's commit {}",
        &sha[..sha.len().min(7)]
    );
    let (status, body) = stack.deliver(&payload).await?;
    println!("<- {status} {body}");
    let Some(check) = body["run_id"].as_str().and_then(|r| r.parse::<Uuid>().ok()) else {
        return Ok(None);
    };
    let (status, reason) = wait_finished(client, check).await?;
    println!(
        "run {check} (the fix's own CI): {status}{}",
        reason.map(|r| format!(" ({r})")).unwrap_or_default()
    );
    for a in runs::attempts(client, check).await? {
        println!(
            "  {:<7} {:<10} {}",
            a.stage,
            a.outcome,
            a.detail.or(a.error).unwrap_or_default()
        );
    }
    let m = client
        .query_one(
            "SELECT merge_decision, decided_by, merge_commit_sha, pr_url FROM deliveries WHERE incident_id =
               (SELECT incident_id FROM runs WHERE id = $1) AND kind = 'pull_request'",
            &[&run_id],
        )
        .await?;
    let merged: Option<String> = m.get(2);
    println!(
        "merge decision: {} by {}; {} {}",
        m.get::<_, Option<String>>(0)
            .unwrap_or_else(|| "none".into()),
        m.get::<_, Option<String>>(1).unwrap_or_else(|| "-".into()),
        m.get::<_, Option<String>>(3).unwrap_or_default(),
        merged
            .as_deref()
            .map(|s| format!("merged as {}", &s[..s.len().min(7)]))
            .unwrap_or_else(|| "not merged".into())
    );
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(stack.standin.git_dir())
        .args(["log", "--format=  %h %s (author %an)", "master"])
        .output()?;
    println!("git log master of the stand-in's repository:");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(merged)
}

/// What the run found and proved, from Postgres.
async fn print_healing(client: &deadpool_postgres::Client, run_id: Uuid) -> anyhow::Result<()> {
    if let Some(d) = client
        .query_opt(
            "SELECT class, tool, culprit_file, culprit_line, fingerprint, command, excerpt FROM diagnoses WHERE run_id = $1",
            &[&run_id],
        )
        .await?
    {
        println!("\ndiagnosis: {} ({}) at {}:{} — fingerprint {}",
            d.get::<_, String>(0),
            d.get::<_, Option<String>>(1).unwrap_or_default(),
            d.get::<_, Option<String>>(2).unwrap_or_default(),
            d.get::<_, Option<i32>>(3).map(|l| l.to_string()).unwrap_or_default(),
            d.get::<_, String>(4));
        println!("failed command: {}", d.get::<_, Option<String>>(5).unwrap_or_default());
        for line in d.get::<_, String>(6).lines().take(8) {
            println!("  | {line}");
        }
    }
    if let Some(p) = client
        .query_opt(
            "SELECT strategy, verdict, diff, evidence FROM patches WHERE run_id = $1",
            &[&run_id],
        )
        .await?
    {
        let evidence: serde_json::Value = p.get(3);
        println!(
            "\npatch ({}, {}); before: {} of {} sandbox runs failed",
            p.get::<_, String>(0),
            p.get::<_, String>(1),
            evidence["failed"],
            evidence["runs"]
        );
        for line in p.get::<_, Option<String>>(2).unwrap_or_default().lines() {
            println!("  {line}");
        }
    }
    if let Some(v) = client
        .query_opt(
            "SELECT verdict, passed, runs, duration_ms FROM validations WHERE run_id = $1",
            &[&run_id],
        )
        .await?
    {
        println!(
            "validation: {} — after the patch {} of {} sandbox runs passed ({} ms)",
            v.get::<_, String>(0),
            v.get::<_, i32>(1),
            v.get::<_, i32>(2),
            v.get::<_, i64>(3)
        );
    }
    Ok(())
}

/// The pull request and the commit, as the stand-in's git repository has them.
async fn print_delivery(
    stack: &Stack,
    client: &deadpool_postgres::Client,
    run_id: Uuid,
) -> anyhow::Result<()> {
    let Some(d) = client
        .query_opt("SELECT branch, commit_sha, pr_number, pr_url FROM deliveries WHERE run_id = $1 AND kind = 'pull_request'", &[&run_id])
        .await?
    else {
        return Ok(());
    };
    println!(
        "\npull request #{} {} (branch {})",
        d.get::<_, Option<i32>>(2).unwrap_or_default(),
        d.get::<_, Option<String>>(3).unwrap_or_default(),
        d.get::<_, Option<String>>(0).unwrap_or_default()
    );
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(stack.standin.git_dir())
        .args([
            "log",
            "--format=  %h %s (author %an, committer %cn)",
            "--all",
        ])
        .output()?;
    println!(
        "git log of the stand-in's repository ({}):",
        stack.standin.git_dir().display()
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}
