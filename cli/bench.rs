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
    for o in outcomes
        .iter()
        .filter(|o| !(o.class_ok && o.culprit_file_ok))
    {
        println!("  miss {}: got {}, want {}", o.file, o.got, o.want);
    }

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
    println!(
        "  {label:<34} min {:>8.1}  median {:>8.1}  max {:>8.1}  ms  (n={})",
        ms[0],
        ms[ms.len() / 2],
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
        let (cold, warm, hits) = runs_to_validated(&stack, runs, &mut n).await?;
        println!("{example}: webhook -> validated patch ({runs} runs, one after another)");
        summary("cold (no dependency cache)", cold);
        summary("warm", warm.0);
        for (stage, ms) in warm.1 {
            summary(&format!("  warm stage {stage}"), ms);
        }
        println!("  dependency cache hits: {} of {} runs", hits.0, hits.1);
    }
    stack.stop();
    println!("sandbox images:");
    for image in images {
        let size = sandbox
            .docker()
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
/// `runs` failures of the example the stand-in now serves: the first run's time, the others'
/// times and stage times, and (cache hits, runs that needed dependencies).
async fn runs_to_validated(
    stack: &crate::demo::Stack,
    runs: usize,
    n: &mut i64,
) -> anyhow::Result<(Vec<f64>, Warm, (usize, usize))> {
    let pool = selfheal_shared::db::pool(&stack.database_url, 2)?;
    let client = pool.get().await?;
    let mut cold = Vec::new();
    let mut to_validated = Vec::new();
    let mut per_stage: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut hits = (0, 0);
    for i in 0..runs {
        *n += 1;
        let started = Instant::now();
        let (status, body) = stack.deliver_failure(700_000 + *n, 900_000 + *n).await?;
        anyhow::ensure!(status.as_u16() == 202, "webhook answered {status}: {body}");
        let run_id: uuid::Uuid = body["run_id"].as_str().context("no run id")?.parse()?;
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
    }
    Ok((cold, (to_validated, per_stage), hits))
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
