//! The model strategy, for failures no deterministic strategy fixes and only when a model
//! service is configured: the failure and the files it names go out (secrets redacted), a
//! structured answer comes back, and its patch is checked here (paths that exist, no test
//! deleted or skipped, nothing under `.github/`), then applied in the sandbox. What it makes
//! is validated like every other fix. An answer that fails a check is asked again once, with
//! the reason; the same patch twice is not asked a third time.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use regex::Regex;
use serde::Serialize;

use super::context;
use super::guard::refuses;
use super::lazy_edits;
use super::memory::Remembered;
use super::redaction::{redact, regular_inside, Redaction};
use super::strategy::{apply_diff, Made, Strategy};
use crate::ai::answer::Change;
use crate::ai::budget::{Grant, TokenBudget};
use crate::ai::{self, answer, AiError, ModelConfig, Prompt, Usage};
use crate::changes::ChangeSet;
use crate::diagnose::Diagnosis;
use crate::sandbox::{Sandbox, SandboxError};
use crate::workflow::StepCommand;

/// A configured model service.
#[derive(Clone, Debug)]
pub struct Assistant {
    /// Built without redirects: a redirect would carry the key and the prompt elsewhere.
    pub http: reqwest::Client,
    pub model: ModelConfig,
    /// What no prompt may carry, besides the built-in secret shapes.
    pub redaction: Redaction,
    /// Where each request reserves the tokens it may spend (input, cached or not, and output),
    /// when they are limited.
    pub budget: Option<Arc<dyn TokenBudget>>,
    /// Morph's apply model (`MORPH_API_KEY`), when configured: the model may then answer with
    /// lazy edits, which Morph merges into the files.
    pub morph: Option<ModelConfig>,
    /// The model's changes for earlier runs of the same incident, as rendered diffs: proposing
    /// one again ends the incident (it did not fix it then).
    pub earlier_patches: Vec<String>,
    /// Tokens of repository files a prompt may carry: the files the failure names, then what
    /// they reference, until this is spent.
    pub context_tokens: u64,
    /// What the model's change is held to before the sandbox validates it (selfheal's built-in
    /// invariants: tests kept and not weakened, no failure muted, no protected path, no secret
    /// added, the diff within its cap), so that a change that could never be delivered is
    /// refused while the model can still be asked again. The verify stage checks the same
    /// invariants, with the repository's own configuration and policies, before delivery.
    pub invariants: crate::invariants::Limits,
}

/// Context tokens when none are configured (`SELFHEAL_AI_CONTEXT_TOKENS`).
pub const CONTEXT_TOKENS: u64 = 16_000;

/// The HTTP client an assistant uses: no redirects followed.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// What the model was asked and answered, for the run's evidence.
#[derive(Debug, Clone, Serialize)]
pub struct AiEvidence {
    pub provider: &'static str,
    pub model: String,
    /// Answers asked for (1, or 2 when the first was refused).
    pub asked: u32,
    /// HTTP requests, retries included.
    pub requests: u32,
    pub usage: Usage,
    /// What Morph was asked, when the model answered with edits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub morph: Option<MorphEvidence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Why an answer was refused, each time one was.
    pub refused: Vec<String>,
    /// The model proposed a change it had proposed for an earlier run of the incident.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub repeated: bool,
}

/// Morph's merges: files merged, requests made, tokens counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MorphEvidence {
    pub model: String,
    pub files: u32,
    pub requests: u32,
    pub usage: Usage,
}

const SYSTEM: &str = "You fix failing CI builds. You get the failing command, the diagnosis, \
the log excerpt and the files the failure names. Find the root cause and propose the smallest \
change to the repository's source that makes the command pass.\n\
Rules: never delete, skip or weaken a test or an assertion; never touch files under .github/; \
never silence the failure (no `|| true`, no lint allows); only name files that exist, by paths \
relative to the repository root.\n\
Answer only with the propose_fix tool (or the JSON object it describes): root_cause (a few \
sentences), culprit_files (path and line or null), confidence (0 to 1), and patch: a unified \
diff in git format (`diff --git a/P b/P`, `--- a/P`, `+++ b/P`, hunks with correct line \
counts) that `git apply` accepts on the repository as given.";

