//! selfheal's healing engine, usable without Postgres, Redis or GitHub: diagnose a CI log,
//! reproduce the failing step in the sandbox (a Docker engine, or Jobs on a Kubernetes
//! cluster) with the repository's dependencies, make a deterministic fix (or ask a configured
//! model service for one), prove it, and judge a merge. Configuration comes in as values
//! (nothing here reads the environment); the sandbox image recipe and the default merge
//! policy are carried inside the library.

pub mod ai;
pub mod changes;
pub mod diagnose;
pub mod heal;
pub mod invariants;
pub mod policy;
pub mod prove;
pub mod sandbox;
pub mod workflow;
