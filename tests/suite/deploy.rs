//! deploy/kubernetes checked against selfheal itself (scripts/check-deploy.sh checks it against
//! Kubernetes' schemas): what the manifests give web and workers is what selfheal reads, the
//! probes answer, the queue KEDA watches is the one the workers fill, and its Postgres query
//! counts a waiting run on a migrated database.

use crate::support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use selfheal_shared::config::Role;
use selfheal_shared::Config;
use serde_json::Value;
use support::*;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Every document of one manifest file, as JSON.
fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join(file)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml_ng::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// One of the example Secrets, by name.
fn secret(name: &str) -> Value {
    documents("secret.example.yaml")
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Secret {name}"))
}

fn strings(v: &Value) -> HashMap<String, String> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// The environment as selfheal loads it here: the mounted App key's path (checked against
/// the mount by each test) replaced by a real key's.
fn loadable(mut env: HashMap<String, String>) -> HashMap<String, String> {
    let key = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("standin/demo-app-key.pem");
    env.insert("GITHUB_APP_PRIVATE_KEY".into(), key.display().to_string());
    env
}

/// What a container of `deployment` sees as its environment: the ConfigMap, the example
/// Secrets it takes whole (the app's when it names none), then its own `env`.
fn environment(container: &Value) -> HashMap<String, String> {
    let mut env = strings(&documents("config.yaml")[0]["data"]);
    let mut secrets: Vec<&str> = container["envFrom"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["secretRef"]["name"].as_str())
        .collect();
    if secrets.is_empty() {
        secrets.push("selfheal");
    }
    for name in secrets {
        env.extend(strings(&secret(name)["stringData"]));
    }
    for e in container["env"].as_array().into_iter().flatten() {
        env.insert(
            e["name"].as_str().unwrap().into(),
            e["value"].as_str().unwrap_or_default().into(),
        );
    }
    env
}

fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn mount_of<'a>(container: &'a Value, volume: &str) -> &'a str {
    container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume)
        .unwrap_or_else(|| panic!("{} does not mount {volume}", container["name"]))["mountPath"]
        .as_str()
        .unwrap()
}

#[test]
fn each_reader_gets_only_its_own_secret() {
    // Web and workers take the app's Secret whole; the schema owner's login is not in it.
    let app = strings(&secret("selfheal")["stringData"]);
    let owner = &secret("selfheal-migrate")["stringData"]["DATABASE_URL"];
    assert!(
        app.values().all(|v| v != owner),
        "the app Secret holds the owner's URL"
    );
    // The dashboard's client secret and session key are web's alone.
    let dashboard = strings(&secret("selfheal-web")["stringData"]);
    assert!(dashboard.keys().all(|k| !app.contains_key(k)));
    for (file, name, expected) in [
        ("web.yaml", "web", vec!["selfheal", "selfheal-web"]),
        ("worker.yaml", "worker", vec!["selfheal"]),
    ] {
        let docs = documents(file);
        let refs: Vec<&str> = container(kind(&docs, "Deployment"), name)["envFrom"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["secretRef"]["name"].as_str())
            .collect();
        assert_eq!(refs, expected, "{file}");
    }
    let job = &documents("migrate-job.yaml")[0];
    let env = &job["spec"]["template"]["spec"]["containers"][0]["env"][0];
    assert_eq!(env["name"], "DATABASE_URL");
    assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], "selfheal-migrate");
}

#[test]
fn the_kustomization_lists_every_manifest_but_the_example_secret() {
    let listed: Vec<String> = documents("kustomization.yaml")[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml" && f != "secret.example.yaml")
        .collect();
    files.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, files);
}

