//! Which toolchain a repository needs (from the failing job's `actions/setup-*` steps, else
//! its build files), which versions the CI and the repository ask for, and what that
//! toolchain's sandbox looks like (its environment); the image itself is built by the recipe
//! in `scripts/sandbox-image.sh`, one per language.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    Rust,
    Python,
    Node,
    Go,
    Java,
}

/// What every container gets, a dependency fetch included (whose tools must reach their
/// registries, so none of the languages' offline settings).
pub const COMMON_ENV: [&str; 3] = [
    "PATH=/opt/rust/bin:/usr/local/bin:/usr/bin:/bin",
    "HOME=/tmp",
    "TERM=dumb",
];

impl Language {
    pub const ALL: [Language; 5] = [
        Language::Rust,
        Language::Python,
        Language::Node,
        Language::Go,
        Language::Java,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Node => "node",
            Language::Go => "go",
            Language::Java => "java",
        }
    }

    pub fn parse(name: &str) -> Option<Language> {
        Language::ALL.into_iter().find(|l| l.as_str() == name)
    }

    /// A repository's main language, by its build files at the root. A repository with none
    /// of them gets the Python image (it carries a shell, git and Python's tools).
    pub fn of(repo: &Path) -> Language {
        let has = |f: &str| repo.join(f).exists();
        if has("Cargo.toml") {
            Language::Rust
        } else if has("go.mod") {
            Language::Go
        } else if has("package.json") {
            Language::Node
        } else if has("pom.xml") || has("build.gradle") || has("build.gradle.kts") {
            Language::Java
        } else {
            Language::Python
        }
    }

    /// The language whose image runs the failing step: the one the failing job sets up (its
    /// `actions/setup-*` steps, when they name exactly one), else the build files'. A
    /// Python project with a `package.json` for its linters, tested by a job that sets up
    /// Python, runs in the Python image.
    pub fn choose(repo: &Path, set_up_by_ci: &[Requested]) -> Language {
        let mut named: Vec<Language> = Vec::new();
        for r in set_up_by_ci {
            if !named.contains(&r.language) {
                named.push(r.language);
            }
        }
        match named.as_slice() {
            [one] => *one,
            _ => Language::of(repo),
        }
    }

    /// The environment every run of this language gets, with or without fetched
    /// dependencies: caches in the container's own `/tmp`, and no tool reaching a network.
    pub fn env(self) -> Vec<String> {
        let own: &[&str] = match self {
            Language::Rust => &[
                "CARGO_HOME=/tmp/cargo-home",
                "CARGO_TARGET_DIR=/work/target",
                "CARGO_NET_OFFLINE=true",
            ],
            Language::Python => &["PYTHONDONTWRITEBYTECODE=1", "PIP_NO_INDEX=1"],
            Language::Node => &[
                "npm_config_cache=/tmp/npm-cache",
                "npm_config_offline=true",
                "NO_UPDATE_NOTIFIER=1",
            ],
            Language::Go => &[
                "GOPATH=/tmp/go",
                "GOCACHE=/tmp/go-cache",
                "GOFLAGS=-mod=mod",
                "GOPROXY=off",
                "GOTOOLCHAIN=local",
            ],
            Language::Java => &["MAVEN_OPTS=-Dmaven.repo.local=/tmp/m2"],
        };
        COMMON_ENV
            .iter()
            .chain(own)
            .map(|s| s.to_string())
            .collect()
    }
}

/// A toolchain version asked for: by a setup step of the failing job, or pinned by a file of
/// the repository. Both are the repository's words: only ever compared and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requested {
    pub language: Language,
    pub version: String,
    /// Where it was asked for: `actions/setup-python@v5`, `rust-toolchain.toml`, ...
    pub from: String,
}

/// The language an Actions setup step sets up, from its `uses:` (without the ref).
pub fn setup_action_language(action: &str) -> Option<Language> {
    match action.to_ascii_lowercase().as_str() {
        "actions/setup-python" => Some(Language::Python),
        "actions/setup-node" => Some(Language::Node),
        "actions/setup-go" => Some(Language::Go),
        "actions/setup-java" => Some(Language::Java),
        "dtolnay/rust-toolchain"
        | "actions-rs/toolchain"
        | "actions-rust-lang/setup-rust-toolchain" => Some(Language::Rust),
        _ => None,
    }
}

/// A pin file is read only this far: versions are short.
const MAX_PIN_BYTES: u64 = 4096;

