//! The sandbox images, one per language, built locally by the recipe the binary carries
//! (`scripts/sandbox-image.sh`, embedded) and tagged with its hash, so a changed recipe
//! builds new images and an unchanged one is reused. Nothing is read from the source tree.

use sha2::{Digest, Sha256};

use super::toolchain::Language;
use super::SandboxError;

const RECIPE: &str = include_str!("../../../scripts/sandbox-image.sh");

/// The image label the recipe writes with its toolchain's `--version` line.
pub const VERSION_LABEL: &str = "selfheal.toolchain.version";

/// Which images the sandbox runs.
#[derive(Debug, Clone)]
pub enum Images {
    /// The recipe's image for each repository's language, built on first use.
    Recipe,
    /// The operator's own image, for every language; `{language}` in it stands for the
    /// repository's (`registry.example/sandbox-{language}:1`).
    Own(String),
}

impl Images {
    /// The image that runs `language`.
    pub fn name(&self, language: Language) -> String {
        match self {
            Images::Own(own) => own.replace("{language}", language.as_str()),
            Images::Recipe => image_tag(language),
        }
    }
}

pub fn image_tag(language: Language) -> String {
    let hash = hex::encode(&Sha256::digest(RECIPE.as_bytes())[..6]);
    format!("selfheal-sandbox-{}:{hash}", language.as_str())
}

/// An operator's own image that the engine lacks is pulled from its registry: a worker's own
/// Docker engine (a sidecar in a Kubernetes pod, say) starts empty. Credentials for a private
/// registry are the engine's (its `config.json`), not selfheal's.
async fn pull_if_missing(docker: &bollard::Docker, image: &str) -> Result<(), SandboxError> {
    use futures::TryStreamExt;
    if docker.inspect_image(image).await.is_ok() {
        return Ok(());
    }
    tracing::info!(%image, "pulling the sandbox image: the Docker engine does not have it");
    let options = bollard::query_parameters::CreateImageOptionsBuilder::new()
        .from_image(image)
        .build();
    docker
        .create_image(Some(options), None, None)
        .try_for_each(|_| async { Ok(()) })
        .await
        .map_err(|e| SandboxError::Image(format!("pulling {image}: {e}")))
}

/// The image for `language`, built (a minute or two, once) unless it exists.
pub async fn ensure_image(
    docker: &bollard::Docker,
    images: &Images,
    language: Language,
) -> Result<String, SandboxError> {
    if let Images::Own(_) = images {
        let own = images.name(language);
        pull_if_missing(docker, &own).await?;
        return Ok(own);
    }
    let tag = image_tag(language);
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    let recipe = tempfile::Builder::new()
        .prefix("selfheal-sandbox-image")
        .suffix(".sh")
        .tempfile()?;
    std::fs::write(recipe.path(), RECIPE)?;
    tracing::info!(%tag, language = language.as_str(), "building the sandbox image (debootstrap; a minute or two, once)");
    let output = tokio::process::Command::new("bash")
        .arg(recipe.path())
        .arg(&tag)
        .arg(language.as_str())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| SandboxError::Image(format!("running the image recipe: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
        return Err(SandboxError::Image(format!(
            "the {} image recipe exited with {}: {}",
            language.as_str(),
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    Ok(tag)
}