/// Added to the instructions when Morph is configured.
const EDITS: &str = "\nInstead of a patch you may give edits (and patch null): for each existing \
file to change, its path and an update showing only the changed lines, with the comment \
`// ... existing code ...` (in the file's comment syntax) for unchanged code between and around \
them, and enough surrounding lines to place each change.";

fn instructions(edits: bool) -> String {
    if edits {
        format!("{SYSTEM}{EDITS}")
    } else {
        SYSTEM.to_string()
    }
}

/// The least answer worth asking for: a root cause and a small patch.
const MIN_ANSWER_TOKENS: u64 = 1024;

/// Tokens `bytes` of prompt will count, estimated before sending (the services count only
/// after): 3 bytes a token, fewer than English's 4, since code and logs tokenise worse.
pub(super) fn estimated_tokens(bytes: usize) -> u64 {
    bytes.div_ceil(BYTES_PER_TOKEN) as u64
}

/// Bytes of prompt a token is taken to hold (see [`estimated_tokens`]).
const BYTES_PER_TOKEN: usize = 3;

/// Reserves what one request may spend: `need` tokens for its prompt and up to `answer` for
/// its answer, at least `least` of them. Returns the answer's cap the grant leaves and the
/// grant to settle, or why nothing may be sent.
pub(super) async fn reserve(
    budget: Option<&Arc<dyn TokenBudget>>,
    need: u64,
    answer: u32,
    least: u64,
    provider: &'static str,
    model: &str,
) -> Result<(u32, Option<Grant>), String> {
    let Some(budget) = budget else {
        return Ok((answer, None));
    };
    let granted = budget
        .reserve(need + u64::from(answer), provider, model.to_string())
        .await
        .map_err(|e| e.to_string())?;
    if granted.tokens < need + least {
        settle(budget.as_ref(), Some(granted), Some(Usage::default()), 0).await;
        return Err(format!(
            "the token budget is spent: {} tokens left, and asking {provider} needs about {need} \
             for the prompt and {least} for an answer",
            granted.tokens
        ));
    }
    let cap = u32::try_from(granted.tokens - need).unwrap_or(u32::MAX);
    Ok((answer.min(cap), Some(granted)))
}

/// Settles a grant with what its request spent. One that cannot be settled stays counted at
/// its grant, more than was spent: the budget errs towards asking less, and the answer in hand
/// is still used.
pub(super) async fn settle(
    budget: &dyn TokenBudget,
    granted: Option<Grant>,
    spent: Option<Usage>,
    requests: u32,
) {
    let Some(granted) = granted else { return };
    if let Err(e) = budget.settle(granted, spent, requests).await {
        tracing::warn!(error = %e, "the model's spend is not recorded; its reservation stays counted");
    }
}

/// Settles a request's grant (if the budget is limited) with what its outcome says it cost:
/// `counts` reads the tokens and requests of an answer.
pub(super) async fn settle_after<T>(
    budget: Option<&Arc<dyn TokenBudget>>,
    granted: Option<Grant>,
    outcome: &Result<T, AiError>,
    counts: impl Fn(&T) -> (&Usage, u32),
) {
    let Some(budget) = budget else { return };
    let spent = Usage::charged(outcome, |done| counts(done).0);
    let requests = outcome.as_ref().map_or(0, |done| counts(done).1);
    settle(budget.as_ref(), granted, spent, requests).await;
}

