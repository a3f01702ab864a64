//! Code both processes need: typed config, the Postgres schema and its queries, the stage jobs
//! and their queue, and the GitHub client.

pub mod accepts;
pub mod audit;
pub mod cause;
mod commands;
pub mod config;
pub mod db;
pub mod envelope;
pub mod events;
pub mod external_ci;
pub mod failed_run;
pub mod github;
pub mod incidents;
pub mod installations;
pub mod job;
pub mod outbox;
pub mod queue;
pub mod reports;
mod reverts;
pub mod runs;
pub mod stage;
pub mod trace_context;

pub use config::{Config, ConfigError};
