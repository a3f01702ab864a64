//! Where a sandbox pod is, read from the status the kubelet writes (never from anything the
//! run printed).

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};

/// How a run ended, from the pod's status.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::sandbox) struct End {
    pub exit_code: i64,
    pub oom_killed: bool,
    pub evicted: bool,
    pub timed_out: bool,
}

/// Where a sandbox pod is, read from the status the kubelet writes.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::sandbox) enum Progress {
    /// Not started yet, with the reason when the pod gives one.
    Starting(String),
    /// `receive` is running: the checkout can be sent.
    Receiving,
    /// `run` is running (or about to).
    Running,
    /// `run` finished, or the pod was stopped around it.
    Over(End),
    /// The pod cannot run: an image that cannot be pulled, a config the kubelet refuses, or
    /// the checkout that `receive` could not unpack.
    Refused(String),
}

/// Waiting reasons that do not clear by themselves.
const STUCK: [&str; 4] = [
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
];

pub(in crate::sandbox) fn progress(pod: &Pod) -> Progress {
    let Some(status) = &pod.status else {
        return Progress::Starting("the pod has no status yet".into());
    };
    let reason = status.reason.clone().unwrap_or_default();
    // The kubelet evicts a pod whose emptyDir outgrew its sizeLimit (or the node's disk ran
    // short): the Docker backend's disk meter, done by the cluster.
    if reason == "Evicted" || reason == "DeadlineExceeded" {
        return Progress::Over(End {
            exit_code: run_terminated(pod).map_or(-1, |t| i64::from(t.exit_code)),
            oom_killed: false,
            evicted: reason == "Evicted",
            timed_out: reason == "DeadlineExceeded",
        });
    }
    let init = status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default();
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    for c in init.iter().chain(containers) {
        if let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let why = waiting.reason.clone().unwrap_or_default();
            if STUCK.contains(&why.as_str()) {
                return Progress::Refused(format!(
                    "container {} cannot start: {why}: {}",
                    c.name,
                    waiting.message.clone().unwrap_or_default()
                ));
            }
        }
    }
    if let Some(done) = run_terminated(pod) {
        return Progress::Over(End {
            exit_code: i64::from(done.exit_code),
            oom_killed: done.reason.as_deref() == Some("OOMKilled"),
            evicted: false,
            timed_out: false,
        });
    }
    let run = containers.iter().find(|c| c.name == "run");
    if run
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.running.as_ref())
        .is_some()
    {
        return Progress::Running;
    }
    if let Some(receive) = init.iter().find(|c| c.name == "receive") {
        let state = receive.state.as_ref();
        if state.and_then(|s| s.running.as_ref()).is_some() {
            return Progress::Receiving;
        }
        if let Some(done) = state.and_then(|s| s.terminated.as_ref()) {
            if done.exit_code != 0 {
                return Progress::Refused(format!(
                    "unpacking the checkout failed (exit {})",
                    done.exit_code
                ));
            }
            return Progress::Running;
        }
        if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
            return Progress::Starting(format!(
                "{}: {}",
                waiting.reason.clone().unwrap_or_default(),
                waiting.message.clone().unwrap_or_default()
            ));
        }
    }
    let unscheduled = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    Progress::Starting(match unscheduled {
        Some(c) => format!("not scheduled: {}", c.message.clone().unwrap_or_default()),
        None => format!("pod {}", status.phase.clone().unwrap_or_default()),
    })
}

fn run_terminated(pod: &Pod) -> Option<&ContainerStateTerminated> {
    let containers = pod.status.as_ref()?.container_statuses.as_ref()?;
    let run = containers.iter().find(|c| c.name == "run")?;
    run.state.as_ref()?.terminated.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "selfheal-abc-x1"},
            "status": status,
        }))
        .unwrap()
    }

    fn terminated(name: &str, code: i32, reason: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"terminated": {"exitCode": code, "reason": reason}}})
    }

    fn waiting(name: &str, reason: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": reason, "message": "m"}}})
    }

    #[test]
    fn the_end_of_a_run_is_read_from_the_kubelets_status() {
        let done = pod(serde_json::json!({
            "phase": "Running",
            "initContainerStatuses": [terminated("receive", 0, "Completed")],
            "containerStatuses": [terminated("run", 3, "Error"),
                {"name": "collect", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                 "state": {"running": {}}}],
        }));
        assert_eq!(
            progress(&done),
            Progress::Over(End {
                exit_code: 3,
                oom_killed: false,
                evicted: false,
                timed_out: false
            })
        );
        let oom = pod(serde_json::json!({
            "phase": "Failed",
            "containerStatuses": [terminated("run", 137, "OOMKilled")],
        }));
        assert!(matches!(
            progress(&oom),
            Progress::Over(End {
                oom_killed: true,
                exit_code: 137,
                ..
            })
        ));
        let evicted = pod(serde_json::json!({"phase": "Failed", "reason": "Evicted",
            "message": "Usage of EmptyDir volume \"work\" exceeds the limit \"8Gi\"."}));
        assert!(matches!(
            progress(&evicted),
            Progress::Over(End { evicted: true, .. })
        ));
        let deadline = pod(serde_json::json!({"phase": "Failed", "reason": "DeadlineExceeded"}));
        assert!(matches!(
            progress(&deadline),
            Progress::Over(End {
                timed_out: true,
                ..
            })
        ));
    }

    #[test]
    fn a_pod_that_cannot_start_says_why_instead_of_waiting_out_its_timeout() {
        let pull = pod(serde_json::json!({"phase": "Pending",
            "initContainerStatuses": [waiting("receive", "ImagePullBackOff")]}));
        assert!(
            matches!(progress(&pull), Progress::Refused(why) if why.contains("ImagePullBackOff"))
        );
        // A first pull error is retried by the kubelet: still starting.
        let first = pod(serde_json::json!({"phase": "Pending",
            "initContainerStatuses": [waiting("receive", "ErrImagePull")]}));
        assert!(matches!(progress(&first), Progress::Starting(_)));
        let unpack = pod(serde_json::json!({"phase": "Failed",
            "initContainerStatuses": [terminated("receive", 2, "Error")]}));
        assert!(matches!(progress(&unpack), Progress::Refused(_)));
        let unscheduled = pod(serde_json::json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient memory."}]}));
        assert!(
            matches!(progress(&unscheduled), Progress::Starting(why) if why.contains("Insufficient memory"))
        );
    }
}
