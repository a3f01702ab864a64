//! `selfheal heal`: the healing engine on a local checkout, without GitHub, Redis or Postgres.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use selfheal_engine::ai::budget::Allowance;
use selfheal_engine::diagnose;
use selfheal_engine::heal::{self, HealOptions, HealReport, Verdict};
use selfheal_engine::sandbox::{deps, Images, Limits, Sandbox};
use selfheal_engine::workflow::{self, Source, StepCommand};

pub struct Args {
    pub repo: PathBuf,
    pub cmd: Option<String>,
    pub log: Option<PathBuf>,
    pub apply: bool,
    pub json: bool,
    pub runs: usize,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let repo = args
        .repo
        .canonicalize()
        .with_context(|| format!("no repository at {}", args.repo.display()))?;
    let log = match &args.log {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => None,
    };
    let command = match (&args.cmd, &log) {
        (Some(cmd), _) => StepCommand::given(cmd),
        // The step the log names, as the checkout's workflow defines it.
        (None, Some(log)) => workflow::reproduce(
            &repo,
            &diagnose::diagnose(log)
                .command
                .context("the log does not show which command failed: pass --cmd")?,
            None,
        ),
        (None, None) => bail!("pass --cmd \"<the failing command>\" or --log <saved CI log>"),
    };
    let sandbox = connect_sandbox(Limits::default()).await?;
    let options = HealOptions {
        reproduce_runs: args.runs,
        validate_runs: args.runs,
        // The same variables a worker reads; none set, failures no strategy fixes are handed off.
        // One heal is one incident here: its budget is the allowance, kept in memory.
        assistant: selfheal_shared::config::ai_config(|k| std::env::var(k).ok())?.map(|ai| {
            let mut assistant = selfheal_worker::assistant::assistant(&ai, Vec::new());
            assistant.budget = Some(Arc::new(Allowance::new(ai.incident_allowance())));
            assistant
        }),
        // No history of earlier fixes on a local checkout.
        memory: None,
        culprits: Vec::new(),
        culprits_skipped: Vec::new(),
    };
    let progress = |msg: &str| eprintln!("… {msg}");
    let scope = format!("local:{}", repo.display());
    let report = heal::heal(
        &sandbox,
        &repo,
        &scope,
        &command,
        log.as_deref(),
        &options,
        &progress,
    )
    .await?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if args.apply {
        match (&report.verdict, &report.changes) {
            (Verdict::Fixed, Some(changes)) => {
                // The validated change, written as file contents (no diff is applied): a path
                // through a symlink is refused rather than followed out of the checkout.
                changes
                    .write_to(&repo)
                    .with_context(|| format!("writing the fix into {}", repo.display()))?;
                eprintln!("applied the fix to {}", repo.display());
            }
            _ => eprintln!("--apply: nothing validated to apply"),
        }
    }
    Ok(match report.verdict {
        Verdict::Fixed | Verdict::Flaky | Verdict::Rerun => ExitCode::SUCCESS,
        // Nothing to heal: the command passes and no CI log says otherwise.
        Verdict::NotReproduced { .. } if log.is_none() => ExitCode::SUCCESS,
        _ => ExitCode::from(2),
    })
}

/// `SELFHEAL_SANDBOX_IMAGE`: the operator's own image for every language, else the recipe's.
pub fn images_from_env() -> Images {
    match std::env::var("SELFHEAL_SANDBOX_IMAGE") {
        Ok(own) if !own.trim().is_empty() => Images::Own(own),
        _ => Images::Recipe,
    }
}

/// The sandbox as the environment configures it (`SELFHEAL_SANDBOX_IMAGE`,
/// `SELFHEAL_SANDBOX_RUST_TOOLCHAIN`), for the commands that run without a worker.
pub async fn connect_sandbox(limits: Limits) -> anyhow::Result<Sandbox> {
    let sandbox = Sandbox::connect(images_from_env(), limits).await?;
    Ok(match std::env::var_os("SELFHEAL_SANDBOX_RUST_TOOLCHAIN") {
        Some(sysroot) if !sysroot.is_empty() => sandbox.with_rust_toolchain(sysroot.into()),
        _ => sandbox,
    })
}

fn print_report(r: &HealReport) {
    let d = &r.diagnosis;
    println!("command      {}", r.command);
    if let Source::Workflow { file, job, step } = &r.step.source {
        println!("step         {file}, job {job}, step {step:?}");
    }
    for note in &r.step.notes {
        println!("not as in CI {note}");
    }
    if let Some(t) = &r.before.toolchain {
        println!(
            "toolchain    {} {}",
            t.language.as_str(),
            t.version.as_deref().unwrap_or("(version unknown)")
        );
        for note in &t.notes {
            println!("not as in CI {note}");
        }
    }
    println!("class        {}", d.class.as_str());
    println!("tool         {}", d.tool.as_deref().unwrap_or("(unknown)"));
    if let Some(f) = &d.culprit_file {
        println!(
            "culprit      {f}{}",
            d.culprit_line.map(|l| format!(":{l}")).unwrap_or_default()
        );
    }
    if !d.failing_tests.is_empty() {
        println!("failing      {}", d.failing_tests.join(", "));
    }
    println!("fingerprint  {}", d.fingerprint);
    match &r.before.dependencies {
        Some(deps::Outcome::Ready { plan, cache }) => println!(
            "dependencies {} from {} ({}, {} MB, digest {})",
            if cache.hit { "cached" } else { "fetched" },
            plan.inputs.join(", "),
            if plan.locked {
                "locked"
            } else {
                "resolved: no lockfile"
            },
            cache.bytes >> 20,
            &cache.digest[..12]
        ),
        Some(deps::Outcome::Failed { reason, .. }) => {
            println!("dependencies NOT FETCHED: {reason}")
        }
        _ => {}
    }
    println!("strategy     {}", r.strategy.as_str());
    println!(
        "before       {} of {} runs failed ({} ms)",
        r.before.failed, r.before.runs, r.before.duration_ms
    );
    if let Some(patch) = &r.patch {
        if !patch.is_empty() {
            println!("patch:");
            for line in patch.lines() {
                println!("  {line}");
            }
        }
    }
    if let Some(after) = &r.after {
        println!(
            "after        {} of {} runs passed ({} ms)",
            after.passed, after.runs, after.duration_ms
        );
    }
    let verdict = match &r.verdict {
        Verdict::Fixed => "FIXED: fails before, passes after the patch, every run".to_string(),
        Verdict::Flaky => format!(
            "FLAKY: failed {} and passed {} of {} runs; no code change, rerun the failed jobs",
            r.before.failed, r.before.passed, r.before.runs
        ),
        Verdict::Rerun => "INFRA: no code change; rerun the failed jobs".into(),
        Verdict::NotReproduced { reason } => format!("NOT REPRODUCED: {reason}"),
        Verdict::Rejected { reason } => format!("REJECTED: {reason}"),
        Verdict::Pending => "patch made, not validated".into(),
        Verdict::HandedOff { reason } => format!("HANDED OFF: {reason}"),
    };
    println!("verdict      {verdict}");
    println!("elapsed      {:.1} s", r.elapsed_ms as f64 / 1000.0);
}
