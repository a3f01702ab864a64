//! The files a model is shown, chosen rather than dumped: first the files the failure names
//! (the culprit first), then the repository's files those reference (their imports, `mod`s and
//! includes, resolved the way each language does), until a byte budget is spent. A named file
//! too big for what is left is shown as a window around the line the log names; a referenced
//! one that does not fit is left out and listed as such, so the model knows it exists.
//!
//! Every path comes from a log or from the repository's code, both hostile: each is read only
//! through [`read_inside`] (a regular file inside the repository, through no link, not where
//! secrets live, within the file cap).

mod references;

use std::path::Path;

use super::redaction::read_inside;

/// Lines shown each side of a named line when its file is too big to show whole.
const WINDOW: usize = 40;
/// At most this many files, however small: beyond them the prompt is a listing, not context.
const MAX_FILES: usize = 12;
/// At most this many files named as left out (a package of thousands is not listed whole).
const MAX_LEFT_OUT: usize = 20;
/// What a file's header costs beside its path (the reason, fences): counted in the budget.
const HEADER: usize = 64;

/// Why a file is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Why {
    /// The log or the sandbox's output names it.
    Named,
    /// A shown file imports, includes or declares it.
    Referenced { by: String },
}

/// A file as shown, whole or as a window of its lines.
#[derive(Debug, Clone)]
pub(super) struct Shown {
    pub path: String,
    pub why: Why,
    pub text: String,
    /// 1-based first and last line of a window; `None` when the file is whole.
    pub window: Option<(usize, usize, usize)>,
}

/// What the model is shown, and what was left out for the budget.
#[derive(Debug, Default)]
pub(super) struct Context {
    pub shown: Vec<Shown>,
    pub left_out: Vec<String>,
}

/// Chooses the files for a prompt of at most `budget` bytes of file text. `named` are the
/// files the failure names, most telling first, each with the line named, if any.
pub(super) fn choose(repo: &Path, named: &[(String, Option<usize>)], budget: usize) -> Context {
    let mut context = Context::default();
    let mut left = budget;
    let mut seen: Vec<String> = Vec::new();
    let mut named_read: Vec<(String, String)> = Vec::new();
    for (path, line) in named {
        if seen.contains(path) || context.shown.len() == MAX_FILES {
            continue;
        }
        left = left.saturating_sub(HEADER + path.len());
        let Some(text) = read_inside(repo, path) else {
            continue;
        };
        seen.push(path.clone());
        let shown = if text.len() <= left {
            Some(Shown {
                path: path.clone(),
                why: Why::Named,
                text: text.clone(),
                window: None,
            })
        } else {
            line.and_then(|line| window(&text, line))
                .filter(|(part, _)| part.len() <= left)
                .map(|(part, window)| Shown {
                    path: path.clone(),
                    why: Why::Named,
                    text: part,
                    window: Some(window),
                })
        };
        match shown {
            Some(shown) => {
                left -= shown.text.len();
                context.shown.push(shown);
            }
            None => context.leave_out(path.clone()),
        }
        named_read.push((path.clone(), text));
    }
    // One step out: what the named files reference, the culprit's references first; and
    // through a file that only re-exports others (a package's `index.ts` or `__init__.py`),
    // what it re-exports, one step further.
    let resolver = references::Resolver::new(repo);
    let mut barrels: Vec<(String, String)> = Vec::new();
    for (from, text) in &named_read {
        for (path, text) in follow(&resolver, &mut context, &mut seen, &mut left, from, text) {
            if references::mostly_reexports(&path, &text) {
                barrels.push((path, text));
            }
        }
    }
    for (from, text) in &barrels {
        follow(&resolver, &mut context, &mut seen, &mut left, from, text);
    }
    context
}

/// Shows what `from` references, within what is `left` of the budget, and returns the files
/// shown with their text.
fn follow(
    resolver: &references::Resolver<'_>,
    context: &mut Context,
    seen: &mut Vec<String>,
    left: &mut usize,
    from: &str,
    text: &str,
) -> Vec<(String, String)> {
    let mut shown = Vec::new();
    for path in resolver.of(from, text) {
        if seen.contains(&path) {
            continue;
        }
        seen.push(path.clone());
        if context.shown.len() == MAX_FILES {
            context.leave_out(path);
            continue;
        }
        let Some(text) = read_inside(resolver.repo(), &path) else {
            continue;
        };
        let cost = HEADER + path.len() + from.len() + text.len();
        if cost > *left {
            context.leave_out(path);
            continue;
        }
        *left -= cost;
        context.shown.push(Shown {
            path: path.clone(),
            why: Why::Referenced {
                by: from.to_string(),
            },
            text: text.clone(),
            window: None,
        });
        shown.push((path, text));
    }
    shown
}

