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

use super::guard::refuses;
use super::strategy::{apply_diff, Made};
use crate::ai::budget::{Grant, TokenBudget};
use crate::ai::{self, answer, AiError, ModelConfig, Prompt, Usage};
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
}

/// Redacted from every prompt before the built-in secret shapes: the worker's own secrets
/// and an operator's pattern (`SELFHEAL_AI_REDACT`).
#[derive(Clone, Default)]
pub struct Redaction {
    pub values: Vec<String>,
    pub pattern: Option<Regex>,
}

impl std::fmt::Debug for Redaction {
    // Both are secrets or their shapes: counted, never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redaction")
            .field("values", &format_args!("{}", self.values.len()))
            .field("pattern", &self.pattern.is_some())
            .finish()
    }
}

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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Why an answer was refused, each time one was.
    pub refused: Vec<String>,
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

/// The least answer worth asking for: a root cause and a small patch.
const MIN_ANSWER_TOKENS: u64 = 1024;

/// Tokens a request's prompt will count, estimated before sending (the services count only
/// after): 3 bytes a token, fewer than English's 4, since code and logs tokenise worse.
fn estimated_tokens(prompt: &Prompt, schema: &serde_json::Value) -> u64 {
    let bytes = prompt.system.len() + prompt.user.len() + schema.to_string().len();
    bytes.div_ceil(3) as u64
}

/// A file sent to the model may be this big; at most this many are sent.
const FILE_CAP: usize = 48 * 1024;
const FILES: usize = 4;

static SECRETS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        r"\bgh[pousr]_[A-Za-z0-9]{30,}",
        r"\bgithub_pat_[A-Za-z0-9_]{22,}",
        r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}",
        r"\bAKIA[0-9A-Z]{16}\b",
        r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",
        r"\bAIza[0-9A-Za-z_\-]{35}\b",
        r"(?i)--[a-z0-9-]*(?:password|passwd|secret|token|api-?key)[a-z0-9-]*[= ][^\s\x22',;]{4,}",
        // Last (its replacement keeps the name): `DB_PASSWORD=…`, `"api_key": "…"`.
        r"(?i)[A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential)[A-Za-z0-9_.\-]*[\x22']?(\s*[=:]\s*)[\x22']?[^\s\x22',;]{4,}",
    ]
    .iter()
    .map(|p| Regex::new(p).expect("static regex"))
    .collect()
});
static WORDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/=_\-]{24,}").expect("static regex"));

/// Bits per character of `s`: random keys are near 6, words and identifiers far lower.
fn entropy(s: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Text with everything secret-shaped replaced: the configured values and pattern, known token
/// formats, private keys, values assigned to secret-sounding names, long high-entropy strings.
pub fn redact(text: &str, own: &Redaction) -> String {
    let mut out = text.to_string();
    for value in own.values.iter().filter(|v| v.len() >= 4) {
        out = out.replace(value.as_str(), "[REDACTED]");
    }
    if let Some(pattern) = &own.pattern {
        out = pattern.replace_all(&out, "[REDACTED]").into_owned();
    }
    for (i, pattern) in SECRETS.iter().enumerate() {
        out = if i == SECRETS.len() - 1 {
            // Keep the name and the operator: the model may need to see a setting exists.
            pattern
                .replace_all(&out, |c: &regex::Captures| {
                    let start = c.get(0).map_or(0, |m| m.start());
                    let keep = c.get(1).map_or(0, |m| m.end() - start);
                    format!("{}[REDACTED]", &c[0][..keep])
                })
                .into_owned()
        } else {
            pattern.replace_all(&out, "[REDACTED]").into_owned()
        };
    }
    WORDS
        .replace_all(&out, |c: &regex::Captures| {
            let word = &c[0];
            // Hex digests (commit ids, lockfile checksums) are not secrets; random base64 is.
            // Random text of this length is near 4.5 bits a character; identifiers and words,
            // with their repeats, far lower.
            let hex = word.bytes().all(|b| b.is_ascii_hexdigit());
            let mixed = word.bytes().any(|b| b.is_ascii_digit())
                && word.bytes().any(|b| b.is_ascii_uppercase())
                && word.bytes().any(|b| b.is_ascii_lowercase());
            if !hex && (entropy(word) > 4.2 || (mixed && entropy(word) > 3.8)) {
                "[REDACTED]".to_string()
            } else {
                word.to_string()
            }
        })
        .into_owned()
}

/// Files never sent, whatever a log names: where secrets live.
fn sensitive(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel).to_ascii_lowercase();
    rel.split('/').any(|part| part.starts_with('.'))
        || [
            ".pem",
            ".key",
            ".p12",
            ".pfx",
            ".jks",
            ".keystore",
            ".tfvars",
            ".tfstate",
        ]
        .iter()
        .any(|ext| name.ends_with(ext))
        || [
            "credential",
            "secret",
            "id_rsa",
            "id_ed25519",
            "passwd",
            "shadow",
        ]
        .iter()
        .any(|word| name.contains(word))
}

