//! Each example with real dependencies and a lockfile, healed through the whole pipeline on
//! the stand-in: the recorded CI log of its workflow's step, the workflow found at the
//! failing commit, the dependencies fetched, the fix validated in fresh containers and
//! delivered as a pull request.

use crate::support;

use std::time::Duration;

use github_standin::Knobs;
use serde_json::Value;
use support::*;

struct Healed {
    strategy: String,
    verdict: String,
    diff: String,
    evidence: Value,
    step: Value,
    validation: (i32, i32, String),
    pulls: usize,
    pr_body: String,
    /// The model's settled spend on the run (`ai_spend`): tokens and cost.
    spend: (Option<i64>, Option<f64>),
}

/// Serves `examples/<example>` with its CI log, the failing job named as its workflow names
/// it, and waits for the run to finish.
async fn heal_through_the_pipeline(example: &str, job: &str, run: i64) -> Healed {
    heal_with(example, job, run, &[]).await
}

/// The same, with the worker's environment extended by `vars`.
async fn heal_with(example: &str, job: &str, run: i64, vars: &[(&str, &str)]) -> Healed {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_RERUNS", "2");
    for (k, v) in vars {
        env.set(k, v);
    }
    let app = env.spawn_web().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let log = root.join(format!("fixtures/ci-logs/examples/{example}.log"));
    env.standin.set_knobs(Knobs {
        repo_dir: Some(root.join("examples").join(example).display().to_string()),
        log_text: Some(std::fs::read_to_string(log).unwrap()),
        failing_job: Some(job.into()),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w1");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(run, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    env.wait_run(run_id, Duration::from_secs(300)).await;
    let db = env.db().await;
    let p = db
        .query_one(
            "SELECT strategy, verdict, coalesce(diff, ''), evidence, step FROM patches WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    let v = db
        .query_opt(
            "SELECT passed, failed, verdict FROM validations WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap()
        .map(|v| (v.get(0), v.get(1), v.get(2)))
        .unwrap_or((0, 0, "none".into()));
    let spend = db
        .query_one(
            "SELECT sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens)::bigint,
                    sum(cost_usd)::float8
             FROM ai_spend WHERE run_id = $1 AND settled_at IS NOT NULL",
            &[&run_id],
        )
        .await
        .unwrap();
    Healed {
        spend: (spend.get(0), spend.get(1)),
        strategy: p.get(0),
        verdict: p.get(1),
        diff: p.get(2),
        evidence: p.get(3),
        step: p.get(4),
        validation: v,
        pulls: env.standin.pulls().len(),
        pr_body: env
            .standin
            .pulls()
            .first()
            .and_then(|p| p["body"].as_str().map(str::to_string))
            .unwrap_or_default(),
    }
}

fn assert_healed(h: &Healed, strategy: &str, job: &str, only_file: &str) {
    assert_eq!(
        (h.strategy.as_str(), h.verdict.as_str()),
        (strategy, "fixed"),
        "{:#} {:#}",
        h.evidence,
        h.step
    );
    assert_eq!(h.step["source"]["from"], "workflow", "{:#}", h.step);
    assert_eq!(h.step["source"]["job"], job);
    assert_eq!(h.validation, (2, 0, "fixed".to_string()));
    assert_eq!(h.pulls, 1);
    // The fix is the source file: no lockfile, dependency tree or build output in it.
    assert_eq!(h.diff.matches("+++ ").count(), 1, "{}", h.diff);
    assert!(h.diff.contains(&format!("+++ b/{only_file}")), "{}", h.diff);
}

fn resolved(h: &Healed) -> Vec<String> {
    let deps = &h.evidence["dependencies"];
    assert_eq!(deps["state"], "ready", "{deps:#}");
    assert_eq!(deps["plan"]["locked"], true, "{deps:#}");
    deps["cache"]["resolved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn node_prettier_from_its_lockfile() {
    let h = heal_through_the_pipeline("node-format", "lint", 1501).await;
    assert_healed(&h, "format", "lint", "src/index.js");
    assert!(h
        .diff
        .contains("+  return symbol + (cents / 100).toFixed(2);"));
    assert!(resolved(&h).contains(&"node_modules/prettier".to_string()));
}

#[tokio::test]
async fn python_black_then_pytest_with_pinned_requirements() {
    let h = heal_through_the_pipeline("python-deps", "check", 1502).await;
    assert_healed(&h, "format", "check", "shipping/parcel.py");
    let packages = resolved(&h);
    assert!(
        packages.contains(&"black==24.8.0".to_string()),
        "{packages:?}"
    );
    assert!(
        packages.contains(&"attrs==24.2.0".to_string()),
        "{packages:?}"
    );
    // The workflow's whole script, its env exported, is what was run and validated (that the
    // env reaches the command is shown in tests/suite/languages.rs, where the step tests it).
    let script = h.step["script"].as_str().unwrap();
    assert!(script.contains("export PYTHONWARNINGS='error'"), "{script}");
    // The CI set up Python 3.12, the sandbox has Debian's 3.11: the PR says so, as code.
    assert!(
        h.pr_body.contains("- toolchain: ` python 3.11."),
        "{}",
        h.pr_body
    );
    assert!(
        h.pr_body.contains(
            "- differs from the CI: `` `uses: actions/setup-python@v5` asks for python 3.12; the sandbox has 3.11."
        ),
        "{}",
        h.pr_body
    );
}

#[tokio::test]
async fn rust_clippy_with_crates_from_cargo_lock() {
    let h = heal_through_the_pipeline("rust-deps", "clippy", 1503).await;
    assert_healed(&h, "lint_autofix", "clippy", "src/lib.rs");
    assert!(resolved(&h).contains(&"serde_json-1.0.120".to_string()));
}

#[tokio::test]
async fn go_gofmt_without_dependencies() {
    let h = heal_through_the_pipeline("go-format", "fmt", 1504).await;
    assert_healed(&h, "format", "fmt", "slug.go");
    assert_eq!(h.evidence["dependencies"]["state"], "not_needed");
    let notes = h.step["notes"].to_string();
    assert!(
        notes.contains("actions/setup-go@v5` with go-version 1.22"),
        "{notes}"
    );
}

/// `example` healed by a worker that runs every sandbox as a Job on the Kubernetes stand-in
/// (whose kubelet runs the pods on this Docker engine); returns what was healed and the pods
/// the cluster admitted.
async fn heal_on_cluster(
    example: &str,
    job: &str,
    run: i64,
    language: selfheal_engine::sandbox::Language,
) -> (Healed, Vec<Value>) {
    let cluster = kubernetes_standin::spawn(
        "selfheal-sandbox",
        "worker-token",
        Some(("selfheal.dev/network", "none")),
        &["gvisor"],
    )
    .await;
    // The stand-in's nodes pull from no registry: the image is this Docker engine's.
    let image = selfheal_engine::sandbox::Sandbox::connect(
        selfheal_engine::sandbox::Images::Recipe,
        selfheal_engine::sandbox::Limits::default(),
    )
    .await
    .unwrap()
    .for_language(language);
    image.image_for(std::path::Path::new(".")).await.unwrap();
    // The worker finds the cluster as `kubectl` would: from its kubeconfig.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(&kubeconfig, cluster.kubeconfig(&cluster.token)).unwrap();
    // The images the cluster pulls, by the name the recipe gives them on this engine.
    let tag = selfheal_engine::sandbox::image_tag(language);
    let images = tag.replacen(&format!("-{}:", language.as_str()), "-{language}:", 1);
    let h = heal_with(
        example,
        job,
        run,
        &[
            ("SELFHEAL_SANDBOX_BACKEND", "kubernetes"),
            ("SELFHEAL_SANDBOX_RUNTIME_CLASS", "gvisor"),
            ("SELFHEAL_SANDBOX_IMAGE", &images),
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ],
    )
    .await;
    let jobs = cluster
        .calls()
        .iter()
        .filter(|c| c.starts_with("POST /apis/batch/v1/namespaces/selfheal-sandbox/jobs"))
        .count();
    let admitted = cluster.admitted_pods();
    // Every Job got its pod, in the runtime class asked for.
    assert_eq!(admitted.len(), jobs);
    assert!(admitted.iter().all(|p| p["runtimeClassName"] == "gvisor"));
    let start = std::time::Instant::now();
    while !cluster.jobs().is_empty() && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(cluster.jobs().is_empty());
    (h, admitted)
}

#[tokio::test]
async fn go_gofmt_healed_with_every_sandbox_a_kubernetes_job() {
    let (h, admitted) = heal_on_cluster(
        "go-format",
        "fmt",
        1505,
        selfheal_engine::sandbox::Language::Go,
    )
    .await;
    assert_healed(&h, "format", "fmt", "slug.go");
    // The toolchain's version, asked of the image in a Job of its own, is in the evidence.
    assert!(h.pr_body.contains("- toolchain: ` go 1."), "{}", h.pr_body);
    // 2 to reproduce, 1 for gofmt, 2 to validate, 1 for the toolchain's version.
    assert!(admitted.len() >= 6, "{}", admitted.len());
}

#[tokio::test]
async fn python_black_with_pinned_requirements_healed_with_every_sandbox_a_kubernetes_job() {
    let (h, admitted) = heal_on_cluster(
        "python-deps",
        "check",
        1506,
        selfheal_engine::sandbox::Language::Python,
    )
    .await;
    assert_healed(&h, "format", "check", "shipping/parcel.py");
    let packages = resolved(&h);
    assert!(
        packages.contains(&"black==24.8.0".to_string()),
        "{packages:?}"
    );
    // The fetch was the one pod with a network; every run mounted its claim read-only.
    let fetches: Vec<&Value> = admitted
        .iter()
        .filter(|p| p["volumes"][2]["persistentVolumeClaim"]["readOnly"] == false)
        .collect();
    assert_eq!(fetches.len(), 1);
    let runs_with_deps = admitted
        .iter()
        .filter(|p| p["volumes"][2]["persistentVolumeClaim"]["readOnly"] == true)
        .count();
    assert!(runs_with_deps >= 5, "{runs_with_deps}");
}

/// A compile error no deterministic strategy fixes (an API change whose call site was not
/// updated), healed with the model stand-in's recorded answer: checked, validated in the
/// sandbox, delivered as a PR for review (a model's fix of a compile error is not auto-merged).
#[tokio::test]
async fn rust_compile_error_healed_by_the_models_answer_and_left_for_review() {
    const KEY: &str = "sk-ant-e2e-0123456789abcdefghij";
    let model = ai_standin::spawn(Some(KEY)).await;
    let fix = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -9,3 +9,3 @@\n pub fn listen_address(host: &str, port_text: &str) -> String {\n-    format!(\"{host}:{}\", parse_port(port_text))\n+    format!(\"{host}:{}\", parse_port(port_text, 8080))\n }\n";
    let answer = serde_json::json!({
        "root_cause": "parse_port gained a default parameter; listen_address still calls it with one argument",
        "culprit_files": [{"path": "src/lib.rs", "line": 10}], "confidence": 0.93, "patch": fix});
    model.push(ai_standin::Reply::Events(
        ai_standin::anthropic_tool_answer(&answer.to_string(), "tool_use", 0),
    ));
    let h = heal_with(
        "rust-api-change",
        "test",
        1507,
        &[
            ("ANTHROPIC_API_KEY", KEY),
            ("ANTHROPIC_BASE_URL", &model.url),
            ("SELFHEAL_AI_USD_PER_MTOK_INPUT", "3"),
            ("SELFHEAL_AI_USD_PER_MTOK_OUTPUT", "15"),
            // An operator's own pattern: here, words of the file's first line.
            ("SELFHEAL_AI_REDACT", "staging servic[a-z]+"),
        ],
    )
    .await;
    assert_healed(&h, "ai_patch", "test", "src/lib.rs");
    assert!(h.diff.contains("parse_port(port_text, 8080)"), "{}", h.diff);
    assert_eq!(h.evidence["ai"]["asked"], 1, "{:#}", h.evidence);
    assert_eq!(h.evidence["ai"]["provider"], "anthropic");
    let usage = &h.evidence["ai"]["usage"];
    assert!(usage["output_tokens"].as_u64() > Some(0));
    // The spend recorded against the run is the service's count, priced as configured (cache
    // writes at the input price when theirs is not given).
    let count = |k: &str| usage[k].as_u64().unwrap();
    let input = count("input_tokens") + count("cached_input_tokens") + count("cache_write_tokens");
    assert_eq!(
        h.spend.0,
        Some((input + count("output_tokens")) as i64),
        "{:?}",
        h.spend
    );
    let cost = (input * 3 + count("output_tokens") * 15) as f64 / 1e6;
    assert!(
        (h.spend.1.unwrap() - cost).abs() < 1e-6,
        "{:?} {cost}",
        h.spend
    );
    assert!(h.pr_body.contains("proposed this change"), "{}", h.pr_body);
    // The prompt had the failure and the file, and not the key.
    let sent = model.received()[0].body.to_string();
    assert!(
        sent.contains("E0061") && sent.contains("fn listen_address"),
        "{sent}"
    );
    assert!(!sent.contains(KEY));
    assert!(
        sent.contains("Listen addresses for the [REDACTED]") && !sent.contains("staging services"),
        "{sent}"
    );
}

/// The same failure, the model answering with a lazy edit that Morph (its stand-in, answering
/// as Morph's documentation shows) merges into the file: the worker reads MORPH_API_KEY and
/// MORPH_API_URL, and both services' spend is recorded against the run.
#[tokio::test]
async fn rust_compile_error_healed_from_a_lazy_edit_merged_by_morph() {
    const KEY: &str = "sk-ant-e2e-0123456789abcdefghij";
    const MORPH_KEY: &str = "morph-e2e-0123456789abcdefghij";
    let model = ai_standin::spawn(Some(KEY)).await;
    let morph = ai_standin::spawn(Some(MORPH_KEY)).await;
    let update = "// ... existing code ...\npub fn listen_address(host: &str, port_text: &str) -> String {\n    format!(\"{host}:{}\", parse_port(port_text, 8080))\n}\n// ... existing code ...\n";
    let answer = serde_json::json!({
        "root_cause": "parse_port gained a default parameter; listen_address still calls it with one argument",
        "culprit_files": [{"path": "src/lib.rs", "line": 10}], "confidence": 0.9, "patch": null,
        "edits": [{"path": "src/lib.rs", "update": update}]});
    model.push(ai_standin::Reply::Events(
        ai_standin::anthropic_tool_answer(&answer.to_string(), "tool_use", 0),
    ));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let original =
        std::fs::read_to_string(root.join("examples/rust-api-change/src/lib.rs")).unwrap();
    let merged = original.replacen("parse_port(port_text))", "parse_port(port_text, 8080))", 1);
    morph.push(ai_standin::Reply::Json(ai_standin::morph_answer(&merged)));
    let morph_url = format!("{}/v1", morph.url);
    let h = heal_with(
        "rust-api-change",
        "test",
        1508,
        &[
            ("ANTHROPIC_API_KEY", KEY),
            ("ANTHROPIC_BASE_URL", &model.url),
            ("MORPH_API_KEY", MORPH_KEY),
            ("MORPH_API_URL", &morph_url),
        ],
    )
    .await;
    assert_healed(&h, "ai_patch", "test", "src/lib.rs");
    assert!(h.diff.contains("parse_port(port_text, 8080)"), "{}", h.diff);
    assert_eq!(h.evidence["ai"]["morph"]["files"], 1, "{:#}", h.evidence);
    assert_eq!(h.evidence["ai"]["morph"]["model"], "morph-v3-large");
    let sent = morph.received();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].headers["authorization"],
        format!("Bearer {MORPH_KEY}")
    );
    // Neither key went into any prompt.
    for body in sent
        .iter()
        .chain(model.received().iter())
        .map(|r| r.body.to_string())
    {
        assert!(!body.contains(KEY) && !body.contains(MORPH_KEY));
    }
    // Morph's tokens (412 + 318 in its answer) are counted with the model's.
    let model_tokens: u64 = [
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
    ]
    .iter()
    .map(|k| h.evidence["ai"]["usage"][k].as_u64().unwrap())
    .sum();
    assert_eq!(h.spend.0, Some(model_tokens as i64 + 730), "{:?}", h.spend);
}

/// Fix memory end to end: the model's fix of rust-api-change is merged by a person; the same
/// failure then comes back in another workflow (a new incident), and the merged patch is
/// replayed, checked and validated again without asking the model (which has no second
/// answer queued: asked, it would fail the run).
#[tokio::test]
async fn a_merged_fix_is_replayed_for_the_same_failure_without_asking_the_model() {
    const KEY: &str = "sk-ant-e2e-0123456789abcdefghij";
    let model = ai_standin::spawn(Some(KEY)).await;
    model.push(model_answer(FIX_API_CHANGE));
    let (env, app, _worker) = api_change_with_model(KEY, &model).await;
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1509, &now()))
        .await;
    let first = env.run_of(&body).await;
    env.wait_run(first, Duration::from_secs(300)).await;
    let db = env.db().await;
    let memory_of = |run: uuid::Uuid| {
        let db = &db;
        async move {
            db.query_one(
                "SELECT strategy, verdict, memory_use, remembered_from FROM patches WHERE run_id = $1",
                &[&run],
            )
            .await
            .unwrap()
        }
    };
    let p = memory_of(first).await;
    assert_eq!(p.get::<_, String>(1), "fixed");
    assert_eq!(
        p.get::<_, Option<String>>(2),
        None,
        "nothing to remember yet"
    );

    // Left for review, then merged by a person.
    let (branch, _) = env.pull(1);
    let (_, body) = app
        .deliver("pull_request", &env.pr_closed(1, &branch, true, "octocat"))
        .await;
    assert_eq!(body["status"], "fix_merged", "{body}");

    // The same failure at a later commit (one failure at one commit gets one fix), in another
    // workflow: a new incident.
    let later = empty_commit_on(&env, &env.standin.head_sha()).await;
    let mut again = env.failing_run(1510, &now());
    again["workflow_run"]["workflow_id"] = serde_json::json!(5151);
    again["workflow_run"]["head_sha"] = serde_json::json!(later);
    let (_, body) = app.deliver("workflow_run", &again).await;
    let second = env.run_of(&body).await;
    env.wait_run(second, Duration::from_secs(300)).await;
    let p = memory_of(second).await;
    assert_eq!(
        (p.get::<_, String>(0), p.get::<_, String>(1)),
        ("ai_patch".to_string(), "fixed".to_string())
    );
    assert_eq!(p.get::<_, Option<String>>(2).as_deref(), Some("replayed"));
    assert_eq!(p.get::<_, Option<uuid::Uuid>>(3), Some(first));
    assert_eq!(model.received().len(), 1, "the model was asked again");
    let pulls = env.standin.pulls();
    let body = pulls
        .iter()
        .find(|p| p["number"] == 2)
        .and_then(|p| p["body"].as_str())
        .unwrap_or_default();
    assert!(body.contains("this failure was fixed before in"), "{body}");
    assert!(body.contains("No model was asked"), "{body}");

    // The hit rate, as the view reports it: two runs, one found a remembered fix and replayed
    // it, and that replay was validated.
    let rate = db
        .query_one(
            "SELECT runs, hits, hit_rate::float8, replayed, replayed_fixed FROM fix_memory",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rate.get::<_, i64>(0), 2);
    assert_eq!(rate.get::<_, i64>(1), 1);
    assert_eq!(rate.get::<_, f64>(2), 0.5);
    assert_eq!(rate.get::<_, i64>(3), 1);
    assert_eq!(rate.get::<_, i64>(4), 1);

    // People revert the remembered fix (GitHub's Revert button): it is remembered no more.
    let pool = selfheal_shared::db::pool(&env.database_url, 1).unwrap();
    let second_run = selfheal_shared::runs::load(&pool.get().await.unwrap(), second)
        .await
        .unwrap()
        .unwrap();
    let fingerprint: String = db
        .query_one(
            "SELECT fingerprint FROM diagnoses WHERE run_id = $1",
            &[&second],
        )
        .await
        .unwrap()
        .get(0);
    let recall = || {
        selfheal_worker::fix_memory::remembered(
            &db,
            &second_run,
            &fingerprint,
            selfheal_shared::config::FixMemory::Repository,
        )
    };
    let before = recall()
        .await
        .unwrap()
        .expect("the merged fix is remembered");
    assert_eq!(before.run_id, first.to_string());
    // The same failure in another repository of the installation: remembered there only when
    // the operator shares memory across the installation; never in another installation.
    use selfheal_shared::config::FixMemory;
    let mut elsewhere = second_run.clone();
    elsewhere.id = uuid::Uuid::new_v4();
    elsewhere.repository_full_name = "octo-org/another-service".into();
    let recall_in = |run: selfheal_shared::runs::Run, scope: FixMemory| {
        let (db, fingerprint) = (&db, fingerprint.clone());
        async move {
            selfheal_worker::fix_memory::remembered(db, &run, &fingerprint, scope)
                .await
                .unwrap()
        }
    };
    assert!(recall_in(elsewhere.clone(), FixMemory::Repository)
        .await
        .is_none());
    let shared = recall_in(elsewhere.clone(), FixMemory::Installation)
        .await
        .expect("shared across the installation's repositories");
    assert_eq!(shared.run_id, first.to_string());
    assert_eq!(shared.repository, second_run.repository_full_name);
    let mut other_installation = elsewhere;
    other_installation.installation_id += 1;
    assert!(recall_in(other_installation, FixMemory::Installation)
        .await
        .is_none());
    assert!(recall_in(second_run.clone(), FixMemory::Off)
        .await
        .is_none());
    let (_, body) = app
        .deliver(
            "pull_request",
            &env.pr_closed(3, &format!("revert-1-{branch}"), true, "octocat"),
        )
        .await;
    assert_eq!(body["status"], "fix_reverted", "{body}");
    assert!(recall().await.unwrap().is_none());
}

/// A commit on top of `parent` with the same tree, made through the stand-in's Git Data API
/// as any client would, and the default branch moved to it.
async fn empty_commit_on(env: &TestEnv, parent: &str) -> String {
    let git = GitData::new(env);
    let tree = git.tree_of(parent).await;
    let sha = git.commit(tree, &[parent], "docs: nothing", None).await;
    git.move_branch("master", &sha, false).await;
    sha
}

/// A commit on top of `parent` through the stand-in's Git Data API, by `author`: `files` over
/// `parent`'s tree, or alone (`fresh`).
async fn commit_files(
    env: &TestEnv,
    parent: &str,
    files: &[(&str, &str)],
    fresh: bool,
    message: &str,
    author: &str,
) -> String {
    let git = GitData::new(env);
    let base = if fresh {
        None
    } else {
        Some(git.tree_of(parent).await)
    };
    let tree = git.tree(base, files).await;
    git.commit(tree, &[parent], message, Some(author)).await
}

/// The failing run `github_run` at `head` (a test's failure), healed by a worker while the
/// stand-in lists `workflow_runs`: the patch's strategy, verdict, diff and evidence.
async fn culprit_patch(
    env: &TestEnv,
    app: &App,
    head: &str,
    workflow_runs: Vec<Value>,
    github_run: i64,
) -> tokio_postgres::Row {
    env.standin.set_knobs(Knobs {
        log_fixture: Some("cargo-test-panic.log".into()),
        workflow_runs,
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w1");
    let mut failing = env.failing_run(github_run, &now());
    failing["workflow_run"]["head_sha"] = serde_json::json!(head);
    let (_, body) = app.deliver("workflow_run", &failing).await;
    let run_id = env.run_of(&body).await;
    env.wait_run(run_id, Duration::from_secs(600)).await;
    env.db()
        .await
        .query_one(
            "SELECT strategy, verdict, coalesce(diff, ''), evidence FROM patches WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap()
}

/// The body of the first pull request the stand-in was sent, or nothing.
fn first_pr_body(env: &TestEnv) -> String {
    env.standin
        .pulls()
        .first()
        .and_then(|p| p["body"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// [`green_temperatures`], then Grace's commit that breaks it: the green and culprit shas,
/// and the broken file.
async fn green_then_culprit(env: &TestEnv) -> (String, String, String) {
    let (green, broken) = green_temperatures(env).await;
    let culprit = commit_files(
        env,
        &green,
        &[("src/lib.rs", &broken)],
        false,
        "Round the offset",
        "Grace",
    )
    .await;
    (green, culprit, broken)
}

/// examples/rust-culprit fixed, committed as the green start of a history (its sha), and the
/// example's broken `src/lib.rs` for the culprit to commit.
async fn green_temperatures(env: &TestEnv) -> (String, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::fs::read_to_string(root.join("examples/rust-culprit/Cargo.toml")).unwrap();
    let broken = std::fs::read_to_string(root.join("examples/rust-culprit/src/lib.rs")).unwrap();
    let good = broken.replace("+ 30.0", "+ 32.0");
    assert_ne!(good, broken);
    let files = [
        ("Cargo.toml", cargo.as_str()),
        ("src/lib.rs", good.as_str()),
    ];
    let start = env.standin.head_sha();
    let green = commit_files(env, &start, &files, true, "Temperatures", "Ada").await;
    (green, broken)
}

/// A merge of `other` into `first`, with `first`'s tree, through the stand-in's Git Data API.
async fn merge_commit(env: &TestEnv, first: &str, other: &str) -> String {
    let git = GitData::new(env);
    let tree = git.tree_of(first).await;
    git.commit(tree, &[first, other], "Merge branch 'docs'", None)
        .await
}

/// Culprit revert end to end, with no model configured: master was green, then four commits
/// landed, the third of which breaks a test. The worker lists the commits since the
/// workflow's last green run (its runs, the comparison, each commit's files), reverts them
/// newest first in the sandbox, and delivers the revert of the one without which the tests
/// pass, naming it.
#[tokio::test]
async fn the_commit_that_broke_the_build_is_found_among_those_since_green_and_reverted() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_RERUNS", "2");
    let app = env.spawn_web().await;
    let (green, broken) = green_temperatures(&env).await;
    let readme = commit_files(
        &env,
        &green,
        &[("README.md", "# temps\n")],
        false,
        "docs: a README",
        "Ada",
    )
    .await;
    let culprit = commit_files(
        &env,
        &readme,
        &[("src/lib.rs", &broken)],
        false,
        "Round the offset",
        "Grace",
    )
    .await;
    let changelog = commit_files(
        &env,
        &culprit,
        &[("CHANGELOG.md", "- rounding\n")],
        false,
        "docs: changelog",
        "Ada",
    )
    .await;
    // Newest of all, a merge (of the README commit, already in): never reverted blindly.
    let head = merge_commit(&env, &changelog, &readme).await;
    GitData::new(&env).move_branch("master", &head, true).await;
    // The workflow's runs as GitHub lists them: the last green push on master, and newer
    // decoys a careless query would take for it (each starts after the culprit, so taking one
    // would miss it): a fork's pull request on a branch also named master, a push to another
    // branch, a failed push, and another workflow's run.
    let workflow = 2823525;
    let run = |workflow_id: i64, branch: &str, event: &str, conclusion: &str, sha: &str| {
        serde_json::json!({"workflow_id": workflow_id, "head_branch": branch, "event": event,
            "conclusion": conclusion, "head_sha": sha})
    };
    let mut fork_pr = run(workflow, "master", "pull_request", "success", &changelog);
    fork_pr["head_repository"] = serde_json::json!("mallory/octo-repo");
    let runs = vec![
        run(workflow, "master", "push", "success", &green),
        fork_pr,
        run(workflow, "release", "push", "success", &changelog),
        run(workflow, "master", "push", "failure", &changelog),
        run(4242, "master", "push", "success", &changelog),
    ];
    let p = culprit_patch(&env, &app, &head, runs, 1511).await;
    let evidence: Value = p.get(3);
    assert_eq!(
        (
            p.get::<_, String>(0).as_str(),
            p.get::<_, String>(1).as_str()
        ),
        ("revert_culprit", "fixed"),
        "{evidence:#}"
    );
    let diff: String = p.get(2);
    assert!(diff.contains("-    (celsius * 9.0 / 5.0 + 30.0)"), "{diff}");
    assert!(diff.contains("+    (celsius * 9.0 / 5.0 + 32.0)"), "{diff}");
    assert!(
        !diff.contains("CHANGELOG") && !diff.contains("README"),
        "{diff}"
    );
    let found = &evidence["culprit"];
    assert_eq!(found["culprit"]["sha"], culprit.as_str(), "{found:#}");
    assert_eq!(found["culprit"]["author"], "Grace");
    assert_eq!(found["culprit"]["title"], "Round the offset");
    // Newest first: the changelog's revert still fails, the culprit's passes.
    let tried = found["tried"].as_array().unwrap();
    assert_eq!(tried.len(), 2, "{found:#}");
    assert_eq!(tried[0]["sha"], changelog.as_str());
    assert!(
        tried[0]["outcome"]
            .as_str()
            .unwrap()
            .contains("still fails"),
        "{found:#}"
    );
    let skipped = found["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .any(|s| s.as_str().unwrap().contains("merge commit")),
        "{found:#}"
    );
    let pr_body = first_pr_body(&env);
    assert!(pr_body.contains(&culprit), "{pr_body}");
    assert!(pr_body.contains("Grace"), "{pr_body}");
}

/// A culprit older than the newest three: the one-by-one reverts all still fail, so the
/// worker bisects (the newest k commits reverted together, the smallest passing k names the
/// culprit) and confirms by reverting the culprit alone, which is the fix. The innocent
/// commits build on one another (one creates a file the next ones edit): reverting them
/// together works only one at a time, newest first (one `git apply -R` of them all would
/// undo the oldest first, and fail).
#[tokio::test]
async fn a_culprit_past_the_newest_three_is_found_by_bisection() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_RERUNS", "2");
    let app = env.spawn_web().await;
    let (green, culprit, _) = green_then_culprit(&env).await;
    let mut head = culprit.clone();
    // The first creates the notes, the next two edit lines far apart (each reverts alone),
    // the last adds another file.
    let lines: Vec<String> = (1..=10).map(|n| format!("line {n}\n")).collect();
    let mut notes = lines.concat();
    let mut versions = vec![("docs/notes.md", notes.clone())];
    for n in [2, 9] {
        notes = notes.replace(&format!("line {n}\n"), &format!("line {n}, edited\n"));
        versions.push(("docs/notes.md", notes.clone()));
    }
    versions.push(("docs/other.md", "other\n".to_string()));
    for (path, text) in versions {
        head = commit_files(&env, &head, &[(path, &text)], false, "docs: notes", "Ada").await;
    }
    GitData::new(&env).move_branch("master", &head, true).await;
    let green_run = serde_json::json!({"workflow_id": 2823525, "head_branch": "master",
        "event": "push", "conclusion": "success", "head_sha": green});
    let p = culprit_patch(&env, &app, &head, vec![green_run], 1513).await;
    let evidence: Value = p.get(3);
    let found = &evidence["culprit"];
    assert_eq!(
        (p.get::<_, String>(0), p.get::<_, String>(1)),
        ("revert_culprit".to_string(), "fixed".to_string()),
        "{evidence:#}"
    );
    assert_eq!(found["culprit"]["sha"], culprit.as_str(), "{found:#}");
    let diff: String = p.get(2);
    assert!(diff.contains("+    (celsius * 9.0 / 5.0 + 32.0)"), "{diff}");
    assert!(!diff.contains("docs/note"), "{diff}");
    // Three alone, then the newest five together (passes) and the newest four (fails), then
    // the culprit alone.
    let outcomes: Vec<(String, String)> = found["tried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["sha"].as_str().unwrap().to_string(),
                t["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(outcomes.len(), 6, "{outcomes:#?}");
    assert!(
        outcomes[..3].iter().all(|(_, o)| o.contains("still fails")),
        "{outcomes:#?}"
    );
    // The bisection's steps: the newest five together (passes), then the newest four (fails).
    let tried = found["tried"].as_array().unwrap();
    assert_eq!(
        (&tried[3]["commits"], &tried[4]["commits"]),
        (&5.into(), &4.into())
    );
    assert_eq!(tried[3]["oldest"], culprit.as_str(), "{found:#}");
    assert!(outcomes[3].1.contains("passes"), "{outcomes:#?}");
    assert!(outcomes[4].1.contains("still fails"), "{outcomes:#?}");
    assert_eq!(outcomes[5].0, culprit);
    let pr_body = first_pr_body(&env);
    assert!(pr_body.contains("the newest 5 together"), "{pr_body}");
}

/// A culprit whose change the API cannot give whole: the commit that broke the tests also
/// moved a file, which GitHub lists as `renamed` (nothing to rebuild its revert from). Its
/// diff comes from the repository's history instead, by one shallow git fetch with the
/// installation's token, and its revert (the move undone too) is the fix. A newer commit,
/// rebuilt from the API, is tried first: the order is kept across both sources.
#[tokio::test]
async fn a_culprit_that_also_moved_a_file_is_read_from_history_and_reverted() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_RERUNS", "2");
    let app = env.spawn_web().await;
    let (green, broken) = green_temperatures(&env).await;
    let notes = "# Notes\n\nOffsets follow the spec.\n";
    let with_notes = commit_files(
        &env,
        &green,
        &[("docs/notes.md", notes)],
        false,
        "docs: notes",
        "Ada",
    )
    .await;
    let git = GitData::new(&env);
    let tree = git
        .tree_without(
            Some(git.tree_of(&with_notes).await),
            &[("src/lib.rs", &broken), ("docs/offsets.md", notes)],
            &["docs/notes.md"],
        )
        .await;
    let culprit = git
        .commit(
            tree,
            &[&with_notes],
            "Round the offset, move the notes",
            Some("Grace"),
        )
        .await;
    let changelog = commit_files(
        &env,
        &culprit,
        &[("CHANGELOG.md", "- offsets\n")],
        false,
        "docs: changelog",
        "Ada",
    )
    .await;
    // Newest, a binary file (no patch from the API either): its revert could not be
    // delivered, so it is left out, not tried.
    let logo = commit_files(
        &env,
        &changelog,
        &[("assets/logo.bin", "\u{0}PNG\u{1}\u{2}\n")],
        false,
        "a logo",
        "Ada",
    )
    .await;
    git.move_branch("master", &logo, true).await;
    let runs = vec![
        serde_json::json!({"workflow_id": 2823525, "head_branch": "master",
        "event": "push", "conclusion": "success", "head_sha": with_notes}),
    ];
    let p = culprit_patch(&env, &app, &logo, runs, 1517).await;
    let evidence: Value = p.get(3);
    assert_eq!(
        (
            p.get::<_, String>(0).as_str(),
            p.get::<_, String>(1).as_str()
        ),
        ("revert_culprit", "fixed"),
        "{evidence:#}"
    );
    assert_eq!(
        evidence["culprit"]["culprit"]["sha"],
        culprit.as_str(),
        "{evidence:#}"
    );
    let tried: Vec<&str> = evidence["culprit"]["tried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["sha"].as_str().unwrap())
        .collect();
    assert_eq!(
        tried,
        [changelog.as_str(), culprit.as_str()],
        "{evidence:#}"
    );
    let skipped = evidence["culprit"]["skipped"].to_string();
    assert!(
        skipped.contains(&logo[..7]) && skipped.contains("binary"),
        "{skipped}"
    );
    // The whole commit undone: the code, and the file back where it was.
    let diff: String = p.get(2);
    assert!(diff.contains("+    (celsius * 9.0 / 5.0 + 32.0)"), "{diff}");
    assert!(diff.contains("+++ b/docs/notes.md"), "{diff}");
    assert!(diff.contains("--- a/docs/offsets.md"), "{diff}");
    assert!(!diff.contains("CHANGELOG"), "{diff}");
    // Read with git, as the installation, once.
    let fetches: Vec<_> = env
        .standin
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with(".git/git-upload-pack"))
        .map(|c| (c.auth, c.status))
        .collect();
    assert!(
        fetches.contains(&("installation-token".to_string(), Some(200))),
        "{fetches:?}"
    );
}

/// The bisection names a commit a later one builds on: reverting the newest five together
/// passes, but the culprit's revert alone does not apply (the later commit changed its
/// context). Nothing is reverted: the commit is named in the evidence and left to people.
#[tokio::test]
async fn a_culprit_whose_revert_alone_does_not_apply_is_left_to_people() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_RERUNS", "2");
    let app = env.spawn_web().await;
    let (green, culprit, broken) = green_then_culprit(&env).await;
    let reworded = broken.replace("nearest degree", "nearest whole degree");
    assert_ne!(reworded, broken);
    let mut head = commit_files(
        &env,
        &culprit,
        &[("src/lib.rs", &reworded)],
        false,
        "docs: the rounding",
        "Ada",
    )
    .await;
    for n in 1..=3 {
        let path = format!("docs/note-{n}.md");
        head = commit_files(
            &env,
            &head,
            &[(&path, "a note\n")],
            false,
            "docs: a note",
            "Ada",
        )
        .await;
    }
    GitData::new(&env).move_branch("master", &head, true).await;
    let green_run = serde_json::json!({"workflow_id": 2823525, "head_branch": "master",
        "event": "push", "conclusion": "success", "head_sha": green});
    let p = culprit_patch(&env, &app, &head, vec![green_run], 1514).await;
    let evidence: Value = p.get(3);
    let found = &evidence["culprit"];
    assert!(found["culprit"].is_null(), "{found:#}");
    assert_ne!(p.get::<_, String>(0), "revert_culprit", "{evidence:#}");
    let tried = found["tried"].as_array().unwrap();
    assert_eq!(tried[3]["commits"], 5, "{found:#}");
    assert!(
        tried[3]["outcome"].as_str().unwrap().contains("passes"),
        "{found:#}"
    );
    let last = tried.last().unwrap();
    assert_eq!(last["sha"], culprit.as_str(), "{found:#}");
    assert!(
        last["outcome"].as_str().unwrap().contains("left to people"),
        "{found:#}"
    );
    assert!(env.standin.pulls().is_empty());
}

/// The same failure again in the same incident (a later commit, the fix's PR still open), and
/// the model proposes the very change it proposed the first time, which did not end the
/// incident: selfheal stops on the incident instead of looping, as `/selfheal stop` would.
#[tokio::test]
async fn the_same_model_change_for_a_second_run_of_an_incident_stops_it() {
    const KEY: &str = "sk-ant-e2e-0123456789abcdefghij";
    let model = ai_standin::spawn(Some(KEY)).await;
    // The second time with other context lines: the same change, differently written.
    let again = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -8,5 +8,5 @@\n \n pub fn listen_address(host: &str, port_text: &str) -> String {\n-    format!(\"{host}:{}\", parse_port(port_text))\n+    format!(\"{host}:{}\", parse_port(port_text, 8080))\n }\n \n";
    for patch in [FIX_API_CHANGE, again] {
        model.push(model_answer(patch));
    }
    let (env, app, _worker) = api_change_with_model(KEY, &model).await;
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1512, &now()))
        .await;
    let first = env.run_of(&body).await;
    env.wait_run(first, Duration::from_secs(300)).await;
    let later = empty_commit_on(&env, &env.standin.head_sha()).await;
    let mut second = env.failing_run(1513, &now());
    second["workflow_run"]["head_sha"] = serde_json::json!(later);
    let (_, body) = app.deliver("workflow_run", &second).await;
    let second = env.run_of(&body).await;
    env.wait_run(second, Duration::from_secs(300)).await;
    let db = env.db().await;
    let row = db
        .query_one(
            "SELECT r1.incident_id = r2.incident_id, p.verdict, p.reason, i.stopped_by, i.stopped_reason
             FROM runs r1, runs r2 JOIN patches p ON p.run_id = r2.id JOIN incidents i ON i.id = r2.incident_id
             WHERE r1.id = $1 AND r2.id = $2",
            &[&first, &second],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "one incident");
    assert_eq!(row.get::<_, String>(1), "handed_off");
    let reason: String = row.get(2);
    let ev: Value = db
        .query_one("SELECT evidence FROM patches WHERE run_id = $1", &[&second])
        .await
        .unwrap()
        .get(0);
    assert!(
        reason.contains("earlier run of this incident"),
        "{reason} {:#}",
        ev["ai"]
    );
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("selfheal"));
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'incident.stopped' AND actor = 'selfheal'")
            .await,
        1
    );
    assert_eq!(model.received().len(), 2);
}

/// The model's fix of rust-api-change's compile error.
const FIX_API_CHANGE: &str = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -9,3 +9,3 @@\n pub fn listen_address(host: &str, port_text: &str) -> String {\n-    format!(\"{host}:{}\", parse_port(port_text))\n+    format!(\"{host}:{}\", parse_port(port_text, 8080))\n }\n";

/// The model stand-in's answer proposing `patch` for rust-api-change.
fn model_answer(patch: &str) -> ai_standin::Reply {
    let answer = serde_json::json!({
        "root_cause": "parse_port gained a default parameter; listen_address still calls it with one argument",
        "culprit_files": [{"path": "src/lib.rs", "line": 10}], "confidence": 0.93, "patch": patch});
    ai_standin::Reply::Events(ai_standin::anthropic_tool_answer(
        &answer.to_string(),
        "tool_use",
        0,
    ))
}

/// Web and a worker asking `model`, with the stand-in serving rust-api-change and its CI log.
async fn api_change_with_model(key: &str, model: &ai_standin::AiStandIn) -> (TestEnv, App, Worker) {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_RERUNS", "2");
    env.set("ANTHROPIC_API_KEY", key);
    env.set("ANTHROPIC_BASE_URL", &model.url);
    let app = env.spawn_web().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    env.standin.set_knobs(Knobs {
        repo_dir: Some(root.join("examples/rust-api-change").display().to_string()),
        log_text: Some(
            std::fs::read_to_string(root.join("fixtures/ci-logs/examples/rust-api-change.log"))
                .unwrap(),
        ),
        failing_job: Some("test".into()),
        ..Knobs::default()
    });
    let worker = env.spawn_worker("w1");
    (env, app, worker)
}
