//! The kubelet: runs a pod's containers on the local Docker engine (init containers in order,
//! then the rest together), with its emptyDir volumes, security context, resource limits and
//! network, and writes what happened into the pod's status as a kubelet does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountTmpfsOptions, MountType, MountVolumeOptions,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::Cluster;

/// Every container and volume the kubelet makes carries it (its value: the pod)...
const LABEL: &str = "kube-standin.pod";
/// ...and this one (its value: the stand-in's instance).
const INSTANCE: &str = "kube-standin.instance";

fn owned_by(cluster: &Cluster, pod: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL.to_string(), pod.to_string()),
        (INSTANCE.to_string(), cluster.instance.clone()),
    ])
}

enum Storage {
    Volume(String),
    /// A claim's volume, and whether the pod's volume source makes it read-only.
    Claim(String, bool),
    Tmpfs(i64),
}

/// A Kubernetes quantity in bytes or millicores (`512Mi`, `1073741824`, `250m`, `2`).
fn quantity(q: &str, milli: bool) -> Option<i64> {
    let units: [(&str, f64); 9] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024f64.powi(4)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("m", 1e-3),
    ];
    let (number, factor) = units
        .iter()
        .find_map(|(suffix, f)| q.strip_suffix(suffix).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    let value: f64 = number.parse().ok()?;
    Some(if milli {
        value * factor * 1000.0
    } else {
        value * factor
    } as i64)
}

fn update(cluster: &Cluster, pod: &str, change: impl FnOnce(&mut Value)) {
    let mut objects = cluster.objects.lock().unwrap();
    let version = Cluster::next_version(&mut objects);
    if let Some(record) = objects.pods.get_mut(pod) {
        change(&mut record.pod);
        record.pod["metadata"]["resourceVersion"] = json!(version);
    }
}

