//! Repository contents: a file's raw bytes, the tarball (302 to the archive host).

use std::sync::Arc;

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::json;

use super::{github_error, knobs, Inner};

/// GitHub answers 302 to the archive host (its documented response).
pub(super) async fn tarball_redirect(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, git_ref)): Path<(String, String, String)>,
) -> Response {
    let location = format!(
        "{}/_standin/codeload/{owner}/{repo}/{git_ref}",
        inner.base_url
    );
    (StatusCode::FOUND, [("location", location)]).into_response()
}

/// A gzipped tarball with one top-level directory `<owner>-<repo>-<sha7>/`, as GitHub's:
/// `git archive` of the stand-in's repository at the ref, or a directory set by a knob.
pub(super) async fn tarball(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, git_ref)): Path<(String, String, String)>,
) -> Response {
    let short: String = git_ref.chars().take(7).collect();
    let top = format!("{owner}-{repo}-{short}");
    let archive = match knobs(&inner).repo_dir.map(std::path::PathBuf::from) {
        Some(dir) => {
            let build = || -> std::io::Result<Vec<u8>> {
                let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                let mut builder = tar::Builder::new(gz);
                builder.append_dir_all(&top, &dir)?;
                builder.into_inner()?.finish()
            };
            build().map_err(|e| e.to_string())
        }
        None => match inner.git.rev_parse(&format!("{git_ref}^{{commit}}")) {
            Some(sha) => inner.git.archive(&sha, &top).map_err(|e| e.to_string()),
            None => return github_error(StatusCode::NOT_FOUND, "Not Found"),
        },
    };
    match archive {
        Ok(bytes) => ([("content-type", "application/x-gzip")], bytes).into_response(),
        Err(e) => github_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("stand-in archive: {e}"),
        ),
    }
}

/// `GET /repos/{o}/{r}/contents/{path}[?ref=]`, as GitHub answers it: a file's bytes with
/// `Accept: application/vnd.github.raw+json`, else its JSON (content in base64); a directory's
/// entries as a JSON array whatever the Accept; 404 for a path or a ref that does not exist.
/// From the knob's directory when one is set, else from the repository at the ref.
pub(super) async fn contents(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, path)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let knobs = knobs(&inner);
    if let (".github/selfheal.yml", Some(text)) = (path.as_str(), knobs.repo_config) {
        return ([("content-type", "application/vnd.github.raw")], text).into_response();
    }
    let path = path.trim_end_matches('/').to_string();
    if path
        .split('/')
        .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let raw = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("vnd.github.raw"));
    let found = match knobs.repo_dir {
        Some(dir) => from_dir(std::path::Path::new(&dir), &path),
        None => {
            let git_ref = query.get("ref").map_or("HEAD", String::as_str);
            let Some(sha) = inner.git.rev_parse(&format!("{git_ref}^{{commit}}")) else {
                return github_error(
                    StatusCode::NOT_FOUND,
                    &format!("No commit found for the ref {git_ref}"),
                );
            };
            from_git(&inner.git, &sha, &path)
        }
    };
    match found {
        None => github_error(StatusCode::NOT_FOUND, "Not Found"),
        Some(Found::File(bytes)) if raw => {
            ([("content-type", "application/vnd.github.raw")], bytes).into_response()
        }
        Some(Found::File(bytes)) => Json(json!({
            "type": "file", "encoding": "base64", "size": bytes.len(),
            "name": path.rsplit('/').next().unwrap_or(&path), "path": path,
            "content": base64::engine::general_purpose::STANDARD.encode(&bytes),
        }))
        .into_response(),
        Some(Found::Dir(entries)) => Json(
            entries
                .into_iter()
                .map(|(name, kind, size)| {
                    json!({"type": kind, "name": name, "path": format!("{path}/{name}"), "size": size})
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
    }
}

enum Found {
    File(Vec<u8>),
    /// (name, `file` or `dir`, size), sorted by name.
    Dir(Vec<(String, &'static str, u64)>),
}

fn from_dir(root: &std::path::Path, path: &str) -> Option<Found> {
    let full = root.join(path);
    let meta = std::fs::symlink_metadata(&full).ok()?;
    if meta.is_file() {
        return std::fs::read(&full).ok().map(Found::File);
    }
    if !meta.is_dir() {
        return None;
    }
    let mut entries: Vec<(String, &'static str, u64)> = std::fs::read_dir(&full)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            // As GitHub lists them: a link is a `symlink`, never its target's type.
            let m = std::fs::symlink_metadata(e.path()).ok()?;
            let kind = if m.is_symlink() {
                "symlink"
            } else if m.is_dir() {
                "dir"
            } else {
                "file"
            };
            Some((
                e.file_name().to_string_lossy().into_owned(),
                kind,
                if m.is_dir() { 0 } else { m.len() },
            ))
        })
        .collect();
    entries.sort();
    Some(Found::Dir(entries))
}

fn from_git(git: &crate::git::GitRepo, sha: &str, path: &str) -> Option<Found> {
    // `<mode> <type> <object> <size>\t<name>`
    let entry = git.git(&["ls-tree", "-l", sha, "--", path], None).ok()?;
    let (meta, _) = entry.lines().next()?.split_once('\t')?;
    let fields: Vec<&str> = meta.split_whitespace().collect();
    match fields.as_slice() {
        [_, "blob", object, _] => git
            .git_untrimmed(&["cat-file", "blob", object])
            .ok()
            .map(|t| Found::File(t.into_bytes())),
        [_, "tree", ..] => {
            let listing = git
                .git(&["ls-tree", "-l", &format!("{sha}:{path}")], None)
                .ok()?;
            let mut entries: Vec<(String, &'static str, u64)> = listing
                .lines()
                .filter_map(|l| {
                    let (meta, name) = l.split_once('\t')?;
                    let f: Vec<&str> = meta.split_whitespace().collect();
                    let kind = match (f.first().copied(), f.get(1).copied()) {
                        (_, Some("tree")) => "dir",
                        (Some("120000"), _) => "symlink",
                        (_, Some("commit")) => "submodule",
                        _ => "file",
                    };
                    Some((name.to_string(), kind, f.get(3)?.parse().unwrap_or(0)))
                })
                .collect();
            entries.sort();
            Some(Found::Dir(entries))
        }
        _ => None,
    }
}
