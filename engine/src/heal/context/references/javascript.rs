//! JavaScript and TypeScript: relative imports and requires, and the project's own aliases
//! (`compilerOptions.paths` and `baseUrl` of the nearest `tsconfig.json` or `jsconfig.json`,
//! with what it `extends`; `resolve.alias` of the nearest Vite, Vitest or webpack
//! configuration).

use std::cell::OnceCell;
use std::sync::LazyLock;

use regex::Regex;

use super::{imports, join_dir, normalise, parent, re, up, Resolver, MAX_IMPORTS};
use crate::heal::redaction::read_inside;

impl Resolver<'_> {
    /// Relative imports and requires, and the project's own aliases: `compilerOptions.paths`
    /// and `baseUrl` of the nearest `tsconfig.json` (or `jsconfig.json`), as TypeScript
    /// resolves them. A package's name that no alias claims is a dependency: dropped.
    pub(super) fn javascript(&self, from: &str, text: &str) -> Vec<Vec<String>> {
        static SPEC: LazyLock<Regex> = LazyLock::new(|| {
            re(r#"(?:\bfrom\s+|\bimport\s*\(\s*|\brequire\s*\(\s*|\bimport\s+)["']([^"'\s]+)["']"#)
        });
        const EXTS: [&str; 8] = ["ts", "tsx", "js", "jsx", "mjs", "cjs", "mts", "cts"];
        let dir = parent(from);
        let aliases = OnceCell::new();
        let mut groups = Vec::new();
        for m in imports(&SPEC, text) {
            let spec = &m[1];
            let bases: Vec<String> = if spec.starts_with("./") || spec.starts_with("../") {
                normalise(&dir, spec).into_iter().collect()
            } else if spec.starts_with(['.', '/']) {
                continue;
            } else {
                aliases.get_or_init(|| self.aliases(from)).resolve(spec)
            };
            let mut group = Vec::new();
            for base in bases {
                group.push(base.clone());
                // TypeScript's ES modules import `./x.js` for the source `./x.ts`.
                if let Some(stem) = base.strip_suffix(".js") {
                    group.extend(["ts", "tsx"].iter().map(|e| format!("{stem}.{e}")));
                }
                group.extend(EXTS.iter().map(|e| format!("{base}.{e}")));
                group.extend(EXTS.iter().map(|e| format!("{base}/index.{e}")));
            }
            if !group.is_empty() {
                groups.push(group);
            }
        }
        groups
    }

    /// The aliases of the nearest `tsconfig.json` or `jsconfig.json` above `from`, with what
    /// the configurations it `extends` (files of the repository, at most [`MAX_EXTENDS`] deep)
    /// set and it does not.
    fn aliases(&self, from: &str) -> Aliases {
        Aliases {
            bundler: self.bundler_aliases(from),
            ..self.typescript_aliases(from)
        }
    }

    /// `resolve.alias` of the nearest Vite, Vitest or webpack configuration above `from`, read
    /// from its text (it is code, never run here): the entries whose replacement is a path
    /// of the repository written as a literal (`'./src'`, `'/src'`), as
    /// `path.resolve(__dirname, …)` or `path.join(__dirname, …)` of literals, or as
    /// `fileURLToPath(new URL('./src', import.meta.url))`; in an object (`'@': …`) or in
    /// Vite's array (`{ find: '@', replacement: … }`). Regular-expression keys are skipped.
    fn bundler_aliases(&self, from: &str) -> Vec<(String, String)> {
        const CONFIGS: [&str; 4] = [
            "vite.config",
            "vitest.config",
            "webpack.config",
            "rspack.config",
        ];
        const EXTS: [&str; 6] = ["ts", "js", "mts", "mjs", "cts", "cjs"];
        let mut dir = Some(parent(from));
        while let Some(here) = dir.take() {
            let found: Vec<String> = CONFIGS
                .iter()
                .flat_map(|c| EXTS.iter().map(move |e| format!("{c}.{e}")))
                .map(|name| join_dir(&here, &name))
                .filter(|path| self.exists(path))
                .collect();
            if !found.is_empty() {
                return found
                    .iter()
                    .filter_map(|path| read_inside(self.repo, path))
                    .flat_map(|text| bundler_entries(&text, &here))
                    .take(MAX_IMPORTS)
                    .collect();
            }
            dir = up(&here);
        }
        Vec::new()
    }

    fn typescript_aliases(&self, from: &str) -> Aliases {
        // In each directory up from the file, either name: TypeScript's own lookup.
        let mut dir = Some(parent(from));
        let config = std::iter::from_fn(|| {
            let here = dir.take()?;
            dir = up(&here);
            Some(here)
        })
        .find_map(|dir| {
            ["tsconfig.json", "jsconfig.json"]
                .iter()
                .map(|name| join_dir(&dir, name))
                .find(|path| self.exists(path))
        });
        let Some(config) = config else {
            return Aliases::default();
        };
        let mut aliases = Aliases::default();
        let mut next = vec![config];
        let mut seen = Vec::new();
        while let Some(config) = next.pop() {
            if seen.len() > MAX_EXTENDS {
                break;
            }
            // A configuration two others extend (or one extending itself) counts once.
            if seen.contains(&config) {
                continue;
            }
            seen.push(config.clone());
            // One that cannot be read or parsed sets nothing; the others still count.
            let Some(text) = read_inside(self.repo, &config) else {
                continue;
            };
            // Visual Studio writes a byte-order mark, which TypeScript skips.
            let Ok(value) = jsonc_parser::parse_to_serde_value::<serde_json::Value>(
                text.trim_start_matches('\u{feff}'),
                &jsonc_parser::ParseOptions::default(),
            ) else {
                continue;
            };
            let dir = parent(&config);
            let options = &value["compilerOptions"];
            // What a configuration sets wins over what the ones it extends set; paths in each
            // are relative to the file that sets them.
            if aliases.base_url.is_none() {
                aliases.base_url = options["baseUrl"].as_str().and_then(|b| normalise(&dir, b));
            }
            if aliases.paths.is_none() {
                if let Some(paths) = options["paths"].as_object() {
                    let patterns = paths
                        .iter()
                        .take(MAX_IMPORTS)
                        .map(|(pattern, targets)| {
                            let targets = targets
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|t| t.as_str().map(String::from))
                                .take(8)
                                .collect();
                            (pattern.clone(), targets)
                        })
                        .collect();
                    aliases.paths = Some((patterns, dir.clone()));
                }
            }
            // `extends`: one file or (TypeScript 5) several, the later winning; a package's
            // configuration is not the repository's.
            let extended: Vec<&str> = match &value["extends"] {
                serde_json::Value::String(one) => vec![one.as_str()],
                serde_json::Value::Array(many) => many.iter().filter_map(|v| v.as_str()).collect(),
                _ => Vec::new(),
            };
            next.extend(
                extended
                    .into_iter()
                    .filter(|e| e.starts_with("./") || e.starts_with("../"))
                    .filter_map(|e| {
                        let path = normalise(&dir, e)?;
                        Some(if path.ends_with(".json") {
                            path
                        } else {
                            format!("{path}.json")
                        })
                    }),
            );
        }
        aliases
    }
}

