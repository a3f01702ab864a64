//! What a file of the repository references, resolved to the repository's own files the way
//! each language resolves them: Rust `mod` and `use crate::`/`super::`/the package's own name;
//! Python imports (relative, and absolute from the root, `src/`, beside the file, or where
//! pytest's `pythonpath` or the file's `sys.path` edits point);
//! JavaScript and TypeScript imports and requires, relative or through the aliases of the
//! project's `tsconfig.json`; Go imports inside the module (and a test's
//! own package); C and C++ quoted includes (also through the include directories CMake, Meson
//! or Make name) and the header's implementation; Ruby requires;
//! Java, Kotlin, Scala, PHP and Haskell imports by their package paths, and a JVM test's class
//! under test; Elixir's aliased, imported and used modules where Mix files them; a C# test's
//! class under test and the types a C# file names, by the files named for them. Imports of
//! anything else (the standard library, dependencies) resolve to no file here and are dropped. Only what is a regular file inside the repository is returned;
//! directories are listed only through plain parts and no link.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use crate::heal::redaction::{read_inside, regular_inside};

mod elixir;
mod go;
mod javascript;
mod native;
mod packages;
mod python;

/// Files the suffix index holds at most, and how deep it looks: a monorepo is not walked whole.
const INDEX_FILES: usize = 50_000;
const INDEX_DEPTH: usize = 16;
/// Directories never indexed: dependencies, build output and hidden ones (`.git`).
const SKIPPED: [&str; 8] = [
    "node_modules",
    // Mix's fetched dependencies.
    "deps",
    "target",
    "vendor",
    "build",
    "dist",
    "_build",
    "dist-newstyle",
];

/// At most this many imports of one file are resolved (a generated file may hold thousands).
const MAX_IMPORTS: usize = 200;
/// At most this many references of one file are returned.
const MAX_FOUND: usize = 64;
/// Entries (files and directories) the index looks at, at most.
const INDEX_ENTRIES: usize = 200_000;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

/// The first [`MAX_IMPORTS`] matches of `re` in `text`.
fn imports<'r, 't>(
    re: &'r Regex,
    text: &'t str,
) -> impl Iterator<Item = regex::Captures<'t>> + use<'r, 't> {
    re.captures_iter(text).take(MAX_IMPORTS)
}

/// Resolves the references of files of one repository.
pub(super) struct Resolver<'a> {
    repo: &'a Path,
    /// Every indexed file by its name, for the languages whose imports name a path from some
    /// source root.
    index: OnceCell<HashMap<String, Vec<String>>>,
    /// The include directories the repository's build files name (C and C++).
    include_dirs: OnceCell<Vec<String>>,
    /// The directories pytest's configuration puts on Python's path.
    python_roots: OnceCell<Vec<String>>,
}

