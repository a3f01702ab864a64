//! The Job for one run: the `restricted` profile in every container, the run's limits, the
//! work volume, and the dependency cache's claim.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{ClusterConfig, RunSpec, MANAGED_BY, NETWORK_LABEL};
use crate::sandbox::archive;

/// The Job for one run. Pure, so that what it asks of the cluster is tested without one.
pub(in crate::sandbox) fn job_for(name: &str, spec: &RunSpec<'_>, config: &ClusterConfig) -> Job {
    let labels = BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (NETWORK_LABEL.to_string(), spec.network.to_string()),
    ]);
    let uid = archive::SANDBOX_UID as i64;
    // The `restricted` Pod Security profile, container by container.
    let locked = || SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let work = |read_only: bool| VolumeMount {
        name: "work".into(),
        mount_path: "/work".into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let limits = spec.limits;
    let cpu = format!("{}m", (limits.cpus * 1000.0).round().max(1.0) as i64);
    let storage = (limits.work_bytes + (512 << 20)).to_string();
    let small = ResourceRequirements {
        limits: Some(BTreeMap::from([
            ("cpu".into(), Quantity("100m".into())),
            ("memory".into(), Quantity("64Mi".into())),
            ("ephemeral-storage".into(), Quantity("64Mi".into())),
        ])),
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("10m".into())),
            ("memory".into(), Quantity("16Mi".into())),
            ("ephemeral-storage".into(), Quantity("16Mi".into())),
        ])),
        ..Default::default()
    };
    let env = spec
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| EnvVar {
            name: k.into(),
            value: Some(v.into()),
            ..Default::default()
        })
        .collect();
    let mut run_mounts = vec![
        work(false),
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    ];
    let mut volumes = vec![
        Volume {
            name: "work".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(limits.work_bytes.to_string())),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity("512Mi".into())),
            }),
            ..Default::default()
        },
    ];
    if let Some((claim, writable)) = &spec.deps {
        volumes.push(Volume {
            name: "deps".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(!writable),
            }),
            ..Default::default()
        });
        run_mounts.push(VolumeMount {
            name: "deps".into(),
            mount_path: "/deps".into(),
            read_only: Some(!writable),
            ..Default::default()
        });
    }
    let mut containers = vec![Container {
        name: "run".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["sh".into(), "-c".into(), spec.script.clone()]),
        working_dir: Some("/work/repo".into()),
        env: Some(env),
        volume_mounts: Some(run_mounts),
        resources: Some(ResourceRequirements {
            limits: Some(BTreeMap::from([
                ("cpu".into(), Quantity(cpu.clone())),
                ("memory".into(), Quantity(limits.memory_bytes.to_string())),
                // The work volume, the container's own layer and its logs together: the node's
                // disk is shared, so a run may not take more of it than its volume's size.
                ("ephemeral-storage".into(), Quantity(storage.clone())),
            ])),
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity(cpu)),
                ("memory".into(), Quantity(limits.memory_bytes.to_string())),
                ("ephemeral-storage".into(), Quantity(storage)),
            ])),
            ..Default::default()
        }),
        security_context: Some(locked()),
        ..Default::default()
    }];
    if spec.collect.is_some() {
        containers.push(Container {
            name: "collect".into(),
            image: Some(spec.image.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            // Outlives the run by the time the worker needs to exec in it; the Job's deadline
            // ends it if the worker never comes.
            command: Some(vec![
                "sleep".into(),
                (limits.timeout.as_secs() + 600).to_string(),
            ]),
            volume_mounts: Some(vec![work(true)]),
            resources: Some(small.clone()),
            security_context: Some(locked()),
            ..Default::default()
        });
    }
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            // A backstop for a worker that died mid-run: the run's own timeout is the worker's,
            // counted from the checkout; this one also covers scheduling and image pulls.
            active_deadline_seconds: Some(
                (limits.timeout + config.start_timeout).as_secs() as i64 + 600,
            ),
            ttl_seconds_after_finished: Some(600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    // Deleted, the run stops at once: no 30 s grace for the repository's code.
                    termination_grace_period_seconds: Some(1),
                    runtime_class_name: config.runtime_class.clone(),
                    // The repository's code gets no credentials for the cluster, and no list
                    // of the namespace's services in its environment.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(uid),
                        run_as_group: Some(uid),
                        fs_group: Some(uid),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    volumes: Some(volumes),
                    init_containers: Some(vec![Container {
                        name: "receive".into(),
                        image: Some(spec.image.clone()),
                        image_pull_policy: Some("IfNotPresent".into()),
                        command: Some(vec![
                            "tar".into(),
                            "-x".into(),
                            "-f".into(),
                            "-".into(),
                            "-C".into(),
                            "/work".into(),
                        ]),
                        stdin: Some(true),
                        stdin_once: Some(true),
                        volume_mounts: Some(vec![work(false)]),
                        resources: Some(small),
                        security_context: Some(locked()),
                        ..Default::default()
                    }]),
                    containers,
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Limits;

    #[test]
    fn the_job_meets_the_restricted_profile_and_carries_the_runs_limits() {
        let limits = Limits::default();
        let spec = RunSpec {
            image: "img".into(),
            archive: vec![],
            script: "make test".into(),
            env: vec!["HOME=/tmp".into(), "A=b=c".into()],
            collect: Some("diff"),
            limits: &limits,
            network: "none",
            deps: Some(("selfheal-depsdata-x".into(), false)),
        };
        let mut config = ClusterConfig::new("ci");
        config.runtime_class = Some("gvisor".into());
        let job = job_for("selfheal-0123456789ab", &spec, &config);
        let job_spec = job.spec.unwrap();
        // One try, no restart: a failure is the verdict, not something to retry in place.
        assert_eq!(job_spec.backoff_limit, Some(0));
        assert!(job_spec.active_deadline_seconds.unwrap() > limits.timeout.as_secs() as i64);
        assert!(job_spec.ttl_seconds_after_finished.is_some());
        let pod = job_spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.termination_grace_period_seconds, Some(1));
        assert_eq!(pod.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.enable_service_links, Some(false));
        let pod_sc = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_sc.fs_group, Some(1000));
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        let work = &pod.volumes.as_ref().unwrap()[0];
        assert_eq!(
            work.empty_dir.as_ref().unwrap().size_limit,
            Some(Quantity(limits.work_bytes.to_string()))
        );
        let all: Vec<&Container> = pod
            .init_containers
            .iter()
            .flatten()
            .chain(&pod.containers)
            .collect();
        assert_eq!(all.len(), 3);
        for c in all {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(
                sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
                Some("RuntimeDefault")
            );
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..])
            );
            let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
            // The node's disk is shared: every container's share of it is bounded.
            assert!(limits.contains_key("ephemeral-storage"), "{}", c.name);
        }
        let run = &pod.containers[0];
        let env = run.env.as_ref().unwrap();
        assert_eq!(env[1].name, "A");
        assert_eq!(env[1].value.as_deref(), Some("b=c"));
        let mem = &run.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"];
        assert_eq!(mem.0, (1i64 << 30).to_string());
        // The collector only reads; so does a run of the dependency cache it mounts.
        assert_eq!(
            pod.containers[1].volume_mounts.as_ref().unwrap()[0].read_only,
            Some(true)
        );
        let deps = &run.volume_mounts.as_ref().unwrap()[2];
        assert_eq!(
            (deps.mount_path.as_str(), deps.read_only),
            ("/deps", Some(true))
        );
        let claim = pod.volumes.as_ref().unwrap()[2]
            .persistent_volume_claim
            .as_ref()
            .unwrap();
        assert_eq!(claim.read_only, Some(true));
    }
}