/// How many configurations `extends` brings in, at most.
const MAX_EXTENDS: usize = 4;

/// The text of each `alias: { … }` or `alias: [ … ]` of a configuration, brackets balanced
/// (strings and comments are not told apart: a stray bracket ends a block early, which loses
/// aliases, never adds any), each at most [`ALIAS_BLOCK`] bytes.
fn alias_blocks(text: &str) -> impl Iterator<Item = &str> {
    static START: LazyLock<Regex> = LazyLock::new(|| re(r"\balias\s*:\s*[\{\[]"));
    START.find_iter(text).take(8).map(move |m| {
        let from = m.end() - 1;
        let mut depth = 0usize;
        let mut end = text.len().min(from + ALIAS_BLOCK);
        for (i, c) in text[from..].char_indices() {
            if from + i >= end {
                break;
            }
            match c {
                '{' | '[' | '(' => depth += 1,
                '}' | ']' | ')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = from + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        // `end` may fall inside a character: back to its start.
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        &text[from..end]
    })
}

/// Bytes of one `alias` block read at most.
const ALIAS_BLOCK: usize = 16 * 1024;

/// The aliases a bundler's configuration (in directory `dir`) sets, each as its key and the
/// directory of the repository it stands for.
fn bundler_entries(text: &str, dir: &str) -> Vec<(String, String)> {
    static ENTRY: LazyLock<Regex> = LazyLock::new(|| {
        re(concat!(
            r#"(?:\bfind\s*:\s*["']([^"'\s]{1,64})["']\s*,\s*replacement|["']([^"'\s]{1,64})["']|\b([A-Za-z_$][\w$]{0,63}))\s*:\s*"#,
            r#"(?:(?:path\.)?(?:resolve|join)\(\s*__dirname\s*,\s*((?:["'][^"']*["']\s*,?\s*){1,8})\)"#,
            r#"|fileURLToPath\(\s*new\s+URL\(\s*["']([^"']+)["']\s*,\s*import\.meta\.url\s*\)\s*\)"#,
            r#"|["'](\.{0,2}/[^"']*)["'])"#,
        ))
    });
    static PART: LazyLock<Regex> = LazyLock::new(|| re(r#"["']([^"']*)["']"#));
    // Only what `alias:` holds: the rest of the file has paths too (`output.path`).
    let blocks: String = alias_blocks(text).collect::<Vec<_>>().join("\n");
    imports(&ENTRY, &blocks)
        .filter_map(|m| {
            let key = m.get(1).or(m.get(2)).or(m.get(3))?.as_str().to_string();
            // Vite's array form after a regular-expression key: its words are no alias.
            if m.get(1).is_none() && matches!(key.as_str(), "find" | "replacement") {
                return None;
            }
            let rel = if let Some(parts) = m.get(4) {
                PART.captures_iter(parts.as_str())
                    .map(|p| p[1].to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            } else {
                // A root-relative `/src` is the project's `src`, as Vite resolves it.
                m.get(5)
                    .or(m.get(6))?
                    .as_str()
                    .trim_start_matches('/')
                    .to_string()
            };
            Some((key, normalise(dir, &rel)?))
        })
        .collect()
}

/// A pattern of `paths` (at most one `*`) and its targets.
type Pattern = (String, Vec<String>);

/// A project's module aliases, from its TypeScript (or JavaScript) configuration.
#[derive(Default)]
struct Aliases {
    /// `baseUrl`, as a directory of the repository.
    base_url: Option<String>,
    /// `paths`: each pattern (at most one `*`) and its targets, with the directory of the
    /// configuration that set them.
    paths: Option<(Vec<Pattern>, String)>,
    /// A bundler's aliases: each key and the directory it stands for.
    bundler: Vec<(String, String)>,
}

impl Aliases {
    /// Where a bare specifier may be, likeliest first: the targets of the `paths` pattern it
    /// matches exactly, else of the one with the longest prefix (relative to `baseUrl` when
    /// set, else to the configuration's directory), then the specifier under `baseUrl`, where
    /// TypeScript looks when no target is a file.
    fn resolve(&self, spec: &str) -> Vec<String> {
        let mut places = Vec::new();
        if let Some((patterns, dir)) = &self.paths {
            let matched = patterns
                .iter()
                .filter_map(|(pattern, targets)| {
                    let star = match pattern.split_once('*') {
                        None => (pattern == spec).then_some("")?,
                        Some((prefix, suffix)) => {
                            spec.strip_prefix(prefix)?.strip_suffix(suffix)?
                        }
                    };
                    let exact = !pattern.contains('*');
                    let prefix = pattern.split('*').next().unwrap_or(pattern);
                    Some(((exact, prefix.len()), star, targets))
                })
                .max_by_key(|(rank, _, _)| *rank);
            if let Some((_, star, targets)) = matched {
                let base = self.base_url.as_deref().unwrap_or(dir);
                places.extend(
                    targets
                        .iter()
                        .filter_map(|t| normalise(base, &t.replacen('*', star, 1))),
                );
            }
        }
        // The bundler's longest key that is the specifier or a prefix of it at a `/`.
        let bundled = self
            .bundler
            .iter()
            .filter_map(|(key, target)| {
                let rest = spec.strip_prefix(key.as_str())?;
                let rest = if key.ends_with('/') {
                    rest
                } else if rest.is_empty() {
                    ""
                } else {
                    rest.strip_prefix('/')?
                };
                Some((key.len(), target, rest))
            })
            .max_by_key(|(len, _, _)| *len);
        places.extend(bundled.and_then(|(_, target, rest)| normalise(target, rest)));
        places.extend(
            self.base_url
                .as_deref()
                .and_then(|base| normalise(base, spec)),
        );
        places
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::refs;

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
    fn a_bundlers_aliases_from_the_nearest_vite_or_webpack_configuration() {
        let files = [
            (
                "app/vite.config.ts",
                "import { fileURLToPath, URL } from 'node:url'\nimport path from 'path'\nexport default defineConfig({\n  resolve: {\n    alias: {\n      '@': fileURLToPath(new URL('./src', import.meta.url)),\n      '@ui': path.resolve(__dirname, 'src', 'components/ui'),\n      shared: '/../shared',\n      '~': '/src/../../..',\n    },\n  },\n})\n",
            ),
            (
                "app/src/pages/cart.test.ts",
                "import { cart } from '@/pages/cart'\nimport Button from '@ui/Button.vue'\nimport { money } from 'shared/money'\nimport '~/etc/passwd'\nimport { ref } from 'vue'\n",
            ),
            ("app/src/pages/cart.ts", ""),
            ("app/src/components/ui/Button.vue", ""),
            ("shared/money.ts", ""),
        ];
        // `@/` and `@ui/` by their longest key, a root-relative literal from the
        // configuration's directory; a path out of the repository and a dependency resolve to
        // nothing.
        assert_eq!(
            refs(&files, "app/src/pages/cart.test.ts"),
            [
                "app/src/pages/cart.ts",
                "app/src/components/ui/Button.vue",
                "shared/money.ts"
            ]
        );
        // webpack's object and Vite's array form, in the repository's root configuration.
        let files = [
            (
                "webpack.config.js",
                "module.exports = { output: { path: path.resolve(__dirname, 'dist') }, resolve: { alias: { Utilities: path.join(__dirname, 'src/utilities/') } } };\n",
            ),
            (
                "vite.config.mjs",
                "export default { resolve: { alias: [ { find: '#lib', replacement: path.resolve(__dirname, './lib') }, { find: /^~/, replacement: path.resolve(__dirname, 'src') } ] } }\n",
            ),
            (
                "src/a.js",
                "import { x } from 'Utilities/x';\nimport { y } from '#lib/y';\nimport p from 'path';\nimport r from 'replacement/z';\n",
            ),
            ("src/utilities/x.js", ""),
            ("lib/y.ts", ""),
            // Neither `output.path` nor a regular expression's replacement is an alias.
            ("dist/index.js", ""),
            ("src/z.js", ""),
        ];
        assert_eq!(refs(&files, "src/a.js"), ["src/utilities/x.js", "lib/y.ts"]);
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
}
