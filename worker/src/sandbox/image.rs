//! The sandbox base image, built locally by scripts/sandbox-image.sh and tagged with the
//! hash of that script, so a changed recipe builds a new image and an unchanged one is reused.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::SandboxError;

const RECIPE: &str = include_str!("../../../scripts/sandbox-image.sh");

pub fn image_tag() -> String {
    let hash = hex::encode(&Sha256::digest(RECIPE.as_bytes())[..6]);
    format!("selfheal-sandbox:{hash}")
}

/// Builds the image unless it exists. `SELFHEAL_SANDBOX_IMAGE` points at a user's own image instead.
pub async fn ensure_image(docker: &bollard::Docker) -> Result<String, SandboxError> {
    if let Ok(own) = std::env::var("SELFHEAL_SANDBOX_IMAGE") {
        return Ok(own);
    }
    let tag = image_tag();
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/sandbox-image.sh");
    tracing::info!(%tag, "building the sandbox image (debootstrap; takes a minute, once)");
    let status = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(&tag)
        .status()
        .await
        .map_err(|e| SandboxError::Image(format!("{}: {e}", script.display())))?;
    if !status.success() {
        return Err(SandboxError::Image(format!(
            "{} exited with {status}",
            script.display()
        )));
    }
    Ok(tag)
}
