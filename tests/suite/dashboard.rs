//! The dashboard (docs/dashboard.md): signed in with the operators' token, it shows what
//! Postgres holds, escapes what came from outside, and a real heal reads right in Debian's
//! Chromium (driven through chromedriver), with screenshots kept in target/tmp/dashboard/.

use crate::access::no_redirects;
use crate::support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use support::*;

const TOKEN: &str = "dashboard-token-0123456789abcdef";

/// Two incidents of the last days: one healed by selfheal's merged format fix (its excerpt,
/// branch and diff hostile markup), one still open whose pull request URL points off GitHub.
async fn seed(env: &TestEnv) -> (uuid::Uuid, uuid::Uuid) {
    env.migrate();
    let db = env.db().await;
    db.batch_execute(
        "INSERT INTO installations (id, account_login) VALUES (1, 'acme');
         INSERT INTO repositories (id, installation_id, full_name) VALUES (10, 1, 'acme/widgets');",
    )
    .await
    .unwrap();
    let github = env
        .config(selfheal_shared::config::Role::Web)
        .github
        .git_url;
    let mut runs = Vec::new();
    for (n, branch, resolved, status, pr_url, merged) in [
        (
            1i64,
            "main<script>x()</script>",
            Some(600),
            "succeeded",
            format!("{github}/acme/widgets/pull/5"),
            true,
        ),
        (
            2,
            "release",
            None,
            "failed",
            "https://evil.example/acme/widgets/pull/6".to_string(),
            false,
        ),
    ] {
        let (incident, run) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        db.execute(
            "INSERT INTO incidents (id, repository_id, head_repository_id, branch, workflow_id,
               workflow_name, status, first_failed_at, resolved_at)
             VALUES ($1, 10, 10, $2, 7, 'CI', $3, now() - make_interval(days => $4::int),
                     now() - make_interval(days => $4::int) + make_interval(secs => $5::int))",
            &[
                &incident,
                &branch,
                &if resolved.is_some() {
                    "resolved"
                } else {
                    "open"
                },
                &(3 - n as i32),
                &resolved,
            ],
        )
        .await
        .unwrap();
        db.execute(
            "INSERT INTO webhook_deliveries (delivery_id, event, outcome, payload)
             VALUES ($1, 'workflow_run', 'accepted', '{}')",
            &[&format!("d-{n}")],
        )
        .await
        .unwrap();
        db.execute(
            "INSERT INTO runs (id, incident_id, delivery_id, installation_id, repository_full_name,
               github_run_id, github_run_attempt, head_sha, conclusion, status, failure_reason,
               created_at, finished_at)
             VALUES ($1, $2, $3, 1, 'acme/widgets', $4, 1, 'abcdef0123456789', 'failure', $5, $6,
                     now() - make_interval(days => $7::int), now() - make_interval(days => $7::int) + interval '5 minutes')",
            &[
                &run,
                &incident,
                &format!("d-{n}"),
                &(7000 + n),
                &status,
                &(status == "failed").then_some("patch: the sandbox is away"),
                &(3 - n as i32),
            ],
        )
        .await
        .unwrap();
        for (k, stage) in [
            "triage", "diagnose", "patch", "validate", "verify", "deliver",
        ]
        .iter()
        .enumerate()
        {
            db.execute(
                "INSERT INTO stage_attempts (run_id, stage, attempt, worker_id, started_at,
                   finished_at, outcome, detail)
                 VALUES ($1, $2, 1, 'w-1', now() - interval '2 days' + make_interval(secs => $3::int),
                         now() - interval '2 days' + make_interval(secs => $3::int + 7), 'succeeded', $4)",
                &[&run, stage, &(k as i32 * 10), &format!("{stage} done")],
            )
            .await
            .unwrap();
        }
        db.execute(
            "INSERT INTO diagnoses (run_id, class, tool, culprit_file, culprit_line, fingerprint, command, excerpt)
             VALUES ($1, 'format', 'rustfmt', 'src/lib.rs', 3, 'fp', 'cargo fmt --check',
                     'Diff in src/lib.rs at line 3: <script>alert(1)</script>')",
            &[&run],
        )
        .await
        .unwrap();
        db.execute(
            "INSERT INTO patches (run_id, strategy, class, verdict, diff, evidence)
             VALUES ($1, 'format', 'format', 'fixed',
                     E'--- a/src/lib.rs\\n+++ b/src/lib.rs\\n-fn  x(){}\\n+fn x() {}\\n+// <img src=x onerror=alert(2)>', '{}')",
            &[&run],
        )
        .await
        .unwrap();
        db.execute(
            "INSERT INTO validations (run_id, applied, runs, passed, failed, duration_ms, excerpt, verdict)
             VALUES ($1, true, 3, 3, 0, 4200, '', 'fixed')",
            &[&run],
        )
        .await
        .unwrap();
        db.execute(
            "INSERT INTO deliveries (run_id, incident_id, kind, pr_number, pr_url, merged_at)
             VALUES ($1, $2, 'pull_request', $3, $4,
                     CASE WHEN $5 THEN now() - make_interval(days => $6::int) + interval '5 minutes' END)",
            &[&run, &incident, &(4 + n as i32), &pr_url, &merged, &(3 - n as i32)],
        )
        .await
        .unwrap();
        runs.push(run);
    }
    (runs[0], runs[1])
}

