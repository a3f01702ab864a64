//! A local stand-in for the parts of the Kubernetes API selfheal's Job sandbox uses, with a
//! kubelet that runs each pod's containers on the local Docker engine. Never on selfheal's
//! production path.
//!
//! It refuses what a real API server refuses: a missing or wrong bearer token (401), another
//! namespace than the service account's (403, as RBAC would), an invalid Job (422), a name
//! taken (409), an unknown object or route (404), a wrong method (405), attaching to or
//! exec-ing in a container that is not running (400). A pod that breaks the `restricted` Pod
//! Security profile is never created (the Job stays without pods, as admission leaves it),
//! and an image the engine does not have ends in `ImagePullBackOff`. Pods whose labels match
//! the configured NetworkPolicy selector get no network, as a policy-enforcing CNI would do.
//! Errors are `Status` objects in the API's own shape; attach and exec speak the
//! `v5.channel.k8s.io` and `v4.channel.k8s.io` WebSocket subprotocols.

mod api;
mod kubelet;
mod storage;
mod stream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// One stored pod and what runs it.
struct PodRecord {
    pod: Value,
    job: String,
    /// Docker container name for each of the pod's containers that was created.
    containers: BTreeMap<String, String>,
    volumes: Vec<String>,
    kubelet: Option<tokio::task::AbortHandle>,
}

#[derive(Default)]
struct Objects {
    jobs: BTreeMap<String, Value>,
    pods: BTreeMap<String, PodRecord>,
    resource_version: u64,
    calls: Vec<String>,
    /// Every pod spec admitted, in order (pods are deleted with their Jobs; their specs stay).
    admitted: Vec<Value>,
    configmaps: BTreeMap<String, Value>,
    /// Claims, each bound at once to a Docker volume of its own.
    claims: BTreeMap<String, Value>,
}

struct Cluster {
    /// Labels every container and volume this stand-in's kubelet makes, so that one test's
    /// count is not another's.
    instance: String,
    namespace: String,
    token: String,
    /// The sandbox NetworkPolicy's pod selector (`label`, `value`): matching pods get no network.
    isolated: Option<(String, String)>,
    /// The RuntimeClasses the cluster has: a pod naming another is refused at admission.
    runtime_classes: Vec<String>,
    /// The StorageClass admission gives a claim that names none (`standard`, or none).
    default_storage_class: Mutex<Option<String>>,
    docker: bollard::Docker,
    objects: Mutex<Objects>,
}

impl Cluster {
    fn next_version(objects: &mut Objects) -> String {
        objects.resource_version += 1;
        objects.resource_version.to_string()
    }
}

/// The running stand-in.
pub struct KubeStandIn {
    pub url: String,
    pub token: String,
    pub namespace: String,
    cluster: Arc<Cluster>,
    server: tokio::task::JoinHandle<()>,
}

/// Starts the stand-in on a free loopback port. `isolated` is the sandbox NetworkPolicy's pod
/// selector (a `label=value`) whose pods get no network; `runtime_classes` the RuntimeClasses
/// the cluster has.
pub async fn spawn(
    namespace: &str,
    token: &str,
    isolated: Option<(&str, &str)>,
    runtime_classes: &[&str],
) -> KubeStandIn {
    let docker = bollard::Docker::connect_with_local_defaults()
        .expect("Docker (scripts/services.sh up)")
        .negotiate_version()
        .await
        .expect("Docker (scripts/services.sh up)");
    let cluster = Arc::new(Cluster {
        instance: uuid::Uuid::new_v4().simple().to_string(),
        namespace: namespace.into(),
        token: token.into(),
        isolated: isolated.map(|(l, v)| (l.to_string(), v.to_string())),
        runtime_classes: runtime_classes.iter().map(|r| r.to_string()).collect(),
        default_storage_class: Mutex::new(Some("standard".into())),
        docker,
        objects: Mutex::new(Objects::default()),
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = api::router(cluster.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    KubeStandIn {
        url: format!("http://{addr}"),
        token: token.into(),
        namespace: namespace.into(),
        cluster,
        server,
    }
}

impl KubeStandIn {
    /// Every request received, as `METHOD path`.
    pub fn calls(&self) -> Vec<String> {
        self.cluster.objects.lock().unwrap().calls.clone()
    }

    /// The Jobs stored now.
    pub fn jobs(&self) -> Vec<Value> {
        let objects = self.cluster.objects.lock().unwrap();
        objects.jobs.values().cloned().collect()
    }

    /// A kubeconfig for this cluster, as a worker's `KUBECONFIG` would hold it.
    pub fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{}\"}}\nusers:\n- name: u\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: {}}}\ncurrent-context: x\n",
            self.url, self.namespace
        )
    }

    /// Takes the cluster's default StorageClass away.
    pub fn without_default_storage_class(&self) {
        *self.cluster.default_storage_class.lock().unwrap() = None;
    }

    /// The spec of every pod admitted so far.
    pub fn admitted_pods(&self) -> Vec<Value> {
        self.cluster.objects.lock().unwrap().admitted.clone()
    }

    /// The ConfigMaps and PersistentVolumeClaims stored now, by name.
    pub fn config_maps_and_claims(&self) -> (Vec<String>, Vec<String>) {
        let objects = self.cluster.objects.lock().unwrap();
        (
            objects.configmaps.keys().cloned().collect(),
            objects.claims.keys().cloned().collect(),
        )
    }

    /// The pods stored now.
    pub fn pods(&self) -> Vec<Value> {
        let objects = self.cluster.objects.lock().unwrap();
        objects.pods.values().map(|p| p.pod.clone()).collect()
    }

    /// Docker containers the kubelet made that still exist (after a Job is deleted: none).
    pub async fn containers_left(&self) -> usize {
        kubelet::containers_left(&self.cluster).await
    }
}

impl Drop for KubeStandIn {
    fn drop(&mut self) {
        self.server.abort();
        let (names, volumes): (Vec<String>, Vec<String>) = {
            let objects = self.cluster.objects.lock().unwrap();
            (
                objects.pods.keys().cloned().collect(),
                objects
                    .claims
                    .values()
                    .filter_map(|c| c["spec"]["volumeName"].as_str().map(str::to_string))
                    .collect(),
            )
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let cluster = self.cluster.clone();
            runtime.spawn(async move {
                for pod in names {
                    kubelet::remove_pod(&cluster, &pod).await;
                }
                for volume in volumes {
                    kubelet::remove_volume(&cluster, &volume).await;
                }
            });
        }
    }
}
