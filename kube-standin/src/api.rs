//! The API server's routes: authentication, namespaces, Jobs, pods and their logs.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::{kubelet, storage, stream, Cluster, PodRecord};

/// A `Status` object, the API's shape for every refusal.
pub(crate) fn status(code: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message.into(), "reason": reason, "code": code.as_u16(),
    });
    (code, Json(body)).into_response()
}

pub(crate) fn router(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .route("/apis/batch/v1/namespaces/{ns}/jobs", post(create_job))
        .route(
            "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
            delete(delete_job),
        )
        .route(
            "/api/v1/namespaces/{ns}/configmaps",
            get(storage::list_configmaps).post(storage::create_configmap),
        )
        .route(
            "/api/v1/namespaces/{ns}/configmaps/{name}",
            get(storage::get_configmap).delete(storage::delete_configmap),
        )
        .route(
            "/api/v1/namespaces/{ns}/persistentvolumeclaims",
            get(storage::list_claims).post(storage::create_claim),
        )
        .route(
            "/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}",
            get(storage::get_claim).delete(storage::delete_claim),
        )
        .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
        .route("/api/v1/namespaces/{ns}/pods/{name}", get(get_pod))
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/attach",
            get(stream::attach).post(stream::attach),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/exec",
            get(stream::exec).post(stream::exec),
        )
        .fallback(|| async {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
        .method_not_allowed_fallback(|| async {
            status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        })
        .layer(from_fn_with_state(cluster.clone(), authenticate))
        .with_state(cluster)
}

async fn authenticate(
    State(cluster): State<Arc<Cluster>>,
    request: Request,
    next: Next,
) -> Response {
    let call = format!("{} {}", request.method(), request.uri().path());
    cluster.objects.lock().unwrap().calls.push(call);
    let expected = format!("Bearer {}", cluster.token);
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    if given != Some(expected.as_str()) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    next.run(request).await
}

/// RBAC: the service account may use its own namespace only.
pub(crate) fn forbidden(cluster: &Cluster, ns: &str, resource: &str) -> Option<Response> {
    (ns != cluster.namespace).then(|| {
        status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{resource} is forbidden: User \"system:serviceaccount:{}:selfheal-worker\" cannot access {resource} in the namespace \"{ns}\"",
                cluster.namespace
            ),
        )
    })
}

pub(crate) fn not_found(kind: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{kind} \"{name}\" not found"),
    )
}

pub(crate) fn dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// What the API server's validation says of a Job (the fields this stand-in understands).
fn invalid(job: &Value) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    let name = job["metadata"]["name"].as_str().unwrap_or_default();
    if !dns_label(name) {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
        ));
    }
    let pod = &job["spec"]["template"]["spec"];
    match pod["restartPolicy"].as_str() {
        Some("Never") | Some("OnFailure") => {}
        other => causes.push((
            "spec.template.spec.restartPolicy".into(),
            format!("Unsupported value: {other:?}: supported values: \"OnFailure\", \"Never\""),
        )),
    }
    let containers = pod["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.push((
            "spec.template.spec.containers".into(),
            "Required value".into(),
        ));
    }
    let volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let init = pod["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut seen = Vec::new();
    for (i, c) in init.iter().chain(&containers).enumerate() {
        let cname = c["name"].as_str().unwrap_or_default();
        if !dns_label(cname) || seen.contains(&cname) {
            causes.push((
                format!("containers[{i}].name"),
                format!("Invalid value: \"{cname}\""),
            ));
        }
        seen.push(cname);
        if c["image"].as_str().unwrap_or_default().is_empty() {
            causes.push((format!("containers[{i}].image"), "Required value".into()));
        }
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let v = m["name"].as_str().unwrap_or_default();
            if !volumes.contains(&v) {
                causes.push((
                    format!("containers[{i}].volumeMounts.name"),
                    format!("Not found: \"{v}\""),
                ));
            }
        }
    }
    causes
}

/// Whether a container's security context drops every capability.
pub(crate) fn drops_all(sc: &Value) -> bool {
    sc["capabilities"]["drop"]
        .as_array()
        .is_some_and(|d| d.contains(&json!("ALL")))
}