/// The versions the repository pins in its own files at the root: `rust-toolchain(.toml)`,
/// `.python-version`, `.nvmrc` / `.node-version`, and `go.mod`'s `toolchain`/`go` lines.
pub fn pins(repo: &Path) -> Vec<Requested> {
    // Regular files only: a pin that is a link could point anywhere on the host.
    let read = |name: &str| -> Option<String> {
        let path = repo.join(name);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > MAX_PIN_BYTES {
            return None;
        }
        std::fs::read_to_string(path).ok()
    };
    let first_word = |text: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string)
    };
    let mut out = Vec::new();
    let mut push = |language, version: Option<String>, from: &str| {
        if let Some(version) = version.filter(|v| !v.is_empty() && v.len() <= 64) {
            out.push(Requested {
                language,
                version,
                from: from.to_string(),
            });
        }
    };
    if let Some(text) = read("rust-toolchain.toml") {
        let channel = text.parse::<toml::Table>().ok().and_then(|t| {
            t.get("toolchain")?
                .get("channel")?
                .as_str()
                .map(str::to_string)
        });
        push(Language::Rust, channel, "rust-toolchain.toml");
    } else if let Some(text) = read("rust-toolchain") {
        push(Language::Rust, first_word(&text), "rust-toolchain");
    }
    if let Some(text) = read(".python-version") {
        push(Language::Python, first_word(&text), ".python-version");
    }
    for file in [".nvmrc", ".node-version"] {
        if let Some(text) = read(file) {
            push(Language::Node, first_word(&text), file);
            break;
        }
    }
    if let Some(text) = read("go.mod") {
        let directive = |name: &str| {
            text.lines().find_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some(name)).then(|| words.next().map(str::to_string))?
            })
        };
        match directive("toolchain") {
            Some(t) => push(
                Language::Go,
                Some(t.trim_start_matches("go").to_string()),
                "go.mod toolchain",
            ),
            None => push(Language::Go, directive("go"), "go.mod go"),
        }
    }
    out
}

/// The version number in a tool's own words (`Python 3.11.2`, `v18.19.0`, `go version
/// go1.19.8 linux/amd64`, `rustc 1.95.0 (...)`, `javac 17.0.15`).
pub fn version_number(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == '"')
        .map(|w| w.trim_start_matches("go").trim_start_matches('v'))
        .find(|w| {
            w.split('.').count() >= 2
                && w.split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        })
        .map(str::to_string)
}

/// Whether the sandbox's `have` (a version number) is what `asked` asks for: `3.11` and
/// `3.11.x` are any 3.11; `3.11.2` is exactly that. `None` when `asked` is not a version
/// number (`stable`, `lts/*`, `>=3.9`, an expression) and cannot be compared.
pub fn satisfies(asked: &str, have: &str) -> Option<bool> {
    let asked = asked.trim().trim_start_matches('v').trim_end_matches(".x");
    let asked = asked.trim_start_matches("go");
    if asked.is_empty()
        || !asked
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    Some(have == asked || have.starts_with(&format!("{asked}.")))
}

/// What the evidence says about the toolchain a run used against the versions asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ToolchainEvidence {
    pub language: Language,
    /// The sandbox's version, e.g. `3.11.2` (none when it could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub requested: Vec<Requested>,
    /// One line per version asked for that the sandbox does not have or cannot compare.
    pub notes: Vec<String>,
}

