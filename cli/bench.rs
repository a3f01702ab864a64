//! `selfheal bench diagnose`: accuracy over labelled logs, and parsing throughput beside
//! `grep -E` over the same bytes in the same run (ratios, not absolute figures, are what a
//! shared, noisy machine can compare).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use selfheal_engine::diagnose;

pub fn diagnose_bench(dir: &Path, rounds: usize) -> anyhow::Result<()> {
    let outcomes = diagnose::evaluate(dir)?;
    let n = outcomes.len();
    let pct = |k: usize| 100.0 * k as f64 / n.max(1) as f64;
    let count = |f: fn(&diagnose::Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    println!("accuracy over {n} labelled logs in {}", dir.display());
    println!(
        "  class          {:>3}/{n}  {:5.1}%",
        count(|o| o.class_ok),
        pct(count(|o| o.class_ok))
    );
    println!(
        "  tool           {:>3}/{n}  {:5.1}%",
        count(|o| o.tool_ok),
        pct(count(|o| o.tool_ok))
    );
    println!(
        "  culprit file   {:>3}/{n}  {:5.1}%",
        count(|o| o.culprit_file_ok),
        pct(count(|o| o.culprit_file_ok))
    );
    println!(
        "  culprit line   {:>3}/{n}  {:5.1}%",
        count(|o| o.culprit_line_ok),
        pct(count(|o| o.culprit_line_ok))
    );
    for o in outcomes.iter().filter(|o| !o.exact()) {
        println!("  miss {}: got {}, want {}", o.file, o.got, o.want);
    }
    excerpt_scores(&outcomes);

    let logs: Vec<String> = outcomes
        .iter()
        .map(|o| std::fs::read_to_string(dir.join(&o.file)).with_context(|| o.file.clone()))
        .collect::<Result<_, _>>()?;
    let bytes: usize = logs.iter().map(String::len).sum::<usize>() * rounds;

    let started = Instant::now();
    let mut classes = 0usize;
    for _ in 0..rounds {
        for log in &logs {
            classes += diagnose::diagnose(log).class.as_str().len();
        }
    }
    let ours = started.elapsed();

    // The same bytes for grep, in one file, searched for the markers a human would grep for.
    let mut corpus = tempfile_in_target("bench-corpus.log")?;
    for _ in 0..rounds {
        for log in &logs {
            corpus.1.write_all(log.as_bytes())?;
        }
    }
    corpus.1.flush()?;
    let started = Instant::now();
    let grep = Command::new("grep")
        .args([
            "-E",
            "-c",
            r"error|FAILED|panicked|would reformat|\[warn\]|Diff in|--> ",
        ])
        .arg(&corpus.0)
        .output()
        .context("running grep")?;
    let theirs = started.elapsed();
    let _ = std::fs::remove_file(&corpus.0);
    let mb = bytes as f64 / 1e6;
    println!("throughput over {mb:.1} MB ({rounds} rounds of the folder; checksum {classes})");
    println!(
        "  selfheal diagnose  {:8.1} MB/s  ({:.3} s)",
        mb / ours.as_secs_f64(),
        ours.as_secs_f64()
    );
    println!(
        "  grep -E            {:8.1} MB/s  ({:.3} s, {} matching lines)",
        mb / theirs.as_secs_f64(),
        theirs.as_secs_f64(),
        String::from_utf8_lossy(&grep.stdout).trim()
    );
    println!(
        "  ratio grep/selfheal {:.1}x",
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
    Ok(())
}

/// Per language: how many of the lines labelled as explaining the failure the excerpt holds
/// (recall) and how many of its lines are labelled (precision), beside three baselines:
/// `grep -iE 'error|fail'` over the whole log, the same grep over the failed step only, and
/// the failed step's last 20 lines.
fn excerpt_scores(outcomes: &[diagnose::Outcome]) {
    let labelled: Vec<&diagnose::Outcome> =
        outcomes.iter().filter(|o| !o.labelled.is_empty()).collect();
    if labelled.is_empty() {
        return;
    }
    println!("excerpt lines against the labelled lines: precision / recall (micro-averaged)");
    println!(
        "  {:<11} {:>4} {:>5}  {:>11}  {:>11}  {:>11}  {:>11}",
        "language", "logs", "exact", "selfheal", "grep log", "grep step", "tail 20"
    );
    let score = |set: &[&diagnose::Outcome]| {
        let mut scores = [diagnose::LineScore::default(); 4];
        for o in set {
            for (score, chosen) in
                scores
                    .iter_mut()
                    .zip([&o.excerpt, &o.grep, &o.grep_step, &o.tail])
            {
                score.add(chosen, &o.labelled);
            }
        }
        scores
    };
    let pair = |(p, r): (f64, f64)| format!("{p:.2} / {r:.2}");
    let row = |name: &str, set: &[&diagnose::Outcome]| {
        let scores = score(set);
        println!(
            "  {:<11} {:>4} {:>5}  {:>11}  {:>11}  {:>11}  {:>11}",
            name,
            set.len(),
            set.iter().filter(|o| o.exact()).count(),
            pair((scores[0].precision(), scores[0].recall())),
            pair((scores[1].precision(), scores[1].recall())),
            pair((scores[2].precision(), scores[2].recall())),
            pair((scores[3].precision(), scores[3].recall())),
        );
        scores
    };
    let mut languages: Vec<&str> = labelled.iter().map(|o| o.language.as_str()).collect();
    languages.sort_unstable();
    languages.dedup();
    for language in languages {
        let set: Vec<&diagnose::Outcome> = labelled
            .iter()
            .copied()
            .filter(|o| o.language == language)
            .collect();
        row(language, &set);
    }
    let all = row("all", &labelled);
    println!(
        "  {:<11} {:>4} {:>5}  {:>11}  {:>11}  {:>11}  {:>11}",
        "all (macro)",
        labelled.len(),
        "",
        pair(all[0].macro_averages()),
        pair(all[1].macro_averages()),
        pair(all[2].macro_averages()),
        pair(all[3].macro_averages()),
    );
    println!(
        "  lines shown: selfheal {}, grep log {}, grep step {}, tail {}; labelled {}",
        all[0].chosen, all[1].chosen, all[2].chosen, all[3].chosen, all[0].labelled
    );
    println!("  in-sample: the parsers were written and tuned on these logs (docs/diagnosis.md)");
    green_scores(&labelled);
}

/// On the logs that have a green run of the same job beside them: the failed step's lines the
/// green run did not print, alone and as grep would filter them, beside the excerpt.
fn green_scores(labelled: &[&diagnose::Outcome]) {
    let with: Vec<(&diagnose::Outcome, &diagnose::SinceGreen)> = labelled
        .iter()
        .filter_map(|o| o.green.as_ref().map(|g| (*o, g)))
        .collect();
    if with.is_empty() {
        return;
    }
    let mut scores = [diagnose::LineScore::default(); 5];
    for (o, green) in &with {
        for (score, chosen) in scores.iter_mut().zip([
            &o.excerpt,
            &green.new,
            &green.new_grepped,
            &green.unrecognised,
            &green.unrecognised_since_green,
        ]) {
            score.add(chosen, &o.labelled);
        }
    }
    println!(
        "on the {} logs with a green run of the same job: precision / recall (micro; macro)",
        with.len()
    );
    for (name, score) in [
        "selfheal",
        "new since green",
        "new since green, grep",
        "no parser",
        "no parser, since green",
    ]
    .iter()
    .zip(scores)
    {
        let (p, r) = score.macro_averages();
        println!(
            "  {name:<23} {:.2} / {:.2}; {p:.2} / {r:.2}  ({} lines)",
            score.precision(),
            score.recall(),
            score.chosen
        );
    }
}

fn tempfile_in_target(
    name: &str,
) -> anyhow::Result<(std::path::PathBuf, std::io::BufWriter<std::fs::File>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}-{name}", std::process::id()));
    let file = std::fs::File::create(&path)?;
    Ok((path, std::io::BufWriter::new(file)))
}

fn summary(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.total_cmp(b));
    if ms.is_empty() {
        return;
    }
    // Nearest rank: with few runs, p95 is the largest but one or the largest.
    let p95 = ms[((ms.len() * 95).div_ceil(100)).saturating_sub(1)];
    println!(
        "  {label:<34} min {:>8.1}  median {:>8.1}  p95 {:>8.1}  max {:>8.1}  ms  (n={})",
        ms[0],
        ms[ms.len() / 2],
        p95,
        ms[ms.len() - 1],
        ms.len()
    );
}