/// What the `restricted` Pod Security profile refuses in a pod spec (the checks that apply to
/// the fields a sandbox pod sets).
fn violates_restricted(pod: &Value) -> Option<String> {
    let pod_sc = &pod["securityContext"];
    let mut all = pod["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    all.extend(pod["containers"].as_array().cloned().unwrap_or_default());
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host] == json!(true) {
            return Some(format!("host namespaces ({host}=true)"));
        }
    }
    if pod_sc["runAsUser"] == json!(0) {
        return Some("runAsUser=0 (pod)".into());
    }
    for c in &all {
        let sc = &c["securityContext"];
        let name = c["name"].as_str().unwrap_or_default();
        if sc["runAsUser"] == json!(0) {
            return Some(format!("runAsUser=0 (container \"{name}\")"));
        }
        if sc["runAsNonRoot"] == json!(false) {
            return Some(format!("runAsNonRoot != true (container \"{name}\")"));
        }
        let added = sc["capabilities"]["add"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if added.iter().any(|cap| cap != "NET_BIND_SERVICE") {
            return Some(format!("unrestricted capabilities (container \"{name}\")"));
        }
        if c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p.get("hostPort").is_some())
        {
            return Some(format!("hostPort (container \"{name}\")"));
        }
        if sc["allowPrivilegeEscalation"] != json!(false) {
            return Some(format!(
                "allowPrivilegeEscalation != false (container \"{name}\")"
            ));
        }
        if !drops_all(sc) {
            return Some(format!("unrestricted capabilities (container \"{name}\")"));
        }
        if sc["runAsNonRoot"] != json!(true) && pod_sc["runAsNonRoot"] != json!(true) {
            return Some(format!("runAsNonRoot != true (container \"{name}\")"));
        }
        let seccomp = sc["seccompProfile"]["type"]
            .as_str()
            .or(pod_sc["seccompProfile"]["type"].as_str());
        if !matches!(seccomp, Some("RuntimeDefault") | Some("Localhost")) {
            return Some(format!("seccompProfile (container \"{name}\")"));
        }
        if sc["privileged"] == json!(true) {
            return Some(format!("privileged (container \"{name}\")"));
        }
    }
    const ALLOWED: [&str; 9] = [
        "name",
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for v in pod["volumes"].as_array().into_iter().flatten() {
        if let Some(kind) = v
            .as_object()
            .and_then(|o| o.keys().find(|k| !ALLOWED.contains(&k.as_str())))
        {
            return Some(format!("restricted volume types ({kind})"));
        }
    }
    None
}

async fn create_job(
    State(cluster): State<Arc<Cluster>>,
    Path(ns): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = forbidden(&cluster, &ns, "jobs.batch") {
        return refused;
    }
    let Ok(mut job) = serde_json::from_slice::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not a JSON object",
        );
    };
    if job["kind"] != "Job" || job["apiVersion"] != "batch/v1" {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the API version in the data (?) does not match the expected API version (batch/v1)",
        );
    }
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let causes = invalid(&job);
    if !causes.is_empty() {
        let details: Vec<Value> = causes
            .iter()
            .map(|(field, message)| json!({"reason": "FieldValueInvalid", "field": field, "message": message}))
            .collect();
        let refused = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("Job.batch \"{name}\" is invalid: {}", causes.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join(", ")),
            "reason": "Invalid", "code": 422,
            "details": {"name": name, "group": "batch", "kind": "Job", "causes": details},
        });
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(refused)).into_response();
    }
    let uid = uuid::Uuid::new_v4().to_string();
    let pod_name = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..5]);
    let template = job["spec"]["template"].clone();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    {
        let mut objects = cluster.objects.lock().unwrap();
        if objects.jobs.contains_key(&name) {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("jobs.batch \"{name}\" already exists"),
            );
        }
        let version = Cluster::next_version(&mut objects);
        job["metadata"]["namespace"] = json!(ns);
        job["metadata"]["uid"] = json!(uid);
        job["metadata"]["resourceVersion"] = json!(version);
        job["metadata"]["creationTimestamp"] = json!(now);
        job["status"] = json!({"active": 0});
        objects.jobs.insert(name.clone(), job.clone());
    }
    // The Job controller makes the pod unless admission refuses it; refused, it stays away.
    let pod_spec = template["spec"].clone();
    // Admission: the RuntimeClass must exist, and the namespace enforces `restricted`.
    let runtime_known = match pod_spec["runtimeClassName"].as_str() {
        Some(class) => cluster.runtime_classes.iter().any(|r| r == class),
        None => true,
    };
    if runtime_known && violates_restricted(&pod_spec).is_none() {
        cluster
            .objects
            .lock()
            .unwrap()
            .admitted
            .push(pod_spec.clone());
        let mut labels = template["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for key in ["batch.kubernetes.io/job-name", "job-name"] {
            labels.insert(key.into(), json!(name));
        }
        labels.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": ns, "labels": labels,
                "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": true}]},
            "spec": pod_spec,
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True"}]},
        });
        let deadline = job["spec"]["activeDeadlineSeconds"].as_u64();
        if let Some(secs) = deadline {
            tokio::spawn(job_deadline(cluster.clone(), name.clone(), secs));
        }
        {
            let mut objects = cluster.objects.lock().unwrap();
            let version = Cluster::next_version(&mut objects);
            let mut pod = pod;
            pod["metadata"]["resourceVersion"] = json!(version);
            objects.pods.insert(
                pod_name.clone(),
                PodRecord {
                    pod,
                    job: name.clone(),
                    containers: BTreeMap::new(),
                    volumes: Vec::new(),
                    kubelet: None,
                },
            );
            if let Some(job) = objects.jobs.get_mut(&name) {
                job["status"]["active"] = json!(1);
            }
        }
        let task = tokio::spawn(kubelet::run_pod(cluster.clone(), pod_name.clone()));
        if let Some(record) = cluster.objects.lock().unwrap().pods.get_mut(&pod_name) {
            record.kubelet = Some(task.abort_handle());
        }
    }
    (StatusCode::CREATED, Json(job)).into_response()
}