impl ToolchainEvidence {
    pub fn new(language: Language, version: Option<String>, requested: Vec<Requested>) -> Self {
        let mut notes = Vec::new();
        for r in requested.iter().filter(|r| r.language == language) {
            let have = version.as_deref();
            match (have, satisfies(&r.version, have.unwrap_or_default())) {
                (None, _) => notes.push(format!(
                    "{} asks for {} {}; the sandbox's version could not be read",
                    r.from,
                    language.as_str(),
                    r.version
                )),
                (Some(_), Some(true)) => {}
                (Some(have), Some(false)) => notes.push(format!(
                    "{} asks for {} {}; the sandbox has {have}: a failure or a fix may differ on the CI",
                    r.from,
                    language.as_str(),
                    r.version
                )),
                (Some(have), None) => notes.push(format!(
                    "{} asks for {} `{}`, which is not compared; the sandbox has {have}",
                    r.from,
                    language.as_str(),
                    r.version
                )),
            }
        }
        for r in requested.iter().filter(|r| r.language != language) {
            notes.push(format!(
                "{} sets up {} {}, which this {} sandbox does not have",
                r.from,
                r.language.as_str(),
                r.version,
                language.as_str()
            ));
        }
        ToolchainEvidence {
            language,
            version,
            requested,
            notes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_a_repository_by_its_build_files() {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        assert_eq!(Language::of(&examples.join("rust-deps")), Language::Rust);
        assert_eq!(
            Language::of(&examples.join("python-deps")),
            Language::Python
        );
        assert_eq!(Language::of(&examples.join("node-format")), Language::Node);
        assert_eq!(Language::of(&examples.join("go-format")), Language::Go);
        assert_eq!(Language::of(&examples), Language::Python);
        for l in Language::ALL {
            assert_eq!(Language::parse(l.as_str()), Some(l));
        }
    }

    fn req(language: Language, version: &str) -> Requested {
        Requested {
            language,
            version: version.into(),
            from: "actions/setup-x@v1".into(),
        }
    }

    #[test]
    fn the_job_that_sets_up_one_language_chooses_its_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package.json"), "{}").unwrap();
        assert_eq!(Language::choose(dir.path(), &[]), Language::Node);
        let python = [req(Language::Python, "3.12")];
        assert_eq!(Language::choose(dir.path(), &python), Language::Python);
        // Two languages set up: the build files decide.
        let both = [req(Language::Python, "3.12"), req(Language::Go, "1.22")];
        assert_eq!(Language::choose(dir.path(), &both), Language::Node);
    }

    #[test]
    fn reads_the_versions_a_repository_pins() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(
            p.join("rust-toolchain.toml"),
            "[toolchain]\nchannel = \"1.75.0\"\n",
        )
        .unwrap();
        std::fs::write(p.join(".python-version"), "# pyenv\n3.12.4\n").unwrap();
        std::fs::write(p.join(".nvmrc"), "v20\n").unwrap();
        std::fs::write(
            p.join("go.mod"),
            "module x\n\ngo 1.22\n\ntoolchain go1.22.5\n",
        )
        .unwrap();
        let got: Vec<(Language, String, String)> = pins(p)
            .into_iter()
            .map(|r| (r.language, r.version, r.from))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Language::Rust,
                    "1.75.0".into(),
                    "rust-toolchain.toml".into()
                ),
                (Language::Python, "3.12.4".into(), ".python-version".into()),
                (Language::Node, "v20".into(), ".nvmrc".into()),
                (Language::Go, "1.22.5".into(), "go.mod toolchain".into()),
            ]
        );
        // A pin that is a link is not followed.
        std::fs::remove_file(p.join(".python-version")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", p.join(".python-version")).unwrap();
        assert!(pins(p).iter().all(|r| r.language != Language::Python));
    }

    #[test]
    fn compares_what_was_asked_with_what_the_sandbox_has() {
        assert_eq!(version_number("Python 3.11.2").as_deref(), Some("3.11.2"));
        assert_eq!(version_number("v18.19.0").as_deref(), Some("18.19.0"));
        assert_eq!(
            version_number("go version go1.19.8 linux/amd64").as_deref(),
            Some("1.19.8")
        );
        assert_eq!(
            version_number("rustc 1.95.0 (59807616e 2026-04-14)").as_deref(),
            Some("1.95.0")
        );
        assert_eq!(version_number("javac 17.0.15").as_deref(), Some("17.0.15"));
        assert_eq!(satisfies("3.11", "3.11.2"), Some(true));
        assert_eq!(satisfies("3.11.x", "3.11.2"), Some(true));
        assert_eq!(satisfies("3.1", "3.11.2"), Some(false));
        assert_eq!(satisfies("3.12", "3.11.2"), Some(false));
        assert_eq!(satisfies("v18", "18.19.0"), Some(true));
        assert_eq!(satisfies("go1.19", "1.19.8"), Some(true));
        assert_eq!(satisfies("stable", "1.95.0"), None);
        assert_eq!(satisfies("lts/*", "18.19.0"), None);
        assert_eq!(satisfies(">=3.9", "3.11.2"), None);

        let evidence = ToolchainEvidence::new(
            Language::Python,
            Some("3.11.2".into()),
            vec![
                req(Language::Python, "3.12"),
                req(Language::Python, "3.11"),
                req(Language::Python, "pypy3.10"),
                req(Language::Node, "20"),
            ],
        );
        assert_eq!(evidence.notes.len(), 3, "{:?}", evidence.notes);
        assert!(evidence.notes[0].contains("asks for python 3.12; the sandbox has 3.11.2"));
        assert!(evidence.notes[1].contains("`pypy3.10`, which is not compared"));
        assert!(
            evidence.notes[2].contains("sets up node 20, which this python sandbox does not have")
        );
    }
}
