//! The integration tests, one binary: each file was its own test binary, linking every
//! dependency again (gigabytes of disk a CI machine once ran out of while linking them).
//! nextest runs each test in its own process all the same; `cargo nextest run --test suite
//! 'webhook::'` runs one file's tests.

mod heal_cli;
mod support;

mod accepts;
mod access;
mod access_sign_in;
mod admission;
mod ai;
mod ai_spend;
mod audit;
mod chaos;
mod chatops;
mod cli;
mod dashboard;
mod deliver;
mod deploy;
mod events;
mod fuzz;
mod gates;
mod github_behaviours;
mod github_shapes;
mod green_baseline;
mod heal;
mod hostile;
mod ingest_spans;
mod installations;
mod invariants;
mod kubernetes;
mod languages;
mod manifest;
mod merge;
mod metrics;
mod observability;
mod outages;
mod pipeline;
mod precision;
mod real_repositories;
mod redeliver;
mod release;
mod reporting;
mod resilience;
mod sandbox;
mod standin_strict;
mod supply_chain;
mod tls;
mod traces;
mod untrusted;
mod webhook;
