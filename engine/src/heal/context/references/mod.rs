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
//! class under test. Imports of anything else (the standard library, dependencies) resolve to no
//! file here and are dropped. Only what is a regular file inside the repository is returned;
//! directories are listed only through plain parts and no link.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use crate::heal::redaction::{read_inside, regular_inside};

mod elixir;
mod javascript;
mod native;
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
            "rb" => ruby(from, text),
            "java" | "kt" | "scala" => self.jvm(from, text, ext),
            "php" => self.php(text),
            "hs" => self.haskell(text),
            "ex" | "exs" => self.elixir(from, text),
            "cs" => self.csharp(from),
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

    fn go(&self, from: &str, text: &str) -> Vec<Vec<String>> {
        static MODULE: LazyLock<Regex> = LazyLock::new(|| re(r"(?m)^module\s+(\S+)"));
        static SINGLE: LazyLock<Regex> =
            LazyLock::new(|| re(r#"(?m)^\s*import\s+(?:[\w.]+\s+)?"([^"]+)""#));
        static BLOCK: LazyLock<Regex> = LazyLock::new(|| re(r"(?ms)^\s*import\s*\((.*?)\)"));
        static QUOTED: LazyLock<Regex> = LazyLock::new(|| re(r#""([^"]+)""#));
        let mut dirs = Vec::new();
        // A test is about its own package: the package's other files.
        if from.ends_with("_test.go") {
            dirs.push(parent(from));
        }
        let module = self.nearest(from, "go.mod").and_then(|dir| {
            let text = read_inside(self.repo, &join_dir(&dir, "go.mod"))?;
            let module = MODULE.captures(&text)?[1].to_string();
            // The module itself, then the modules go.mod replaces with a directory of the
            // repository (a monorepo's `replace example.com/lib => ../lib`), longest first.
            let mut modules = vec![(module, dir.clone())];
            let mut replaced = go_replaces(&text, &dir);
            replaced.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
            modules.extend(replaced);
            Some(modules)
        });
        if let Some(modules) = &module {
            let mut paths: Vec<String> = imports(&SINGLE, text).map(|m| m[1].to_string()).collect();
            for block in imports(&BLOCK, text) {
                paths.extend(QUOTED.captures_iter(&block[1]).map(|m| m[1].to_string()));
            }
            for import in paths {
                let found = modules.iter().find_map(|(module, root)| {
                    if import == *module {
                        Some(root.clone())
                    } else {
                        let rest = import.strip_prefix(module.as_str())?.strip_prefix('/')?;
                        Some(join_dir(root, rest))
                    }
                });
                dirs.extend(found);
            }
        }
        let mut groups = Vec::new();
        // A test's own file first (`cart_test.go` tests `cart.go`), then the package's others.
        if let Some(tested) = from.strip_suffix("_test.go") {
            groups.push(vec![format!("{tested}.go")]);
        }
        for dir in dirs {
            for file in list(self.repo, &dir).into_iter().take(MAX_IMPORTS) {
                if file.ends_with(".go") && !file.ends_with("_test.go") {
                    groups.push(vec![join_dir(&dir, &file)]);
                }
            }
        }
        groups
    }

    fn jvm(&self, from: &str, text: &str, ext: &str) -> Vec<Vec<String>> {
        static IMPORT: LazyLock<Regex> =
            LazyLock::new(|| re(r"(?m)^\s*import\s+(?:static\s+)?([\w.]+)"));
        static PACKAGE: LazyLock<Regex> = LazyLock::new(|| re(r"(?m)^\s*package\s+([\w.]+)"));
        let exts: Vec<&str> = std::iter::once(ext)
            .chain(["java", "kt", "scala"].into_iter().filter(|e| *e != ext))
            .collect();
        let class = |dotted: &str| -> Vec<String> {
            let path = dotted.replace('.', "/");
            exts.iter()
                .flat_map(|e| self.by_suffix(&format!("{path}.{e}")))
                .collect()
        };
        let mut groups = Vec::new();
        // The class a test tests: `FooTest` in the same package is about `Foo`.
        let name = stem(from);
        let tested = ["Tests", "Test", "Spec", "IT"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|n| !n.is_empty()));
        if let Some(tested) = tested {
            let package = PACKAGE.captures(text).map(|m| m[1].to_string());
            let dotted = match package {
                Some(p) => format!("{p}.{tested}"),
                None => tested.to_string(),
            };
            groups.push(class(&dotted));
        }
        for m in imports(&IMPORT, text) {
            let dotted = m[1].trim_end_matches(".*");
            let mut group = class(dotted);
            // A static import names a member: its class is one part up.
            if let Some((owner, _)) = dotted.rsplit_once('.') {
                group.extend(class(owner));
            }
            groups.push(group);
        }
        groups
    }

    fn php(&self, text: &str) -> Vec<Vec<String>> {
        static USE: LazyLock<Regex> = LazyLock::new(|| re(r"(?m)^\s*use\s+\\?([\w\\]+)\s*;"));
        static REQUIRE: LazyLock<Regex> = LazyLock::new(|| {
            re(
                r#"(?m)^\s*(?:require|include)(?:_once)?\s*\(?\s*(?:__DIR__\s*\.\s*)?['"]/?([^'"]+\.php)['"]"#,
            )
        });
        let mut groups = Vec::new();
        for m in imports(&USE, text) {
            // PSR-4 maps a namespace prefix to a directory: the longest tail that is a file,
            // keeping the class's own namespace (a bare `TestCase.php` is anyone's).
            let parts: Vec<&str> = m[1].split('\\').take(16).collect();
            groups.push(
                (0..parts.len().saturating_sub(1).max(1))
                    .flat_map(|skip| self.by_suffix(&format!("{}.php", parts[skip..].join("/"))))
                    .collect(),
            );
        }
        for m in imports(&REQUIRE, text) {
            groups.push(self.by_suffix(&m[1]));
        }
        groups
    }

    /// C#: a test class's class under test (`CartTests.cs` is about `Cart.cs`, in whichever
    /// project holds it). Namespaces name no file, so `using` directives are not followed.
    fn csharp(&self, from: &str) -> Vec<Vec<String>> {
        let name = stem(from);
        ["Tests", "Test", "Specs", "Spec"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|n| !n.is_empty()))
            .map(|tested| vec![self.by_suffix(&format!("{tested}.cs"))])
            .unwrap_or_default()
    }

    fn haskell(&self, text: &str) -> Vec<Vec<String>> {
        static IMPORT: LazyLock<Regex> =
            LazyLock::new(|| re(r"(?m)^\s*import\s+(?:qualified\s+)?([A-Z][\w.]*)"));
        imports(&IMPORT, text)
            .map(|m| self.by_suffix(&format!("{}.hs", m[1].replace('.', "/"))))
            .collect()
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

fn ruby(from: &str, text: &str) -> Vec<Vec<String>> {
    static RELATIVE: LazyLock<Regex> =
        LazyLock::new(|| re(r#"(?m)^\s*require_relative\s*\(?\s*['"]([^'"]+)['"]"#));
    static REQUIRE: LazyLock<Regex> =
        LazyLock::new(|| re(r#"(?m)^\s*require\s*\(?\s*['"]([^'"]+)['"]"#));
    let dir = parent(from);
    let rb = |p: String| {
        if p.ends_with(".rb") {
            p
        } else {
            format!("{p}.rb")
        }
    };
    let mut groups: Vec<Vec<String>> = imports(&RELATIVE, text)
        .filter_map(|m| normalise(&dir, &m[1]).map(|p| vec![rb(p)]))
        .collect();
    groups.extend(
        imports(&REQUIRE, text).filter_map(|m| normalise("lib", &m[1]).map(|p| vec![rb(p)])),
    );
    groups
}

/// go.mod's `replace` directives whose target is a directory (`./x`, `../x`: a local module,
/// no version), as (module path, the directory from the repository's root); a target outside
/// the repository is left out. Both forms: `replace a => ../a` and a `replace ( … )` block.
fn go_replaces(gomod: &str, root: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in gomod.lines() {
        let line = line.split("//").next().unwrap_or("").trim();
        let spec = if in_block {
            if line == ")" {
                in_block = false;
                continue;
            }
            line
        } else if let Some(rest) = line.strip_prefix("replace") {
            let rest = rest.trim_start();
            if rest == "(" {
                in_block = true;
                continue;
            }
            if rest.len() == line.len() - "replace".len() && !rest.is_empty() {
                // `replacement …`: not the keyword.
                continue;
            }
            rest
        } else {
            continue;
        };
        let Some((old, new)) = spec.split_once("=>") else {
            continue;
        };
        let (Some(old), new) = (old.split_whitespace().next(), new.trim()) else {
            continue;
        };
        let local = new == "." || new == ".." || new.starts_with("./") || new.starts_with("../");
        if let Some(dir) = local.then(|| normalise(root, new)).flatten() {
            out.push((old.to_string(), dir));
        }
    }
    out
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
    fn python_relative_absolute_and_src_layouts() {
        let files = [
            ("src/shop/__init__.py", ""),
            ("src/shop/prices.py", "from .tax import rate\nfrom . import currency\nfrom ..outside import x\n"),
            ("src/shop/tax.py", ""),
            ("src/shop/currency.py", ""),
            ("tests/test_prices.py", "import os, shop.prices as p\nfrom shop import tax\nfrom helpers import (\n    make,\n)\n"),
            ("tests/helpers.py", ""),
        ];
        assert_eq!(
            refs(&files, "src/shop/prices.py"),
            ["src/shop/tax.py", "src/shop/currency.py"]
        );
        assert_eq!(
            refs(&files, "tests/test_prices.py"),
            [
                "src/shop/__init__.py",
                "src/shop/tax.py",
                "tests/helpers.py",
                "src/shop/prices.py"
            ]
        );
    }

    #[test]
    fn javascript_and_typescript_relative_imports() {
        let files = [
            ("src/cart.test.ts", "import { total } from './cart.js';\nimport lodash from 'lodash';\nconst u = require(\"../lib/util\");\nimport('./lazy')\n"),
            ("src/cart.ts", ""),
            ("lib/util/index.js", ""),
            ("src/lazy.tsx", ""),
        ];
        assert_eq!(
            refs(&files, "src/cart.test.ts"),
            ["src/cart.ts", "lib/util/index.js", "src/lazy.tsx"]
        );
        // Above the root is nothing of the repository's.
        assert!(refs(&[("a.js", "import x from '../../etc/passwd';\n")], "a.js").is_empty());
    }

    #[test]
    fn typescript_aliases_from_the_nearest_tsconfig_and_what_it_extends() {
        let files = [
            // JSONC, as TypeScript reads it: comments and trailing commas.
            (
                "web/tsconfig.json",
                "{\n  // the app's own\n  \"extends\": \"../tsconfig.base.json\",\n  \"compilerOptions\": {\n    \"baseUrl\": \"src\",\n    \"paths\": {\"@/*\": [\"*\"], \"@ui/*\": [\"components/ui/*\", \"../shared/ui/*\"],},\n  },\n}\n",
            ),
            (
                "tsconfig.base.json",
                "{\"compilerOptions\": {\"paths\": {\"ignored/*\": [\"nowhere/*\"]}}}",
            ),
            (
                "web/src/pages/cart.test.tsx",
                "import { Cart } from '@/pages/cart';\nimport { Button } from '@ui/button';\nimport { Card } from \"@ui/card\";\nimport { api } from 'lib/api';\nimport React from 'react';\nimport x from '@/../../../../etc/passwd';\n",
            ),
            ("web/src/pages/cart.tsx", ""),
            ("web/src/components/ui/button.tsx", ""),
            ("web/shared/ui/card/index.ts", ""),
            ("web/src/lib/api.ts", ""),
        ];
        // `@/` by the pattern, `@ui/` by its second target, `lib/api` under `baseUrl`; a
        // dependency and a path out of the repository resolve to nothing.
        assert_eq!(
            refs(&files, "web/src/pages/cart.test.tsx"),
            [
                "web/src/pages/cart.tsx",
                "web/src/components/ui/button.tsx",
                "web/shared/ui/card/index.ts",
                "web/src/lib/api.ts"
            ]
        );
        // Without `baseUrl`, targets are relative to the configuration that sets `paths`,
        // here the extended one; the longest prefix wins.
        let files = [
            // One extended file is missing: the others still count.
            (
                "tsconfig.json",
                "{\"extends\": [\"./configs/paths.json\", \"./configs/missing.json\"]}",
            ),
            (
                "configs/paths.json",
                "{\"compilerOptions\": {\"paths\": {\"#lib/*\": [\"../lib/*\"], \"#lib/special\": [\"../special.ts\"]}}}",
            ),
            ("src/a.ts", "import '#lib/util';\nimport '#lib/special';\nimport 'lodash';\n"),
            ("lib/util.ts", ""),
            ("special.ts", ""),
        ];
        assert_eq!(refs(&files, "src/a.ts"), ["lib/util.ts", "special.ts"]);
        // An exact pattern wins over a wildcard whatever their prefixes; a target that is no
        // file falls back to `baseUrl`; a byte-order mark is skipped; a configuration two
        // others extend is read once and still counts.
        let files = [
            (
                "tsconfig.json",
                "\u{feff}{\"extends\": [\"./x.json\", \"./a.json\", \"./b.json\"], \"compilerOptions\": {\"paths\": {\"config*\": [\"wild/*\"], \"config\": [\"exact/config.ts\"], \"util/*\": [\"missing/*\"]}}}",
            ),
            // `baseUrl` from the first extended, read after the others and their base.
            ("x.json", "{\"compilerOptions\": {\"baseUrl\": \"src\"}}"),
            ("a.json", "{\"extends\": \"./base.json\"}"),
            ("b.json", "{\"extends\": \"./base.json\"}"),
            ("base.json", "{\"compilerOptions\": {\"paths\": {\"ignored\": [\"x\"]}}}"),
            ("src/a.ts", "import 'config';\nimport 'util/x';\n"),
            ("src/exact/config.ts", ""),
            ("src/wild.ts", ""),
            ("src/util/x.ts", ""),
        ];
        assert_eq!(
            refs(&files, "src/a.ts"),
            ["src/exact/config.ts", "src/util/x.ts"]
        );
        // The nearest directory's configuration, whichever its name.
        let files = [
            (
                "tsconfig.json",
                "{\"compilerOptions\": {\"baseUrl\": \"nowhere\"}}",
            ),
            (
                "app/jsconfig.json",
                "{\"compilerOptions\": {\"baseUrl\": \".\"}}",
            ),
            ("app/a.js", "import 'b';\n"),
            ("app/b.js", ""),
        ];
        assert_eq!(refs(&files, "app/a.js"), ["app/b.js"]);
        // A configuration that extends itself, or cannot be parsed, costs nothing.
        let files = [
            (
                "tsconfig.json",
                "{\"extends\": \"./tsconfig.json\", \"compilerOptions\": {\"baseUrl\": \".\"}}",
            ),
            ("a.ts", "import 'b';\n"),
            ("b.ts", ""),
        ];
        assert_eq!(refs(&files, "a.ts"), ["b.ts"]);
        assert!(refs(
            &[
                ("tsconfig.json", "{oops"),
                ("a.ts", "import 'b';\n"),
                ("b.ts", "")
            ],
            "a.ts"
        )
        .is_empty());
    }

    #[test]
    fn go_imports_inside_the_module_and_a_tests_package() {
        let files = [
            ("go.mod", "module example.com/shop\n\ngo 1.22\n"),
            ("cart/a.go", "package cart\n"),
            ("cart/cart.go", "package cart\n"),
            (
                "cart/cart_test.go",
                "package cart\n\nimport (\n\t\"testing\"\n\tp \"example.com/shop/prices\"\n)\n",
            ),
            ("cart/other_test.go", "package cart\n"),
            ("prices/prices.go", ""),
            ("prices/prices_test.go", ""),
        ];
        assert_eq!(
            refs(&files, "cart/cart_test.go"),
            ["cart/cart.go", "cart/a.go", "prices/prices.go"]
        );
    }

    #[test]
    fn go_imports_of_modules_go_mod_replaces_with_a_directory() {
        let files = [
            (
                "app/go.mod",
                "module example.com/app\n\ngo 1.22\n\nreplace example.com/money => ../libs/money\n\nreplace (\n\texample.com/tax v1.2.0 => ./third_party/tax // vendored fork\n\texample.com/remote => example.com/fork v1.0.0\n\texample.com/outside => ../../elsewhere\n)\n",
            ),
            (
                "app/cart/cart.go",
                "package cart\n\nimport (\n\t\"example.com/money/cents\"\n\t\"example.com/tax\"\n\t\"example.com/remote/x\"\n\t\"example.com/outside/y\"\n)\n",
            ),
            ("libs/money/cents/cents.go", ""),
            ("libs/money/money.go", ""),
            ("app/third_party/tax/tax.go", ""),
            ("elsewhere/y/y.go", ""),
        ];
        assert_eq!(
            refs(&files, "app/cart/cart.go"),
            ["libs/money/cents/cents.go", "app/third_party/tax/tax.go"]
        );
        assert_eq!(
            go_replaces("replacement x => ./y\nreplace a => ./b\n", ""),
            [("a".to_string(), "b".to_string())]
        );
    }

    #[test]
    fn c_includes_and_their_implementations() {
        let files = [
            (
                "tests/test_ring.c",
                "#include <stdio.h>\n#include \"ring.h\"\n",
            ),
            ("include/ring.h", ""),
            ("src/ring.c", ""),
        ];
        assert_eq!(
            refs(&files, "tests/test_ring.c"),
            ["include/ring.h", "src/ring.c"]
        );
    }

    #[test]
    fn a_csharp_test_class_is_about_its_class() {
        let files = [
            (
                "tests/Shop.Tests/CartTests.cs",
                "using Shop;\nusing Xunit;\n",
            ),
            ("src/Shop/Cart.cs", ""),
            ("src/Shop/Price.cs", ""),
        ];
        assert_eq!(
            refs(&files, "tests/Shop.Tests/CartTests.cs"),
            ["src/Shop/Cart.cs"]
        );
        // A class that is not a test names no file: namespaces are not followed.
        assert!(refs(&files, "src/Shop/Price.cs").is_empty());
    }

    #[test]
    fn jvm_php_haskell_and_ruby_by_their_package_paths() {
        let java = [
            ("src/test/java/com/acme/CartTest.java", "package com.acme;\n\nimport com.acme.money.Price;\nimport static com.acme.money.Tax.rate;\nimport org.junit.jupiter.api.Test;\n"),
            ("src/main/java/com/acme/Cart.java", ""),
            ("src/main/java/com/acme/money/Price.java", ""),
            ("src/main/java/com/acme/money/Tax.java", ""),
        ];
        assert_eq!(
            refs(&java, "src/test/java/com/acme/CartTest.java"),
            [
                "src/main/java/com/acme/Cart.java",
                "src/main/java/com/acme/money/Price.java",
                "src/main/java/com/acme/money/Tax.java"
            ]
        );
        let php = [
            ("tests/CartTest.php", "<?php\nuse App\\Cart\\Cart;\nuse PHPUnit\\Framework\\TestCase;\nrequire_once __DIR__ . '/bootstrap.php';\n"),
            ("src/Cart/Cart.php", ""),
            ("tests/bootstrap.php", ""),
            // Not PHPUnit's TestCase, whatever its name.
            ("tests/TestCase.php", ""),
        ];
        assert_eq!(
            refs(&php, "tests/CartTest.php"),
            ["src/Cart/Cart.php", "tests/bootstrap.php"]
        );
        let haskell = [
            (
                "test/Spec.hs",
                "import qualified Shop.Cart as C\nimport Data.List\n",
            ),
            ("src/Shop/Cart.hs", ""),
        ];
        assert_eq!(refs(&haskell, "test/Spec.hs"), ["src/Shop/Cart.hs"]);
        let ruby = [
            (
                "spec/cart_spec.rb",
                "require 'cart'\nrequire_relative '../lib/shop/price'\nrequire 'json'\n",
            ),
            ("lib/shop/price.rb", ""),
            ("lib/cart.rb", ""),
        ];
        assert_eq!(
            refs(&ruby, "spec/cart_spec.rb"),
            ["lib/shop/price.rb", "lib/cart.rb"]
        );
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
