//! `selfheal bench diagnose`: accuracy over labelled logs, and parsing throughput beside
//! `grep -E` over the same bytes in the same run (ratios, not absolute figures, are what a
//! shared, noisy machine can compare).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use selfheal_worker::diagnose;

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
