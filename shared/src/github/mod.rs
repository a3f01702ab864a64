//! GitHub as a GitHub App: app JWT -> installation tokens (octocrab caches and refreshes them).

mod app;

pub use app::{GitHubApp, GitHubError};