/// Lines `line - WINDOW ..= line + WINDOW` of `text`, and (first, last, of) as 1-based
/// numbers, when `line` is in the file.
fn window(text: &str, line: usize) -> Option<(String, (usize, usize, usize))> {
    let lines: Vec<&str> = text.lines().collect();
    if line == 0 || line > lines.len() {
        return None;
    }
    let first = line.saturating_sub(WINDOW).max(1);
    let last = (line + WINDOW).min(lines.len());
    let mut part = lines[first - 1..last].join("\n");
    part.push('\n');
    Some((part, (first, last, lines.len())))
}

impl Context {
    fn leave_out(&mut self, path: String) {
        if self.left_out.len() < MAX_LEFT_OUT {
            self.left_out.push(path);
        }
    }

    /// The files as the prompt shows them.
    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        for file in &self.shown {
            let why = match &file.why {
                Why::Named => "named by the failure".to_string(),
                Why::Referenced { by } => format!("referenced by {by}"),
            };
            let part = match file.window {
                Some((first, last, of)) => format!(", lines {first}-{last} of {of}"),
                None => String::new(),
            };
            out.push_str(&format!(
                "\nFile {} ({why}{part}):\n```\n{}```\n",
                file.path,
                if file.text.ends_with('\n') {
                    file.text.clone()
                } else {
                    format!("{}\n", file.text)
                }
            ));
        }
        if !self.left_out.is_empty() {
            out.push_str(&format!(
                "\nAlso relevant, not shown for the size of the prompt: {}\n",
                self.left_out.join(", ")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository of `files` (path, text) in a temporary directory.
    pub(super) fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    fn named(paths: &[&str]) -> Vec<(String, Option<usize>)> {
        paths.iter().map(|p| (p.to_string(), None)).collect()
    }

    fn paths(context: &Context) -> Vec<(&str, Why)> {
        context
            .shown
            .iter()
            .map(|s| (s.path.as_str(), s.why.clone()))
            .collect()
    }

    #[test]
    fn the_named_files_come_first_then_what_they_reference() {
        let dir = repo(&[
            ("tests/test_prices.py", "from shop.prices import total\n"),
            ("shop/__init__.py", ""),
            ("shop/prices.py", "from .tax import rate\n"),
            ("shop/tax.py", "rate = 0.2\n"),
            ("shop/unrelated.py", "x = 1\n"),
        ]);
        let context = choose(dir.path(), &named(&["tests/test_prices.py"]), 10_000);
        // One step out only: the test's import, not the import's own imports.
        assert_eq!(
            paths(&context),
            vec![
                ("tests/test_prices.py", Why::Named),
                (
                    "shop/prices.py",
                    Why::Referenced {
                        by: "tests/test_prices.py".into()
                    }
                ),
            ]
        );
        let text = context.render();
        assert!(text.contains("File shop/prices.py (referenced by tests/test_prices.py)"));
        assert!(!text.contains("rate = 0.2"));
    }

    #[test]
    fn through_a_file_that_only_reexports_to_what_it_reexports() {
        let referenced = |by: &str| Why::Referenced { by: by.into() };
        let dir = repo(&[
            (
                "tests/cart.test.ts",
                "import { Cart } from '../src';
",
            ),
            (
                "src/index.ts",
                "// The package's surface.
export { Cart } from './cart';
export * from './money';
",
            ),
            (
                "src/cart.ts",
                "import { round } from './round';
export class Cart {}
",
            ),
            (
                "src/money.ts",
                "export const cents = 100;
",
            ),
            (
                "src/round.ts",
                "export const round = Math.round;
",
            ),
        ]);
        let context = choose(dir.path(), &named(&["tests/cart.test.ts"]), 10_000);
        // One step past the index, not two: the cart's own import stays out.
        assert_eq!(
            paths(&context),
            vec![
                ("tests/cart.test.ts", Why::Named),
                ("src/index.ts", referenced("tests/cart.test.ts")),
                ("src/cart.ts", referenced("src/index.ts")),
                ("src/money.ts", referenced("src/index.ts")),
            ]
        );
        // A Python package's __init__.py of relative imports, likewise; a module of code that
        // also re-exports one name is not followed.
        let dir = repo(&[
            ("tests/test_shop.py", "from shop import total
import billing
"),
            ("shop/__init__.py", "\"\"\"The shop.\"\"\"\nfrom .prices import total\n__all__ = [\"total\"]\n"),
            ("shop/prices.py", "def total(): ...\n"),
            ("billing/__init__.py", "from .tax import rate\n\ndef bill(order):\n    total = sum(i.price for i in order)\n    return total * (1 + rate)\n"),
            ("billing/tax.py", "rate = 0.2\n"),
        ]);
        let context = choose(dir.path(), &named(&["tests/test_shop.py"]), 10_000);
        assert_eq!(
            paths(&context),
            vec![
                ("tests/test_shop.py", Why::Named),
                ("shop/__init__.py", referenced("tests/test_shop.py")),
                ("billing/__init__.py", referenced("tests/test_shop.py")),
                ("shop/prices.py", referenced("shop/__init__.py")),
            ]
        );
    }

    #[test]
    fn the_budget_leaves_out_what_does_not_fit_and_says_so() {
        // Each of the two fits alone; not both.
        let half = "x = 1\n".repeat(100);
        let dir = repo(&[
            ("app.py", "import models\nimport helpers\nimport small\n"),
            ("models.py", &half),
            ("helpers.py", &half),
            ("small.py", "y = 2\n"),
        ]);
        let context = choose(dir.path(), &named(&["app.py"]), 1000);
        assert_eq!(
            paths(&context).iter().map(|p| p.0).collect::<Vec<_>>(),
            ["app.py", "models.py", "small.py"]
        );
        assert_eq!(context.left_out, ["helpers.py"]);
        assert!(context
            .render()
            .contains("not shown for the size of the prompt: helpers.py"));
        let spent: usize = context.shown.iter().map(|s| s.text.len()).sum();
        assert!(spent <= 1000);
    }

    #[test]
    fn a_named_file_too_big_is_shown_around_its_line() {
        let text: String = (1..=500).map(|n| format!("line {n}\n")).collect();
        let dir = repo(&[("src/big.c", &text)]);
        let context = choose(dir.path(), &[("src/big.c".into(), Some(300))], 2000);
        let shown = &context.shown[0];
        assert_eq!(shown.window, Some((260, 340, 500)));
        assert!(shown.text.starts_with("line 260\n") && shown.text.ends_with("line 340\n"));
        assert!(context
            .render()
            .contains("(named by the failure, lines 260-340 of 500)"));
        // Without a line there is nothing to centre on: left out, not cut anywhere.
        let context = choose(dir.path(), &named(&["src/big.c"]), 2000);
        assert!(context.shown.is_empty());
        assert_eq!(context.left_out, ["src/big.c"]);
    }

    #[test]
    fn paths_from_the_log_or_the_code_reach_nothing_outside_the_repository() {
        // Names no secret-file rule refuses, outside any hidden directory: only the checks for
        // links, `..` and absolute paths keep them out.
        let parent = tempfile::Builder::new()
            .prefix("outside")
            .tempdir()
            .unwrap();
        let values = parent.path().join("values.py");
        std::fs::write(&values, "TOKEN = 1\n").unwrap();
        let dir = repo(&[("app.py", "from ..values import TOKEN\nimport values\n")]);
        std::os::unix::fs::symlink(&values, dir.path().join("values.py")).unwrap();
        let context = choose(
            dir.path(),
            &named(&["app.py", &values.display().to_string(), "../values.py"]),
            10_000,
        );
        assert_eq!(paths(&context), vec![("app.py", Why::Named)]);
        assert!(!context.render().contains("TOKEN = 1"));
    }

    #[test]
    fn no_more_than_the_file_cap_however_small() {
        let mut files: Vec<(String, String)> = (0..20)
            .map(|n| (format!("m{n}.py"), String::new()))
            .collect();
        let imports: String = (0..20).map(|n| format!("import m{n}\n")).collect();
        files.push(("main.py".into(), imports));
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let dir = repo(&files);
        let context = choose(dir.path(), &named(&["main.py"]), 100_000);
        assert_eq!(context.shown.len(), MAX_FILES);
        assert_eq!(context.left_out.len(), 20 - (MAX_FILES - 1));
    }
}
