//! Python: relative imports, and absolute ones from the repository's root, `src/`, the
//! file's own directory, the directories pytest's `pythonpath` option names (in
//! `pyproject.toml`, `pytest.ini`, `tox.ini` or `setup.cfg` at the root), and those the file
//! itself puts on `sys.path` (a string, `os.path.join(os.path.dirname(__file__), …)`, nested
//! `os.path.dirname`s, or pathlib's `Path(__file__).parent…` and `.parents[n]` joined with `/`).

use std::sync::LazyLock;

use regex::Regex;

use super::{imports, join_dir, normalise, parent, re, up, Resolver, MAX_IMPORTS};
use crate::heal::redaction::read_inside;

/// Places an absolute import is looked for, at most.
const MAX_ROOTS: usize = 16;

impl Resolver<'_> {
    pub(super) fn python(&self, from: &str, text: &str) -> Vec<Vec<String>> {
        static FROM: LazyLock<Regex> = LazyLock::new(|| {
            re(
                r"(?m)^[ \t]*from[ \t]+(\.*)([A-Za-z_][\w.]*)?[ \t]+import[ \t]+(?:\(([\w\s,]*)\)|([\w \t,]+))",
            )
        });
        static IMPORT: LazyLock<Regex> = LazyLock::new(|| {
            re(
                r"(?m)^[ \t]*import[ \t]+([\w.]+(?:[ \t]+as[ \t]+\w+)?(?:[ \t]*,[ \t]*[\w.]+(?:[ \t]+as[ \t]+\w+)?)*)",
            )
        });
        let dir = parent(from);
        // Where an absolute import may start: the root, `src/`, the file's directory, then
        // what pytest's `pythonpath` and the file's own `sys.path` edits add.
        let mut roots = vec![String::new(), "src".to_string(), dir.clone()];
        let configured = self.python_roots.get_or_init(|| self.pytest_pythonpath());
        for root in configured.iter().cloned().chain(sys_path_dirs(from, text)) {
            if !roots.contains(&root) && roots.len() < MAX_ROOTS {
                roots.push(root);
            }
        }
        let module = |base: &str, dotted: &str| -> Vec<String> {
            let path = dotted.replace('.', "/");
            vec![
                join_dir(base, &format!("{path}.py")),
                join_dir(base, &format!("{path}/__init__.py")),
            ]
        };
        let mut groups = Vec::new();
        for m in imports(&FROM, text) {
            let dots = m[1].len();
            let dotted = m.get(2).map_or("", |g| g.as_str());
            let names: Vec<&str> = m
                .get(3)
                .or(m.get(4))
                .map_or("", |g| g.as_str())
                .split(',')
                .filter_map(|n| n.split_whitespace().next())
                .take(MAX_IMPORTS)
                .collect();
            let bases: Vec<String> = if dots == 0 {
                roots.to_vec()
            } else {
                let mut base = Some(dir.clone());
                for _ in 1..dots {
                    base = base.and_then(|b| up(&b));
                }
                // Above the repository's root: nothing of its own.
                let Some(base) = base else { continue };
                vec![base]
            };
            if !dotted.is_empty() {
                groups.push(bases.iter().flat_map(|b| module(b, dotted)).collect());
            }
            // `from pkg import sub` may import a module, not a name.
            for name in names {
                let dotted = if dotted.is_empty() {
                    name.to_string()
                } else {
                    format!("{dotted}.{name}")
                };
                let path = dotted.replace('.', "/");
                groups.push(
                    bases
                        .iter()
                        .map(|b| join_dir(b, &format!("{path}.py")))
                        .collect(),
                );
            }
        }
        for m in imports(&IMPORT, text) {
            for item in m[1].split(',') {
                let Some(dotted) = item.split_whitespace().next() else {
                    continue;
                };
                groups.push(roots.iter().flat_map(|b| module(b, dotted)).collect());
            }
        }
        // Each place looked up once, and no more than a file's imports elsewhere: one
        // `from x import (a, b, …)` can name thousands, each tried under every root.
        let mut seen = std::collections::HashSet::new();
        groups.retain(|g: &Vec<String>| seen.insert(g.clone()));
        groups.truncate(MAX_IMPORTS);
        groups
    }

    /// The directories pytest's `pythonpath` option adds, from the first configuration at the
    /// root that sets it, as pytest reads them (relative to that file's directory).
    fn pytest_pythonpath(&self) -> Vec<String> {
        let from_toml = || {
            let text = read_inside(self.repo, "pyproject.toml")?;
            let table: toml::Table = toml::from_str(&text).ok()?;
            let value = table
                .get("tool")?
                .get("pytest")?
                .get("ini_options")?
                .get("pythonpath")?;
            Some(match value {
                toml::Value::String(one) => one.split_whitespace().map(str::to_string).collect(),
                toml::Value::Array(many) => many
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            })
        };
        let from_ini = |file: &str, section: &str| {
            let text = read_inside(self.repo, file)?;
            ini_value(&text, section, "pythonpath")
                .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        };
        let listed: Vec<String> = from_ini("pytest.ini", "pytest")
            .or_else(from_toml)
            .or_else(|| from_ini("tox.ini", "pytest"))
            .or_else(|| from_ini("setup.cfg", "tool:pytest"))
            .unwrap_or_default();
        listed
            .iter()
            .take(MAX_ROOTS)
            .filter_map(|p| normalise("", p))
            .collect()
    }
}

