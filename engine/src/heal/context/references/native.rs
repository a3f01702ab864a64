//! C and C++: quoted includes, found beside the including file, then in the include
//! directories the build names (CMake's `include_directories` and `target_include_directories`,
//! Meson's `include_directories`, a Makefile's `-I`, `-iquote` and `-isystem`), then `include/`,
//! the root and `src/`; and each header's implementation.

use std::sync::LazyLock;

use regex::Regex;

use super::{imports, normalise, parent, re, Resolver, MAX_IMPORTS};
use crate::heal::redaction::read_inside;

/// Build files read for include directories, directories kept, and calls read from one file,
/// at most.
const MAX_BUILD_FILES: usize = 32;
const MAX_INCLUDE_DIRS: usize = 64;
const MAX_CALLS: usize = 64;
/// Where a header's definitions are.
const SOURCES: [&str; 4] = ["c", "cc", "cpp", "cxx"];

impl Resolver<'_> {
    pub(super) fn c(&self, from: &str, text: &str) -> Vec<Vec<String>> {
        static INCLUDE: LazyLock<Regex> =
            LazyLock::new(|| re(r#"(?m)^\s*#\s*include\s*"([^"]+)""#));
        let dir = parent(from);
        let built = self.include_dirs.get_or_init(|| self.build_include_dirs());
        let bases: Vec<&str> = std::iter::once(dir.as_str())
            .chain(built.iter().map(String::as_str))
            .chain(["include", "", "src"])
            .collect();
        let mut headers: Vec<&str> = Vec::new();
        for m in imports(&INCLUDE, text) {
            let header = m.get(1).map_or("", |g| g.as_str());
            if !headers.contains(&header) {
                headers.push(header);
            }
        }
        let mut groups = Vec::new();
        for header in headers {
            let mut places: Vec<String> = Vec::new();
            for place in bases.iter().filter_map(|base| normalise(base, header)) {
                if !places.contains(&place) {
                    places.push(place);
                }
            }
            // What the header declares is defined in its implementation: beside it, in `src/`,
            // or in one of the build's include directories (a library's private sources are
            // often one).
            let name = header.rsplit('/').next().unwrap_or(header);
            let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
            let mut implementation = Vec::new();
            for place in &places {
                let dir = parent(place);
                implementation.extend(
                    SOURCES
                        .iter()
                        .filter_map(|e| normalise(&dir, &format!("{stem}.{e}"))),
                );
            }
            for base in std::iter::once("src").chain(built.iter().map(String::as_str)) {
                implementation.extend(
                    SOURCES
                        .iter()
                        .filter_map(|e| normalise(base, &format!("{stem}.{e}"))),
                );
            }
            groups.push(places);
            groups.push(implementation);
        }
        groups
    }

    /// The include directories the repository's build files name, as directories of the
    /// repository, in the order found (the shallowest build files first).
    fn build_include_dirs(&self) -> Vec<String> {
        let mut files: Vec<String> = [
            "CMakeLists.txt",
            "meson.build",
            "Makefile",
            "makefile",
            "GNUmakefile",
        ]
        .iter()
        .flat_map(|name| self.by_suffix(name))
        .collect();
        files.sort_by_key(|p| (p.matches('/').count(), p.clone()));
        files.truncate(MAX_BUILD_FILES);
        let texts: Vec<(String, String)> = files
            .into_iter()
            .filter_map(|f| Some((read_inside(self.repo, &f)?, f)))
            .map(|(text, f)| (f, text))
            .collect();
        let cmake = Cmake::of(&texts);
        let mut dirs: Vec<String> = Vec::new();
        for (file, text) in &texts {
            let here = parent(file);
            let named: Vec<String> = if file.ends_with("CMakeLists.txt") {
                cmake_include_dirs(text)
                    .into_iter()
                    .filter_map(|d| cmake.expand(&d, &here))
                    .collect()
            } else if file.ends_with("meson.build") {
                meson_include_dirs(text)
            } else {
                make_include_dirs(text)
            };
            for dir in named {
                if dir.contains('$') || dir.starts_with('/') || dir.is_empty() {
                    continue;
                }
                let Some(dir) = normalise(&here, &dir) else {
                    continue;
                };
                if !dirs.contains(&dir) && dirs.len() < MAX_INCLUDE_DIRS {
                    dirs.push(dir);
                }
            }
        }
        dirs
    }
}

/// Where CMake's variables for the source tree point: the top `CMakeLists.txt`'s directory
/// (`CMAKE_SOURCE_DIR`), and each directory whose `CMakeLists.txt` calls `project()`
/// (`PROJECT_SOURCE_DIR` is the nearest of them above a file).
struct Cmake {
    top: String,
    projects: Vec<String>,
}

impl Cmake {
    fn of(files: &[(String, String)]) -> Cmake {
        let lists: Vec<&(String, String)> = files
            .iter()
            .filter(|(f, _)| f.ends_with("CMakeLists.txt"))
            .collect();
        // Sorted shallowest first by the caller.
        let top = lists.first().map(|(f, _)| parent(f)).unwrap_or_default();
        let projects = lists
            .iter()
            .filter(|(_, text)| !calls(text, "project").is_empty())
            .map(|(f, _)| parent(f))
            .collect();
        Cmake { top, projects }
    }

    /// `dir` as written in the `CMakeLists.txt` of directory `here`, relative to `here`, with
    /// the variables that name the source tree replaced; `None` for one that names anything
    /// else (a dependency's, the build tree's, the system's).
    fn expand(&self, dir: &str, here: &str) -> Option<String> {
        let within = |d: &str| d.is_empty() || here == d || here.starts_with(&format!("{d}/"));
        let project = self
            .projects
            .iter()
            .filter(|p| within(p))
            .max_by_key(|p| p.len())
            .unwrap_or(&self.top);
        let mut dir = dir.to_string();
        for (variable, target) in [
            ("${CMAKE_CURRENT_SOURCE_DIR}", here),
            ("${CMAKE_CURRENT_LIST_DIR}", here),
            ("${PROJECT_SOURCE_DIR}", project.as_str()),
            ("${CMAKE_SOURCE_DIR}", self.top.as_str()),
        ] {
            if dir.contains(variable) {
                dir = dir.replace(variable, &relative(here, target)?);
            }
        }
        Some(dir)
    }
}

/// `target` (a directory of the repository) as a path from `here`, when `target` is `here` or
/// above it.
fn relative(here: &str, target: &str) -> Option<String> {
    let rest = if target.is_empty() {
        here
    } else if here == target {
        ""
    } else {
        here.strip_prefix(&format!("{target}/"))?
    };
    let depth = rest.split('/').filter(|p| !p.is_empty()).count();
    Some(if depth == 0 {
        ".".into()
    } else {
        vec![".."; depth].join("/")
    })
}

/// The arguments of every call of the command `name` in a CMake or Meson file: comments
/// (`#` to the end of the line, outside quotes) removed, quoted arguments kept whole, CMake's
/// `;` lists split.
fn calls(text: &str, name: &str) -> Vec<Vec<String>> {
    let code = uncommented(text);
    let lower = code.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = lower[at..].find(name) {
        let start = at + found;
        at = start + name.len();
        // A whole command name: not the tail of a longer one.
        if lower[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = lower[at..].trim_start();
        if !rest.starts_with('(') {
            continue;
        }
        let open = at + (lower[at..].len() - rest.len()) + 1;
        let (args, end) = arguments(&code[open..]);
        out.push(args);
        at = open + end;
        if out.len() == MAX_CALLS {
            break;
        }
    }
    out
}

/// `text` with `#` comments cut from each line (a `#` inside quotes stays).
fn uncommented(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut quoted: Option<char> = None;
        for c in line.chars() {
            match (quoted, c) {
                (None, '#') => break,
                (None, '"' | '\'') => quoted = Some(c),
                (Some(q), c) if c == q => quoted = None,
                _ => {}
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

/// The arguments up to the call's closing parenthesis (a parenthesis inside quotes or a
/// generator expression's `$<…>` does not close it), and the offset after it.
fn arguments(text: &str) -> (Vec<String>, usize) {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quoted: Option<char> = None;
    let mut depth = 0usize;
    let mut end = text.len();
    let flush = |current: &mut String, args: &mut Vec<String>| {
        for part in current.split(';').filter(|p| !p.is_empty()) {
            if args.len() < MAX_IMPORTS {
                args.push(part.to_string());
            }
        }
        current.clear();
    };
    for (i, c) in text.char_indices() {
        match (quoted, c) {
            (Some(q), c) if c == q => quoted = None,
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => quoted = Some(c),
            (None, '(') => {
                depth += 1;
                current.push(c);
            }
            (None, ')') if depth == 0 => {
                end = i + 1;
                break;
            }
            (None, ')') => {
                depth -= 1;
                current.push(c);
            }
            (None, c) if c.is_whitespace() || c == ',' || c == '[' || c == ']' => {
                flush(&mut current, &mut args)
            }
            (None, c) => current.push(c),
        }
    }
    flush(&mut current, &mut args);
    (args, end)
}

fn cmake_include_dirs(text: &str) -> Vec<String> {
    const KEYWORDS: [&str; 6] = [
        "SYSTEM",
        "BEFORE",
        "AFTER",
        "PUBLIC",
        "PRIVATE",
        "INTERFACE",
    ];
    let untargeted = calls(text, "include_directories")
        .into_iter()
        .map(|args| (false, args));
    let targeted = calls(text, "target_include_directories")
        .into_iter()
        .map(|args| (true, args));
    let mut dirs = Vec::new();
    for (has_target, args) in untargeted.chain(targeted) {
        // `target_include_directories(<target> …)`: the first argument is the target.
        for arg in args.into_iter().skip(usize::from(has_target)) {
            if KEYWORDS.contains(&arg.as_str()) {
                continue;
            }
            // `$<BUILD_INTERFACE:dir>` is the directory in the source tree; the install
            // interface's is not.
            let dir = match arg.strip_prefix("$<BUILD_INTERFACE:") {
                Some(inner) => inner.trim_end_matches('>').to_string(),
                None if arg.starts_with("$<") => continue,
                None => arg,
            };
            dirs.push(dir);
        }
    }
    dirs
}

fn meson_include_dirs(text: &str) -> Vec<String> {
    calls(text, "include_directories")
        .into_iter()
        .flatten()
        // Keyword arguments (`is_system: true`) are not directories.
        .filter(|a| !a.ends_with(':') && a != "true" && a != "false")
        .collect()
}

fn make_include_dirs(text: &str) -> Vec<String> {
    static INCLUDE: LazyLock<Regex> = LazyLock::new(|| {
        re(r#"(?m)(?:^|[\s=])-(?:I|iquote|isystem)[ \t]*["']?([^\s"'$][^\s"']*)"#)
    });
    imports(&INCLUDE, text).map(|m| m[1].to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::refs;

    #[test]
    fn includes_through_the_directories_the_build_names() {
        let cmake = [
            (
                "CMakeLists.txt",
                "cmake_minimum_required(VERSION 3.16)\nproject(ring C)\n# include_directories(old)\nadd_subdirectory(lib/ring)\ninclude_directories(\"${PROJECT_SOURCE_DIR}/third party/tiny\") # vendored (see NOTICE)\n",
            ),
            (
                "lib/ring/CMakeLists.txt",
                "add_library(ring src/ring.c)\ntarget_include_directories(ring\n  PUBLIC\n    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/public>\n    $<INSTALL_INTERFACE:include>\n  PRIVATE src \"${CMAKE_SOURCE_DIR}/shared\")\n",
            ),
            ("lib/ring/public/ring/ring.h", ""),
            ("lib/ring/src/ring.c", ""),
            ("lib/ring/include/ring/ring.h", ""),
            ("third party/tiny/tiny.h", ""),
            ("shared/common.h", ""),
            ("old/old.h", ""),
            (
                "tests/test_ring.c",
                "#include \"ring/ring.h\"\n#include \"tiny.h\"\n#include \"common.h\"\n#include \"old.h\"\n#include \"missing.h\"\n",
            ),
        ];
        assert_eq!(
            refs(&cmake, "tests/test_ring.c"),
            [
                "lib/ring/public/ring/ring.h",
                "lib/ring/src/ring.c",
                "third party/tiny/tiny.h",
                "shared/common.h"
            ]
        );
        // A subproject's own `project()`: its PROJECT_SOURCE_DIR is its directory.
        let sub = [
            ("CMakeLists.txt", "project(all)\nadd_subdirectory(engine)\n"),
            (
                "engine/CMakeLists.txt",
                "project(engine CXX)\nadd_subdirectory(core)\n",
            ),
            (
                "engine/core/CMakeLists.txt",
                "include_directories(${PROJECT_SOURCE_DIR}/api)\n",
            ),
            ("engine/api/engine.hpp", ""),
            ("api/engine.hpp", ""),
            ("engine/core/run.cpp", "#include \"engine.hpp\"\n"),
        ];
        assert_eq!(refs(&sub, "engine/core/run.cpp"), ["engine/api/engine.hpp"]);
        let make = [
            (
                "Makefile",
                "CFLAGS=-Iinc -Wall -I $(DEPS)/include -I../outside -isystem sys\nall: app\n",
            ),
            ("inc/queue.h", ""),
            ("sys/alloc.h", ""),
            ("app.c", "#include \"queue.h\"\n#include \"alloc.h\"\n"),
        ];
        assert_eq!(refs(&make, "app.c"), ["inc/queue.h", "sys/alloc.h"]);
        let meson = [
            (
                "meson.build",
                "project('q', 'c')\ninc = include_directories(['headers', 'more'], is_system: true)\n",
            ),
            ("headers/q.h", ""),
            ("q.c", "#include \"q.h\"\n"),
        ];
        assert_eq!(refs(&meson, "q.c"), ["headers/q.h"]);
    }

    #[test]
    fn build_files_name_nothing_outside_the_repository() {
        // A repository inside a folder with a header beside it: no build file reaches it.
        let outer = tempfile::tempdir().unwrap();
        std::fs::write(outer.path().join("secret.h"), "").unwrap();
        let repo = outer.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        std::fs::write(
            repo.join("CMakeLists.txt"),
            "project(x)\ninclude_directories(.. ${CMAKE_SOURCE_DIR}/.. /)\n",
        )
        .unwrap();
        std::fs::write(repo.join("Makefile"), "CFLAGS=-I.. -I/ -I../\n").unwrap();
        std::fs::write(
            repo.join("x.c"),
            "#include \"secret.h\"\n#include \"../secret.h\"\n",
        )
        .unwrap();
        let found = super::Resolver::new(&repo)
            .of("x.c", "#include \"secret.h\"\n#include \"../secret.h\"\n");
        assert!(found.is_empty(), "{found:?}");
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
}
