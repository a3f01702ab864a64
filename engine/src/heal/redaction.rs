//! What may leave the machine in a prompt: text with everything secret-shaped redacted, and
//! files of the repository read only when they are regular files inside it, within a cap, and
//! not where secrets live.

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

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

/// A file sent to a model service may be this big.
pub(super) const FILE_CAP: usize = 48 * 1024;

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
        // Credentials in a URL (`postgres://user:pass@host`) and bearer tokens.
        r"(?i)\b[a-z][a-z0-9+.\-]*://[^\s/:@\x22']+:[^\s/@\x22']+@",
        r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]{8,}=*",
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
pub(super) fn sensitive(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel).to_ascii_lowercase();
    rel.split('/').any(|part| part.starts_with('.'))
        || name.ends_with(".env")
        || name.contains(".env.")
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

/// A regular file inside `repo`, reached through no link, read within the cap; never one
/// where secrets live.
pub(super) fn read_inside(repo: &Path, rel: &str) -> Option<String> {
    if sensitive(rel) {
        return None;
    }
    let (path, meta) = inside(repo, rel)?;
    if meta.len() as usize > FILE_CAP {
        return None;
    }
    // Opened without following a link and read no further than the cap: the file may have
    // been swapped or grown since it was looked at.
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .ok()?;
    let mut text = String::new();
    file.take(FILE_CAP as u64 + 1)
        .read_to_string(&mut text)
        .ok()?;
    (text.len() <= FILE_CAP).then_some(text)
}

/// A regular file inside `repo`, reached through no link (answers are not told about anything
/// else, so they cannot probe the worker's disk).
pub(super) fn regular_inside(repo: &Path, rel: &str) -> bool {
    inside(repo, rel).is_some()
}

/// The path and metadata of `rel` under `repo` when it is a regular file reached by plain parts
/// through no link.
fn inside(repo: &Path, rel: &str) -> Option<(std::path::PathBuf, std::fs::Metadata)> {
    let mut path = repo.to_path_buf();
    for part in rel.split('/') {
        // Plain parts only: `push` of an absolute part would replace the path.
        if part.is_empty() || part == "." || part == ".." || part.contains('\\') {
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
    meta.is_file().then_some((path, meta))
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
            DATABASE_URL used by ci: postgres://admin:S3cretPassw0rd@db/prod\n\
            curl -H 'Authorization: Bearer abc123def456ghi' https://api\n\
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
            "S3cretPassw0rd",
            "abc123def456ghi",
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
            "config/prod.env",
            "config/app.env.local",
            "config/credentials.yml",
            "deploy/server.pem",
            "src/lib.rs",
        ] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "x").unwrap();
        }
        assert!(read_inside(dir.path(), ".env").is_none());
        assert!(read_inside(dir.path(), "config/prod.env").is_none());
        assert!(read_inside(dir.path(), "config/app.env.local").is_none());
        assert!(read_inside(dir.path(), "config/credentials.yml").is_none());
        assert!(read_inside(dir.path(), "deploy/server.pem").is_none());
        assert_eq!(read_inside(dir.path(), "src/lib.rs").as_deref(), Some("x"));
        // Nor through a link, nor a folder taken for a file.
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("src/host.txt")).unwrap();
        assert!(read_inside(dir.path(), "src/host.txt").is_none());
        assert!(!regular_inside(dir.path(), "src/host.txt"));
        assert!(!regular_inside(dir.path(), "src"));
        assert!(!regular_inside(dir.path(), "src/../src/lib.rs"));
        assert!(!regular_inside(dir.path(), "/etc/hostname"));
        assert!(regular_inside(dir.path(), "src/lib.rs"));
    }
}