#[cfg(feature = "dev")]
/// An example the bench drives through the stack: its folder, the failed job's name in its
/// workflow, and its CI log (`None`: the stand-in's default, rustfmt's).
const EXAMPLES: [(&str, &str, Option<&str>); 5] = [
    ("rust-format", "test", None),
    ("rust-deps", "clippy", Some("rust-deps.log")),
    ("python-deps", "check", Some("python-deps.log")),
    ("node-format", "lint", Some("node-format.log")),
    ("go-format", "fmt", Some("go-format.log")),
];

#[cfg(feature = "dev")]
/// Webhook in -> validated patch recorded, for each example, through the whole stack (web,
/// Redis, two workers, Postgres, Docker): the first run with no dependency cache (cold), the
/// rest with the cache the first one left (warm). Prints the cache hit rate and image sizes.
pub async fn heal_bench(runs: usize, only: &[String]) -> anyhow::Result<()> {
    let stack = crate::demo::Stack::start(false).await?;
    let sandbox = crate::heal::connect_sandbox(Default::default()).await?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0i64;
    let mut images = std::collections::BTreeSet::new();
    for (example, job, log) in EXAMPLES {
        if !only.is_empty() && !only.iter().any(|o| o == example) {
            continue;
        }
        let repo = root.join("examples").join(example);
        images.insert(sandbox.image_for(&repo).await?);
        let log_text = log
            .map(|l| std::fs::read_to_string(root.join("fixtures/ci-logs/examples").join(l)))
            .transpose()?;
        stack.standin.set_knobs(github_standin::Knobs {
            repo_dir: Some(repo.display().to_string()),
            log_text,
            failing_job: Some(job.into()),
            // The fix's CI, once selfheal's PR is open: its check green.
            fix_checks: Some(vec![serde_json::json!(
                {"name": "test", "status": "completed", "conclusion": "success"}
            )]),
            ..Default::default()
        });
        // Cold: no cache of this repository's dependencies left from an earlier bench.
        sandbox
            .prune_deps(
                Some(&stack.dependency_scope()),
                std::time::Duration::ZERO,
                0,
            )
            .await?;
        let (cold, warm, hits, merged) = runs_to_validated(&stack, runs, &mut n).await?;
        println!("{example}: webhook -> validated patch ({runs} runs, one after another)");
        summary("cold (no dependency cache)", cold);
        summary("warm", warm.0);
        for (stage, ms) in warm.1 {
            summary(&format!("  warm stage {stage}"), ms);
        }
        println!("  dependency cache hits: {} of {} runs", hits.0, hits.1);
        summary("webhook -> merged PR", merged.0);
        for why in merged.1 {
            println!("  not merged: {why}");
        }
    }
    stack.stop();
    println!("sandbox images:");
    for image in images {
        let size = sandbox
            .docker()
            .context("the bench runs its sandboxes on Docker")?
            .inspect_image(&image)
            .await?
            .size
            .unwrap_or(0);
        println!("  {image:<44} {:>6} MiB", size >> 20);
    }
    Ok(())
}

