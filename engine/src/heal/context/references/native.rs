//! C and C++: quoted includes, found beside the including file, then in the include
//! directories the build names (CMake's `include_directories` and `target_include_directories`,
//! Meson's `include_directories`, a Makefile's `-I`), then `include/`, the root and `src/`; and
//! each header's implementation.

use std::sync::LazyLock;

use regex::Regex;

use super::{imports, normalise, parent, re, Resolver};
use crate::heal::redaction::read_inside;

/// Build files read for include directories, and directories kept, at most.
const MAX_BUILD_FILES: usize = 32;
const MAX_INCLUDE_DIRS: usize = 64;

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
        let mut groups = Vec::new();
        for m in imports(&INCLUDE, text) {
            let header = &m[1];
            let mut places: Vec<String> = Vec::new();
            for place in bases.iter().filter_map(|base| normalise(base, header)) {
                if !places.contains(&place) {
                    places.push(place);
                }
            }
            groups.push(places.clone());
            // What the header declares is defined in its implementation, beside it or in `src/`.
            let stem = header.rsplit('/').next().unwrap_or(header);
            let stem = stem.rsplit_once('.').map_or(stem, |(s, _)| s);
            let mut implementation = Vec::new();
            for place in &places {
                let base = place.rsplit_once('.').map_or(place.as_str(), |(s, _)| s);
                implementation.extend(
                    ["c", "cc", "cpp", "cxx"]
                        .iter()
                        .map(|e| format!("{base}.{e}")),
                );
            }
            // Or in `src/`, or one of the build's include directories (a library's private
            // sources are often one).
            for base in std::iter::once("src").chain(built.iter().map(String::as_str)) {
                implementation.extend(
                    ["c", "cc", "cpp", "cxx"]
                        .iter()
                        .filter_map(|e| normalise(base, &format!("{stem}.{e}"))),
                );
            }
            groups.push(implementation);
        }
        groups
    }

    /// The include directories every build file of the repository names, as directories of
    /// the repository, in the order found (the root's build files first).
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
        let mut dirs: Vec<String> = Vec::new();
        for file in files.into_iter().take(MAX_BUILD_FILES) {
            let Some(text) = read_inside(self.repo, &file) else {
                continue;
            };
            let here = parent(&file);
            let named = if file.ends_with("CMakeLists.txt") {
                cmake_include_dirs(&text)
            } else if file.ends_with("meson.build") {
                meson_include_dirs(&text)
            } else {
                make_include_dirs(&text)
            };
            for dir in named {
                let Some(dir) = cmake_variables(&dir, &here) else {
                    continue;
                };
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

/// A directory as the build file wrote it, with the variables that name the source tree
/// replaced (relative to the build file's directory `here`); `None` for one that names
/// anything else (a dependency's, the build tree, the system's).
fn cmake_variables(dir: &str, here: &str) -> Option<String> {
    let depth = here.split('/').filter(|p| !p.is_empty()).count();
    let to_root = if depth == 0 {
        ".".to_string()
    } else {
        vec![".."; depth].join("/")
    };
    let mut dir = dir.to_string();
    for (variable, value) in [
        ("${CMAKE_CURRENT_SOURCE_DIR}", "."),
        ("${CMAKE_CURRENT_LIST_DIR}", "."),
        ("${PROJECT_SOURCE_DIR}", to_root.as_str()),
        ("${CMAKE_SOURCE_DIR}", to_root.as_str()),
    ] {
        dir = dir.replace(variable, value);
    }
    (!dir.contains('$') && !dir.is_empty() && !dir.starts_with('/')).then_some(dir)
}

/// The arguments of every `name(...)` call in a CMake file, comments removed.
fn cmake_calls<'t>(text: &'t str, name: &str) -> Vec<Vec<&'t str>> {
    let mut calls = Vec::new();
    let lower = text.to_ascii_lowercase();
    let mut at = 0;
    while let Some(found) = lower[at..].find(name) {
        let start = at + found;
        at = start + name.len();
        // A whole command name: not the tail of a longer one.
        let before = lower[..start].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = lower[at..].trim_start();
        if !rest.starts_with('(') {
            continue;
        }
        let open = at + (lower[at..].len() - rest.len()) + 1;
        let Some(close) = text[open..].find(')') else {
            break;
        };
        let args = text[open..open + close]
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(str::split_whitespace)
            .map(|a| a.trim_matches('"'))
            .collect();
        calls.push(args);
        at = open + close;
        if calls.len() == 64 {
            break;
        }
    }
    calls
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
    let mut dirs = Vec::new();
    let calls = cmake_calls(text, "include_directories")
        .into_iter()
        .map(|args| (false, args))
        .chain(
            cmake_calls(text, "target_include_directories")
                .into_iter()
                .map(|args| (true, args)),
        );
    for (targeted, args) in calls {
        // `target_include_directories(<target> …)`: the first argument is the target.
        for arg in args.into_iter().skip(usize::from(targeted)) {
            if KEYWORDS.contains(&arg) {
                continue;
            }
            // `$<BUILD_INTERFACE:dir>` is the directory in the source tree; the install
            // interface's is not.
            let arg = match arg.strip_prefix("$<BUILD_INTERFACE:") {
                Some(inner) => inner.trim_end_matches('>'),
                None if arg.starts_with("$<") => continue,
                None => arg,
            };
            dirs.push(arg.to_string());
        }
    }
    dirs
}

