//! `selfheal heal`: the healing engine on a local checkout, without GitHub, Redis or Postgres.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use selfheal_worker::diagnose;
use selfheal_worker::heal::{self, HealOptions, HealReport, Verdict};
use selfheal_worker::sandbox::{ensure_image, Limits, Sandbox};

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
        (Some(cmd), _) => cmd.clone(),
        (None, Some(log)) => diagnose::diagnose(log)
            .command
            .context("the log does not show which command failed: pass --cmd")?,
        (None, None) => bail!("pass --cmd \"<the failing command>\" or --log <saved CI log>"),
    };
    let docker = bollard::Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await?;
    let image = ensure_image(&docker).await?;
    let sandbox = Sandbox::connect(&image, Limits::default()).await?;
    let options = HealOptions {
        reproduce_runs: args.runs,
        validate_runs: args.runs,
    };
    let progress = |msg: &str| eprintln!("… {msg}");
    let report = heal::heal(
        &sandbox,
        &repo,
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
        Verdict::Fixed | Verdict::Flaky | Verdict::Rerun | Verdict::NotReproduced => {
            ExitCode::SUCCESS
        }
        _ => ExitCode::from(2),
    })
}

fn print_report(r: &HealReport) {
    let d = &r.diagnosis;
    println!("command      {}", r.command);
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
        Verdict::NotReproduced => "the command passes: nothing to heal".into(),
        Verdict::Rejected { reason } => format!("REJECTED: {reason}"),
        Verdict::Pending => "patch made, not validated".into(),
        Verdict::HandedOff { reason } => format!("HANDED OFF: {reason}"),
    };
    println!("verdict      {verdict}");
    println!("elapsed      {:.1} s", r.elapsed_ms as f64 / 1000.0);
}