fn set_state(cluster: &Cluster, pod: &str, list: &str, container: &Value, state: Value) {
    let name = container["name"].clone();
    let entry = json!({
        "name": name, "image": container["image"], "imageID": "", "restartCount": 0,
        "ready": state.get("running").is_some(), "started": state.get("running").is_some(),
        "state": state,
    });
    update(cluster, pod, |p| {
        let statuses = p["status"][list].as_array().cloned().unwrap_or_default();
        let mut statuses: Vec<Value> = statuses.into_iter().filter(|s| s["name"] != name).collect();
        statuses.push(entry);
        p["status"][list] = Value::Array(statuses);
    });
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(crate) async fn run_pod(cluster: Arc<Cluster>, pod: String) {
    run(&cluster, &pod).await
}

async fn run(cluster: &Arc<Cluster>, pod: &str) {
    let Some((spec, labels)) = ({
        let objects = cluster.objects.lock().unwrap();
        objects
            .pods
            .get(pod)
            .map(|r| (r.pod["spec"].clone(), r.pod["metadata"]["labels"].clone()))
    }) else {
        return;
    };
    let isolated = cluster
        .isolated
        .as_ref()
        .is_some_and(|(label, value)| labels[label] == json!(value));
    let network = if isolated { "none" } else { "bridge" };

    let mut storage = HashMap::new();
    let fs_group = spec["securityContext"]["fsGroup"].as_i64();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default().to_string();
        if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
            let bound = {
                let objects = cluster.objects.lock().unwrap();
                objects
                    .claims
                    .get(claim)
                    .filter(|c| c["metadata"]["deletionTimestamp"].is_null())
                    .and_then(|c| c["spec"]["volumeName"].as_str().map(str::to_string))
            };
            let Some(volume) = bound else {
                // The scheduler leaves a pod whose claim is missing (or going) unscheduled.
                update(cluster, pod, |p| {
                    p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False",
                        "reason": "Unschedulable",
                        "message": format!("persistentvolumeclaim \"{claim}\" not found")}]);
                });
                return;
            };
            // The kubelet gives a claim's root to the fsGroup, group-writable and setgid.
            if let Some(g) = fs_group {
                let script = format!("chgrp {g} /v && chmod g+rwxs /v");
                if !as_root(cluster, pod, &spec, &volume, &script).await {
                    return;
                }
            }
            let read_only = v["persistentVolumeClaim"]["readOnly"] == json!(true);
            storage.insert(name, Storage::Claim(volume, read_only));
            continue;
        }
        let empty_dir = &v["emptyDir"];
        if empty_dir["medium"] == "Memory" {
            let size = empty_dir["sizeLimit"]
                .as_str()
                .and_then(|q| quantity(q, false))
                .unwrap_or(64 << 20);
            storage.insert(name, Storage::Tmpfs(size));
            continue;
        }
        let volume = format!("kstandin-{pod}-{name}");
        let made = cluster
            .docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(owned_by(cluster, pod)),
                ..Default::default()
            })
            .await;
        if made.is_err() {
            return;
        }
        if let Some(record) = cluster.objects.lock().unwrap().pods.get_mut(pod) {
            record.volumes.push(volume.clone());
        }
        // An emptyDir is a fresh directory of the kubelet's: root's, mode 0777, or with an
        // fsGroup the group's with setgid. Not a copy of the image's folder, as Docker would
        // make a named volume.
        let script = match fs_group {
            Some(g) => format!("chown 0:{g} /v && chmod 2777 /v"),
            None => "chown 0:0 /v && chmod 0777 /v".into(),
        };
        if !as_root(cluster, pod, &spec, &volume, &script).await {
            return;
        }
        storage.insert(name, Storage::Volume(volume));
    }

    for c in spec["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let Some(id) = start(
            cluster,
            pod,
            &spec,
            &c,
            network,
            &storage,
            "initContainerStatuses",
        )
        .await
        else {
            return;
        };
        let code = wait(cluster, pod, &c, &id, "initContainerStatuses").await;
        if code != 0 {
            update(cluster, pod, |p| p["status"]["phase"] = json!("Failed"));
            return;
        }
    }
    let mut running = Vec::new();
    for c in spec["containers"].as_array().cloned().unwrap_or_default() {
        let Some(id) = start(
            cluster,
            pod,
            &spec,
            &c,
            network,
            &storage,
            "containerStatuses",
        )
        .await
        else {
            return;
        };
        running.push((c, id));
    }
    update(cluster, pod, |p| p["status"]["phase"] = json!("Running"));
    let codes = futures::future::join_all(
        running
            .iter()
            .map(|(c, id)| wait(cluster, pod, c, id, "containerStatuses")),
    )
    .await;
    let phase = if codes.iter().all(|c| *c == 0) {
        "Succeeded"
    } else {
        "Failed"
    };
    update(cluster, pod, |p| p["status"]["phase"] = json!(phase));
}

