//! Who owns a sandbox container, and when one is an orphan to sweep.
//!
//! Replicas of the worker may share one dockerd from different PID namespaces (containers,
//! pods), so a bare pid says nothing about another replica's containers. Each container and
//! volume is labelled with its owner (`<boot id>:<host>:<pid namespace>/<pid>/<start time>`) and a
//! deadline (its start plus the run's timeout and a margin). A sweep removes what is past its
//! deadline, whoever owns it, and what an owner in this same PID namespace left behind when it
//! died; another namespace's live work is left alone.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder,
};
use bollard::Docker;

use super::SandboxError;

pub const LABEL: &str = "dev.selfheal.sandbox";
const OWNER: &str = "dev.selfheal.sandbox.owner";
const DEADLINE: &str = "dev.selfheal.sandbox.deadline";
/// Time past its timeout before a container counts as lost: the upload before the start and
/// the kill and cleanup after the timeout fit in it.
const MARGIN: Duration = Duration::from_secs(600);
/// Objects labelled by an older selfheal (no owner, no deadline) are left this long.
const LEGACY_AGE: u64 = 24 * 3600;

/// This process, as the owner label names it.
pub static INSTANCE: LazyLock<String> = LazyLock::new(|| {
    let pid = std::process::id();
    format!(
        "{}/{pid}/{}",
        namespace_id(),
        start_time(&pid.to_string()).unwrap_or_default()
    )
});

/// Which PID namespace, on which machine: the namespace's inode alone repeats across hosts
/// (every host's initial namespace has the same one), so the boot id and host name come too.
/// `unknown` when /proc cannot say: then no liveness is ever judged, only deadlines.
fn namespace_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_string())
        .ok();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok();
    match (boot, host, pid_namespace("self")) {
        (Some(boot), Some(host), Some(ns)) => format!("{boot}:{host}:{ns}"),
        _ => "unknown".into(),
    }
}

fn pid_namespace(pid: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|p| p.display().to_string())
}

/// Field 22 of /proc/<pid>/stat: when the process started, so a reused pid is not mistaken
/// for the owner.
fn start_time(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing paren are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19).map(str::to_string)
}

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Labels for a container (and its volume) that may run for `timeout`.
pub fn labels(timeout: Duration) -> HashMap<String, String> {
    HashMap::from([
        (LABEL.to_string(), "1".to_string()),
        (OWNER.to_string(), INSTANCE.clone()),
        // For people reading `docker ps`: the owner's pid in its own namespace.
        (format!("{LABEL}.pid"), std::process::id().to_string()),
        (
            DEADLINE.to_string(),
            (now_secs() + (timeout + MARGIN).as_secs()).to_string(),
        ),
    ])
}

/// Whether a labelled object is an orphan, seen from this process at `now` (unix seconds);
/// `created` is when the engine made it, if it says.
pub fn orphaned(
    labels: &HashMap<String, String>,
    created: Option<u64>,
    now: u64,
    alive: impl Fn(&str) -> bool,
) -> bool {
    let deadline = labels.get(DEADLINE).and_then(|d| d.parse::<u64>().ok());
    if deadline.is_some_and(|d| d < now) {
        return true;
    }
    let Some(owner) = labels.get(OWNER) else {
        // Made by an older selfheal: no owner to ask, so only its age can tell.
        return deadline.is_none() && created.is_some_and(|c| c + LEGACY_AGE < now);
    };
    let ours = INSTANCE.split('/').next().unwrap_or_default();
    let mut parts = owner.splitn(2, '/');
    let namespace = parts.next().unwrap_or_default();
    namespace == ours && ours != "unknown" && !alive(parts.next().unwrap_or_default())
}

/// `pid/start` names a process alive in this PID namespace.
fn alive_here(pid_and_start: &str) -> bool {
    let (pid, start) = pid_and_start.split_once('/').unwrap_or((pid_and_start, ""));
    start_time(pid).is_some_and(|s| s == start)
}

/// Removes every labelled container and volume that is an orphan (see the module's doc).
pub async fn sweep(docker: &Docker) -> Result<usize, SandboxError> {
    let filters: HashMap<String, Vec<String>> =
        HashMap::from([("label".into(), vec![LABEL.into()])]);
    let now = now_secs();
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await?;
    let mut removed = 0;
    for c in containers {
        let created = c.created.and_then(|t| u64::try_from(t).ok());
        if !orphaned(&c.labels.unwrap_or_default(), created, now, alive_here) {
            continue;
        }
        if let Some(id) = c.id {
            let _ = docker
                .remove_container(
                    &id,
                    Some(
                        RemoveContainerOptionsBuilder::default()
                            .force(true)
                            .v(true)
                            .build(),
                    ),
                )
                .await;
            removed += 1;
        }
    }
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await?;
    for v in volumes.volumes.unwrap_or_default() {
        let created = v
            .created_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| u64::try_from(t.timestamp()).ok());
        if !orphaned(&v.labels, created, now, alive_here) {
            continue;
        }
        let _ = docker
            .remove_volume(
                &v.name,
                Some(RemoveVolumeOptionsBuilder::default().force(true).build()),
            )
            .await;
    }
    if removed > 0 {
        tracing::warn!(removed, "swept sandbox containers left by a crashed run");
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(owner: &str, deadline: u64) -> HashMap<String, String> {
        HashMap::from([
            (LABEL.to_string(), "1".to_string()),
            (OWNER.to_string(), owner.to_string()),
            (DEADLINE.to_string(), deadline.to_string()),
        ])
    }

    #[test]
    fn a_replica_in_another_pid_namespace_keeps_its_live_containers() {
        let ns = INSTANCE.split('/').next().unwrap().to_string();
        let now = 1_000_000;
        // Another namespace's pid means nothing here: its container lives until its deadline.
        let foreign = with("other-boot:other-host:pid:[1]/42/7", now + 60);
        assert!(!orphaned(&foreign, None, now, |_| false));
        let late = with("other-boot:other-host:pid:[1]/42/7", now - 1);
        assert!(orphaned(&late, None, now, |_| true));
        // Our namespace: the owner's liveness decides before the deadline.
        let ours = with(&format!("{ns}/42/7"), now + 60);
        assert!(orphaned(&ours, None, now, |_| false));
        assert!(!orphaned(&ours, None, now, |_| true));
        // A namespace nobody could name is never judged by liveness.
        let unknown = with("unknown/42/7", now + 60);
        assert!(!orphaned(&unknown, None, now, |_| false));
        // An older selfheal's container: left alone for a day, then swept.
        let legacy = HashMap::from([(LABEL.to_string(), "1".to_string())]);
        assert!(!orphaned(&legacy, Some(now - 60), now, |_| false));
        assert!(orphaned(&legacy, Some(now - LEGACY_AGE - 1), now, |_| {
            false
        }));
        // This very process is alive.
        let mine = labels(Duration::from_secs(600));
        assert!(!orphaned(&mine, None, now_secs(), alive_here));
    }
}