#[tokio::test]
async fn web_is_given_what_it_reads_and_its_probes_answer() {
    let docs = documents("web.yaml");
    let deployment = kind(&docs, "Deployment");
    let web = container(deployment, "web");
    let env = environment(web);
    let loaded = loadable(env.clone());
    let config = Config::from_lookup(Role::Web, |k| loaded.get(k).cloned())
        .unwrap_or_else(|e| panic!("web refuses its manifest's environment: {e}"));
    // With the dashboard's Secret, people sign in through the provider it names.
    let oidc = config
        .oidc
        .as_ref()
        .expect("the dashboard's Secret configures sign-in");
    assert_eq!(oidc.issuer, env["OIDC_PROVIDER_URL"]);
    assert_eq!(oidc.audience, env["SELFHEAL_OIDC_AUDIENCE"]);
    assert_eq!(
        u64::from(config.bind.port()),
        web["ports"][0]["containerPort"].as_u64().unwrap()
    );
    // The App's key is where the Secret is mounted, under the name the item gives it.
    let key = PathBuf::from(&env["GITHUB_APP_PRIVATE_KEY"]);
    assert_eq!(
        key.parent().unwrap().to_str().unwrap(),
        mount_of(web, "app-key")
    );
    let items = &deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["items"][0];
    assert_eq!(items["path"].as_str(), key.file_name().unwrap().to_str());
    assert_eq!(items["key"], "github-app-key.pem");

    // The probes' paths answer 200 on a running web.
    let test = TestEnv::new().await;
    let app = test.spawn_web().await;
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = web[probe]["httpGet"]["path"].as_str().unwrap();
        let status = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{probe} {path}");
    }
}