/// `key`'s value in `[section]` of an ini file, with its indented continuation lines.
fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut in_section = false;
    let mut value: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if value.is_some() {
                break;
            }
            in_section = name.trim() == section;
            continue;
        }
        if !in_section || trimmed.starts_with(['#', ';']) {
            continue;
        }
        match &mut value {
            Some(v) if line.starts_with([' ', '\t']) && !trimmed.is_empty() => {
                v.push(' ');
                v.push_str(trimmed);
            }
            Some(_) => break,
            None => {
                if let Some((k, v)) = trimmed.split_once(['=', ':']) {
                    if k.trim() == key {
                        value = Some(v.trim().to_string());
                    }
                }
            }
        }
    }
    value
}

/// The directories the file puts on `sys.path` itself: a string (from the directory tests run
/// in, the repository's root), or `os.path.join(os.path.dirname(__file__), …)` of strings
/// (from the file's own directory).
fn sys_path_dirs(from: &str, text: &str) -> Vec<String> {
    static EDIT: LazyLock<Regex> = LazyLock::new(|| {
        re(
            r#"sys\.path\.(?:insert\(\s*-?\d+\s*,|append\()\s*(?:r?["']([^"']+)["']|os\.path\.join\(\s*os\.path\.dirname\(\s*(?:os\.path\.(?:abspath|realpath)\(\s*)?__file__\s*\)?\s*\)((?:\s*,\s*r?["'][^"']*["'])+)\s*\))"#,
        )
    });
    static PART: LazyLock<Regex> = LazyLock::new(|| re(r#"["']([^"']*)["']"#));
    let dir = parent(from);
    let parts = |joined: &str| -> Vec<String> {
        PART.captures_iter(joined)
            .filter_map(|p| p.get(1).map(|g| g.as_str().to_string()))
            .collect()
    };
    let mut dirs: Vec<String> = imports(&EDIT, text)
        .filter_map(|m| match (m.get(1), m.get(2)) {
            (Some(literal), _) => normalise("", literal.as_str()),
            (None, Some(joined)) => normalise(&dir, &parts(joined.as_str()).join("/")),
            _ => None,
        })
        .collect();
    // `Path(__file__).resolve().parent.parent / "src"`, `Path(__file__).parents[1] / "lib"`:
    // the first step from the file is its directory, each one after goes up.
    static PATHLIB: LazyLock<Regex> = LazyLock::new(|| {
        re(
            r#"sys\.path\.(?:insert\(\s*-?\d+\s*,|append\()\s*str\(\s*(?:pathlib\.)?Path\(\s*__file__\s*\)(?:\.(?:resolve|absolute)\(\s*\))*((?:\.parent\b|\.parents\[\d{1,3}\])+)((?:\s*/\s*r?["'][^"']*["'])*)\s*\)"#,
        )
    });
    static STEP: LazyLock<Regex> = LazyLock::new(|| re(r"\.parent(?:s\[(\d+)\])?"));
    dirs.extend(imports(&PATHLIB, text).filter_map(|m| {
        let mut ups: usize = 0;
        let mut at_file = true;
        for step in STEP.captures_iter(&m[1]) {
            let n: usize = step.get(1).map_or(Some(0), |n| n.as_str().parse().ok())?;
            ups = ups.saturating_add(n + usize::from(!at_file));
            at_file = false;
        }
        let mut rel = vec!["..".to_string(); ups.min(64)];
        rel.extend(parts(&m[2]));
        normalise(&dir, &rel.join("/"))
    }));
    // `os.path.dirname(os.path.dirname(os.path.abspath(__file__)))`: each `dirname` past the
    // first goes up from the file's directory.
    static DIRNAMES: LazyLock<Regex> = LazyLock::new(|| {
        re(
            r#"(?m)sys\.path\.(?:insert\(\s*-?\d+\s*,|append\()\s*((?:os\.path\.dirname\(\s*)+)(os\.path\.(?:abspath|realpath)\(\s*)?__file__((?:\s*\))+)\s*(?:;|#|$)"#,
        )
    });
    dirs.extend(imports(&DIRNAMES, text).filter_map(|m| {
        let dirnames = m[1].matches("dirname").count();
        // Every call closed and then the edit itself, with nothing after (`+ "/lib"` makes
        // another path).
        let closed = dirnames + usize::from(m.get(2).is_some()) + 1;
        if m[3].matches(')').count() != closed {
            return None;
        }
        normalise(
            &dir,
            &vec![".."; dirnames.saturating_sub(1).min(64)].join("/"),
        )
    }));
    dirs
}

#[cfg(test)]
mod tests {
    use super::super::tests::refs;

    #[test]
    fn imports_from_the_roots_pytest_and_sys_path_add() {
        let pyproject = [
            (
                "pyproject.toml",
                "[project]\nname = \"shop\"\n\n[tool.pytest.ini_options]\npythonpath = [\"lib\", \"../outside\"]\n",
            ),
            ("lib/money.py", ""),
            ("tests/test_money.py", "from money import cents\n"),
        ];
        assert_eq!(refs(&pyproject, "tests/test_money.py"), ["lib/money.py"]);
        let ini = [
            (
                "pytest.ini",
                "[pytest]\naddopts = -q\npythonpath =\n    packages/core\n    packages/api\n",
            ),
            ("packages/api/routes.py", ""),
            ("tests/test_routes.py", "import routes\n"),
        ];
        assert_eq!(
            refs(&ini, "tests/test_routes.py"),
            ["packages/api/routes.py"]
        );
        let cfg = [
            (
                "setup.cfg",
                "[metadata]\nname = shop\n\n[tool:pytest]\npythonpath = app\n",
            ),
            ("app/cart.py", ""),
            ("tests/test_cart.py", "import cart\n"),
        ];
        assert_eq!(refs(&cfg, "tests/test_cart.py"), ["app/cart.py"]);
        // The file's own edits: a string from the root, a join from the file's directory.
        let edits = [
            (
                "tests/integration/test_flow.py",
                "import os, sys\nsys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'tools'))\nsys.path.append(\"vendor_src\")\nsys.path.append('/etc')\nimport flow\nimport helper\n",
            ),
            ("tools/flow.py", ""),
            ("vendor_src/helper.py", ""),
        ];
        assert_eq!(
            refs(&edits, "tests/integration/test_flow.py"),
            ["tools/flow.py", "vendor_src/helper.py"]
        );
        // pathlib's shapes, and `dirname` twice: each from the file's own directory.
        let pathlib = [
            (
                "tests/unit/test_cart.py",
                "import sys\nfrom pathlib import Path\nsys.path.insert(0, str(Path(__file__).resolve().parent.parent / \"src\" / 'shop'))\nsys.path.append(str(Path(__file__).parents[2] / \"tools\"))\nsys.path.insert(0, str(Path(__file__).parents[9] / \"above\"))\nsys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))\nsys.path.append(os.path.dirname(os.path.dirname(__file__)) + \"/nowhere\")\nsys.path.insert(0, str(Path(__file__).parents[99999999999999999999].parent / \"x\"))\nimport cart\nimport lint\nimport fixtures\n",
            ),
            ("tests/src/shop/cart.py", ""),
            ("tools/lint.py", ""),
            ("tests/fixtures.py", ""),
        ];
        assert_eq!(
            refs(&pathlib, "tests/unit/test_cart.py"),
            [
                "tests/src/shop/cart.py",
                "tools/lint.py",
                "tests/fixtures.py"
            ]
        );
        // No configuration: nothing beyond the usual roots.
        assert!(refs(
            &[("tests/t.py", "import money\n"), ("lib/money.py", "")],
            "tests/t.py"
        )
        .is_empty());
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
}
