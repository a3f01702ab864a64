//! Watching a running sandbox: its wall clock and the size of its work volume.
//!
//! Docker's local volumes take no size cap without a quota-capable filesystem, so the work
//! volume is measured every `Limits::watch_interval` by `du` exec'd in the container as root
//! (a user the repository's code, running as uid 1000 with no capabilities, can neither kill
//! nor trace), from the image's read-only `/usr/bin`. A volume over `Limits::work_bytes`, or
//! one `du` cannot fully read (a directory made unreadable to hide what is in it), gets its
//! container killed. It is a limit checked at intervals: between two checks a burst can
//! write past it by what the disk takes in that time, and space held by deleted files that
//! are still open is not seen.

use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{KillContainerOptionsBuilder, WaitContainerOptionsBuilder};
use bollard::Docker;
use futures::StreamExt;

use super::Limits;

/// How a container came to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Finished,
    TimedOut,
    /// Its work volume grew past the limit, or could not be measured.
    DiskFull,
}

/// Waits for `container` to stop; kills it on timeout or when its work volume outgrows the
/// limit.
pub async fn watch(docker: &Docker, container: &str, limits: &Limits) -> Stopped {
    let mut wait = docker.wait_container(
        container,
        Some(
            WaitContainerOptionsBuilder::default()
                .condition("not-running")
                .build(),
        ),
    );
    let deadline = tokio::time::sleep(limits.timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(limits.watch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let stopped = loop {
        tokio::select! {
            _ = wait.next() => break Stopped::Finished,
            _ = &mut deadline => break Stopped::TimedOut,
            _ = tick.tick() => {
                if let Measured::Over = measure(docker, container, limits.work_bytes).await {
                    break Stopped::DiskFull;
                }
            }
        }
    };
    if stopped != Stopped::Finished {
        let _ = docker
            .kill_container(
                container,
                Some(
                    KillContainerOptionsBuilder::default()
                        .signal("KILL")
                        .build(),
                ),
            )
            .await;
        let mut wait = docker.wait_container(
            container,
            Some(
                WaitContainerOptionsBuilder::default()
                    .condition("not-running")
                    .build(),
            ),
        );
        let _ = tokio::time::timeout(Duration::from_secs(10), wait.next()).await;
    }
    stopped
}

enum Measured {
    Within,
    Over,
    /// The container stopped meanwhile, or the engine did not answer: nothing to judge.
    Unknown,
}

async fn measure(docker: &Docker, container: &str, limit: i64) -> Measured {
    let exec = match docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(vec!["/usr/bin/du", "-sxk", "/work"]),
                user: Some("0"),
                env: Some(vec!["PATH=/usr/bin:/bin", "LC_ALL=C"]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
    {
        Ok(exec) => exec,
        Err(_) => return Measured::Unknown,
    };
    let mut stdout = String::new();
    if let Ok(StartExecResults::Attached { mut output, .. }) =
        docker.start_exec(&exec.id, None).await
    {
        while let Some(Ok(chunk)) = output.next().await {
            if let bollard::container::LogOutput::StdOut { message } = chunk {
                if stdout.len() < 4096 {
                    stdout.push_str(&String::from_utf8_lossy(&message));
                }
            }
        }
    } else {
        return Measured::Unknown;
    }
    let exit = docker
        .inspect_exec(&exec.id)
        .await
        .ok()
        .and_then(|i| i.exit_code);
    let kib = stdout
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<i64>().ok());
    match (exit, kib) {
        (Some(0), Some(kib)) if kib.saturating_mul(1024) <= limit => Measured::Within,
        (Some(0), Some(_)) => Measured::Over,
        // du ran and could not read everything: what it cannot see is not allowed either.
        (Some(code), _) if code != 0 && kib.is_some() => Measured::Over,
        _ => Measured::Unknown,
    }
}
