//! Downloads GitHub answers with a redirect to a pre-signed URL (job logs, tarballs): the
//! URL is fetched without credentials and its body streamed to the caller.

use selfheal_shared::github::GitHubError;
use selfheal_shared::github::Installation;

use super::StageError;
use crate::WorkerContext;

pub async fn download(
    ctx: &WorkerContext,
    crab: &Installation,
    path: String,
    what: &str,
    mut sink: impl FnMut(&[u8]) -> Result<(), StageError>,
) -> Result<(), StageError> {
    // A relative path: octocrab only sends credentials to its own base URL.
    let response = crab._get(path).await.map_err(|e| match status_of(&e) {
        Some(status @ (404 | 410)) => StageError::Gone {
            status,
            what: what.to_string(),
        },
        _ => api_error(e, what),
    })?;
    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| StageError::Transient(format!("{what}: redirect without a Location")))?
            .to_string();
        let mut response = ctx
            .github
            .http()
            .get(&location)
            .send()
            .await
            // The URL is pre-signed: it is a credential, and never reaches a log or a record.
            .map_err(|e| StageError::Transient(format!("{what}: {}", e.without_url())))?;
        if !response.status().is_success() {
            return Err(GitHubError::Status {
                status: response.status().as_u16(),
                what: what.to_string(),
            }
            .into());
        }
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| StageError::Transient(format!("{what}: {}", e.without_url())))?
        {
            sink(&chunk)?;
        }
        Ok(())
    } else if status.is_success() {
        let text = crab
            .body_to_string(response)
            .await
            .map_err(|e| api_error(e, what))?;
        sink(text.as_bytes())
    } else if matches!(status.as_u16(), 404 | 410) {
        Err(StageError::Gone {
            status: status.as_u16(),
            what: what.to_string(),
        })
    } else {
        Err(GitHubError::Status {
            status: status.as_u16(),
            what: what.to_string(),
        }
        .into())
    }
}

pub fn api_error(e: octocrab::Error, what: &str) -> StageError {
    match &e {
        octocrab::Error::GitHub { source, .. } => GitHubError::Status {
            status: source.status_code.as_u16(),
            what: format!("{what}: {}", source.message),
        }
        .into(),
        _ => GitHubError::Api(e).into(),
    }
}

/// The HTTP status GitHub answered, when the error is GitHub's answer.
pub fn status_of(e: &octocrab::Error) -> Option<u16> {
    match e {
        octocrab::Error::GitHub { source, .. } => Some(source.status_code.as_u16()),
        _ => None,
    }
}
