//! The Kubernetes sandbox backend (one Job per run) against the stand-in API server, whose
//! kubelet runs the pods on the real Docker engine: the script really runs, in the image, as
//! the sandbox user, and what comes back comes from the pod's status and a second container.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kubernetes_standin::KubeStandIn;
use selfheal_engine::sandbox::deps::Outcome;
use selfheal_engine::sandbox::kubernetes::{Cluster, ClusterConfig, NETWORK_LABEL};
use selfheal_engine::sandbox::{Images, Limits, Sandbox, SandboxError};

const NAMESPACE: &str = "selfheal-sandbox";

/// The sandbox NetworkPolicy's pod selector, read from the manifest an operator applies: the
/// stand-in's CNI isolates exactly the pods it selects.
fn sandbox_policy_selector() -> (String, String) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/job-sandbox/sandbox-namespace.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
        if doc["kind"].as_str() == Some("NetworkPolicy")
            && doc["metadata"]["name"].as_str() == Some("sandbox-runs")
        {
            let labels = doc["spec"]["podSelector"]["matchLabels"]
                .as_mapping()
                .expect("the sandbox policy selects by label");
            let (k, v) = labels.iter().next().unwrap();
            // It denies everything: both directions are its to police, and no rule lets
            // anything in or out.
            let types = doc["spec"]["policyTypes"].as_sequence().unwrap();
            assert!(types.iter().any(|t| t.as_str() == Some("Ingress")));
            assert!(types.iter().any(|t| t.as_str() == Some("Egress")));
            assert!(doc["spec"].get("ingress").is_none() && doc["spec"].get("egress").is_none());
            return (k.as_str().unwrap().into(), v.as_str().unwrap().into());
        }
    }
    panic!("no NetworkPolicy in {}", path.display());
}

/// Every request the backend made is one the shipped Role grants (in the sandbox namespace),
/// so the worker's service account can do its work and no more is asked.
fn rbac_allows(calls: &[String]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/job-sandbox/rbac.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut rules = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
        if doc["kind"].as_str() == Some("Role") {
            assert_eq!(doc["metadata"]["namespace"].as_str(), Some(NAMESPACE));
            rules = doc["rules"].as_sequence().unwrap().clone();
        }
    }
    let strings = |v: &serde_yaml_ng::Value| -> Vec<String> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    for call in calls {
        let (method, path) = call.split_once(' ').unwrap();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // /api/v1/namespaces/NS/RESOURCE[/NAME[/SUB]] or /apis/GROUP/VERSION/namespaces/...
        let (group, rest) = match parts[0] {
            "api" => ("", &parts[2..]),
            _ => (parts[1], &parts[3..]),
        };
        assert_eq!(rest[0], "namespaces");
        assert_eq!(rest[1], NAMESPACE, "{call}");
        let resource = match rest.get(4) {
            Some(sub) => format!("{}/{sub}", rest[2]),
            None => rest[2].to_string(),
        };
        // attach and exec are WebSocket GETs that Kubernetes 1.31+ also authorizes as create.
        let verbs: &[&str] = match (method, rest.len(), resource.as_str()) {
            ("GET", _, "pods/attach" | "pods/exec") => &["get", "create"],
            ("GET", 3, _) => &["list"],
            ("GET", _, _) => &["get"],
            ("POST", _, _) => &["create"],
            ("DELETE", _, _) => &["delete"],
            _ => panic!("unexpected call {call}"),
        };
        for verb in verbs {
            let granted = rules.iter().any(|r| {
                strings(&r["apiGroups"]).contains(&group.to_string())
                    && strings(&r["resources"]).contains(&resource)
                    && strings(&r["verbs"]).contains(&verb.to_string())
            });
            assert!(
                granted,
                "the Role does not grant {verb} on {group}/{resource} ({call})"
            );
        }
    }
}

async fn standin() -> KubeStandIn {
    let (label, value) = sandbox_policy_selector();
    kubernetes_standin::spawn(
        NAMESPACE,
        "sandbox-token",
        Some((&label, &value)),
        &["gvisor"],
    )
    .await
}

/// A client as a worker makes one: from a kubeconfig.
fn client(k: &KubeStandIn, token: &str) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&k.kubeconfig(token)).unwrap();
    let config = futures::executor::block_on(kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    ))
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn config(namespace: &str) -> ClusterConfig {
    let mut config = ClusterConfig::new(namespace);
    config.start_timeout = Duration::from_secs(30);
    config
}

