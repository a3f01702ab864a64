//! Watching a running sandbox: its wall clock and the size of its work volume.
//!
//! Docker's local volumes take no size cap without a quota-capable filesystem, so the work
//! volume is measured every `Limits::watch_interval` from outside the sandbox: a small
//! "meter" container mounts the same volume read-only and runs as root holding one
//! capability, `CAP_DAC_READ_SEARCH`, so `du` reads every directory whatever its mode. It
//! lives in its own PID namespace and cgroup: the repository's code can neither kill, trace
//! nor starve it. A volume over `Limits::work_bytes` gets the sandbox killed, and so does one
//! too big to even count in time (millions of tiny files). It is a limit checked at
//! intervals: between two checks a burst can write past it by what the disk takes in that
//! time, and space held by deleted files that are still open is not seen.

use std::collections::HashMap;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use super::Limits;

/// One measurement may take this long.
const MEASURE_TIMEOUT: Duration = Duration::from_secs(30);
/// Measurements in a row that did not finish in time before the volume counts as over.
const MAX_SLOW: u32 = 3;

/// How a container came to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Finished,
    TimedOut,
    /// Its work volume grew past the limit (or past counting).
    DiskFull,
}

/// The name of the meter container beside sandbox `name`.
pub fn meter_name(name: &str) -> String {
    format!("{name}-meter")
}

/// Starts the meter for volume `volume` (and `deps`, a dependency fetch's new cache, counted
/// against the same limit); `None` (logged) when it cannot be had, and then the run goes
/// unmeasured rather than not at all.
pub async fn start_meter(
    docker: &Docker,
    volume: &str,
    deps: Option<&str>,
    image: &str,
    labels: HashMap<String, String>,
) -> Option<String> {
    let name = meter_name(volume);
    let mut mounts = vec![Mount {
        target: Some("/work".into()),
        source: Some(volume.to_string()),
        typ: Some(MountType::VOLUME),
        read_only: Some(true),
        ..Default::default()
    }];
    if let Some(deps) = deps {
        mounts.push(Mount {
            target: Some("/deps".into()),
            source: Some(deps.to_string()),
            typ: Some(MountType::VOLUME),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec![
            "sh".into(),
            "-c".into(),
            "while :; do sleep 3600; done".into(),
        ]),
        user: Some("0".into()),
        labels: Some(labels),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            mounts: Some(mounts),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(vec!["DAC_READ_SEARCH".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(128 << 20),
            pids_limit: Some(16),
            ..Default::default()
        }),
        ..Default::default()
    };
    let started = async {
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await?;
        docker
            .start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
    }
    .await;
    match started {
        Ok(()) => Some(name),
        Err(e) => {
            tracing::warn!(error = %e, "no meter for the sandbox's work volume; this run's disk use goes unchecked");
            None
        }
    }
}

/// Waits for `container` to stop; kills it on timeout or when the volume `meter` measures
/// outgrows the limit.
pub async fn watch(
    docker: &Docker,
    container: &str,
    meter: Option<&str>,
    limits: &Limits,
) -> Stopped {
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
    let mut slow = 0;
    let stopped = loop {
        tokio::select! {
            _ = wait.next() => break Stopped::Finished,
            _ = &mut deadline => break Stopped::TimedOut,
            _ = tick.tick(), if meter.is_some() => {
                let meter = meter.unwrap_or_default();
                // Bounded, so the wall clock is looked at again soon.
                let measured = tokio::time::timeout(
                    MEASURE_TIMEOUT,
                    measure(docker, meter, limits.work_bytes),
                )
                .await
                .unwrap_or(Measured::Slow);
                match measured {
                    Measured::Over => break Stopped::DiskFull,
                    Measured::Slow => {
                        slow += 1;
                        if slow >= MAX_SLOW {
                            break Stopped::DiskFull;
                        }
                    }
                    Measured::Within | Measured::Unavailable => slow = 0,
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
    /// `du` did not finish in time.
    Slow,
    /// The engine did not run it (the meter is not the sandbox's to break: not counted).
    Unavailable,
}

async fn measure(docker: &Docker, meter: &str, limit: i64) -> Measured {
    let exec = match docker
        .create_exec(
            meter,
            CreateExecOptions {
                // `/deps` is the image's empty directory unless a fetch's cache is mounted there.
                cmd: Some(vec!["/usr/bin/du", "-sxk", "/work", "/deps"]),
                env: Some(vec!["PATH=/usr/bin:/bin", "LC_ALL=C"]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
    {
        Ok(exec) => exec,
        Err(_) => return Measured::Unavailable,
    };
    let mut stdout = String::new();
    match docker.start_exec(&exec.id, None).await {
        Ok(StartExecResults::Attached { mut output, .. }) => {
            while let Some(Ok(chunk)) = output.next().await {
                if let bollard::container::LogOutput::StdOut { message } = chunk {
                    if stdout.len() < 4096 {
                        stdout.push_str(&String::from_utf8_lossy(&message));
                    }
                }
            }
        }
        _ => return Measured::Unavailable,
    }
    // A non-zero exit with a total is files vanishing mid-walk (builds delete their
    // temporaries): the total still counts.
    let totals: Vec<i64> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<i64>().ok())
        .collect();
    match (!totals.is_empty()).then(|| totals.iter().fold(0i64, |a, k| a.saturating_add(*k))) {
        Some(kib) if kib.saturating_mul(1024) <= limit => Measured::Within,
        Some(_) => Measured::Over,
        None => Measured::Unavailable,
    }
}