/// Signs in with the operators' `token` through the login form: the session cookie, its
/// attributes checked.
pub(crate) async fn signed_in_with(app: &App, token: &str) -> String {
    let response = no_redirects()
        .post(format!("{}/dashboard/login", app.url))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let cookie = response
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_host_only(&cookie, "__Host-selfheal_session", "SameSite=Strict");
    cookie.split(';').next().unwrap().to_string()
}

async fn get(app: &App, path: &str, cookie: &str) -> (u16, String) {
    let response = no_redirects()
        .get(format!("{}{path}", app.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let csp = response
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn the_dashboard_is_behind_the_token_and_shows_what_postgres_holds_escaped() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_DASHBOARD_TOKEN", TOKEN);
    let app = env.spawn_web().await;
    let http = no_redirects();
    let (healed, open) = seed(&env).await;

    // Nobody gets in without the token.
    let r = http
        .get(format!("{}/dashboard", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/dashboard/login");
    let r = http
        .get(format!("{}/dashboard/runs/{healed}", app.url))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let started = Instant::now();
    let r = http
        .post(format!("{}/dashboard/login", app.url))
        .form(&[("token", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "a wrong token costs a second"
    );
    // Two wrong tokens at once: one waits its second, the other is turned away at once.
    let (a, b) = tokio::join!(
        http.post(format!("{}/dashboard/login", app.url))
            .form(&[("token", "wrong-one")])
            .send(),
        http.get(format!("{}/dashboard", app.url))
            .bearer_auth("wrong-two")
            .send(),
    );
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [401, 429]);
    // The right token never waits behind wrong ones.
    let (wrong, right) = tokio::join!(
        http.get(format!("{}/dashboard", app.url))
            .bearer_auth("wrong-three")
            .send(),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let started = Instant::now();
            let r = http
                .get(format!("{}/dashboard/incidents", app.url))
                .bearer_auth(TOKEN)
                .send()
                .await;
            (r, started.elapsed())
        },
    );
    assert_eq!(wrong.unwrap().status(), 401);
    let (right, took) = right;
    assert_eq!(right.unwrap().status(), 200);
    assert!(took < Duration::from_millis(900), "{took:?}");
    // Another scheme (a proxy's Basic credentials) is not a token: a person without a
    // session is sent to sign in, without the wrong token's wait.
    let r = http
        .get(format!("{}/dashboard", app.url))
        .basic_auth("proxy", Some("pass"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let forged = format!(
        "__Host-selfheal_session={}.{}",
        u64::MAX / 2,
        "00".repeat(32)
    );
    assert_eq!(get(&app, "/dashboard", &forged).await.0, 303);

    // Tools use the token as a bearer; people sign in.
    let r = http
        .get(format!("{}/dashboard/incidents", app.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = signed_in_with(&app, TOKEN).await;

    let (status, runs) = get(&app, "/dashboard", &cookie).await;
    assert_eq!(status, 200);
    assert!(
        runs.contains(&format!("/dashboard/runs/{healed}")),
        "{runs}"
    );
    assert!(runs.contains(&format!("/dashboard/runs/{open}")), "{runs}");
    // The branch is text, never markup.
    assert!(!runs.contains("<script>"), "{runs}");
    assert!(
        runs.contains("main&lt;script&gt;x()&lt;/script&gt;"),
        "{runs}"
    );
    // Filters.
    let (_, failed) = get(&app, "/dashboard?status=failed", &cookie).await;
    assert!(failed.contains(&open.to_string()) && !failed.contains(&healed.to_string()));
    let (_, none) = get(&app, "/dashboard?repo=acme%2Fother", &cookie).await;
    assert!(none.contains("No runs."), "{none}");

    // One run: its timeline, diagnosis, diff, proof and links, all escaped.
    let (status, page) = get(&app, &format!("/dashboard/runs/{healed}"), &cookie).await;
    assert_eq!(status, 200);
    let order: Vec<usize> = [
        "triage", "diagnose", "patch", "validate", "verify", "deliver",
    ]
    .iter()
    .map(|s| page.find(&format!("<strong>{s}</strong>")).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(page.contains("+fn x() {}"), "{page}");
    assert!(
        page.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{page}"
    );
    assert!(
        !page.contains("<script>") && !page.contains("<img"),
        "{page}"
    );
    assert!(page.contains("passed 3 of 3 runs"), "{page}");
    let github = env
        .config(selfheal_shared::config::Role::Web)
        .github
        .git_url;
    assert!(
        page.contains(&format!("href=\"{github}/acme/widgets/pull/5\"")),
        "{page}"
    );
    assert!(page.contains(&format!("href=\"{github}/acme/widgets/actions/runs/7001\"")));
    // A pull request URL off the configured GitHub is shown, never linked.
    let (_, other) = get(&app, &format!("/dashboard/runs/{open}"), &cookie).await;
    assert!(other.contains("patch: the sandbox is away"), "{other}");
    assert!(!other.contains("href=\"https://evil.example"), "{other}");
    assert!(other.contains("#6"), "{other}");
    assert_eq!(
        get(&app, "/dashboard/runs/not-a-uuid", &cookie).await.0,
        404
    );
    assert_eq!(
        get(
            &app,
            &format!("/dashboard/runs/{}", uuid::Uuid::new_v4()),
            &cookie
        )
        .await
        .0,
        404
    );

    // Incidents with MTTR; quality from the report views.
    let (_, incidents) = get(&app, "/dashboard/incidents", &cookie).await;
    assert!(incidents.contains("10m 00s"), "{incidents}");
    let (_, quality) = get(&app, "/dashboard/quality", &cookie).await;
    assert!(
        quality.contains("1 of 2 incidents healed by selfheal (50%)"),
        "{quality}"
    );
    assert!(quality.contains("<svg"), "{quality}");
    assert!(quality.contains("<polyline"), "{quality}");
}

#[tokio::test]
async fn without_a_token_there_is_no_dashboard() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    for path in ["/dashboard", "/dashboard/login", "/dashboard/quality"] {
        let r = no_redirects()
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

struct ChromeDriver(Child);

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_real_heal_reads_right_in_chromium() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_DASHBOARD_TOKEN", TOKEN);
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w1");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(7101, &now()))
        .await;
    let run = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(run, Duration::from_secs(60)).await,
        "succeeded"
    );

    let port = support::own_services::free_port();
    let _driver = ChromeDriver(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver, from Debian's chromium-driver (scripts/services.sh installs it)",
            ),
    );
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let started = Instant::now();
    let browser = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => break client,
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("chromedriver: {e}"),
        }
    };
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    // localhost: a secure context for the session's Secure cookie, as TLS would be.
    let base = app.url.replace("127.0.0.1", "localhost");

    browser.goto(&format!("{base}/dashboard")).await.unwrap();
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/dashboard/login"));
    let field = browser.find(Locator::Css("#token")).await.unwrap();
    field.send_keys(TOKEN).await.unwrap();
    browser
        .find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let link = browser
        .wait()
        .for_element(Locator::Css(&format!("a[href='/dashboard/runs/{run}']")))
        .await
        .unwrap();
    std::fs::write(shots.join("runs.png"), browser.screenshot().await.unwrap()).unwrap();
    link.click().await.unwrap();
    let timeline = browser
        .wait()
        .for_element(Locator::Css("ol.timeline"))
        .await
        .unwrap();
    let stages: Vec<String> = {
        let mut names = Vec::new();
        for item in timeline.find_all(Locator::Css("li strong")).await.unwrap() {
            names.push(item.text().await.unwrap());
        }
        names
    };
    assert_eq!(
        stages,
        ["triage", "diagnose", "patch", "validate", "verify", "deliver"]
    );
    let diff = browser.find(Locator::Css("pre.diff")).await.unwrap();
    assert!(diff.text().await.unwrap().contains("src/lib.rs"));
    let text = browser
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("passed 3 of 3 runs"), "{text}");
    let pull = browser
        .find(Locator::Css("dl.facts a[href$='/pull/1']"))
        .await
        .expect("the pull request linked");
    assert_eq!(pull.text().await.unwrap(), "#1");
    std::fs::write(shots.join("run.png"), browser.screenshot().await.unwrap()).unwrap();
    browser
        .goto(&format!("{base}/dashboard/quality"))
        .await
        .unwrap();
    let heading = browser.find(Locator::Css("h1")).await.unwrap();
    assert_eq!(heading.text().await.unwrap(), "Quality");
    std::fs::write(
        shots.join("quality.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();
    browser.close().await.unwrap();
}
