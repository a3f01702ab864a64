//! What a failure no deterministic strategy fixes gets, in order: the fix that healed its
//! fingerprint before, replayed as it was; for a test or compile failure, the revert of the
//! commit that broke the build; a model's fix, asked with the remembered fix as an example;
//! else it is handed off to people.

use std::path::Path;

use super::assist::{self, Failure};
use super::culprit::{self, CulpritEvidence};
use super::memory::{self, MemoryEvidence, MemoryUse};
use super::strategy::Strategy;
use super::{HealOptions, HealReport, Verdict};
use crate::changes::ChangeSet;
use crate::diagnose::{Class, Diagnosis};
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
    let diagnosis = || failure.diagnosis.clone();
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
                        diagnosis(),
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

    // The commit that broke the build, reverted.
    let mut culprit_evidence = None;
    let breakable = matches!(failure.diagnosis.class, Class::Test | Class::Compile);
    if breakable && (!options.culprits.is_empty() || !options.culprits_skipped.is_empty()) {
        let search = culprit::find(
            sandbox,
            repo,
            failure.command,
            &options.culprits,
            options.validate_runs,
            progress,
        )
        .await?;
        let (culprit, change) = match search.found {
            Some((culprit, diff, set)) => (Some(culprit), Some((diff, set))),
            None => (None, None),
        };
        let evidence = CulpritEvidence {
            culprit,
            tried: search.tried,
            skipped: options.culprits_skipped.clone(),
            stopped: search.stopped,
        };
        if let Some(change) = change {
            let mut r = report(
                diagnosis(),
                Strategy::RevertCulprit,
                Some(change),
                Verdict::Pending,
            );
            r.culprit = Some(evidence);
            r.memory = remembered;
            return Ok(r);
        }
        culprit_evidence = Some(evidence);
    }

    let mut r = ask_or_hand_off(sandbox, repo, failure, example, options, report, progress).await?;
    if r.ai.is_some() {
        if let Some(ev) = remembered.as_mut().filter(|_| example.is_some()) {
            ev.used = MemoryUse::Example;
        }
    }
    r.memory = remembered;
    r.culprit = culprit_evidence;
    Ok(r)
}

async fn ask_or_hand_off(
    sandbox: &Sandbox,
    repo: &Path,
    failure: Failure<'_>,
    example: Option<&memory::Remembered>,
    options: &HealOptions,
    report: &Report<'_>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<HealReport, SandboxError> {
    let diagnosis = || failure.diagnosis.clone();
    let Some(assistant) = &options.assistant else {
        let reason = format!(
            "no deterministic strategy for {} failures, and no model service is configured",
            failure.diagnosis.class.as_str()
        );
        return Ok(report(
            diagnosis(),
            Strategy::HandOff,
            None,
            Verdict::HandedOff { reason },
        ));
    };
    let failure = assist::Failure { example, ..failure };
    let (made, evidence) = assist::fix(sandbox, repo, failure, assistant, progress).await?;
    let strategy = Strategy::AiPatch;
    let mut r = match made {
        Err(reason) => report(diagnosis(), strategy, None, Verdict::HandedOff { reason }),
        Ok(made) => match made.and_then(|set| Ok((set.diff(repo)?, set))) {
            Ok(change) => report(diagnosis(), strategy, Some(change), Verdict::Pending),
            Err(refused) => report(
                diagnosis(),
                strategy,
                None,
                Verdict::Rejected {
                    reason: format!("the change the sandbox made is refused: {refused}"),
                },
            ),
        },
    };
    r.ai = Some(evidence);
    Ok(r)
}