/// The recipe's Python image, built on this Docker engine if it is not there yet: the
/// stand-in's nodes pull nothing from a registry.
async fn image_ready() {
    let docker = Sandbox::connect(Images::Recipe, Limits::default())
        .await
        .expect("Docker (scripts/services.sh up)");
    let dir = tempfile::tempdir().unwrap();
    docker.image_for(dir.path()).await.unwrap();
}

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello from the checkout\n").unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/app.py"), "print('app')\n").unwrap();
    dir
}

fn sandbox(k: &KubeStandIn, limits: Limits) -> Sandbox {
    let cluster = Cluster::new(client(k, &k.token), config(&k.namespace));
    Sandbox::on_cluster(cluster, Images::Recipe, limits)
}

/// Deletion is in the background (as `propagationPolicy: Background` is): wait for it.
async fn all_gone(k: &KubeStandIn) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if k.jobs().is_empty()
            && k.pods().is_empty()
            && k.containers_left().await == 0
            && k.config_maps_and_claims().1.is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "left behind: {} jobs, {} pods, {} containers, claims {:?}",
        k.jobs().len(),
        k.pods().len(),
        k.containers_left().await,
        k.config_maps_and_claims().1
    );
}

#[tokio::test]
async fn a_run_is_a_job_whose_exit_output_and_file_come_back_and_which_is_then_deleted() {
    image_ready().await;
    let k = standin().await;
    let sb = sandbox(&k, Limits::default());
    let dir = repo();
    let (run, collected) = sb
        .run(
            dir.path(),
            "cat hello.txt; python3 src/app.py; id -u; echo made >/work/out; exit 3",
            Some("out"),
        )
        .await
        .unwrap();
    assert_eq!(run.exit_code, 3, "{}", run.output);
    assert!(!run.passed());
    assert!(
        run.output.contains("hello from the checkout"),
        "{}",
        run.output
    );
    assert!(run.output.contains("app\n"), "{}", run.output);
    // The sandbox user, not root.
    assert!(run.output.contains("\n1000\n"), "{}", run.output);
    assert_eq!(collected.as_deref(), Some(&b"made\n"[..]));

    // A file the run did not write brings nothing back; a passing run passes.
    let (run, collected) = sb.run(dir.path(), "true", Some("missing")).await.unwrap();
    assert!(run.passed(), "{}", run.output);
    assert_eq!(collected, None);

    let calls = k.calls();
    rbac_allows(&calls);
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("POST /apis/batch/v1/namespaces/selfheal-sandbox/jobs")),
        "{calls:?}"
    );
    assert!(calls.iter().any(|c| c.ends_with("/attach")), "{calls:?}");
    assert!(calls.iter().any(|c| c.ends_with("/exec")), "{calls:?}");
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("DELETE /apis/batch/v1/")),
        "{calls:?}"
    );
    all_gone(&k).await;
}

#[tokio::test]
async fn the_repositorys_code_cannot_fake_the_file_that_comes_back_by_a_link() {
    image_ready().await;
    let k = standin().await;
    let sb = sandbox(&k, Limits::default());
    let dir = repo();
    // A link to a file of the collector's: the tar of the path carries the link, not its
    // target, and a link brings nothing back.
    let (run, collected) = sb
        .run(dir.path(), "ln -s /etc/passwd /work/out", Some("out"))
        .await
        .unwrap();
    assert!(run.passed(), "{}", run.output);
    assert_eq!(collected, None);
    all_gone(&k).await;
}