/// A regular file inside `repo` (no link on the way), read within the cap.
fn read_inside(repo: &Path, rel: &str) -> Option<String> {
    if sensitive(rel) {
        return None;
    }
    let mut path = repo.to_path_buf();
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return None;
        }
        path.push(part);
        if std::fs::symlink_metadata(&path)
            .ok()?
            .file_type()
            .is_symlink()
        {
            return None;
        }
    }
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() as usize > FILE_CAP {
        return None;
    }
    std::fs::read_to_string(&path).ok()
}

fn user_prompt(
    diagnosis: &Diagnosis,
    command: &StepCommand,
    sandbox_excerpt: &str,
    repo: &Path,
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
    // The culprit first, then other files the excerpts name.
    let mut names: Vec<String> = diagnosis.culprit_file.iter().cloned().collect();
    static PATHS: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"[A-Za-z0-9_\-./]+\.[A-Za-z0-9]{1,5}").expect("static regex"));
    for text in [&diagnosis.excerpt, &sandbox_excerpt.to_string()] {
        for m in PATHS.find_iter(text) {
            let name = m.as_str().trim_start_matches("./").to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let mut sent = 0;
    for name in names {
        if sent == FILES {
            break;
        }
        if let Some(content) = read_inside(repo, &name) {
            out.push_str(&format!("\nFile {name}:\n```\n{content}\n```\n"));
            sent += 1;
        }
    }
    out
}

/// Why an answer is refused before the sandbox sees it, if it is.
fn check(answer: &answer::Answer, repo: &Path) -> Result<(), String> {
    let paths = answer::patched_paths(&answer.patch).map_err(|e| e.to_string())?;
    for (path, created) in paths.iter().zip(created_files(&answer.patch)) {
        if path.starts_with(".github/") {
            return Err(format!("it changes {path}, a protected path"));
        }
        if !created && !regular_inside(repo, path) {
            return Err(format!("it changes {path}, which is not in the repository"));
        }
    }
    for culprit in &answer.culprit_files {
        if !regular_inside(repo, &culprit.path) {
            return Err(format!(
                "it names {}, which is not in the repository",
                culprit.path
            ));
        }
    }
    if let Some(why) = refuses(&answer.patch) {
        return Err(format!("the patch {why}"));
    }
    Ok(())
}

/// A regular file inside `repo`, reached through no link (answers are not told about anything
/// else, so they cannot probe the worker's disk).
fn regular_inside(repo: &Path, rel: &str) -> bool {
    let mut path = repo.to_path_buf();
    for part in rel.split('/') {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.file_type().is_symlink() => {}
            _ => return false,
        }
    }
    std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file())
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

