//! ConfigMaps and PersistentVolumeClaims (the dependency caches' objects): created, read,
//! listed and deleted as the API server does, each claim bound at once to a Docker volume, a
//! claim still in use kept by its pvc-protection finalizer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::api::{dns_label, forbidden, not_found, selected, status};
use crate::{kubelet, Cluster};

/// A DNS-1123 subdomain, the names of most objects.
fn dns_subdomain(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(dns_label)
}

fn object_created(kind: &str, name: &str, exists: bool) -> Option<Response> {
    if !dns_subdomain(name) {
        return Some(status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"),
        ));
    }
    exists.then(|| {
        status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{kind} \"{name}\" already exists"),
        )
    })
}

fn stamp(cluster: &Cluster, objects: &mut crate::Objects, object: &mut Value, ns: &str) {
    let _ = cluster;
    object["metadata"]["namespace"] = json!(ns);
    object["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    object["metadata"]["resourceVersion"] = json!(Cluster::next_version(objects));
    object["metadata"]["creationTimestamp"] =
        json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
}

fn list_of(kind: &str, items: Vec<Value>, version: u64) -> Response {
    Json(json!({"apiVersion": "v1", "kind": kind,
        "metadata": {"resourceVersion": version.to_string()}, "items": items}))
    .into_response()
}

fn deleted(kind: &str, name: &str, uid: &Value) -> Response {
    Json(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "kind": kind, "uid": uid}}),
    )
    .into_response()
}

pub(crate) async fn create_configmap(
    State(cluster): State<Arc<Cluster>>,
    Path(ns): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = forbidden(&cluster, &ns, "configmaps") {
        return refused;
    }
    let Ok(mut map) = serde_json::from_slice::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not a JSON object",
        );
    };
    let name = map["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut objects = cluster.objects.lock().unwrap();
    if let Some(refused) =
        object_created("configmaps", &name, objects.configmaps.contains_key(&name))
    {
        return refused;
    }
    let data_ok = map["data"].as_object().is_none_or(|d| {
        d.iter()
            .all(|(k, v)| v.is_string() && !k.is_empty() && k.len() <= 253)
    });
    if !data_ok {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("ConfigMap \"{name}\" is invalid: data"),
        );
    }
    stamp(&cluster, &mut objects, &mut map, &ns);
    objects.configmaps.insert(name, map.clone());
    (StatusCode::CREATED, Json(map)).into_response()
}

pub(crate) async fn get_configmap(
    State(cluster): State<Arc<Cluster>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = forbidden(&cluster, &ns, "configmaps") {
        return refused;
    }
    match cluster.objects.lock().unwrap().configmaps.get(&name) {
        Some(map) => Json(map.clone()).into_response(),
        None => not_found("configmaps", &name),
    }
}

pub(crate) async fn delete_configmap(
    State(cluster): State<Arc<Cluster>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = forbidden(&cluster, &ns, "configmaps") {
        return refused;
    }
    match cluster.objects.lock().unwrap().configmaps.remove(&name) {
        Some(map) => deleted("configmaps", &name, &map["metadata"]["uid"]),
        None => not_found("configmaps", &name),
    }
}

pub(crate) async fn list_configmaps(
    State(cluster): State<Arc<Cluster>>,
    Path(ns): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(refused) = forbidden(&cluster, &ns, "configmaps") {
        return refused;
    }
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    let objects = cluster.objects.lock().unwrap();
    let mut items = Vec::new();
    for map in objects.configmaps.values() {
        match selected(map, &selector) {
            Ok(true) => items.push(map.clone()),
            Ok(false) => {}
            Err(why) => return status(StatusCode::BAD_REQUEST, "BadRequest", why),
        }
    }
    list_of("ConfigMapList", items, objects.resource_version)
}