fn user_prompt(
    diagnosis: &Diagnosis,
    command: &StepCommand,
    sandbox_excerpt: &str,
    repo: &Path,
    example: Option<&Remembered>,
    context_tokens: u64,
) -> String {
    let mut out = format!(
        "Failing command: {}\nDiagnosis: {} ({})\n",
        command.display,
        diagnosis.class.as_str(),
        diagnosis.tool.as_deref().unwrap_or("unknown tool")
    );
    if let Some(file) = &diagnosis.culprit_file {
        out.push_str(&format!(
            "Culprit: {file}{}\n",
            diagnosis
                .culprit_line
                .map(|l| format!(":{l}"))
                .unwrap_or_default()
        ));
    }
    if !diagnosis.failing_tests.is_empty() {
        out.push_str(&format!(
            "Failing tests: {}\n",
            diagnosis.failing_tests.join(", ")
        ));
    }
    out.push_str(&format!(
        "\nCI log excerpt:\n```\n{}\n```\n\nThe same failure in the sandbox:\n```\n{}\n```\n",
        diagnosis.excerpt, sandbox_excerpt
    ));
    // The culprit first, then other files the excerpts name, each with the line named.
    let mut names: Vec<(String, Option<usize>)> = diagnosis
        .culprit_file
        .iter()
        .map(|f| (f.clone(), diagnosis.culprit_line.map(|l| l as usize)))
        .collect();
    static PATHS: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"([A-Za-z0-9_\-./]+\.[A-Za-z0-9]{1,5})(?::(\d{1,7}))?").expect("static regex")
    });
    for text in [diagnosis.excerpt.as_str(), sandbox_excerpt] {
        for m in PATHS.captures_iter(text) {
            let name = m[1].trim_start_matches("./").to_string();
            if !names.iter().any(|(n, _)| *n == name) {
                names.push((name, m.get(2).and_then(|l| l.as_str().parse().ok())));
            }
        }
    }
    if let Some(Remembered {
        repository,
        patch: Some(patch),
        ..
    }) = example
    {
        out.push_str(&format!(
            "\nThe same failure (same fingerprint) was fixed before in {repository} by this patch, \
             validated and merged; it does not apply here as it is, but may show the way:\n```diff\n{patch}\n```\n"
        ));
    }
    let budget = usize::try_from(context_tokens)
        .unwrap_or(usize::MAX)
        .saturating_mul(BYTES_PER_TOKEN);
    out.push_str(&context::choose(repo, &names, budget).render());
    out
}

/// Why an answer is refused for the files it blames, if it is.
fn check_culprits(answer: &answer::Answer, repo: &Path) -> Result<(), String> {
    for culprit in &answer.culprit_files {
        if !regular_inside(repo, &culprit.path) {
            return Err(format!(
                "it names {}, which is not in the repository",
                culprit.path
            ));
        }
    }
    Ok(())
}

/// Why a patch is refused before the sandbox sees it, if it is: not a git diff as `git apply`
/// reads it, a protected path, a file the repository does not have, a test removed or skipped.
fn check_patch(patch: &str, repo: &Path) -> Result<(), String> {
    let paths = answer::patched_paths(patch).map_err(|e| e.to_string())?;
    for (path, created) in paths.iter().zip(created_files(patch)) {
        if path.starts_with(".github/") {
            return Err(format!("it changes {path}, a protected path"));
        }
        if !created && !regular_inside(repo, path) {
            return Err(format!("it changes {path}, which is not in the repository"));
        }
    }
    if let Some(why) = refuses(patch) {
        return Err(format!("the patch {why}"));
    }
    Ok(())
}

/// Why the model's change breaks selfheal's built-in invariants, if it does (in process: the
/// policy is selfheal's own, not the repository's; off the async threads, as verify runs it).
async fn broken_invariants(
    set: &ChangeSet,
    repo: &Path,
    diagnosis: &Diagnosis,
    assistant: &Assistant,
) -> Option<String> {
    use crate::invariants::{self, Change, InProcess};
    let diff = match set.diff(repo) {
        Ok(diff) => diff,
        Err(e) => return Some(format!("its change cannot be rendered: {e}")),
    };
    let class = diagnosis.class.as_str();
    let limits = assistant.invariants.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let change = Change::describe(
            &diff,
            class,
            Strategy::AiPatch.as_str(),
            limits.max_diff_lines,
            &limits.protected_paths,
        );
        invariants::check(&change, invariants::DEFAULT_POLICY, &[], &InProcess)
    })
    .await;
    let checked = match checked {
        Ok(checked) => checked,
        Err(e) => return Some(format!("the invariants' check failed: {e}")),
    };
    match checked {
        Ok(denials) if denials.is_empty() => None,
        Ok(denials) => Some(format!(
            "the change breaks selfheal's invariants: {}",
            denials
                .iter()
                .map(|d| d.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        )),
        // selfheal's own policy always evaluates; if it did not, nothing is let through.
        Err(e) => Some(format!("the invariants could not be checked: {e}")),
    }
}

