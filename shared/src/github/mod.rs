//! GitHub as a GitHub App: app JWT -> installation tokens (octocrab caches and refreshes them).

mod app;
mod installation;
mod pace;

pub use app::{GitHubApp, GitHubError};
pub use installation::{is_secondary_limit, Installation, RawResponse, SecondaryLimits};
pub use pace::WritePacer;
