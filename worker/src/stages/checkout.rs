//! The repository at the failing SHA, fetched with the installation token (the tarball
//! endpoint) into a per-run work dir that is removed when dropped.

use std::io::Read;
use std::path::{Component, PathBuf};

use selfheal_shared::runs::Run;

use super::download::download;
use super::StageError;
use crate::WorkerContext;

const MAX_ARCHIVE_BYTES: usize = 512 * 1024 * 1024;

pub async fn checkout(ctx: &WorkerContext, run: &Run) -> Result<tempfile::TempDir, StageError> {
    let crab = ctx
        .github
        .installation(run.installation_id, &run.repository_full_name)?;
    let what = format!("tarball of {}@{}", run.repository_full_name, run.head_sha);
    let mut bytes = Vec::new();
    download(
        ctx,
        &crab,
        format!(
            "/repos/{}/tarball/{}",
            run.repository_full_name, run.head_sha
        ),
        &what,
        |chunk| {
            bytes.extend_from_slice(chunk);
            if bytes.len() > MAX_ARCHIVE_BYTES {
                return Err(StageError::Permanent(format!(
                    "{what} is over {MAX_ARCHIVE_BYTES} bytes"
                )));
            }
            Ok(())
        },
    )
    .await?;
    tokio::task::spawn_blocking(move || unpack(&bytes))
        .await
        .map_err(|e| StageError::Transient(format!("unpacking: {e}")))?
}

/// Unpacks GitHub's tarball without its top-level `<owner>-<repo>-<sha>/` directory.
fn unpack(bytes: &[u8]) -> Result<tempfile::TempDir, StageError> {
    let bad = |e: std::io::Error| {
        StageError::Permanent(format!("the repository tarball is unreadable: {e}"))
    };
    let dir = tempfile::Builder::new()
        .prefix("selfheal-run-")
        .tempdir()
        .map_err(|e| StageError::Transient(e.to_string()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let inner: PathBuf = path.components().skip(1).collect();
        if inner.as_os_str().is_empty()
            || inner
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            continue;
        }
        let target = dir.path().join(&inner);
        if entry.header().entry_type().is_dir() {
            std::fs::create_dir_all(&target).map_err(bad)?;
        } else if entry.header().entry_type().is_file() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(bad)?;
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(bad)?;
            std::fs::write(&target, data).map_err(bad)?;
            #[cfg(unix)]
            if let Ok(mode) = entry.header().mode() {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(
                    &target,
                    std::fs::Permissions::from_mode(mode & 0o755),
                );
            }
        }
    }
    Ok(dir)
}