/// The Job controller past `activeDeadlineSeconds`: the Job fails with `DeadlineExceeded` and
/// its pods are deleted.
async fn job_deadline(cluster: Arc<Cluster>, name: String, secs: u64) {
    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
    let pods: Vec<String> = {
        let mut objects = cluster.objects.lock().unwrap();
        let Some(job) = objects.jobs.get_mut(&name) else {
            return;
        };
        job["status"]["active"] = json!(0);
        job["status"]["failed"] = json!(1);
        job["status"]["conditions"] = json!([{"type": "Failed", "status": "True",
            "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]);
        objects
            .pods
            .iter()
            .filter(|(_, p)| p.job == name)
            .map(|(n, _)| n.clone())
            .collect()
    };
    for pod in pods {
        kubelet::remove_pod(&cluster, &pod).await;
    }
}

/// `propagationPolicy` from the query or the DeleteOptions body; a Job's default is `Orphan`
/// (batch/v1 keeps it for compatibility): its pods stay and keep running.
fn propagation(query: &BTreeMap<String, String>, body: &[u8]) -> Result<String, String> {
    let from_body = if body.is_empty() {
        None
    } else {
        let options: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        options["propagationPolicy"].as_str().map(str::to_string)
    };
    let policy = query
        .get("propagationPolicy")
        .cloned()
        .or(from_body)
        .unwrap_or_else(|| "Orphan".into());
    match policy.as_str() {
        "Orphan" | "Background" | "Foreground" => Ok(policy),
        other => Err(format!("Unsupported value: \"{other}\": supported values: \"Orphan\", \"Background\", \"Foreground\"")),
    }
}

async fn delete_job(
    State(cluster): State<Arc<Cluster>>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = forbidden(&cluster, &ns, "jobs.batch") {
        return refused;
    }
    let policy = match propagation(&query, &body) {
        Ok(p) => p,
        Err(why) => return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", why),
    };
    let (job, pods) = {
        let mut objects = cluster.objects.lock().unwrap();
        let Some(job) = objects.jobs.remove(&name) else {
            return not_found("jobs.batch", &name);
        };
        let pods: Vec<String> = objects
            .pods
            .iter()
            .filter(|(_, p)| p.job == name)
            .map(|(n, _)| n.clone())
            .collect();
        (job, pods)
    };
    if policy == "Orphan" {
        // The pods lose their owner and run on.
        let mut objects = cluster.objects.lock().unwrap();
        for pod in &pods {
            if let Some(record) = objects.pods.get_mut(pod) {
                record.pod["metadata"]["ownerReferences"] = json!([]);
                record.job = String::new();
            }
        }
        return Json(job).into_response();
    }
    // The garbage collector removes the pods after the answer.
    let cluster = cluster.clone();
    tokio::spawn(async move {
        for pod in pods {
            kubelet::remove_pod(&cluster, &pod).await;
        }
    });
    Json(job).into_response()
}

/// Equality-based label selectors (`a=b,c==d`), the kind a Job's pods are found with.
pub(crate) fn selected(pod: &Value, selector: &str) -> Result<bool, String> {
    for term in selector.split(',').filter(|t| !t.is_empty()) {
        let (key, value) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .ok_or_else(|| format!("unable to parse requirement: {term}"))?;
        if key.contains('!') || key.contains(' ') {
            return Err(format!("unable to parse requirement: {term}"));
        }
        if pod["metadata"]["labels"][key] != json!(value) {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn list_pods(
    State(cluster): State<Arc<Cluster>>,
    Path(ns): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(refused) = forbidden(&cluster, &ns, "pods") {
        return refused;
    }
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    let objects = cluster.objects.lock().unwrap();
    let mut items = Vec::new();
    for record in objects.pods.values() {
        match selected(&record.pod, &selector) {
            Ok(true) => items.push(record.pod.clone()),
            Ok(false) => {}
            Err(why) => return status(StatusCode::BAD_REQUEST, "BadRequest", why),
        }
    }
    Json(json!({"apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": objects.resource_version.to_string()}, "items": items}))
    .into_response()
}

async fn get_pod(
    State(cluster): State<Arc<Cluster>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = forbidden(&cluster, &ns, "pods") {
        return refused;
    }
    match cluster.objects.lock().unwrap().pods.get(&name) {
        Some(record) => Json(record.pod.clone()).into_response(),
        None => not_found("pods", &name),
    }
}

/// Which container of `pod` a log, attach or exec names, as the API resolves it: a pod of
/// several containers needs the name; an unknown one is a bad request.
pub(crate) fn container_of(
    pod: &Value,
    name: &str,
    asked: Option<&String>,
) -> Result<String, Box<Response>> {
    let spec = &pod["spec"];
    let mut all: Vec<String> = Vec::new();
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            all.extend(c["name"].as_str().map(str::to_string));
        }
    }
    match asked {
        Some(c) if all.contains(c) => Ok(c.clone()),
        Some(c) => Err(Box::new(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("container {c} is not valid for pod {name}"),
        ))),
        None if spec["containers"].as_array().map_or(0, Vec::len) == 1 => Ok(spec["containers"][0]
            ["name"]
            .as_str()
            .unwrap_or_default()
            .into()),
        None => Err(Box::new(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("a container name must be specified for pod {name}, choose one of: {all:?}"),
        ))),
    }
}

/// The state of one container in the pod's status (`running`, `terminated`, `waiting`, or
/// nothing yet).
pub(crate) fn container_state(pod: &Value, container: &str) -> Option<(String, Value)> {
    for list in ["initContainerStatuses", "containerStatuses"] {
        for c in pod["status"][list].as_array().into_iter().flatten() {
            if c["name"] == container {
                let state = c["state"].as_object()?;
                let (k, v) = state.iter().next()?;
                return Some((k.clone(), v.clone()));
            }
        }
    }
    None
}

async fn pod_log(
    State(cluster): State<Arc<Cluster>>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(refused) = forbidden(&cluster, &ns, "pods/log") {
        return refused;
    }
    let (pod, docker_name) = {
        let objects = cluster.objects.lock().unwrap();
        let Some(record) = objects.pods.get(&name) else {
            return not_found("pods", &name);
        };
        let container = match container_of(&record.pod, &name, query.get("container")) {
            Ok(c) => c,
            Err(refused) => return *refused,
        };
        (
            record.pod.clone(),
            record.containers.get(&container).cloned().ok_or(container),
        )
    };
    let docker_name = match docker_name {
        Ok(d) => d,
        Err(container) => {
            let why = container_state(&pod, &container)
                .and_then(|(_, s)| s["reason"].as_str().map(str::to_string))
                .unwrap_or_else(|| "PodInitializing".into());
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("container \"{container}\" in pod \"{name}\" is waiting to start: {why}"),
            );
        }
    };
    let text = kubelet::logs(&cluster.docker, &docker_name).await;
    ([(header::CONTENT_TYPE, "text/plain")], text).into_response()
}
