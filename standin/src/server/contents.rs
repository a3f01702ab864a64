//! Repository contents: a file's raw bytes, the tarball (302 to the archive host).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

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

/// Recorded: octokit `get-content.json` with `Accept: …raw`: the file's bytes.
pub(super) async fn contents(
    State(inner): State<Arc<Inner>>,
    Path((_owner, _repo, path)): Path<(String, String, String)>,
) -> Response {
    match (path.as_str(), knobs(&inner).repo_config) {
        (".github/selfheal.yml", Some(text)) => {
            ([("content-type", "application/vnd.github.raw")], text).into_response()
        }
        _ => github_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}
