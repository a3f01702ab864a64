//! The languages whose imports name a package path, found among the repository's files by
//! that path: Java, Kotlin and Scala (and a test's class under test), PHP (PSR-4 and
//! `require`), Haskell, C# (a test's class under test, the types a file names), and Ruby's
//! requires.

use std::sync::LazyLock;

use regex::Regex;

use super::{imports, normalise, parent, re, stem, Resolver};

impl Resolver<'_> {
    pub(super) fn jvm(&self, from: &str, text: &str, ext: &str) -> Vec<Vec<String>> {
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

    pub(super) fn php(&self, text: &str) -> Vec<Vec<String>> {
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
    /// project holds it), then the types the file names. Namespaces name no file, so `using`
    /// directives are not followed; but C# projects keep a type in a file of its name (the
    /// .NET design guidelines, and what IDE0130/SA1649 enforce), so a capitalised name the
    /// file uses (`new PriceRule(…)`, `: IDiscount`, `Money.Zero`) that is some `Name.cs` of
    /// the repository is that type's file.
    pub(super) fn csharp(&self, from: &str, text: &str) -> Vec<Vec<String>> {
        static TYPE: LazyLock<Regex> = LazyLock::new(|| re(r"\b([A-Z][A-Za-z0-9_]{1,63})\b"));
        let name = stem(from);
        let mut groups: Vec<Vec<String>> = ["Tests", "Test", "Specs", "Spec"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|n| !n.is_empty()))
            .map(|tested| vec![self.by_suffix(&format!("{tested}.cs"))])
            .unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for m in TYPE.captures_iter(text) {
            // Distinct names only, and as many as imports elsewhere: a generated file names
            // thousands.
            if seen.len() == super::MAX_IMPORTS {
                break;
            }
            if m[1] != *name && seen.insert(m[1].to_string()) {
                groups.push(self.by_suffix(&format!("{}.cs", &m[1])));
            }
        }
        groups
    }

    pub(super) fn haskell(&self, text: &str) -> Vec<Vec<String>> {
        static IMPORT: LazyLock<Regex> =
            LazyLock::new(|| re(r"(?m)^\s*import\s+(?:qualified\s+)?([A-Z][\w.]*)"));
        imports(&IMPORT, text)
            .map(|m| self.by_suffix(&format!("{}.hs", m[1].replace('.', "/"))))
            .collect()
    }
}

pub(super) fn ruby(from: &str, text: &str) -> Vec<Vec<String>> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::refs;

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
        // Namespaces are not followed: `using Shop;` names no file.
        assert!(refs(&files, "src/Shop/Price.cs").is_empty());
    }

    #[test]
    fn a_csharp_file_references_the_types_it_names_by_their_files() {
        let files = [
            (
                "src/Shop/Checkout.cs",
                "using System;\nusing Shop.Rules;\n\nnamespace Shop;\n\npublic class Checkout : ICheckout\n{\n    private readonly IDiscount discount = new PriceRule(Money.Zero);\n    public void Log() => Console.WriteLine(nameof(Checkout));\n}\n",
            ),
            ("src/Shop/ICheckout.cs", ""),
            ("src/Shop/Rules/PriceRule.cs", ""),
            ("src/Shop/Rules/IDiscount.cs", ""),
            ("src/Shop/Money.cs", ""),
            // Not named: `SpecialPriceRule` is another type, though its file ends the same.
            ("src/Shop/Rules/SpecialPriceRule.cs", ""),
        ];
        assert_eq!(
            refs(&files, "src/Shop/Checkout.cs"),
            [
                "src/Shop/ICheckout.cs",
                "src/Shop/Rules/IDiscount.cs",
                "src/Shop/Rules/PriceRule.cs",
                "src/Shop/Money.cs"
            ]
        );
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
}