/// Asks the model for a fix and applies it in the sandbox: the change it made, or why there is
/// none; and what was asked and spent.
pub(super) async fn fix(
    sandbox: &Sandbox,
    repo: &Path,
    diagnosis: &Diagnosis,
    command: &StepCommand,
    sandbox_excerpt: &str,
    assistant: &Assistant,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(Result<Made, String>, AiEvidence), SandboxError> {
    let mut evidence = AiEvidence {
        provider: assistant.model.provider.name(),
        model: assistant.model.model.clone(),
        asked: 0,
        requests: 0,
        usage: Usage::default(),
        root_cause: None,
        confidence: None,
        refused: Vec::new(),
    };
    let base = redact(
        &user_prompt(diagnosis, command, sandbox_excerpt, repo),
        &assistant.redaction,
    );
    let mut user = base.clone();
    let mut last_patch: Option<String> = None;
    let schema = answer::schema();
    while evidence.asked < 2 {
        evidence.asked += 1;
        progress(&format!(
            "asking {} ({}) for a fix{}",
            evidence.provider,
            evidence.model,
            if evidence.asked > 1 { ", again" } else { "" }
        ));
        let prompt = Prompt {
            system: SYSTEM.into(),
            user: user.clone(),
        };
        let mut model = assistant.model.clone();
        let mut grant = None;
        if let Some(budget) = &assistant.budget {
            // The answer is cut off where the grant ends, and not asked for at all when the
            // grant would not hold the prompt and a small answer.
            let need = estimated_tokens(&prompt, &schema);
            let wanted = need + u64::from(model.max_output_tokens);
            let granted = match budget.reserve(wanted).await {
                Ok(granted) => granted,
                Err(e) => return Ok((Err(e.to_string()), evidence)),
            };
            if granted.tokens < need + MIN_ANSWER_TOKENS {
                settle(budget.as_ref(), granted, Usage::default(), 0).await;
                let why = format!(
                    "the token budget is spent: {} tokens left, and asking needs about {need} \
                     for the prompt and {MIN_ANSWER_TOKENS} for an answer",
                    granted.tokens
                );
                evidence.refused.push(why.clone());
                return Ok((Err(why), evidence));
            }
            let answer = u32::try_from(granted.tokens - need).unwrap_or(u32::MAX);
            model.max_output_tokens = model.max_output_tokens.min(answer);
            grant = Some((budget, granted));
        }
        let asked = ai::complete(&assistant.http, &model, &prompt, &schema).await;
        if let Some((budget, granted)) = grant {
            let (spent, requests) = match &asked {
                Ok(done) => (done.usage.clone(), done.requests),
                Err(_) => (Usage::default(), 0),
            };
            settle(budget.as_ref(), granted, spent, requests).await;
        }
        let done = match asked {
            Ok(done) => done,
            Err(e) => return Ok((Err(ask_failed(&e, &assistant.redaction)), evidence)),
        };
        evidence.requests += done.requests;
        evidence.usage.add(&done.usage);
        let refused = match answer::parse(&done.json) {
            Err(e) => e.to_string(),
            Ok(answer) => {
                evidence.root_cause = Some(answer.root_cause.clone());
                evidence.confidence = Some(answer.confidence);
                if last_patch.as_deref() == Some(answer.patch.as_str()) {
                    let why = "the same patch was proposed twice".to_string();
                    evidence.refused.push(why.clone());
                    return Ok((Err(why), evidence));
                }
                last_patch = Some(answer.patch.clone());
                match check(&answer, repo) {
                    Err(why) => why,
                    Ok(()) => match apply_diff(sandbox, repo, &answer.patch).await? {
                        // What the sandbox captured is judged again by its own paths: the
                        // answer's diff said what it changes; this is what changed.
                        Ok(Ok(set)) => {
                            let protected = set
                                .paths()
                                .find(|p| p.starts_with(".github/"))
                                .map(str::to_string);
                            match protected {
                                Some(path) => format!("it changed {path}, a protected path"),
                                None => return Ok((Ok(Ok(set)), evidence)),
                            }
                        }
                        Ok(made) => return Ok((Ok(made), evidence)),
                        Err(output) => format!(
                            "the patch does not apply: {}",
                            output.lines().take(5).collect::<Vec<_>>().join(" / ")
                        ),
                    },
                }
            }
        };
        progress(&format!("the model's answer is refused: {refused}"));
        evidence.refused.push(refused.clone());
        user = format!(
            "{base}\nYour previous answer was refused: {refused}\nAnswer again, following the rules."
        );
    }
    let why = format!(
        "the model's answers were refused: {}",
        evidence.refused.join("; ")
    );
    Ok((Err(why), evidence))
}

/// A reservation that cannot be settled stays counted at its grant, more than was spent: the
/// budget errs towards asking less, and the answer in hand is still used.
async fn settle(budget: &dyn TokenBudget, granted: Grant, spent: Usage, requests: u32) {
    if let Err(e) = budget.settle(granted, spent, requests).await {
        tracing::warn!(error = %e, "the model's spend is not recorded; its reservation stays counted");
    }
}

/// The service's own words may echo what it was sent (a masked key, a prompt): redacted.
fn ask_failed(e: &AiError, own: &Redaction) -> String {
    let said: String = redact(&e.to_string(), own).chars().take(600).collect();
    format!("the model service gave no answer: {said}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_ordinary_text_is_not() {
        let text = "token = ghp_0123456789abcdefghijABCDEFGHIJ012345\n\
            ANTHROPIC_API_KEY=sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz012345\n\
            aws: AKIAIOSFODNN7EXAMPLE\n\
            password: hunter22secret\n\
            -----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n\
            random: Zx8Qp2Lm9Vt4Rk7Ws1Yn6Bd3Hf5Jc0Ga8Ue2Ox9\n\
            commit 4f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 and error[E0308]: mismatched types\n\
            the webhook secret is s3cr3t-value\n\
            DB_PASSWORD=pg-Hunter2x\n\
            {\"stripe_api_key\": \"rk_live_51Habc\"}\n\
            psql --password Tr0ub4dor\n\
            session 8fJ2kQz9Lw3Xv7Rt1Ny5Bm0C";
        let own = Redaction {
            values: vec!["s3cr3t-value".into()],
            pattern: Some(Regex::new(r"acme_[a-z0-9]{8}").unwrap()),
        };
        let out = redact(&format!("{text}\nour own format: acme_0a1b2c3d"), &own);
        for secret in [
            "ghp_0123456789",
            "sk-ant-api03",
            "AKIAIOSFODNN7EXAMPLE",
            "hunter22secret",
            "MIIEow",
            "Zx8Qp2Lm9Vt4Rk7Ws1Yn6Bd3Hf5Jc0Ga8Ue2Ox9",
            "s3cr3t-value",
            "pg-Hunter2x",
            "rk_live_51Habc",
            "Tr0ub4dor",
            "8fJ2kQz9Lw3Xv7Rt1Ny5Bm0C",
            "acme_0a1b2c3d",
        ] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        // A commit id and the compiler's words stay: the model needs them.
        assert!(out.contains("4f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39"));
        assert!(out.contains("error[E0308]: mismatched types"));
        assert!(out.contains("password: [REDACTED]"), "{out}");
        assert!(out.contains("DB_PASSWORD=[REDACTED]"), "{out}");
        // Long identifiers are not secrets.
        let code = "fn falls_back_to_the_default_port_when_unset() {} // parse_port_with_default";
        assert_eq!(redact(code, &Redaction::default()), code);
    }

    #[test]
    fn files_where_secrets_live_are_never_read_for_a_prompt() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            ".env",
            "config/credentials.yml",
            "deploy/server.pem",
            "src/lib.rs",
        ] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "x").unwrap();
        }
        assert!(read_inside(dir.path(), ".env").is_none());
        assert!(read_inside(dir.path(), "config/credentials.yml").is_none());
        assert!(read_inside(dir.path(), "deploy/server.pem").is_none());
        assert_eq!(read_inside(dir.path(), "src/lib.rs").as_deref(), Some("x"));
        // Nor through a link, nor a folder taken for a file.
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("src/host.txt")).unwrap();
        assert!(read_inside(dir.path(), "src/host.txt").is_none());
        assert!(!regular_inside(dir.path(), "src/host.txt"));
        assert!(!regular_inside(dir.path(), "src"));
        assert!(regular_inside(dir.path(), "src/lib.rs"));
    }
}
