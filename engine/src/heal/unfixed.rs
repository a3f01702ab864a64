//! What a failure no deterministic strategy fixes gets: the fix that healed its fingerprint
//! before, replayed as it was; else a model's fix, asked with that fix as an example; else it
//! is handed off to people.

use std::path::Path;

use super::assist::{self, Failure};
use super::memory::{self, MemoryEvidence, MemoryUse};
use super::strategy::Strategy;
use super::{HealOptions, HealReport, Verdict};
use crate::changes::ChangeSet;
use crate::diagnose::Diagnosis;
use crate::sandbox::{Sandbox, SandboxError};

/// Builds the run's report (the caller's evidence of the reproduction goes in it).
pub(super) type Report<'a> =
    dyn Fn(Diagnosis, Strategy, Option<(String, ChangeSet)>, Verdict) -> HealReport + Sync + 'a;

pub(super) async fn heal(
    sandbox: &Sandbox,
    repo: &Path,
    failure: Failure<'_>,
    options: &HealOptions,
    report: &Report<'_>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<HealReport, SandboxError> {
    let strategy = Strategy::HandOff;
    // A model's patch that healed this failure before is tried first, as it was.
    let mut remembered = None;
    let mut example = None;
    if let Some(m) = options
        .memory
        .as_ref()
        .filter(|m| m.strategy == Strategy::AiPatch)
    {
        let mut ev = MemoryEvidence::chosen(m, Strategy::AiPatch);
        let why = match memory::replay(sandbox, repo, m, progress).await? {
            Ok(made) => match made.and_then(|set| Ok((set.diff(repo)?, set))) {
                Ok(change) => {
                    ev.used = MemoryUse::Replayed;
                    let mut r = report(
                        failure.diagnosis.clone(),
                        Strategy::AiPatch,
                        Some(change),
                        Verdict::Pending,
                    );
                    r.memory = Some(ev);
                    return Ok(r);
                }
                Err(refused) => format!("its patch is refused here: {refused}"),
            },
            Err(why) => format!("its patch is refused here: {why}"),
        };
        progress(&format!("the remembered fix cannot be used: {why}"));
        ev.used = MemoryUse::NotUsed;
        ev.reason = Some(why);
        example = Some(m);
        remembered = Some(ev);
    }
    let Some(assistant) = &options.assistant else {
        let reason = format!(
            "no deterministic strategy for {} failures, and no model service is configured",
            failure.diagnosis.class.as_str()
        );
        let mut r = report(
            failure.diagnosis.clone(),
            strategy,
            None,
            Verdict::HandedOff { reason },
        );
        r.memory = remembered;
        return Ok(r);
    };
    if let Some(ev) = remembered.as_mut() {
        ev.used = MemoryUse::Example;
    }
    let failure = assist::Failure { example, ..failure };
    let (made, evidence) = assist::fix(sandbox, repo, failure, assistant, progress).await?;
    let strategy = Strategy::AiPatch;
    let change = match made {
        Ok(made) => made.and_then(|set| Ok((set.diff(repo)?, set))),
        Err(reason) => {
            let mut r = report(
                failure.diagnosis.clone(),
                strategy,
                None,
                Verdict::HandedOff { reason },
            );
            r.ai = Some(evidence);
            r.memory = remembered;
            return Ok(r);
        }
    };
    let mut r = match change {
        Ok(change) => report(
            failure.diagnosis.clone(),
            strategy,
            Some(change),
            Verdict::Pending,
        ),
        Err(refused) => report(
            failure.diagnosis.clone(),
            strategy,
            None,
            Verdict::Rejected {
                reason: format!("the change the sandbox made is refused: {refused}"),
            },
        ),
    };
    r.ai = Some(evidence);
    r.memory = remembered;
    Ok(r)
}
