//! Which toolchain a repository needs, from its build files, and what that toolchain's
//! sandbox looks like (its environment); the image itself is built by the recipe in
//! `scripts/sandbox-image.sh`, one per language.

use std::path::Path;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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

#[cfg(test)]
mod tests {
    use super::Language;

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
}
