//! Go: imports inside the module of the nearest `go.mod` (and of the modules it replaces with
//! a directory of the repository, and of the other modules of the nearest `go.work`), and a
//! test's own package.

use std::sync::LazyLock;

use regex::Regex;

use super::{imports, join_dir, list, normalise, parent, re, Resolver, MAX_IMPORTS};
use crate::heal::redaction::read_inside;

impl Resolver<'_> {
    pub(super) fn go(&self, from: &str, text: &str) -> Vec<Vec<String>> {
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
            // The module itself and the modules go.mod replaces with a directory of the
            // repository (a monorepo's `replace example.com/lib => ../lib`).
            let mut modules = vec![(module, dir.clone())];
            modules.extend(go_replaces(&text, &dir));
            // A workspace's modules (`go.work`'s `use`), as Go resolves them in workspace mode.
            modules.extend(self.go_workspace(from));
            // The longest module path an import falls under is its module, the file's own
            // included (a nested module filed elsewhere).
            modules.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
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
}

impl Resolver<'_> {
    /// The modules of the nearest `go.work` above `from`: each `use`d directory's module path
    /// (from its `go.mod`) and the directory, from the repository's root; a directory outside
    /// the repository is left out.
    fn go_workspace(&self, from: &str) -> Vec<(String, String)> {
        static MODULE: LazyLock<Regex> = LazyLock::new(|| re(r"(?m)^module\s+(\S+)"));
        let Some(dir) = self.nearest(from, "go.work") else {
            return Vec::new();
        };
        let Some(work) = read_inside(self.repo, &join_dir(&dir, "go.work")) else {
            return Vec::new();
        };
        let mut used = Vec::new();
        let mut in_block = false;
        for line in work.lines() {
            let line = line.split("//").next().unwrap_or("").trim();
            if in_block {
                if line == ")" {
                    in_block = false;
                } else if !line.is_empty() {
                    used.push(line.trim_matches('"').to_string());
                }
            } else if let Some(rest) = line.strip_prefix("use") {
                match rest.trim() {
                    "(" => in_block = true,
                    one if rest.starts_with(char::is_whitespace) => {
                        used.push(one.trim_matches('"').to_string())
                    }
                    _ => {}
                }
            }
        }
        used.into_iter()
            .take(MAX_IMPORTS)
            .filter_map(|rel| {
                let module_dir = normalise(&dir, &rel)?;
                let gomod = read_inside(self.repo, &join_dir(&module_dir, "go.mod"))?;
                Some((MODULE.captures(&gomod)?[1].to_string(), module_dir))
            })
            .collect()
    }
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

#[cfg(test)]
mod tests {
    use super::super::tests::refs;
    use super::*;

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
    fn go_imports_of_the_other_modules_of_a_workspace() {
        let files = [
            (
                "go.work",
                "go 1.22\n\nuse (\n\t./services/api // the service\n\t\"./libs/money\"\n\t../outside\n)\nuse ./tools\n",
            ),
            ("services/api/go.mod", "module example.com/api\n"),
            (
                "services/api/handler.go",
                "package api\n\nimport (\n\t\"example.com/money/cents\"\n\t\"example.com/tools\"\n\t\"example.com/unlisted\"\n)\n",
            ),
            ("libs/money/go.mod", "module example.com/money\n"),
            ("libs/money/cents/cents.go", ""),
            ("tools/go.mod", "module example.com/tools\n"),
            ("tools/tools.go", ""),
            ("unlisted/go.mod", "module example.com/unlisted\n"),
            ("unlisted/u.go", ""),
        ];
        assert_eq!(
            refs(&files, "services/api/handler.go"),
            ["libs/money/cents/cents.go", "tools/tools.go"]
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
}