#[cfg(feature = "dev")]
type Warm = (Vec<f64>, std::collections::BTreeMap<String, Vec<f64>>);

#[cfg(feature = "dev")]
/// Times from the failing webhook to the merge, and why a run's PR was not merged.
type Merged = (Vec<f64>, Vec<String>);

#[cfg(feature = "dev")]
/// `runs` failures of the example the stand-in now serves: the first run's time, the others'
/// times and stage times, (cache hits, runs that needed dependencies), and each run's time to
/// its merged PR once the fix's CI reports green (at once: the stand-in is the CI).
async fn runs_to_validated(
    stack: &crate::demo::Stack,
    runs: usize,
    n: &mut i64,
) -> anyhow::Result<(Vec<f64>, Warm, (usize, usize), Merged)> {
    let pool = selfheal_shared::db::pool(&stack.database_url, 2)?;
    let client = pool.get().await?;
    let mut cold = Vec::new();
    let mut to_validated = Vec::new();
    let mut per_stage: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut hits = (0, 0);
    let mut merged: Merged = Default::default();
    for i in 0..runs {
        *n += 1;
        // A commit of its own for each run (the same tree on master): selfheal makes one fix
        // per failure and commit, and none for a commit its branch has moved on from.
        let head = commit_on_master(stack, *n)?;
        let started = Instant::now();
        let (status, body) = stack
            .deliver_failure_at(700_000 + *n, 900_000 + *n, &head)
            .await?;
        anyhow::ensure!(status.as_u16() == 202, "webhook answered {status}: {body}");
        let run_id = stack.admitted(&body).await?;
        loop {
            let done: bool = client
                .query_one("SELECT EXISTS (SELECT 1 FROM stage_attempts WHERE run_id = $1 AND stage = 'validate' AND finished_at IS NOT NULL) OR EXISTS (SELECT 1 FROM runs WHERE id = $1 AND finished_at IS NOT NULL)", &[&run_id])
                .await?
                .get(0);
            if done {
                break;
            }
            anyhow::ensure!(
                started.elapsed().as_secs() < 180,
                "run {run_id} did not validate in 180 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if i == 0 {
            cold.push(ms);
        } else {
            to_validated.push(ms);
        }
        let hit: Option<serde_json::Value> = client
            .query_opt(
                "SELECT evidence->'dependencies'->'cache'->'hit' FROM patches WHERE run_id = $1",
                &[&run_id],
            )
            .await?
            .and_then(|r| r.get(0));
        if let Some(hit) = hit.and_then(|h| h.as_bool()) {
            hits.1 += 1;
            hits.0 += hit as usize;
        }
        let verdict: Option<String> = client
            .query_opt(
                "SELECT verdict FROM validations WHERE run_id = $1",
                &[&run_id],
            )
            .await?
            .map(|r| r.get(0));
        anyhow::ensure!(
            verdict.as_deref() == Some("fixed"),
            "run {run_id} was not healed: {verdict:?}"
        );
        for row in client
            .query(
                "SELECT stage, (extract(epoch FROM finished_at - started_at) * 1000)::float8 FROM stage_attempts
                 WHERE run_id = $1 AND finished_at IS NOT NULL AND stage IN ('triage','diagnose','patch','validate')",
                &[&run_id],
            )
            .await?
        {
            if i > 0 {
                per_stage.entry(row.get(0)).or_default().push(row.get::<_, f64>(1));
            }
        }
        match to_merged(stack, &client, run_id, 900_000 + *n, 800_000 + *n).await? {
            Ok(()) => merged.0.push(started.elapsed().as_secs_f64() * 1000.0),
            Err(why) => merged.1.push(format!("run {run_id}: {why}")),
        }
    }
    Ok((cold, (to_validated, per_stage), hits, merged))
}

#[cfg(feature = "dev")]
/// A new commit on the stand-in's master with the repository's original tree (the failure the
/// example's log shows holds for it), as someone's push would be; its sha.
fn commit_on_master(stack: &crate::demo::Stack, n: i64) -> anyhow::Result<String> {
    let git = |args: &[&str]| -> anyhow::Result<String> {
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(stack.standin.git_dir())
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let original = stack.standin.head_sha();
    let master = git(&["rev-parse", "refs/heads/master"])?;
    let sha = git(&[
        "-c",
        "user.name=bench",
        "-c",
        "user.email=bench@example.com",
        "commit-tree",
        &format!("{original}^{{tree}}"),
        "-p",
        &master,
        "-m",
        &format!("bench push {n}"),
    ])?;
    git(&["update-ref", "refs/heads/master", &sha, &master])?;
    Ok(sha)
}

#[cfg(feature = "dev")]
/// Takes the healed run on to its merge: waits for its PR, reports the fix's CI green on the
/// PR's head (the stand-in reports its checks green too), and waits for the merge. `Err` says
/// why there was no merge to time.
async fn to_merged(
    stack: &crate::demo::Stack,
    client: &tokio_postgres::Client,
    run_id: uuid::Uuid,
    workflow_id: i64,
    fix_run_id: i64,
) -> anyhow::Result<Result<(), String>> {
    let waited = Instant::now();
    let pr = loop {
        let row = client
            .query_opt(
                "SELECT d.pr_number, d.branch, r.status FROM runs r
                 LEFT JOIN deliveries d ON d.incident_id = r.incident_id AND d.kind = 'pull_request'
                 WHERE r.id = $1",
                &[&run_id],
            )
            .await?
            .context("the run is gone")?;
        let (number, branch, status): (Option<i32>, Option<String>, String) =
            (row.get(0), row.get(1), row.get(2));
        if let (Some(number), Some(branch)) = (number, branch) {
            break (number, branch);
        }
        if matches!(status.as_str(), "succeeded" | "incomplete" | "failed") {
            return Ok(Err(format!(
                "the run ended {status} without a pull request"
            )));
        }
        if waited.elapsed().as_secs() > 120 {
            return Ok(Err("no pull request within 120 s".into()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let Some(head) = stack
        .standin
        .pulls()
        .into_iter()
        .find(|p| p["number"] == pr.0)
        .and_then(|p| p["head"]["sha"].as_str().map(String::from))
    else {
        return Ok(Err(format!("the stand-in has no PR #{}", pr.0)));
    };
    let mut payload = github_standin::failing_workflow_run(
        &stack.fixtures,
        github_standin::INSTALLATION_ID,
        fix_run_id,
        &chrono::Utc::now().to_rfc3339(),
    )?;
    let fix = &mut payload["workflow_run"];
    fix["workflow_id"] = workflow_id.into();
    fix["head_branch"] = pr.1.clone().into();
    fix["head_sha"] = head.into();
    fix["conclusion"] = "success".into();
    fix["event"] = "pull_request".into();
    let (status, body) = stack.deliver(&payload).await?;
    anyhow::ensure!(
        status.as_u16() == 202,
        "the fix's green run answered {status}: {body}"
    );
    loop {
        let row = client
            .query_one(
                "SELECT merged_at IS NOT NULL, merge_error, merge_decision FROM deliveries
                 WHERE incident_id = (SELECT incident_id FROM runs WHERE id = $1) AND kind = 'pull_request'",
                &[&run_id],
            )
            .await?;
        if row.get::<_, bool>(0) {
            return Ok(Ok(()));
        }
        if let Some(error) = row.get::<_, Option<String>>(1) {
            return Ok(Err(format!("GitHub refused the merge: {error}")));
        }
        if row.get::<_, Option<String>>(2).as_deref() == Some("denied") {
            return Ok(Err("the merge policy denied it".into()));
        }
        if waited.elapsed().as_secs() > 180 {
            return Ok(Err("not merged within 180 s".into()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// What a sandbox costs beyond the command: a no-op in a fresh container (create, upload,
/// start, wait, logs, remove) beside the same no-op run directly, in the same run.
pub async fn sandbox_bench(runs: usize) -> anyhow::Result<()> {
    use selfheal_engine::sandbox::Limits;
    let sandbox = crate::heal::connect_sandbox(Limits::default()).await?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rust-format");
    let mut in_sandbox = Vec::new();
    let mut direct = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let (run, _) = sandbox.run(&repo, "true", None).await?;
        anyhow::ensure!(run.passed(), "no-op failed in the sandbox: {}", run.output);
        in_sandbox.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        Command::new("sh").args(["-c", "true"]).status()?;
        direct.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    println!("sandbox start overhead ({runs} runs, interleaved):");
    summary("`true` in a fresh sandbox", in_sandbox);
    summary("`true` directly (sh -c)", direct);
    Ok(())
}
