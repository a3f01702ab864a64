//! A local stand-in for the GitHub REST API, for tests and the demo; never on selfheal's
//! production path. It answers with real recorded responses from `fixtures/`
//! (adapting ids and names to the request), and records every call it receives.

mod fixtures;
mod git;
mod server;
pub mod webhooks;

pub use fixtures::{
    failing_workflow_run, fixtures_dir, successful_workflow_run, FixtureError, Fixtures,
};
pub use server::{
    default_repo_dir, spawn, spawn_with, Call, Knobs, Protection, StandIn, WriteLimit,
    INSTALLATION_ID, REPOSITORY,
};
