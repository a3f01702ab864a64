//! `attach` and `exec` over WebSocket: the `v5.channel.k8s.io` (and `v4`) subprotocols, each
//! binary frame prefixed with its channel (0 stdin, 1 stdout, 2 stderr, 3 the closing Status;
//! in v5, `255 0` closes stdin).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::AttachContainerOptionsBuilder;
use futures::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::api::{container_of, container_state, forbidden, status};
use crate::Cluster;

const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// The query's parameters, repeated ones (`command`) in order.
fn params(uri: &Uri) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in uri.query().unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(decode(k)).or_default().push(decode(v));
    }
    out
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The Docker container behind a running pod container, or the API's refusal.
fn running_container(
    cluster: &Cluster,
    ns: &str,
    pod: &str,
    asked: Option<&String>,
    resource: &str,
) -> Result<String, Box<Response>> {
    if let Some(refused) = forbidden(cluster, ns, resource) {
        return Err(Box::new(refused));
    }
    let objects = cluster.objects.lock().unwrap();
    let Some(record) = objects.pods.get(pod) else {
        return Err(Box::new(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pods \"{pod}\" not found"),
        )));
    };
    let container = container_of(&record.pod, pod, asked)?;
    let running =
        matches!(container_state(&record.pod, &container), Some((s, _)) if s == "running");
    match record.containers.get(&container) {
        Some(docker) if running => Ok(docker.clone()),
        _ => Err(Box::new(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("unable to upgrade connection: container {container} not found in pod {pod} or not running"),
        ))),
    }
}

fn flag(params: &BTreeMap<String, Vec<String>>, key: &str) -> bool {
    params
        .get(key)
        .and_then(|v| v.first())
        .is_some_and(|v| v == "true" || v == "1")
}

pub(crate) async fn attach(
    State(cluster): State<Arc<Cluster>>,
    Path((ns, pod)): Path<(String, String)>,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let params = params(&uri);
    let asked = params.get("container").and_then(|v| v.first());
    let docker_name = match running_container(&cluster, &ns, &pod, asked, "pods/attach") {
        Ok(d) => d,
        Err(refused) => return *refused,
    };
    if !flag(&params, "stdin") && !flag(&params, "stdout") && !flag(&params, "stderr") {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least 1 of stdin, stdout, stderr",
        );
    }
    ws.protocols(PROTOCOLS)
        .on_upgrade(move |socket| attach_stdin(cluster, docker_name, socket))
}

async fn attach_stdin(cluster: Arc<Cluster>, docker_name: String, mut socket: WebSocket) {
    let v5 = socket.protocol().and_then(|p| p.to_str().ok()) == Some(PROTOCOLS[0]);
    let attached = cluster
        .docker
        .attach_container(
            &docker_name,
            Some(
                AttachContainerOptionsBuilder::default()
                    .stdin(true)
                    .stream(true)
                    .build(),
            ),
        )
        .await;
    let Ok(mut attached) = attached else {
        let _ = socket.send(Message::Close(None)).await;
        return;
    };
    while let Some(Ok(message)) = socket.recv().await {
        match message {
            Message::Binary(frame) if frame.first() == Some(&0) => {
                let written = attached.input.write_all(&frame[1..]).await;
                if written.is_err() {
                    break;
                }
            }
            Message::Binary(frame) if v5 && frame.as_ref() == [255, 0] => break,
            Message::Close(_) => break,
            _ => {}
        }
    }
    // The end of stdin: with stdinOnce the container's stdin closes too.
    let _ = attached.input.shutdown().await;
    drop(attached.input);
    while attached.output.next().await.is_some() {}
    let _ = socket.send(Message::Close(None)).await;
}

pub(crate) async fn exec(
    State(cluster): State<Arc<Cluster>>,
    Path((ns, pod)): Path<(String, String)>,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let params = params(&uri);
    let asked = params.get("container").and_then(|v| v.first());
    let docker_name = match running_container(&cluster, &ns, &pod, asked, "pods/exec") {
        Ok(d) => d,
        Err(refused) => return *refused,
    };
    let command = params.get("command").cloned().unwrap_or_default();
    if command.is_empty() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least one command for the container",
        );
    }
    let (stdout, stderr) = (flag(&params, "stdout"), flag(&params, "stderr"));
    ws.protocols(PROTOCOLS)
        .on_upgrade(move |socket| run_exec(cluster, docker_name, command, stdout, stderr, socket))
}

async fn run_exec(
    cluster: Arc<Cluster>,
    docker_name: String,
    command: Vec<String>,
    stdout: bool,
    stderr: bool,
    mut socket: WebSocket,
) {
    let made = cluster
        .docker
        .create_exec(
            &docker_name,
            CreateExecOptions {
                cmd: Some(command),
                attach_stdout: Some(stdout),
                attach_stderr: Some(stderr),
                ..Default::default()
            },
        )
        .await;
    let Ok(made) = made else {
        let _ = socket.send(Message::Close(None)).await;
        return;
    };
    if let Ok(StartExecResults::Attached { mut output, .. }) =
        cluster.docker.start_exec(&made.id, None).await
    {
        while let Some(Ok(chunk)) = output.next().await {
            let (channel, bytes) = match chunk {
                LogOutput::StdOut { message } => (1u8, message),
                LogOutput::StdErr { message } => (2u8, message),
                _ => continue,
            };
            let mut frame = Vec::with_capacity(bytes.len() + 1);
            frame.push(channel);
            frame.extend_from_slice(&bytes);
            if socket.send(Message::Binary(frame.into())).await.is_err() {
                return;
            }
        }
    }
    let code = cluster
        .docker
        .inspect_exec(&made.id)
        .await
        .ok()
        .and_then(|i| i.exit_code)
        .unwrap_or(-1);
    let outcome = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command, exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    };
    let mut frame = vec![3u8];
    frame.extend_from_slice(outcome.to_string().as_bytes());
    let _ = socket.send(Message::Binary(frame.into())).await;
    let _ = socket.send(Message::Close(None)).await;
}