/// A patch not written here (a model's, or one remembered from another run) checked, then
/// applied in the sandbox: what it made, or why it is refused.
pub(super) async fn apply_checked(
    sandbox: &Sandbox,
    repo: &Path,
    patch: &str,
) -> Result<Result<Made, String>, SandboxError> {
    if let Err(why) = check_patch(patch, repo) {
        return Ok(Err(why));
    }
    Ok(match apply_diff(sandbox, repo, patch).await? {
        // What the sandbox captured is judged again by its own paths: the diff said what it
        // changes; this is what changed.
        Ok(Ok(set)) => {
            let protected = set
                .paths()
                .find(|p| p.starts_with(".github/"))
                .map(str::to_string);
            match protected {
                Some(path) => Err(format!("it changed {path}, a protected path")),
                None => Ok(Ok(set)),
            }
        }
        Ok(made) => Ok(made),
        Err(output) => Err(format!(
            "the patch does not apply: {}",
            output.lines().take(5).collect::<Vec<_>>().join(" / ")
        )),
    })
}

/// The answer's fix as a git diff: the patch it gave, or its edits merged by Morph.
async fn patch_of(
    assistant: &Assistant,
    repo: &Path,
    answer: &answer::Answer,
    evidence: &mut AiEvidence,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<String, String> {
    match (&answer.change, &assistant.morph) {
        (Change::Patch(patch), _) => Ok(patch.clone()),
        (Change::Edits(edits), Some(morph)) => {
            let spent = evidence.morph.get_or_insert_with(|| MorphEvidence {
                model: morph.model.clone(),
                ..MorphEvidence::default()
            });
            lazy_edits::merged_diff(
                assistant,
                morph,
                repo,
                &answer.root_cause,
                edits,
                spent,
                progress,
            )
            .await
        }
        // answer::parse takes edits only when Morph is configured.
        (Change::Edits(_), None) => Err("edits are taken only with Morph configured".into()),
    }
}

/// For each file of a git diff, in order: whether the diff creates it.
fn created_files(patch: &str) -> Vec<bool> {
    let mut out = Vec::new();
    let mut lines = patch.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("diff --git ") {
            let mut created = false;
            for next in lines.by_ref() {
                if next.starts_with("--- ") {
                    created = next == "--- /dev/null";
                    break;
                }
            }
            out.push(created);
        }
    }
    out
}

/// What the model is told about the failure.
#[derive(Clone, Copy)]
pub(super) struct Failure<'a> {
    pub diagnosis: &'a Diagnosis,
    pub command: &'a StepCommand,
    /// The same failure's output in selfheal's sandbox.
    pub sandbox_excerpt: &'a str,
    /// A fix of the same fingerprint that does not apply here as it is.
    pub example: Option<&'a Remembered>,
}