pub(crate) async fn create_claim(
    State(cluster): State<Arc<Cluster>>,
    Path(ns): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = forbidden(&cluster, &ns, "persistentvolumeclaims") {
        return refused;
    }
    let Ok(mut claim) = serde_json::from_slice::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not a JSON object",
        );
    };
    let name = claim["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let modes = claim["spec"]["accessModes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let known = [
        "ReadWriteOnce",
        "ReadOnlyMany",
        "ReadWriteMany",
        "ReadWriteOncePod",
    ];
    if modes.is_empty()
        || modes
            .iter()
            .any(|m| !known.contains(&m.as_str().unwrap_or_default()))
    {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", format!("PersistentVolumeClaim \"{name}\" is invalid: spec.accessModes: Required value: at least 1 access mode is required"));
    }
    if claim["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .is_none()
    {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", format!("PersistentVolumeClaim \"{name}\" is invalid: spec.resources[storage]: Required value"));
    }
    let volume = format!("kstandin-pvc-{name}-{}", &cluster.instance[..8]);
    {
        let mut objects = cluster.objects.lock().unwrap();
        if let Some(refused) = object_created(
            "persistentvolumeclaims",
            &name,
            objects.claims.contains_key(&name),
        ) {
            return refused;
        }
        stamp(&cluster, &mut objects, &mut claim, &ns);
        // The DefaultStorageClass admission plugin.
        if claim["spec"]["storageClassName"].is_null() {
            if let Some(default) = cluster.default_storage_class.lock().unwrap().clone() {
                claim["spec"]["storageClassName"] = json!(default);
            }
        }
        claim["spec"]["volumeName"] = json!(volume);
        claim["status"] = json!({"phase": "Bound", "accessModes": modes,
            "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]}});
        objects.claims.insert(name, claim.clone());
    }
    if let Err(e) = kubelet::create_volume(&cluster, &volume).await {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e);
    }
    (StatusCode::CREATED, Json(claim)).into_response()
}

pub(crate) async fn get_claim(
    State(cluster): State<Arc<Cluster>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = forbidden(&cluster, &ns, "persistentvolumeclaims") {
        return refused;
    }
    match cluster.objects.lock().unwrap().claims.get(&name) {
        Some(claim) => Json(claim.clone()).into_response(),
        None => not_found("persistentvolumeclaims", &name),
    }
}

pub(crate) async fn delete_claim(
    State(cluster): State<Arc<Cluster>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = forbidden(&cluster, &ns, "persistentvolumeclaims") {
        return refused;
    }
    let Some(claim) = cluster.objects.lock().unwrap().claims.get(&name).cloned() else {
        return not_found("persistentvolumeclaims", &name);
    };
    let volume = claim["spec"]["volumeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The pvc-protection finalizer: a claim a pod still uses is only marked for deletion.
    if kubelet::remove_volume(&cluster, &volume).await {
        cluster.objects.lock().unwrap().claims.remove(&name);
        Json(claim).into_response()
    } else {
        let mut objects = cluster.objects.lock().unwrap();
        let Some(claim) = objects.claims.get_mut(&name) else {
            return not_found("persistentvolumeclaims", &name);
        };
        claim["metadata"]["deletionTimestamp"] =
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        claim["metadata"]["finalizers"] = json!(["kubernetes.io/pvc-protection"]);
        Json(claim.clone()).into_response()
    }
}

pub(crate) async fn list_claims(
    State(cluster): State<Arc<Cluster>>,
    Path(ns): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(refused) = forbidden(&cluster, &ns, "persistentvolumeclaims") {
        return refused;
    }
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    let objects = cluster.objects.lock().unwrap();
    let mut items = Vec::new();
    for claim in objects.claims.values() {
        match selected(claim, &selector) {
            Ok(true) => items.push(claim.clone()),
            Ok(false) => {}
            Err(why) => return status(StatusCode::BAD_REQUEST, "BadRequest", why),
        }
    }
    list_of("PersistentVolumeClaimList", items, objects.resource_version)
}