/// The Docker bridge's gateway: the host, as a container on the default network reaches it.
async fn host_from_a_container() -> String {
    let docker = bollard::Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let bridge = docker
        .inspect_network(
            "bridge",
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    let config = &bridge.ipam.unwrap().config.unwrap()[0];
    // Older engines (Debian's) leave the gateway out: it is the subnet's first address.
    config.gateway.clone().unwrap_or_else(|| {
        let subnet = config.subnet.clone().unwrap();
        let network: std::net::Ipv4Addr = subnet.split('/').next().unwrap().parse().unwrap();
        std::net::Ipv4Addr::from(u32::from(network) + 1).to_string()
    })
}

#[tokio::test]
async fn a_sandbox_pod_has_no_network_under_the_shipped_policy() {
    image_ready().await;
    // Something on the host that a pod with a network reaches.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let host = host_from_a_container().await;
    let script = format!(
        "python3 -c \"import socket; socket.create_connection(('{host}', {port}), timeout=5); print('reached')\""
    );
    let dir = repo();

    let k = standin().await;
    let sb = sandbox(&k, Limits::default());
    let (run, _) = sb.run(dir.path(), &script, None).await.unwrap();
    assert!(!run.passed());
    assert!(!run.output.contains("reached"), "{}", run.output);
    // It is the backend's label the shipped policy selects.
    assert_eq!(
        sandbox_policy_selector(),
        (NETWORK_LABEL.to_string(), "none".to_string())
    );
    all_gone(&k).await;

    // The control: on a cluster without the policy the same pod reaches the host.
    let open = kubernetes_standin::spawn(NAMESPACE, "t", None, &[]).await;
    let sb = sandbox(&open, Limits::default());
    let (run, _) = sb.run(dir.path(), &script, None).await.unwrap();
    assert!(run.output.contains("reached"), "{}", run.output);
    all_gone(&open).await;
}

#[tokio::test]
async fn what_comes_back_is_bounded() {
    image_ready().await;
    let k = standin().await;
    let sb = sandbox(&k, Limits::default());
    let dir = repo();
    // A file past the cap is refused, not read whole.
    let err = sb
        .run(
            dir.path(),
            "head -c 70000000 /dev/zero >/work/big",
            Some("big"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::TooLarge(_)), "{err}");
    // Output past the cap keeps its tail, where the failure is.
    let (run, _) = sb
        .run(
            dir.path(),
            "yes 0123456789 | head -c 2000000; echo; echo THE-END",
            None,
        )
        .await
        .unwrap();
    assert!(run.output.len() <= 256 * 1024, "{}", run.output.len());
    assert!(run.output.trim_end().ends_with("THE-END"));
    all_gone(&k).await;
}

#[tokio::test]
async fn the_runtime_class_reaches_the_pod_and_one_the_cluster_lacks_is_named() {
    image_ready().await;
    let k = standin().await;
    let dir = repo();
    let mut gvisor = config(NAMESPACE);
    gvisor.runtime_class = Some("gvisor".into());
    let sb = Sandbox::on_cluster(
        Cluster::new(client(&k, &k.token), gvisor),
        Images::Recipe,
        Limits::default(),
    );
    let (run, _) = sb.run(dir.path(), "true", None).await.unwrap();
    assert!(run.passed(), "{}", run.output);
    let admitted = k.admitted_pods();
    assert_eq!(admitted.last().unwrap()["runtimeClassName"], "gvisor");

    // Admission refuses a pod whose RuntimeClass does not exist: the Job gets no pod.
    let mut kata = config(NAMESPACE);
    kata.runtime_class = Some("kata".into());
    kata.start_timeout = Duration::from_secs(3);
    let sb = Sandbox::on_cluster(
        Cluster::new(client(&k, &k.token), kata),
        Images::Recipe,
        Limits::default(),
    );
    let err = sb.run(dir.path(), "true", None).await.unwrap_err();
    assert!(err.to_string().contains("RuntimeClass"), "{err}");
    all_gone(&k).await;
}

#[tokio::test]
async fn a_run_past_its_timeout_is_stopped_and_its_job_deleted() {
    image_ready().await;
    let k = standin().await;
    let limits = Limits {
        timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let sb = sandbox(&k, limits);
    let dir = repo();
    let started = Instant::now();
    let (run, collected) = sb
        .run(
            dir.path(),
            "echo started; echo partial >/work/out; sleep 120",
            Some("out"),
        )
        .await
        .unwrap();
    assert!(run.timed_out);
    assert!(!run.passed());
    assert!(run.output.contains("started"), "{}", run.output);
    assert_eq!(collected, None);
    assert!(started.elapsed() < Duration::from_secs(60));
    all_gone(&k).await;
}

#[tokio::test]
async fn a_run_over_its_memory_is_reported_oom_killed() {
    image_ready().await;
    let k = standin().await;
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let sb = sandbox(&k, limits);
    let dir = repo();
    let (run, _) = sb
        .run(
            dir.path(),
            "python3 -c \"b = bytearray(512 << 20); print(len(b))\"",
            None,
        )
        .await
        .unwrap();
    assert!(run.oom_killed, "exit {}: {}", run.exit_code, run.output);
    assert!(!run.passed());
    all_gone(&k).await;
}

#[tokio::test]
async fn the_cluster_refusing_says_why() {
    image_ready().await;
    let k = standin().await;
    let dir = repo();

    // A token the API server does not know.
    let cluster = Cluster::new(client(&k, "expired"), config(NAMESPACE));
    let sb = Sandbox::on_cluster(cluster, Images::Recipe, Limits::default());
    let err = sb.run(dir.path(), "true", None).await.unwrap_err();
    assert!(
        matches!(&err, SandboxError::Kubernetes(kube::Error::Api(s)) if s.code == 401),
        "{err}"
    );

    // A namespace the service account may not use.
    let cluster = Cluster::new(client(&k, &k.token), config("default"));
    let sb = Sandbox::on_cluster(cluster, Images::Recipe, Limits::default());
    let err = sb.run(dir.path(), "true", None).await.unwrap_err();
    assert!(
        matches!(&err, SandboxError::Kubernetes(kube::Error::Api(s)) if s.code == 403),
        "{err}"
    );

    // An image the nodes cannot pull: the pod's reason, well before the start timeout.
    let cluster = Cluster::new(client(&k, &k.token), config(NAMESPACE));
    let sb = Sandbox::on_cluster(
        cluster,
        Images::Own("registry.invalid/sandbox-{language}:nope".into()),
        Limits::default(),
    );
    let started = Instant::now();
    let err = sb.run(dir.path(), "true", None).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("ImagePullBackOff"), "{text}");
    assert!(
        text.contains("registry.invalid/sandbox-python:nope"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    all_gone(&k).await;
}

fn python_deps() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/python-deps");
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", example.display()))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(copied.success());
    dir
}

#[tokio::test]
async fn without_a_storage_class_the_fetch_says_so_at_once() {
    let k = standin().await;
    k.without_default_storage_class();
    let sb = sandbox(&k, Limits::default());
    let dir = python_deps();
    let (_, outcome) = sb.prepare(dir.path(), "o/r").await.unwrap();
    let Outcome::Failed { reason, .. } = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(
        reason.contains("SELFHEAL_SANDBOX_CACHE_STORAGE_CLASS"),
        "{reason}"
    );
    // No fetch was started, and the claim that could never bind is gone.
    assert!(k.jobs().is_empty() && k.admitted_pods().is_empty());
    assert_eq!(k.config_maps_and_claims(), (vec![], vec![]));
}

#[tokio::test]
async fn locked_dependencies_are_fetched_once_into_a_claim_that_runs_mount_read_only() {
    image_ready().await;
    let k = standin().await;
    let sb = sandbox(&k, Limits::default());
    let dir = python_deps();

    let (prepared, outcome) = sb.prepare(dir.path(), "o/r").await.unwrap();
    let Outcome::Ready { cache, .. } = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(!cache.hit);
    assert!(
        cache.resolved.contains(&"attrs==24.2.0".to_string()),
        "{:?}",
        cache.resolved
    );
    // The fetch was a Job with a network, writing the claim; nothing of the checkout ran.
    let fetch = &k.admitted_pods()[0];
    assert_eq!(
        fetch["volumes"][2]["persistentVolumeClaim"]["readOnly"],
        false
    );

    // A run has the pinned packages, at /deps, which it cannot change.
    let (run, _) = prepared
        .run(
            dir.path(),
            "python3 -c 'import attrs; print(\"attrs\", attrs.__version__)' && touch /deps/x",
            None,
        )
        .await
        .unwrap();
    assert!(run.output.contains("attrs 24.2.0"), "{}", run.output);
    assert!(
        run.output.contains("Read-only file system"),
        "{}",
        run.output
    );
    let run_pod = k.admitted_pods().last().unwrap().clone();
    assert_eq!(
        run_pod["volumes"][2]["persistentVolumeClaim"]["readOnly"],
        true
    );
    // The project's own CI, offline, on it.
    let (ci, _) = prepared
        .run(dir.path(), "python3 -m pytest -q 2>&1 | tail -3", None)
        .await
        .unwrap();
    assert!(ci.output.contains("passed"), "{}", ci.output);

    // The next preparation finds it.
    let (_, again) = sb.prepare(dir.path(), "o/r").await.unwrap();
    assert!(
        matches!(again, Outcome::Ready { ref cache, .. } if cache.hit),
        "{again:?}"
    );

    // Pruned past its age: the claim and its pointer go.
    assert_eq!(sb.prune_deps(None, Duration::ZERO, 0).await.unwrap(), 1);
    rbac_allows(&k.calls());
    // The claim goes once the last pod using it has (the pvc-protection finalizer).
    all_gone(&k).await;
    assert_eq!(k.config_maps_and_claims(), (vec![], vec![]));
}
