//! Fix memory: a failure whose fingerprint was healed before (its fix validated and merged, in
//! this repository or another of the same installation) is tried first the way it was healed.
//! A model's patch is replayed as it was, checked like a model's answer and validated like any
//! fix, with no model asked; where it does not apply it goes to the model as an example. A
//! deterministic fix needs no memory, since one fingerprint is one class and tool and so one
//! fixer: there memory only agrees, and is counted for the hit rate.

use std::path::Path;

use serde::Serialize;

use super::assist::apply_checked;
use super::strategy::{Made, Strategy};
use crate::sandbox::{Sandbox, SandboxError};

/// The fix that healed this fingerprint last (the caller looks it up).
#[derive(Debug, Clone)]
pub struct Remembered {
    /// The run whose fix it was.
    pub run_id: String,
    pub repository: String,
    pub strategy: Strategy,
    /// Its diff as validated and merged.
    pub patch: Option<String>,
}

/// What the memory did for this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryUse {
    /// The remembered patch applied here and is the fix proposed.
    Replayed,
    /// It did not apply, and went to the model as an example.
    Example,
    /// The strategy chosen for this failure is the remembered one.
    Agreed,
    /// Neither (a strategy that does not apply here, no model to show the patch to).
    NotUsed,
}

impl MemoryUse {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryUse::Replayed => "replayed",
            MemoryUse::Example => "example",
            MemoryUse::Agreed => "agreed",
            MemoryUse::NotUsed => "not_used",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryEvidence {
    pub from_run: String,
    pub repository: String,
    pub strategy: &'static str,
    pub used: MemoryUse,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl MemoryEvidence {
    /// The memory's evidence once the strategy for this failure is chosen.
    pub(super) fn chosen(remembered: &Remembered, strategy: Strategy) -> MemoryEvidence {
        let agreed = remembered.strategy == strategy;
        MemoryEvidence {
            from_run: remembered.run_id.clone(),
            repository: remembered.repository.clone(),
            strategy: remembered.strategy.as_str(),
            used: if agreed {
                MemoryUse::Agreed
            } else {
                MemoryUse::NotUsed
            },
            reason: (!agreed).then(|| {
                format!(
                    "{} is chosen for this failure; {} healed it before",
                    strategy.as_str(),
                    remembered.strategy.as_str()
                )
            }),
        }
    }
}

/// The remembered model's patch applied here, checked as a model's answer is: what it made, or
/// why it cannot be used.
pub(super) async fn replay(
    sandbox: &Sandbox,
    repo: &Path,
    remembered: &Remembered,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Result<Made, String>, SandboxError> {
    let Some(patch) = &remembered.patch else {
        return Ok(Err("the remembered fix has no patch".into()));
    };
    progress(&format!(
        "the same failure was fixed before in {}: trying its patch first",
        remembered.repository
    ));
    apply_checked(sandbox, repo, patch).await
}