fn meson_include_dirs(text: &str) -> Vec<String> {
    static QUOTED: LazyLock<Regex> = LazyLock::new(|| re(r"'([^']*)'"));
    cmake_calls(text, "include_directories")
        .into_iter()
        .flat_map(|args| {
            let joined = args.join(" ");
            QUOTED
                .captures_iter(&joined)
                .map(|m| m[1].to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn make_include_dirs(text: &str) -> Vec<String> {
    static INCLUDE: LazyLock<Regex> = LazyLock::new(|| re(r"(?:^|\s)-I\s*([^\s$]\S*)"));
    imports(&INCLUDE, text)
        .map(|m| m[1].trim_matches(['"', '\'']).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::refs;

    #[test]
    fn includes_through_the_directories_the_build_names() {
        let cmake = [
            (
                "CMakeLists.txt",
                "cmake_minimum_required(VERSION 3.16)\nproject(ring C)\nadd_subdirectory(lib/ring)\ninclude_directories(${PROJECT_SOURCE_DIR}/third_party/tiny) # vendored\n",
            ),
            (
                "lib/ring/CMakeLists.txt",
                "add_library(ring src/ring.c)\ntarget_include_directories(ring\n  PUBLIC\n    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/public>\n    $<INSTALL_INTERFACE:include>\n  PRIVATE src)\n",
            ),
            ("lib/ring/public/ring/ring.h", ""),
            ("lib/ring/src/ring.c", ""),
            ("third_party/tiny/tiny.h", ""),
            (
                "tests/test_ring.c",
                "#include \"ring/ring.h\"\n#include \"tiny.h\"\n#include \"missing.h\"\n",
            ),
        ];
        assert_eq!(
            refs(&cmake, "tests/test_ring.c"),
            [
                "lib/ring/public/ring/ring.h",
                "lib/ring/src/ring.c",
                "third_party/tiny/tiny.h"
            ]
        );
        let make = [
            (
                "Makefile",
                "CFLAGS += -Wall -Iinc -I $(DEPS)/include -I../outside\nall: app\n",
            ),
            ("inc/queue.h", ""),
            ("app.c", "#include \"queue.h\"\n"),
        ];
        assert_eq!(refs(&make, "app.c"), ["inc/queue.h"]);
        let meson = [
            (
                "meson.build",
                "project('q', 'c')\ninc = include_directories('headers', 'more')\n",
            ),
            ("headers/q.h", ""),
            ("q.c", "#include \"q.h\"\n"),
        ];
        assert_eq!(refs(&meson, "q.c"), ["headers/q.h"]);
    }
}