#[test]
fn the_worker_reaches_its_own_docker_engine_and_outlives_its_jobs() {
    let docs = documents("worker.yaml");
    let deployment = kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let worker = container(deployment, "worker");
    let env = environment(worker);
    assert_eq!(
        PathBuf::from(&env["GITHUB_APP_PRIVATE_KEY"])
            .parent()
            .unwrap()
            .to_str()
            .unwrap(),
        mount_of(worker, "app-key")
    );
    let loaded = loadable(env.clone());
    let config = Config::from_lookup(Role::Worker, |k| loaded.get(k).cloned())
        .unwrap_or_else(|e| panic!("the worker refuses its manifest's environment: {e}"));
    assert!(
        config.worker.sandbox_image.is_some(),
        "an empty engine needs an image it can pull"
    );
    // Docker as a native sidecar: an init container that keeps running, stopped after the
    // worker.
    let sidecar = &pod["initContainers"][0];
    assert_eq!(sidecar["restartPolicy"], "Always");
    let hosts: Vec<&str> = sidecar["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix("--host="))
        .collect();
    assert_eq!(hosts.len(), 1, "one listener, the socket: {hosts:?}");
    assert_eq!(env["DOCKER_HOST"], hosts[0]);
    let socket = hosts[0].strip_prefix("unix://").expect("a unix socket");
    let shared = mount_of(sidecar, "dind-socket");
    assert!(socket.starts_with(&format!("{shared}/")));
    assert_eq!(
        mount_of(worker, "dind-socket"),
        shared,
        "one volume, both sides"
    );
    assert_eq!(
        sidecar["securityContext"]["privileged"], true,
        "the engine is privileged..."
    );
    assert_ne!(
        worker["securityContext"]["privileged"], true,
        "...the worker is not"
    );
    // A read-only root with a writable /tmp (checkouts, tarballs).
    assert_eq!(worker["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(mount_of(worker, "tmp"), "/tmp");
    // Grace for the jobs in flight (the shutdown timeout) and for the sidecar after them.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > 2 * config.worker.shutdown_timeout.as_secs(),
        "grace {grace} s for a shutdown timeout of {:?}",
        config.worker.shutdown_timeout
    );
}

#[test]
fn prometheus_scrapes_the_ports_the_processes_serve_metrics_on() {
    let policies = documents("networkpolicy.yaml");
    for (file, name, role) in [
        ("web.yaml", "web", Role::Web),
        ("worker.yaml", "worker", Role::Worker),
    ] {
        let docs = documents(file);
        let deployment = kind(&docs, "Deployment");
        let process = container(deployment, name);
        let loaded = loadable(environment(process));
        let config = Config::from_lookup(role, |k| loaded.get(k).cloned()).unwrap();
        let bind = config
            .metrics_bind
            .unwrap_or_else(|| panic!("{name} serves its metrics apart"));
        assert_ne!(
            bind.port(),
            config.bind.port(),
            "{name}: not the public port"
        );
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}");
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{name}");
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some(bind.port().to_string().as_str()),
            "{name}"
        );
        let port = process["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "metrics")
            .unwrap_or_else(|| panic!("{name}: a metrics port"));
        assert_eq!(port["containerPort"].as_u64(), Some(u64::from(bind.port())));
        // The metrics port takes the monitoring namespace only.
        let policy = policies
            .iter()
            .find(|p| p["metadata"]["name"] == format!("selfheal-{name}").as_str())
            .unwrap();
        let ingress = policy["spec"]["ingress"].as_array().unwrap();
        let rules: Vec<&Value> = ingress
            .iter()
            .filter(|rule| {
                rule["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["port"].as_u64() == Some(u64::from(bind.port())))
            })
            .collect();
        assert_eq!(rules.len(), 1, "{name}: {ingress:?}");
        assert_eq!(
            rules[0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "monitoring",
            "{name}"
        );
        assert_eq!(rules[0]["from"].as_array().map(Vec::len), Some(1), "{name}");
    }
}

#[tokio::test]
async fn keda_watches_the_queue_the_workers_fill_and_the_runs_postgres_says_wait() {
    let docs = documents("keda-scaledobject.yaml");
    let scaled = kind(&docs, "ScaledObject");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"],
        kind(&documents("worker.yaml"), "Deployment")["metadata"]["name"]
    );
    let triggers = scaled["spec"]["triggers"].as_array().unwrap();
    let redis = triggers.iter().find(|t| t["type"] == "redis").unwrap();
    let env = environment(&Value::Null);
    let prefix = env
        .get("SELFHEAL_QUEUE_PREFIX")
        .cloned()
        .unwrap_or_else(|| "selfheal".into());
    let queue = selfheal_shared::queue::storage_config(&prefix, Duration::from_secs(30), 3);
    assert_eq!(redis["metadata"]["listName"], queue.active_jobs_list());
    // Every key the TriggerAuthentication names is in the Secret it names.
    let auth = kind(&docs, "TriggerAuthentication");
    for t in triggers {
        assert_eq!(t["authenticationRef"]["name"], auth["metadata"]["name"]);
    }
    for r in auth["spec"]["secretTargetRef"].as_array().unwrap() {
        let held = strings(&secret(r["name"].as_str().unwrap())["stringData"]);
        assert!(held.contains_key(r["key"].as_str().unwrap()), "{r}");
    }

    // The Postgres trigger's query, on a migrated database: a run waiting for a worker counts.
    let postgres = triggers.iter().find(|t| t["type"] == "postgresql").unwrap();
    let query = postgres["metadata"]["query"].as_str().unwrap();
    let test = TestEnv::new().await;
    let app = test.spawn_web().await;
    let db = test.db().await;
    test.wait_until(
        "SELECT to_regclass('runs') IS NOT NULL",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(db.query_one(query, &[]).await.unwrap().get::<_, i64>(0), 0);
    let (status, body) = app
        .deliver("workflow_run", &test.failing_run(1, &now()))
        .await;
    assert_eq!(status, 202);
    // Waiting for admission, then as a run waiting for its stages: one either way.
    assert_eq!(db.query_one(query, &[]).await.unwrap().get::<_, i64>(0), 1);
    test.admit(&body).await;
    assert_eq!(db.query_one(query, &[]).await.unwrap().get::<_, i64>(0), 1);
}