/// A claim's volume: a Docker volume of the stand-in's.
pub(crate) async fn create_volume(cluster: &Cluster, volume: &str) -> Result<(), String> {
    let labels = HashMap::from([(INSTANCE.to_string(), cluster.instance.clone())]);
    cluster
        .docker
        .create_volume(VolumeCreateRequest {
            name: Some(volume.into()),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Removes a claim's volume; `false` while a container uses it.
pub(crate) async fn remove_volume(cluster: &Cluster, volume: &str) -> bool {
    cluster
        .docker
        .remove_volume(
            volume,
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await
        .is_ok()
}

/// Sets a volume's owner and mode as the kubelet does (`script` on it at `/v`), with a root
/// container of the pod's first image (the stand-in's node has nothing else to run).
async fn as_root(
    cluster: &Arc<Cluster>,
    pod: &str,
    spec: &Value,
    volume: &str,
    script: &str,
) -> bool {
    let image = spec["initContainers"][0]["image"]
        .as_str()
        .or(spec["containers"][0]["image"].as_str())
        .unwrap_or_default();
    if cluster.docker.inspect_image(image).await.is_err() {
        // The pull fails later, where the pod's status says so.
        return true;
    }
    let name = format!("kstandin_root_{}", uuid::Uuid::new_v4().simple());
    let body = ContainerCreateBody {
        image: Some(image.into()),
        entrypoint: Some(vec!["sh".into(), "-c".into(), script.into()]),
        cmd: Some(vec![]),
        user: Some("0:0".into()),
        network_disabled: Some(true),
        labels: Some(owned_by(cluster, pod)),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            mounts: Some(vec![Mount {
                target: Some("/v".into()),
                source: Some(volume.into()),
                typ: Some(MountType::VOLUME),
                volume_options: Some(MountVolumeOptions {
                    no_copy: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let docker = &cluster.docker;
    let made = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await;
    if made.is_err() {
        return false;
    }
    let started = docker
        .start_container(
            &name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await;
    let mut waiting = docker.wait_container(
        &name,
        None::<bollard::query_parameters::WaitContainerOptions>,
    );
    while let Some(next) = waiting.next().await {
        if next.is_err() {
            break;
        }
    }
    let _ = docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
    started.is_ok()
}

/// Creates and starts one container; `None` when it cannot start (its status says why).
#[allow(clippy::too_many_arguments)]
async fn start(
    cluster: &Arc<Cluster>,
    pod: &str,
    spec: &Value,
    c: &Value,
    network: &str,
    storage: &HashMap<String, Storage>,
    list: &str,
) -> Option<String> {
    let image = c["image"].as_str().unwrap_or_default();
    if cluster.docker.inspect_image(image).await.is_err() {
        // No registry here: the pull fails, then backs off, as it would for a missing image.
        let waiting = |reason: &str| {
            json!({"waiting": {"reason": reason,
                "message": format!("Back-off pulling image \"{image}\": not found")}})
        };
        set_state(cluster, pod, list, c, waiting("ErrImagePull"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        set_state(cluster, pod, list, c, waiting("ImagePullBackOff"));
        return None;
    }
    let pod_sc = &spec["securityContext"];
    let sc = &c["securityContext"];
    let pick = |key: &str| sc[key].as_i64().or(pod_sc[key].as_i64());
    let user = match (pick("runAsUser"), pick("runAsGroup")) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        _ => None,
    };
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
    };
    let mut mounts = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let target = m["mountPath"].as_str().map(str::to_string);
        let read_only = m["readOnly"].as_bool();
        match storage.get(m["name"].as_str().unwrap_or_default()) {
            Some(Storage::Volume(v)) => mounts.push(Mount {
                target,
                source: Some(v.clone()),
                typ: Some(MountType::VOLUME),
                read_only,
                volume_options: Some(MountVolumeOptions {
                    no_copy: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            Some(Storage::Claim(v, source_read_only)) => mounts.push(Mount {
                target,
                source: Some(v.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(*source_read_only || read_only == Some(true)),
                volume_options: Some(MountVolumeOptions {
                    no_copy: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            Some(Storage::Tmpfs(size)) => mounts.push(Mount {
                target,
                typ: Some(MountType::TMPFS),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: Some(*size),
                    mode: Some(0o1777),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            None => {}
        }
    }
    let limits = &c["resources"]["limits"];
    let stdin = c["stdin"] == json!(true);
    let name = format!("kstandin_{}_{pod}", c["name"].as_str().unwrap_or_default());
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: strings(&c["command"]),
        cmd: strings(&c["args"]).or(Some(vec![])),
        working_dir: c["workingDir"].as_str().map(str::to_string),
        env: Some(
            c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    format!(
                        "{}={}",
                        e["name"].as_str().unwrap_or_default(),
                        e["value"].as_str().unwrap_or_default()
                    )
                })
                .collect(),
        ),
        user,
        open_stdin: Some(stdin),
        stdin_once: Some(c["stdinOnce"] == json!(true)),
        attach_stdin: Some(stdin),
        network_disabled: Some(network == "none"),
        labels: Some(owned_by(cluster, pod)),
        host_config: Some(HostConfig {
            network_mode: Some(network.into()),
            memory: limits["memory"].as_str().and_then(|q| quantity(q, false)),
            nano_cpus: limits["cpu"]
                .as_str()
                .and_then(|q| quantity(q, true))
                .map(|milli| milli * 1_000_000),
            readonly_rootfs: sc["readOnlyRootFilesystem"].as_bool(),
            cap_drop: crate::api::drops_all(sc).then(|| vec!["ALL".into()]),
            security_opt: (sc["allowPrivilegeEscalation"] == json!(false))
                .then(|| vec!["no-new-privileges".into()]),
            mounts: Some(mounts),
            ..Default::default()
        }),
        ..Default::default()
    };
    let made = cluster
        .docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await;
    if let Err(e) = made {
        set_state(
            cluster,
            pod,
            list,
            c,
            json!({"waiting": {"reason": "CreateContainerError", "message": e.to_string()}}),
        );
        return None;
    }
    if let Some(record) = cluster.objects.lock().unwrap().pods.get_mut(pod) {
        record.containers.insert(
            c["name"].as_str().unwrap_or_default().to_string(),
            name.clone(),
        );
    }
    if let Err(e) = cluster
        .docker
        .start_container(
            &name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
    {
        set_state(
            cluster,
            pod,
            list,
            c,
            json!({"waiting": {"reason": "RunContainerError", "message": e.to_string()}}),
        );
        return None;
    }
    set_state(
        cluster,
        pod,
        list,
        c,
        json!({"running": {"startedAt": now()}}),
    );
    Some(name)
}

/// Waits for a container to exit and records how.
async fn wait(cluster: &Arc<Cluster>, pod: &str, c: &Value, id: &str, list: &str) -> i64 {
    let mut waiting = cluster
        .docker
        .wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
    while let Some(next) = waiting.next().await {
        if next.is_err() {
            break;
        }
    }
    let state = match cluster.docker.inspect_container(id, None).await {
        Ok(inspected) => inspected.state.unwrap_or_default(),
        // Removed under it (the Job was deleted): nothing left to record.
        Err(_) => return -1,
    };
    let code = state.exit_code.unwrap_or(-1);
    let reason = if state.oom_killed == Some(true) {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    };
    set_state(
        cluster,
        pod,
        list,
        c,
        json!({"terminated": {"exitCode": code, "reason": reason, "finishedAt": now()}}),
    );
    code
}

pub(crate) async fn logs(docker: &Docker, name: &str) -> String {
    let mut stream = docker.logs(
        name,
        Some(
            LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .build(),
        ),
    );
    let mut out = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        out.extend_from_slice(&chunk.into_bytes());
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the garbage collector and the kubelet do for a deleted pod: stop it, remove its
/// containers and volumes, forget it.
pub(crate) async fn remove_pod(cluster: &Cluster, pod: &str) {
    let Some(record) = cluster.objects.lock().unwrap().pods.remove(pod) else {
        return;
    };
    if let Some(task) = record.kubelet {
        task.abort();
    }
    // By label, not only the names recorded: a create in flight when the kubelet was stopped
    // still made its container.
    let names: Vec<String> = labelled(cluster, &format!("{LABEL}={pod}"))
        .await
        .into_iter()
        .chain(record.containers.values().cloned())
        .collect();
    // Stopped as the kubelet stops them: SIGTERM, then SIGKILL after the pod's grace period
    // (30 s unless the spec says otherwise).
    let grace = record.pod["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(30);
    futures::future::join_all(names.iter().map(|name| {
        cluster.docker.stop_container(
            name,
            Some(
                bollard::query_parameters::StopContainerOptionsBuilder::default()
                    .t(grace as i32)
                    .build(),
            ),
        )
    }))
    .await;
    for name in &names {
        let _ = cluster
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
    }
    // The pvc-protection finalizer lets a claim marked for deletion go once no pod uses it.
    let terminating: Vec<(String, String)> = {
        let objects = cluster.objects.lock().unwrap();
        objects
            .claims
            .iter()
            .filter(|(_, c)| !c["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|(n, c)| Some((n.clone(), c["spec"]["volumeName"].as_str()?.to_string())))
            .collect()
    };
    for (claim, volume) in terminating {
        if remove_volume(cluster, &volume).await {
            cluster.objects.lock().unwrap().claims.remove(&claim);
        }
    }
    for volume in &record.volumes {
        let _ = cluster
            .docker
            .remove_volume(
                volume,
                Some(RemoveVolumeOptionsBuilder::default().force(true).build()),
            )
            .await;
    }
}

pub(crate) async fn containers_left(cluster: &Cluster) -> usize {
    labelled(cluster, &format!("{INSTANCE}={}", cluster.instance))
        .await
        .len()
}

/// The ids of the containers, running or not, that carry `label=value`.
async fn labelled(cluster: &Cluster, selector: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![selector])]);
    cluster
        .docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}