/// Asks the model for a fix and applies it in the sandbox: the change it made, or why there is
/// none; and what was asked and spent.
pub(super) async fn fix(
    sandbox: &Sandbox,
    repo: &Path,
    failure: Failure<'_>,
    assistant: &Assistant,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(Result<Made, String>, AiEvidence), SandboxError> {
    let mut evidence = AiEvidence {
        provider: assistant.model.provider.name(),
        model: assistant.model.model.clone(),
        asked: 0,
        requests: 0,
        usage: Usage::default(),
        morph: None,
        root_cause: None,
        confidence: None,
        refused: Vec::new(),
        repeated: false,
    };
    // Choosing the files walks and reads the repository: off the async workers' threads.
    let built = {
        let (diagnosis, command) = (failure.diagnosis.clone(), failure.command.clone());
        let (excerpt, dir) = (failure.sandbox_excerpt.to_string(), repo.to_path_buf());
        let (example, tokens) = (failure.example.cloned(), assistant.context_tokens);
        tokio::task::spawn_blocking(move || {
            user_prompt(
                &diagnosis,
                &command,
                &excerpt,
                &dir,
                example.as_ref(),
                tokens,
            )
        })
        .await
    };
    let base = match built {
        Ok(text) => redact(&text, &assistant.redaction),
        Err(e) => return Ok((Err(format!("the prompt could not be built: {e}")), evidence)),
    };
    let mut follow_up: Option<String> = None;
    let mut last_change: Option<Change> = None;
    let edits = assistant.morph.is_some();
    let schema = answer::schema(edits);
    while evidence.asked < 2 {
        evidence.asked += 1;
        progress(&format!(
            "asking {} ({}) for a fix{}",
            evidence.provider,
            evidence.model,
            if evidence.asked > 1 { ", again" } else { "" }
        ));
        let prompt = Prompt {
            system: instructions(edits),
            user: base.clone(),
            follow_up: follow_up.clone(),
        };
        // The answer is cut off where the grant ends, and not asked for at all when the grant
        // would not hold the prompt and a small answer.
        let mut model = assistant.model.clone();
        let need = estimated_tokens(
            prompt.system.len()
                + prompt.user.len()
                + prompt.follow_up.as_ref().map_or(0, String::len)
                + schema.to_string().len(),
        );
        let (cap, grant) = match reserve(
            assistant.budget.as_ref(),
            need,
            model.max_output_tokens,
            MIN_ANSWER_TOKENS,
            evidence.provider,
            &evidence.model,
        )
        .await
        {
            Ok(held) => held,
            Err(why) => {
                evidence.refused.push(why.clone());
                return Ok((Err(why), evidence));
            }
        };
        model.max_output_tokens = cap;
        let asked = ai::complete(&assistant.http, &model, &prompt, &schema).await;
        settle_after(assistant.budget.as_ref(), grant, &asked, |done| {
            (&done.usage, done.requests)
        })
        .await;
        let done = match asked {
            Ok(done) => done,
            Err(e) => return Ok((Err(ask_failed(&e, &assistant.redaction)), evidence)),
        };
        evidence.requests += done.requests;
        evidence.usage.add(&done.usage);
        let refused = match answer::parse(&done.json, edits) {
            Err(e) => e.to_string(),
            Ok(answer) => {
                evidence.root_cause = Some(answer.root_cause.clone());
                evidence.confidence = Some(answer.confidence);
                if last_change.as_ref() == Some(&answer.change) {
                    let why = "the same patch was proposed twice".to_string();
                    evidence.refused.push(why.clone());
                    return Ok((Err(why), evidence));
                }
                last_change = Some(answer.change.clone());
                let patch = patch_of(assistant, repo, &answer, &mut evidence, progress).await;
                match patch.and_then(|patch| check_culprits(&answer, repo).map(|()| patch)) {
                    Err(why) => why,
                    Ok(patch) => match apply_checked(sandbox, repo, &patch).await? {
                        // The same change as for an earlier run of the incident (compared as
                        // rendered here, whatever the answer's formatting): it did not fix it.
                        Ok(Ok(set))
                            if set
                                .diff(repo)
                                .is_ok_and(|d| assistant.earlier_patches.contains(&d)) =>
                        {
                            let why = "the model proposed the change it proposed for an earlier run of this incident".to_string();
                            evidence.refused.push(why.clone());
                            evidence.repeated = true;
                            return Ok((Err(why), evidence));
                        }
                        Ok(Ok(set)) => {
                            match broken_invariants(&set, repo, failure.diagnosis, assistant).await
                            {
                                Some(why) => why,
                                None => return Ok((Ok(Ok(set)), evidence)),
                            }
                        }
                        Ok(made) => return Ok((Ok(made), evidence)),
                        Err(why) => why,
                    },
                }
            }
        };
        progress(&format!("the model's answer is refused: {refused}"));
        evidence.refused.push(refused.clone());
        follow_up = Some(format!(
            "Your previous answer was refused: {refused}\nAnswer again, following the rules."
        ));
    }
    let why = format!(
        "the model's answers were refused: {}",
        evidence.refused.join("; ")
    );
    Ok((Err(why), evidence))
}

/// The service's own words may echo what it was sent (a masked key, a prompt): redacted.
pub(super) fn ask_failed(e: &AiError, own: &Redaction) -> String {
    let said: String = redact(&e.to_string(), own).chars().take(600).collect();
    format!("the model service gave no answer: {said}")
}