impl<'a> Resolver<'a> {
    pub(super) fn new(repo: &'a Path) -> Resolver<'a> {
        Resolver {
            repo,
            index: OnceCell::new(),
            include_dirs: OnceCell::new(),
            python_roots: OnceCell::new(),
        }
    }

    /// The repository files `from` (whose text is `text`) references, in the order it names
    /// them, without `from` itself.
    pub(super) fn of(&self, from: &str, text: &str) -> Vec<String> {
        let ext = from.rsplit_once('.').map_or("", |(_, e)| e);
        // Each group lists the places one reference may resolve to, likeliest first.
        let groups: Vec<Vec<String>> = match ext {
            "rs" => self.rust(from, text),
            "py" => self.python(from, text),
            "js" | "jsx" | "ts" | "tsx" | "mjs" | "cjs" | "mts" | "cts" => {
                self.javascript(from, text)
            }
            "go" => self.go(from, text),
            "c" | "h" | "cc" | "cpp" | "cxx" | "hpp" | "hh" => self.c(from, text),
            "rb" => packages::ruby(from, text),
            "java" | "kt" | "scala" => self.jvm(from, text, ext),
            "php" => self.php(text),
            "hs" => self.haskell(text),
            "ex" | "exs" => self.elixir(from, text),
            "cs" => self.csharp(from, text),
            _ => Vec::new(),
        };
        let mut out: Vec<String> = Vec::new();
        for group in groups {
            // More than a prompt can show (twelve files, twenty named): stop looking.
            if out.len() == MAX_FOUND {
                break;
            }
            if let Some(path) = group.into_iter().find(|p| regular_inside(self.repo, p)) {
                if path != from && !out.contains(&path) {
                    out.push(path);
                }
            }
        }
        out
    }

    pub(super) fn repo(&self) -> &Path {
        self.repo
    }

    fn exists(&self, path: &str) -> bool {
        regular_inside(self.repo, path)
    }

    /// The nearest directory holding `file` (the file's own directory, then its ancestors).
    fn nearest(&self, from: &str, file: &str) -> Option<String> {
        let mut dir = parent(from);
        loop {
            if self.exists(&join_dir(&dir, file)) {
                return Some(dir);
            }
            if dir.is_empty() {
                return None;
            }
            dir = parent(&dir);
        }
    }

    fn rust(&self, from: &str, text: &str) -> Vec<Vec<String>> {
        static MOD: LazyLock<Regex> =
            LazyLock::new(|| re(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;"));
        static USE: LazyLock<Regex> = LazyLock::new(|| {
            re(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([A-Za-z_]\w*)((?:::[A-Za-z_]\w*)*)")
        });
        let dir = parent(from);
        let stem = stem(from);
        // A crate's root (`lib.rs`, `main.rs`, a test, example, bench or binary, `build.rs`)
        // and a `mod.rs` keep their submodules beside them; any other file in a directory of
        // its own name.
        let folder = dir.rsplit('/').next().unwrap_or(&dir);
        let root = matches!(stem, "lib" | "main" | "mod" | "build")
            || matches!(folder, "tests" | "examples" | "benches" | "bin");
        let own = if root {
            dir.clone()
        } else {
            join_dir(&dir, stem)
        };
        let mut groups = Vec::new();
        for m in imports(&MOD, text) {
            let name = &m[1];
            groups.push(vec![
                join_dir(&own, &format!("{name}.rs")),
                join_dir(&own, &format!("{name}/mod.rs")),
            ]);
        }
        let crate_root = self
            .nearest(from, "lib.rs")
            .or_else(|| self.nearest(from, "main.rs"));
        let package = self.nearest(from, "Cargo.toml").and_then(|dir| {
            let manifest = read_inside(self.repo, &join_dir(&dir, "Cargo.toml"))?;
            let manifest: toml::Table = toml::from_str(&manifest).ok()?;
            let name = manifest
                .get("package")?
                .get("name")?
                .as_str()?
                .replace('-', "_");
            Some((name, join_dir(&dir, "src")))
        });
        for m in imports(&USE, text) {
            let mut segments: Vec<&str> = m[2].split("::").filter(|s| !s.is_empty()).collect();
            // `super::super::x`: one directory up for each further `super`.
            let mut ups = 0;
            if &m[1] == "super" {
                while segments.first() == Some(&"super") {
                    segments.remove(0);
                    ups += 1;
                }
            }
            let climb = |mut d: Option<String>| {
                for _ in 0..ups {
                    d = d.and_then(|d| up(&d));
                }
                d
            };
            let base = match &m[1] {
                "crate" => crate_root.clone(),
                "super" if root => climb(up(&dir)),
                "super" => climb(Some(dir.clone())),
                "self" => Some(own.clone()),
                name => package
                    .as_ref()
                    .filter(|(package, _)| package == name)
                    .map(|(_, src)| src.clone()),
            };
            let Some(base) = base else { continue };
            // The deepest module that is a file: `a::b::Item` is in a/b.rs or a.rs.
            let mut group = Vec::new();
            for depth in (1..=segments.len()).rev() {
                let path = segments[..depth].join("/");
                group.push(join_dir(&base, &format!("{path}.rs")));
                group.push(join_dir(&base, &format!("{path}/mod.rs")));
            }
            groups.push(group);
        }
        groups
    }

    /// Indexed files whose path is `suffix` or ends with `/suffix`, shortest first.
    fn by_suffix(&self, suffix: &str) -> Vec<String> {
        let index = self.index.get_or_init(|| index(self.repo));
        let name = suffix.rsplit('/').next().unwrap_or(suffix);
        let tail = format!("/{suffix}");
        let mut found: Vec<String> = index
            .get(name)
            .into_iter()
            .flatten()
            .filter(|p| *p == suffix || p.ends_with(&tail))
            .cloned()
            .collect();
        found.sort_by_key(|p| p.len());
        found
    }
}

/// Whether a file mostly gathers and re-exports others: a JavaScript or TypeScript module of
/// `export … from '…'` statements, or a Python package's `__init__.py` of relative imports.
/// What such a file references is what its importer uses. "Mostly": at least half of its code
/// (blank lines, comments and a leading docstring aside) is re-export statements.
pub(super) fn mostly_reexports(path: &str, text: &str) -> bool {
    static JS: LazyLock<Regex> = LazyLock::new(|| {
        re(r#"export\s+(?:type\s+)?(?:\*(?:\s+as\s+\w+)?|\{[^}]*\})\s+from\s+["'][^"']+["'];?"#)
    });
    static PY: LazyLock<Regex> = LazyLock::new(|| {
        re(r"(?m)^[ \t]*from[ \t]+\.[\w.]*[ \t]+import[ \t]+(?:\([^)]*\)|[^\n]*)")
    });
    static BLOCK_COMMENT: LazyLock<Regex> = LazyLock::new(|| re(r"(?s)/\*.*?\*/"));
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    let (statements, comment, text): (&Regex, &str, String) = match ext {
        "js" | "jsx" | "ts" | "tsx" | "mjs" | "cjs" | "mts" | "cts" => {
            (&JS, "//", BLOCK_COMMENT.replace_all(text, "").into_owned())
        }
        "py" if path.rsplit('/').next() == Some("__init__.py") => {
            (&PY, "#", without_docstring(text).to_string())
        }
        _ => return false,
    };
    let code: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(comment))
        .collect::<Vec<_>>()
        .join("\n");
    // Every statement counted, however many: a barrel of hundreds is still one.
    let reexported: usize = statements.find_iter(&code).map(|m| m.len()).sum();
    reexported > 0 && reexported * 2 >= code.len()
}

/// A Python module's text after its docstring (documentation, not code), if it opens with one.
fn without_docstring(text: &str) -> &str {
    let trimmed = text.trim_start();
    for quotes in ["\"\"\"", "'''"] {
        if let Some(rest) = trimmed.strip_prefix(quotes) {
            return rest.find(quotes).map_or(text, |end| &rest[end + 3..]);
        }
    }
    text
}

/// The directory part of a repository path ("" at the root).
fn parent(path: &str) -> String {
    path.rsplit_once('/')
        .map_or(String::new(), |(d, _)| d.to_string())
}

/// One directory up, or `None` above the root.
fn up(dir: &str) -> Option<String> {
    if dir.is_empty() {
        None
    } else {
        Some(parent(dir))
    }
}

fn stem(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rsplit_once('.').map_or(name, |(s, _)| s)
}

fn join_dir(dir: &str, rest: &str) -> String {
    if dir.is_empty() {
        rest.to_string()
    } else {
        format!("{dir}/{rest}")
    }
}

/// `rel` taken from `dir`, with `.` and `..` resolved; `None` when it leaves the repository or
/// is absolute.
fn normalise(dir: &str, rel: &str) -> Option<String> {
    if rel.starts_with('/') || rel.contains('\\') {
        return None;
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// The names in directory `dir` of the repository, sorted, when every part of it is a plain
/// directory (no link).
fn list(repo: &Path, dir: &str) -> Vec<String> {
    let mut path = repo.to_path_buf();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Vec::new();
        }
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            _ => return Vec::new(),
        }
    }
    let Ok(entries) = std::fs::read_dir(&path) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .take(10_000)
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The repository's files as relative paths by file name, links not followed, dependencies
/// and build output not entered, bounded.
fn index(repo: &Path) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let files = walkdir::WalkDir::new(repo)
        .max_depth(INDEX_DEPTH)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            e.depth() == 0
                || !(name.starts_with('.') || e.file_type().is_dir() && SKIPPED.contains(&&*name))
        })
        .take(INDEX_ENTRIES)
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let rel = e.path().strip_prefix(repo).ok()?.to_str()?;
            Some(rel.to_string())
        })
        .take(INDEX_FILES);
    for rel in files {
        let name = rel.rsplit('/').next().unwrap_or(&rel).to_string();
        out.entry(name).or_default().push(rel);
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::heal::context::tests::repo;

    pub(super) fn refs(files: &[(&str, &str)], from: &str) -> Vec<String> {
        let dir = repo(files);
        let text = files.iter().find(|f| f.0 == from).unwrap().1;
        Resolver::new(dir.path()).of(from, text)
    }

    #[test]
    fn rust_mods_crate_paths_super_and_the_package_name() {
        let files = [
            ("Cargo.toml", "[package]\nname = \"net-tools\"\nversion = \"0.1.0\"\n\n[dependencies]\nname = \"x\"\n"),
            ("src/lib.rs", "pub mod ports;\nmod addr;\nuse std::fmt;\n"),
            ("src/ports.rs", "use crate::addr::parse::Host;\nuse super::addr;\nmod inner;\n"),
            ("src/ports/inner.rs", ""),
            ("src/addr/mod.rs", ""),
            ("src/addr/parse.rs", "use super::super::ports;\n"),
            ("tests/it.rs", "mod common;\nuse net_tools::ports::listen;\nuse serde::Deserialize;\n"),
            ("tests/common/mod.rs", ""),
        ];
        assert_eq!(
            refs(&files, "src/lib.rs"),
            ["src/ports.rs", "src/addr/mod.rs"]
        );
        assert_eq!(
            refs(&files, "src/ports.rs"),
            ["src/ports/inner.rs", "src/addr/parse.rs", "src/addr/mod.rs"]
        );
        // A test is a crate root: its modules are beside it.
        assert_eq!(
            refs(&files, "tests/it.rs"),
            ["tests/common/mod.rs", "src/ports.rs"]
        );
        // Each further `super` is one module up.
        assert_eq!(refs(&files, "src/addr/parse.rs"), ["src/ports.rs"]);
    }

    #[test]
    fn links_dependencies_and_build_output_are_not_followed() {
        let outside = repo(&[("com/acme/Secret.java", "")]);
        let dir = repo(&[
            (
                "src/App.java",
                "import com.acme.Secret;\nimport com.acme.Dep;\n",
            ),
            ("node_modules/com/acme/Dep.java", ""),
            ("target/com/acme/Dep.java", ""),
        ]);
        std::os::unix::fs::symlink(outside.path().join("com"), dir.path().join("src/com")).unwrap();
        let text = "import com.acme.Secret;\nimport com.acme.Dep;\n";
        assert!(Resolver::new(dir.path())
            .of("src/App.java", text)
            .is_empty());
        // A Go import through a linked directory lists nothing.
        std::fs::write(dir.path().join("go.mod"), "module m\n").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("pkg")).unwrap();
        std::fs::write(outside.path().join("x.go"), "").unwrap();
        assert!(Resolver::new(dir.path())
            .of("main.go", "import \"m/pkg\"\n")
            .is_empty());
    }
}
