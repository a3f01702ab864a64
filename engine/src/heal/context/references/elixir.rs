//! Elixir: the modules a file aliases, imports, uses or requires, and a test's module under
//! test, found where Mix keeps them: `MyApp.Accounts.User` in `…/my_app/accounts/user.ex`
//! (each part as `Macro.underscore` writes it), under `lib/` or an umbrella's `apps/*/lib/`;
//! or, for a Phoenix web module (`MyAppWeb.UserController`, filed by kind in
//! `my_app_web/controllers/`), a file of the last part's name under the first part's
//! directory.

use std::sync::LazyLock;

use regex::Regex;

use super::{imports, re, stem, Resolver, MAX_IMPORTS};

/// Places one module may be, at most.
const CANDIDATES: usize = 8;

impl Resolver<'_> {
    pub(super) fn elixir(&self, from: &str, text: &str) -> Vec<Vec<String>> {
        static DIRECTIVE: LazyLock<Regex> = LazyLock::new(|| {
            re(
                r"(?m)^\s*(?:alias|import|use|require)\s+([A-Z][\w]*(?:\.[A-Z][\w]*)*)(?:\.\{([^}]*)\})?",
            )
        });
        static DEFMODULE: LazyLock<Regex> =
            LazyLock::new(|| re(r"(?m)^\s*defmodule\s+([A-Z][\w]*(?:\.[A-Z][\w]*)*)\s+do"));
        let mut modules: Vec<String> = Vec::new();
        // `MyApp.CartTest` in `cart_test.exs` is about `MyApp.Cart`.
        if stem(from).ends_with("_test") {
            if let Some(tested) = DEFMODULE
                .captures(text)
                .and_then(|m| m[1].strip_suffix("Test").map(str::to_string))
                .filter(|t| !t.is_empty() && !t.ends_with('.'))
            {
                modules.push(tested);
            }
        }
        for m in imports(&DIRECTIVE, text) {
            match m.get(2) {
                // `alias MyApp.{Cart, Price}`: each under the common prefix.
                Some(many) => modules.extend(
                    many.as_str()
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .take(32)
                        .map(|n| format!("{}.{n}", &m[1])),
                ),
                None => modules.push(m[1].to_string()),
            }
        }
        // Each module once, and no more than a file's imports elsewhere: `alias A.{…}` lines
        // multiply, and each looks through the index.
        let mut unique: Vec<String> = Vec::new();
        for module in modules {
            if unique.len() == MAX_IMPORTS {
                break;
            }
            if !unique.contains(&module) {
                unique.push(module);
            }
        }
        unique
            .into_iter()
            .map(|module| {
                let parts: Vec<String> = module.split('.').take(16).map(underscore).collect();
                let mut group: Vec<String> = self
                    .by_suffix(&format!("{}.ex", parts.join("/")))
                    .into_iter()
                    .take(CANDIDATES)
                    .collect();
                // Phoenix files its web modules by kind, not by name: `MyAppWeb.CartController`
                // in `my_app_web/controllers/cart_controller.ex`.
                if parts.len() > 1 && parts[0].ends_with("_web") {
                    let first = format!("{}/", parts[0]);
                    let last = format!("{}.ex", parts[parts.len() - 1]);
                    group.extend(
                        self.by_suffix(&last)
                            .into_iter()
                            .filter(|p| p.contains(&format!("/{first}")) || p.starts_with(&first))
                            .take(CANDIDATES),
                    );
                }
                group
            })
            .collect()
    }
}

/// A module's part as a file name, as `Macro.underscore` writes it: `MyApp` is `my_app`,
/// `HTTPClient` `http_client`.
fn underscore(part: &str) -> String {
    let chars: Vec<char> = part.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let before = chars[i - 1];
            let after = chars.get(i + 1);
            if before.is_ascii_lowercase()
                || before.is_ascii_digit()
                || (before.is_ascii_uppercase() && after.is_some_and(|a| a.is_ascii_lowercase()))
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::refs;
    use super::underscore;

    #[test]
    fn module_names_as_mix_files_them() {
        assert_eq!(underscore("MyApp"), "my_app");
        assert_eq!(underscore("HTTPClient"), "http_client");
        assert_eq!(underscore("Accounts"), "accounts");
        let files = [
            (
                "test/shop/cart_test.exs",
                "defmodule Shop.CartTest do\n  use ExUnit.Case, async: true\n  alias Shop.{Price, Tax, Discount}\n  import Shop.Fixtures\n  alias ShopWeb.CartController\nend\n",
            ),
            ("lib/shop/cart.ex", ""),
            ("lib/shop/price.ex", ""),
            ("lib/shop/tax.ex", ""),
            ("test/support/shop/fixtures.ex", ""),
            ("lib/shop_web/controllers/cart_controller.ex", ""),
            // Another application's module of the same last name: not this one.
            ("lib/other/cart_controller.ex", ""),
            // Only web modules are looked for by their last name: `Shop.Tax` is not this.
            ("lib/shop/legacy/discount.ex", ""),
        ];
        assert_eq!(
            refs(&files, "test/shop/cart_test.exs"),
            [
                "lib/shop/cart.ex",
                "lib/shop/price.ex",
                "lib/shop/tax.ex",
                "test/support/shop/fixtures.ex",
                "lib/shop_web/controllers/cart_controller.ex"
            ]
        );
        // An umbrella's applications.
        let umbrella = [
            (
                "apps/billing/lib/billing/invoice.ex",
                "defmodule Billing.Invoice do\n  alias Billing.Tax.Rate\nend\n",
            ),
            ("apps/billing/lib/billing/tax/rate.ex", ""),
        ];
        assert_eq!(
            refs(&umbrella, "apps/billing/lib/billing/invoice.ex"),
            ["apps/billing/lib/billing/tax/rate.ex"]
        );
    }
}
