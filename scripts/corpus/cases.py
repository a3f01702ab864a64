"""The corpus cases: small projects that fail the ways real projects fail.

A case's `fix` ([(path, old, new)], `old` None to add a file) makes the project pass: the
generator runs it too, with the same setup, and records that green run's log beside the red
one (`<case>.green.log`), as GitHub keeps the last green run of the same job.

Dependencies are real and pinned (requirements.txt with exact versions, package-lock.json
written by npm, Cargo.lock written by cargo) where the ecosystem's registry is reachable
from the machines this project runs on; Go, Maven, Hackage and Packagist are not, so those
cases use the standard library or the packages Debian ships.
"""

PY_VENV = "python3 -m venv .venv && . .venv/bin/activate && pip install --disable-pip-version-check -r requirements.txt && pip freeze --all | grep -v '^widgets' > requirements.lock"

INVENTORY = {
    "pyproject.toml": """
        [tool.pytest.ini_options]
        pythonpath = ["."]
    """,
    "requirements.txt": """
        pytest==8.3.3
        requests==2.32.3
    """,
    "inventory/__init__.py": "",
    "inventory/stock.py": """
        import requests


        def price_url(base: str, sku: str) -> str:
            return requests.Request("GET", f"{base}/prices/{sku}").prepare().url


        def restock(levels: dict, sku: str, amount: int) -> dict:
            updated = dict(levels)
            updated[sku] = updated.get(sku, 0) - amount
            return updated
    """,
    "tests/test_stock.py": """
        from inventory.stock import price_url, restock


        def test_price_url():
            assert price_url("https://shop.test", "a1") == "https://shop.test/prices/a1"


        def test_restock_adds():
            assert restock({"a1": 2}, "a1", 3) == {"a1": 5}
    """,
}

NODE_LIB = {
    "src/calendar.js": """
        const { DateTime } = require('luxon');

        function daysIn(month) {
          return DateTime.local(2026, month, 1).daysInMonth - 1;
        }

        module.exports = { daysIn };
    """,
}

# Hackage is unreachable here: a configuration without repositories builds against the
# packages GHC ships (as a CI image with a warmed cache would).
CABAL_NO_INDEX = "rm -rf /tmp/corpus-cabal && mkdir -p /tmp/corpus-cabal && : > /tmp/corpus-cabal/config"

CARGO_TOML = """
    [package]
    name = "widgets"
    version = "0.1.0"
    edition = "2021"

    [dependencies]
    serde = { version = "=1.0.215", features = ["derive"] }
    serde_json = "=1.0.133"
"""

# Bazel 4.2.3 (Debian's bazel-bootstrap) fetches rules_cc, rules_java and its coverage tools
# on first use; these machines cannot reach them. The CI image here holds local copies (as a
# CI behind a mirror holds a repository cache): minimal stand-ins that hand Bazel's native
# rules back, named in the project's `.bazelrc` as such a CI names its mirror. Debian's own
# bazel-rules-cc is too new for this Bazel. Nothing else about the build is changed.
BAZEL_REPOS = "/tmp/corpus-bazel-repos"
BAZEL_OFFLINE = " && ".join([
    f"rm -rf {BAZEL_REPOS} && mkdir -p {BAZEL_REPOS}/rules_cc/cc {BAZEL_REPOS}/rules_java/java {BAZEL_REPOS}/coverage",
    f"touch {BAZEL_REPOS}/rules_cc/WORKSPACE {BAZEL_REPOS}/rules_cc/BUILD {BAZEL_REPOS}/rules_java/WORKSPACE {BAZEL_REPOS}/rules_java/BUILD {BAZEL_REPOS}/rules_java/java/BUILD {BAZEL_REPOS}/coverage/WORKSPACE",
    f"for r in cc_library cc_binary cc_test cc_toolchain cc_toolchain_suite; do printf 'def %s(**kwargs):\\n    native.%s(**kwargs)\\n\\n' $r $r; done > {BAZEL_REPOS}/rules_cc/cc/defs.bzl",
    f"echo 'alias(name = \"toolchain_type\", actual = \"@bazel_tools//tools/cpp:toolchain_type\", visibility = [\"//visibility:public\"])' > {BAZEL_REPOS}/rules_cc/cc/BUILD",
    f"for r in java_binary java_import java_library java_toolchain java_runtime java_test java_plugin; do printf 'def %s(**kwargs):\\n    native.%s(**kwargs)\\n\\n' $r $r; done > {BAZEL_REPOS}/rules_java/java/defs.bzl",
    f"printf '#!/bin/sh\\nexit 0\\n' > {BAZEL_REPOS}/coverage/noop.sh && chmod +x {BAZEL_REPOS}/coverage/noop.sh",
    f"printf 'sh_binary(name = \"coverage_report_generator\", srcs = [\"noop.sh\"], visibility = [\"//visibility:public\"])\\nsh_binary(name = \"lcov_merger\", srcs = [\"noop.sh\"], visibility = [\"//visibility:public\"])\\n' > {BAZEL_REPOS}/coverage/BUILD",
])
BAZELRC = (
    f"build --override_repository=rules_cc={BAZEL_REPOS}/rules_cc\n"
    f"build --override_repository=rules_java={BAZEL_REPOS}/rules_java\n"
    f"build --override_repository=remote_coverage_tools={BAZEL_REPOS}/coverage\n"
    "build --override_repository=platforms=/usr/share/bazel/tools/platforms\n"
    # Bazel's linux-sandbox cannot nest in a container here (and prints its debug trace).
    "build --spawn_strategy=local\n"
)
BAZEL_BASKET = {
    "WORKSPACE": "",
    ".bazelrc": BAZELRC,
    "BUILD": 'cc_library(name = "basket", srcs = ["basket.cc"], hdrs = ["basket.h"])\n\ncc_test(name = "basket_test", srcs = ["basket_test.cc"], deps = [":basket"])\n',
    "basket.h": "int total(const int* items, int n);\n",
    "basket_test.cc": '#include <cstdio>\n#include "basket.h"\n\nint main() {\n    int items[] = {3, 4};\n    int got = total(items, 2);\n    if (got != 7) {\n        std::printf("basket_test.cc:7: total({3, 4}): expected 7, got %d\\n", got);\n        return 1;\n    }\n    return 0;\n}\n',
}

CASES = [
    # ---- Python ---------------------------------------------------------------------
    {
        "name": "pytest-assertion",
        "fix": [('inventory/stock.py', '- amount', '+ amount')],
        "language": "python",
        "ci": "gitlab",
        "files": INVENTORY,
        "setup": [PY_VENV],
        "run": ". .venv/bin/activate && pytest -q",
        "after": ["rm -rf .pytest_cache && echo cache removed"],
    },
    {
        "name": "pytest-import-error",
        "fix": [('inventory/report.py', None, 'def summary(levels):\n    return ""\n')],
        "language": "python",
        "ci": "jenkins",
        "files": {
            **INVENTORY,
            "tests/test_report.py": """
                from inventory.report import summary


                def test_summary():
                    assert summary({}) == ""
            """,
        },
        "setup": [PY_VENV],
        "run": ". .venv/bin/activate && pytest -q tests/test_report.py",
    },
    {
        "name": "mypy-arg-type",
        "fix": [('inventory/fetch.py', '"5"', '5.0')],
        "language": "python",
        "ci": "circleci",
        "files": {
            "requirements.txt": "mypy==1.13.0\nrequests==2.32.3\ntypes-requests==2.32.0.20241016\n",
            "inventory/__init__.py": "",
            "inventory/fetch.py": """
                import requests


                def fetch(url: str, timeout: float) -> int:
                    return requests.get(url, timeout=timeout).status_code


                def check() -> int:
                    return fetch("https://shop.test", "5")
            """,
        },
        "setup": [PY_VENV],
        "run": ". .venv/bin/activate && mypy --strict inventory",
    },
    {
        "name": "ruff-format-check",
        "fix": [('inventory/units.py', 'kg*1000', 'kg * 1000')],
        "language": "python",
        "ci": "travis",
        "files": {
            "requirements.txt": "ruff==0.8.0\n",
            "inventory/__init__.py": "",
            "inventory/units.py": "def grams(kg):\n    return kg*1000\n",
        },
        "setup": [PY_VENV],
        "run": ". .venv/bin/activate && ruff format --check .",
    },
    {
        "name": "ruff-check-f401",
        "fix": [('inventory/units.py', 'import os\n\n\n', '')],
        "language": "python",
        "ci": "buildkite",
        "files": {
            "requirements.txt": "ruff==0.8.0\n",
            "inventory/__init__.py": "",
            "inventory/units.py": "import os\n\n\ndef grams(kg):\n    return kg * 1000\n",
        },
        "setup": [PY_VENV],
        "run": ". .venv/bin/activate && ruff check --output-format=full .",
    },
    {
        "name": "tox-pytest",
        "fix": [('inventory/stock.py', '- amount', '+ amount')],
        "language": "python",
        "ci": "github",
        "files": {
            **INVENTORY,
            "tox.ini": """
                [tox]
                envlist = py311
                skipsdist = true

                [testenv]
                deps = -rrequirements.txt
                commands = pytest -q
            """,
        },
        "setup": ["python3 -m pip install -q --disable-pip-version-check tox==4.23.2"],
        "run": "python3 -m tox -q",
    },
    {
        "name": "pip-resolution-impossible",
        "language": "python",
        "ci": "gitlab",
        "files": {"requirements.txt": "pytest==8.3.3\npluggy==1.0.0\n"},
        "setup": ["python3 -m venv .venv"],
        "run": ". .venv/bin/activate && pip install --disable-pip-version-check -r requirements.txt",
    },
    # ---- JavaScript / TypeScript ------------------------------------------------------
    {
        "name": "mocha-assertion",
        "fix": [('src/calendar.js', ' - 1;', ';')],
        "language": "javascript",
        "ci": "travis",
        "files": {
            **NODE_LIB,
            "package.json": """
                {"name": "widgets", "version": "1.0.0", "private": true,
                 "scripts": {"test": "mocha"},
                 "dependencies": {"luxon": "3.5.0"},
                 "devDependencies": {"mocha": "10.8.2"}}
            """,
            "test/calendar.test.js": """
                const assert = require('assert');
                const { daysIn } = require('../src/calendar');

                describe('daysIn', function () {
                  it('january has 31 days', function () {
                    assert.strictEqual(daysIn(1), 31);
                  });
                });
            """,
        },
        "setup": ["npm install --no-audit --no-fund --loglevel=error", "rm -rf node_modules && npm ci --no-audit --no-fund"],
        "run": "npm test",
        "after": ["npm ls --depth=0"],
    },
    {
        "name": "vitest-assertion",
        "fix": [('src/sum.ts', ' + 1;', ';')],
        "language": "typescript",
        "ci": "buildkite",
        "files": {
            "package.json": """
                {"name": "widgets", "version": "1.0.0", "private": true, "type": "module",
                 "scripts": {"test": "vitest run"},
                 "devDependencies": {"vitest": "2.1.5"}}
            """,
            "src/sum.ts": "export const sum = (a: number, b: number): number => a + b + 1;\n",
            "src/sum.test.ts": """
                import { describe, expect, it } from 'vitest';
                import { sum } from './sum';

                describe('sum', () => {
                  it('adds numbers', () => {
                    expect(sum(2, 2)).toBe(4);
                  });
                });
            """,
        },
        "env": {"CI": "true"},
        "setup": ["npm install --no-audit --no-fund --loglevel=error"],
        "run": "npm test",
    },
    {
        "name": "tsc-missing-property",
        "fix": [('src/order.ts', 'totl', 'total')],
        "language": "typescript",
        "ci": "jenkins",
        "files": {
            "package.json": """
                {"name": "widgets", "version": "1.0.0", "private": true,
                 "scripts": {"build": "tsc -p ."},
                 "devDependencies": {"typescript": "5.6.3"}}
            """,
            "tsconfig.json": '{"compilerOptions": {"strict": true, "outDir": "dist", "target": "es2022", "module": "commonjs"}, "include": ["src"]}\n',
            "src/order.ts": """
                interface Order {
                  id: string;
                  total: number;
                }

                export function describe(order: Order): string {
                  return `${order.id}: ${order.totl}`;
                }
            """,
        },
        "setup": ["npm install --no-audit --no-fund --loglevel=error"],
        "run": "npm run build",
    },
    {
        "name": "eslint-no-unused-vars",
        "fix": [('src/format.js', '  const unused = 1;\n', '')],
        "language": "javascript",
        "ci": "circleci",
        "files": {
            **NODE_LIB,
            "package.json": """
                {"name": "widgets", "version": "1.0.0", "private": true,
                 "scripts": {"lint": "eslint src"},
                 "dependencies": {"luxon": "3.5.0"},
                 "devDependencies": {"eslint": "9.15.0", "@eslint/js": "9.15.0", "globals": "15.12.0"}}
            """,
            "eslint.config.js": """
                const js = require('@eslint/js');
                const globals = require('globals');
                module.exports = [js.configs.recommended, {languageOptions: {sourceType: 'commonjs', globals: globals.node}}];
            """,
            "src/format.js": """
                const { DateTime } = require('luxon');

                function stamp(date) {
                  const unused = 1;
                  return DateTime.fromJSDate(date).toISODate();
                }

                module.exports = { stamp };
            """,
        },
        "setup": ["npm install --no-audit --no-fund --loglevel=error"],
        "run": "npm run lint",
    },
    {
        "name": "npm-ci-out-of-sync",
        "language": "javascript",
        "ci": "github",
        "files": {
            **NODE_LIB,
            "package.json": """
                {"name": "widgets", "version": "1.0.0", "private": true,
                 "dependencies": {"luxon": "3.5.0"}}
            """,
        },
        "setup": [
            "npm install --no-audit --no-fund --loglevel=error",
            "sed -i 's/\"luxon\": \"3.5.0\"/\"luxon\": \"3.5.0\", \"ms\": \"2.1.3\"/' package.json && cat package.json",
        ],
        "run": "npm ci --no-audit --no-fund",
    },
    {
        "name": "pnpm-frozen-lockfile",
        "language": "javascript",
        "ci": "gitlab",
        "files": {
            **NODE_LIB,
            "package.json": """
                {"name": "widgets", "version": "1.0.0", "private": true,
                 "dependencies": {"luxon": "3.5.0"}}
            """,
        },
        "env": {"CI": "true"},
        "setup": [
            "npx -y pnpm@9.14.2 install --reporter=append-only",
            "sed -i 's/\"luxon\": \"3.5.0\"/\"luxon\": \"3.5.0\", \"ms\": \"2.1.3\"/' package.json",
        ],
        "run": "npx -y pnpm@9.14.2 install --frozen-lockfile --reporter=append-only",
    },
    # ---- Shell (no tool this project knows) -------------------------------------------
    {
        "name": "release-script",
        "fix": [('VERSION', '1.2.0', '1.3.0')],
        "language": "shell",
        "ci": "jenkins",
        "files": {
            "VERSION": "1.2.0\n",
            "scripts/check-version.sh": """
                #!/bin/sh
                set -e
                echo "checking the release version"
                tag="v1.3.0"
                version="$(cat VERSION)"
                if [ "v$version" != "$tag" ]; then
                  echo "VERSION says $version but the tag is $tag: bump VERSION before tagging" >&2
                  exit 1
                fi
            """,
        },
        "run": "sh scripts/check-version.sh",
    },
    {
        "name": "smoke-test-script",
        "language": "shell",
        "ci": "buildkite",
        "files": {
            "scripts/smoke.sh": """
                #!/bin/sh
                set -e
                echo "starting the smoke test against the staging build"
                curl -sS --max-time 5 http://127.0.0.1:9/health
                echo "healthy"
            """,
        },
        "run": "sh scripts/smoke.sh",
    },
    # ---- Rust -------------------------------------------------------------------------
    {
        "name": "cargo-build-e0308",
        "fix": [('src/lib.rs', 'total: u32', 'total: u64')],
        "language": "rust",
        "ci": "gitlab",
        "files": {
            "Cargo.toml": CARGO_TOML,
            "src/lib.rs": """
                use serde::Serialize;

                #[derive(Serialize)]
                pub struct Order {
                    pub id: u32,
                    pub total: u64,
                }

                pub fn encode(id: u32, total: u32) -> String {
                    let order = Order { id, total };
                    serde_json::to_string(&order).unwrap()
                }
            """,
        },
        "setup": ["cargo generate-lockfile -q"],
        "run": "cargo build --locked --color never",
    },
    {
        "name": "cargo-test-assert-eq",
        "fix": [('src/lib.rs', '{"id":8}', '{"id":7}')],
        "language": "rust",
        "ci": "circleci",
        "files": {
            "Cargo.toml": CARGO_TOML,
            "src/lib.rs": """
                use serde::Serialize;

                #[derive(Serialize)]
                pub struct Order {
                    pub id: u32,
                }

                pub fn encode(id: u32) -> String {
                    serde_json::to_string(&Order { id }).unwrap()
                }

                #[cfg(test)]
                mod tests {
                    #[test]
                    fn encodes_the_id() {
                        assert_eq!(super::encode(7), r#"{"id":8}"#);
                    }
                }
            """,
        },
        "setup": ["cargo generate-lockfile -q"],
        "run": "cargo test --locked --color never",
    },
    {
        "name": "cargo-locked-out-of-date",
        "language": "rust",
        "ci": "travis",
        "files": {
            "Cargo.toml": CARGO_TOML,
            "src/lib.rs": "pub fn one() -> u32 { 1 }\n",
        },
        "setup": [
            "cargo generate-lockfile -q",
            "sed -i 's/serde_json = \"=1.0.133\"/serde_json = \"=1.0.132\"/' Cargo.toml",
        ],
        "run": "cargo build --locked --color never",
    },
    {
        "name": "cargo-clippy-color",
        "fix": [('src/lib.rs', '&Vec<u32>', '&[u32]'), ('src/lib.rs', 'items.len() == 0', 'items.is_empty()')],
        "language": "rust",
        "ci": "github",
        "files": {
            "Cargo.toml": CARGO_TOML,
            "src/lib.rs": """
                pub fn is_empty(items: &Vec<u32>) -> bool {
                    items.len() == 0
                }
            """,
        },
        "setup": ["cargo generate-lockfile -q"],
        # GitHub keeps colours in its logs; CI often forces them on.
        "run": "cargo clippy --locked --color always -- -D warnings",
    },
    # ---- Go ---------------------------------------------------------------------------
    {
        "name": "go-build-undefined",
        "fix": [('calc/calc.go', 'Double(n)', 'n * 2')],
        "language": "go",
        "ci": "jenkins",
        "files": {
            "go.mod": "module example.com/widgets\n\ngo 1.19\n",
            "calc/calc.go": """
                package calc

                import "strconv"

                func Parse(s string) (int, error) {
                	n, err := strconv.Atoi(s)
                	return Double(n), err
                }
            """,
        },
        "env": {"GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOCACHE": "/tmp/corpus-gocache"},
        "setup": ["go version"],
        "run": "go build ./...",
        "after": ["rm -rf bin && echo workspace cleaned"],
    },
    {
        "name": "go-test-failure",
        "fix": [('calc/calc.go', 'a + b + 1', 'a + b')],
        "language": "go",
        "ci": "buildkite",
        "files": {
            "go.mod": "module example.com/widgets\n\ngo 1.19\n",
            "calc/calc.go": "package calc\n\nfunc Add(a, b int) int { return a + b + 1 }\n",
            "calc/calc_test.go": """
                package calc

                import "testing"

                func TestAdd(t *testing.T) {
                	if got := Add(2, 2); got != 4 {
                		t.Errorf("Add(2, 2) = %d, want 4", got)
                	}
                }

                func TestAddZero(t *testing.T) {
                	if got := Add(0, 0); got != 0 {
                		t.Fatalf("Add(0, 0) = %d, want 0", got)
                	}
                }
            """,
        },
        "env": {"GOPROXY": "off", "GOCACHE": "/tmp/corpus-gocache"},
        "run": "go test ./...",
    },
    {
        "name": "go-vet-printf",
        "fix": [('report/report.go', '"%s: %d items", total', '"%s: %d items", name, total')],
        "language": "go",
        "ci": "github",
        "files": {
            "go.mod": "module example.com/widgets\n\ngo 1.19\n",
            "report/report.go": """
                package report

                import "fmt"

                func Line(name string, total int) string {
                	return fmt.Sprintf("%s: %d items", total)
                }
            """,
        },
        "env": {"GOPROXY": "off", "GOCACHE": "/tmp/corpus-gocache"},
        "run": "go vet ./...",
    },
    {
        "name": "go-missing-module",
        "language": "go",
        "ci": "circleci",
        "files": {
            "go.mod": "module example.com/widgets\n\ngo 1.19\n\nrequire github.com/google/uuid v1.6.0\n",
            "id/id.go": """
                package id

                import "github.com/google/uuid"

                func New() string { return uuid.NewString() }
            """,
        },
        "env": {"GOPROXY": "off", "GOCACHE": "/tmp/corpus-gocache", "GOFLAGS": "-mod=readonly"},
        "run": "go build ./...",
    },
    # ---- C / C++ ----------------------------------------------------------------------
    {
        "name": "gcc-make-error",
        "fix": [('src/parse.c', 'return totl;', 'return total;')],
        "language": "c",
        "ci": "travis",
        "files": {
            "Makefile": "CFLAGS=-Wall -Werror -O2\n\nwidgets: src/main.o src/parse.o\n\t$(CC) -o $@ $^\n",
            "src/main.c": '#include <stdio.h>\n#include "parse.h"\n\nint main(void) {\n    printf("%d\\n", parse_total("3,4"));\n    return 0;\n}\n',
            "src/parse.h": "int parse_total(const char *csv);\n",
            "src/parse.c": '#include <stdlib.h>\n#include "parse.h"\n\nint parse_total(const char *csv) {\n    int total = 0;\n    char *end;\n    total += strtol(csv, &end, 10);\n    return totl;\n}\n',
        },
        "setup": ["gcc --version | head -1"],
        "run": "make",
    },
    {
        "name": "clang-cmake-error",
        "fix": [('src/basket.cpp', 'std::string label = sum;', 'std::string label = std::to_string(sum);')],
        "language": "cpp",
        "ci": "gitlab",
        "files": {
            "CMakeLists.txt": "cmake_minimum_required(VERSION 3.16)\nproject(widgets CXX)\nset(CMAKE_CXX_STANDARD 17)\nadd_library(widgets src/basket.cpp)\n",
            "src/basket.cpp": '#include <string>\n#include <vector>\n\nint total(const std::vector<int>& items) {\n    int sum = 0;\n    for (auto item : items) sum += item;\n    std::string label = sum;\n    return sum;\n}\n',
        },
        "env": {"CC": "clang", "CXX": "clang++"},
        "setup": ["cmake -S . -B build -DCMAKE_BUILD_TYPE=Release"],
        "run": "cmake --build build",
    },
    {
        "name": "ld-undefined-reference",
        "language": "c",
        "ci": "jenkins",
        "files": {
            "Makefile": "widgets: src/main.c\n\t$(CC) -o $@ src/main.c -lm\n",
            "src/main.c": "#include <stdio.h>\n\nint checksum(const char *s);\n\nint main(void) {\n    printf(\"%d\\n\", checksum(\"abc\"));\n    return 0;\n}\n",
        },
        "run": "make",
    },
    {
        "name": "ctest-failure",
        "fix": [('tests/test_sum.c', 'a + b + 1', 'a + b')],
        "language": "c",
        "ci": "buildkite",
        "files": {
            "CMakeLists.txt": "cmake_minimum_required(VERSION 3.16)\nproject(widgets C)\nenable_testing()\nadd_executable(test_sum tests/test_sum.c)\nadd_test(NAME sum_adds COMMAND test_sum)\nadd_test(NAME sum_true COMMAND true)\n",
            "tests/test_sum.c": '#include <assert.h>\n#include <stdio.h>\n\nstatic int sum(int a, int b) { return a + b + 1; }\n\nint main(void) {\n    printf("sum(2, 2) = %d\\n", sum(2, 2));\n    assert(sum(2, 2) == 4);\n    return 0;\n}\n',
        },
        "setup": ["cmake -S . -B build", "cmake --build build"],
        "run": "cd build && ctest --output-on-failure",
    },
    {
        "name": "googletest-failure",
        "fix": [('src/basket.cpp', 'int sum = 1;', 'int sum = 0;')],
        "language": "cpp",
        "ci": "travis",
        "files": {
            "CMakeLists.txt": "cmake_minimum_required(VERSION 3.16)\nproject(widgets CXX)\nset(CMAKE_CXX_STANDARD 17)\nfind_package(GTest REQUIRED)\nenable_testing()\nadd_library(widgets src/basket.cpp)\ntarget_include_directories(widgets PUBLIC src)\nadd_executable(basket_test tests/basket_test.cpp)\ntarget_link_libraries(basket_test widgets GTest::gtest_main)\ninclude(GoogleTest)\ngtest_discover_tests(basket_test)\n",
            "src/basket.h": "#pragma once\n#include <vector>\n\nint total(const std::vector<int>& items);\n",
            "src/basket.cpp": '#include "basket.h"\n\nint total(const std::vector<int>& items) {\n    int sum = 1;\n    for (int item : items) sum += item;\n    return sum;\n}\n',
            "tests/basket_test.cpp": '#include <gtest/gtest.h>\n\n#include "basket.h"\n\nTEST(BasketTest, AddsItems) {\n    EXPECT_EQ(7, total({3, 4}));\n}\n\nTEST(BasketTest, EmptyIsZero) {\n    ASSERT_EQ(total({}), 0) << "an empty basket costs nothing";\n}\n\nTEST(BasketTest, Positive) {\n    EXPECT_GT(total({1}), 0);\n}\n',
        },
        "setup": ["cmake -S . -B build", "cmake --build build"],
        "run": "cd build && ctest --output-on-failure",
    },
    {
        "name": "cmake-missing-package",
        "language": "cpp",
        "ci": "circleci",
        "files": {
            "CMakeLists.txt": "cmake_minimum_required(VERSION 3.16)\nproject(widgets CXX)\nfind_package(fmt 10 REQUIRED)\nadd_executable(widgets main.cpp)\ntarget_link_libraries(widgets fmt::fmt)\n",
            "main.cpp": "#include <fmt/core.h>\nint main() { fmt::print(\"hi\\n\"); }\n",
        },
        "run": "cmake -S . -B build",
    },
    # ---- Java -------------------------------------------------------------------------
    {
        "name": "gradle-compile-error",
        "fix": [('src/main/java/acme/Basket.java', 'sum.intValue()', 'sum')],
        "language": "java",
        "ci": "github",
        "files": {
            "build.gradle": "apply plugin: 'java'\nsourceCompatibility = 1.8\n",
            "settings.gradle": "rootProject.name = 'widgets'\n",
            "src/main/java/acme/Basket.java": "package acme;\n\nimport java.util.List;\n\npublic class Basket {\n    public static int total(List<Integer> items) {\n        int sum = 0;\n        for (int item : items) sum += item;\n        return sum.intValue();\n    }\n}\n",
        },
        "env": {"GRADLE_USER_HOME": "/tmp/corpus-gradle"},
        "run": "gradle --offline --console=plain build",
    },
    {
        "name": "gradle-junit-failure",
        "fix": [('src/main/java/acme/Basket.java', 'int sum = 1;', 'int sum = 0;')],
        "language": "java",
        "ci": "gitlab",
        "files": {
            "build.gradle": "apply plugin: 'java'\nsourceCompatibility = 1.8\nrepositories { flatDir { dirs '/usr/share/java' } }\ndependencies { testCompile name: 'junit4' ; testCompile name: 'hamcrest-core' }\n",
            "settings.gradle": "rootProject.name = 'widgets'\n",
            "src/main/java/acme/Basket.java": "package acme;\n\npublic class Basket {\n    public static int total(int[] items) {\n        int sum = 1;\n        for (int item : items) sum += item;\n        return sum;\n    }\n}\n",
            "src/test/java/acme/BasketTest.java": "package acme;\n\nimport static org.junit.Assert.assertEquals;\n\nimport org.junit.Test;\n\npublic class BasketTest {\n    @Test\n    public void addsItems() {\n        assertEquals(7, Basket.total(new int[] {3, 4}));\n    }\n}\n",
        },
        "env": {"GRADLE_USER_HOME": "/tmp/corpus-gradle"},
        "run": "gradle --offline --console=plain test",
    },
    {
        "name": "junit5-console-failure",
        "fix": [('src/main/java/acme/Basket.java', 'int sum = 1;', 'int sum = 0;')],
        "language": "java",
        "ci": "circleci",
        "files": {
            "src/main/java/acme/Basket.java": "package acme;\n\npublic class Basket {\n    public static int total(int[] items) {\n        int sum = 1;\n        for (int item : items) sum += item;\n        return sum;\n    }\n}\n",
            "src/test/java/acme/BasketTest.java": "package acme;\n\nimport static org.junit.jupiter.api.Assertions.assertEquals;\n\nimport org.junit.jupiter.api.Test;\n\nclass BasketTest {\n    @Test\n    void addsItems() {\n        assertEquals(7, Basket.total(new int[] {3, 4}));\n    }\n\n    @Test\n    void emptyIsZero() {\n        assertEquals(0, Basket.total(new int[] {}), \"an empty basket costs nothing\");\n    }\n}\n",
        },
        # JUnit 5 from Debian's junit5 package (Maven Central is not reachable from here).
        "setup": ["javac -d out -cp /usr/share/java/junit-jupiter-api.jar:/usr/share/java/apiguardian-api.jar src/main/java/acme/Basket.java src/test/java/acme/BasketTest.java"],
        "run": "java -jar /usr/share/java/junit-platform-console-standalone.jar -cp out --select-package acme --disable-banner",
    },
    {
        "name": "maven-central-unreachable",
        "language": "java",
        "ci": "jenkins",
        "files": {
            "pom.xml": "<project xmlns=\"http://maven.apache.org/POM/4.0.0\">\n  <modelVersion>4.0.0</modelVersion>\n  <groupId>acme</groupId>\n  <artifactId>widgets</artifactId>\n  <version>1.0</version>\n  <dependencies>\n    <dependency><groupId>com.google.guava</groupId><artifactId>guava</artifactId><version>33.3.1-jre</version></dependency>\n  </dependencies>\n</project>\n",
        },
        "env": {"MAVEN_OPTS": "-Dmaven.repo.local=/tmp/corpus-m2"},
        "run": "mvn -B -ntp package",
    },
    {
        "name": "mcs-cs0103",
        "fix": [('Program.cs', 'return summ;', 'return sum;')],
        "language": "csharp",
        "ci": "travis",
        "files": {
            "Program.cs": "using System;\n\nclass Program {\n    static int Total(int[] items) {\n        int sum = 0;\n        foreach (var item in items) sum += item;\n        return summ;\n    }\n\n    static void Main() { Console.WriteLine(Total(new[] {1, 2})); }\n}\n",
        },
        "run": "mcs -out:widgets.exe Program.cs",
    },
    # ---- Ruby -------------------------------------------------------------------------
    {
        "name": "rspec-failure",
        "fix": [('lib/basket.rb', 'items.sum + 1', 'items.sum')],
        "language": "ruby",
        "ci": "circleci",
        "files": {
            "lib/basket.rb": "class Basket\n  def self.total(items)\n    items.sum + 1\n  end\nend\n",
            "spec/basket_spec.rb": "require_relative '../lib/basket'\n\nRSpec.describe Basket do\n  it 'adds the items' do\n    expect(Basket.total([3, 4])).to eq(7)\n  end\n\n  it 'is zero when empty' do\n    expect(Basket.total([])).to eq(0)\n  end\nend\n",
        },
        "run": "rspec --no-color",
    },
    {
        "name": "ruby-syntax-error",
        "fix": [('lib/basket.rb', '      puts i\n  end\nend\n', '      puts i\n    end\n    items.size\n  end\nend\n')],
        "language": "ruby",
        "ci": "github",
        "files": {
            "lib/basket.rb": "class Basket\n  def self.total(items)\n    items.each do |i|\n      puts i\n  end\nend\n",
            "spec/basket_spec.rb": "require_relative '../lib/basket'\n\nRSpec.describe Basket do\n  it 'adds' do\n    expect(Basket.total([1])).to eq(1)\n  end\nend\n",
        },
        "run": "rspec --no-color",
    },
    {
        "name": "bundler-missing-gem",
        "language": "ruby",
        "ci": "buildkite",
        "files": {
            "Gemfile": "source 'https://rubygems.org'\n\ngem 'rspec', '~> 3.12'\ngem 'money', '6.19.0'\n",
        },
        "run": "bundle install --local",
    },
    # ---- PHP --------------------------------------------------------------------------
    {
        "name": "phpunit-failure",
        "fix": [('src/Basket.php', 'array_sum($items) + 1;', 'array_sum($items);')],
        "language": "php",
        "ci": "gitlab",
        "files": {
            "src/Basket.php": "<?php\n\nfinal class Basket\n{\n    public static function total(array $items): int\n    {\n        return array_sum($items) + 1;\n    }\n}\n",
            "tests/BasketTest.php": "<?php\n\nuse PHPUnit\\Framework\\TestCase;\n\nrequire_once __DIR__ . '/../src/Basket.php';\n\nfinal class BasketTest extends TestCase\n{\n    public function testAddsItems(): void\n    {\n        $this->assertSame(7, Basket::total([3, 4]));\n    }\n}\n",
        },
        "run": "phpunit --colors=never tests",
    },
    {
        "name": "phpunit-data-provider",
        "fix": [('src/Basket.php', 'array_sum($items) + 1;', 'array_sum($items);'), ('tests/BasketTest.php', '[[1, 2], 3]', '[[1, 2], 2]')],
        "language": "php",
        "ci": "jenkins",
        "files": {
            "src/Basket.php": "<?php\n\nfinal class Basket\n{\n    public static function total(array $items): int\n    {\n        return array_sum($items) + 1;\n    }\n}\n",
            "tests/BasketTest.php": "<?php\n\nuse PHPUnit\\Framework\\TestCase;\n\nrequire_once __DIR__ . '/../src/Basket.php';\n\nfinal class BasketTest extends TestCase\n{\n    public static function baskets(): array\n    {\n        return [\n            'empty' => [[], 0],\n            'two items' => [[3, 4], 7],\n        ];\n    }\n\n    /**\n     * @dataProvider baskets\n     */\n    public function testTotals(array $items, int $expected): void\n    {\n        $this->assertSame($expected, Basket::total($items));\n    }\n\n    /**\n     * @dataProvider numbered\n     */\n    public function testCounts(array $items, int $expected): void\n    {\n        $this->assertCount($expected, $items);\n    }\n\n    public static function numbered(): array\n    {\n        return [[[1], 1], [[1, 2], 3]];\n    }\n}\n",
        },
        "run": "phpunit --colors=never tests",
    },
    {
        "name": "php-parse-error",
        "fix": [('src/Basket.php', 'array_sum($items)\n', 'array_sum($items);\n')],
        "language": "php",
        "ci": "jenkins",
        "files": {
            "src/Basket.php": "<?php\n\nfinal class Basket\n{\n    public static function total(array $items): int\n    {\n        return array_sum($items)\n    }\n}\n",
        },
        "run": "find src -name '*.php' -print0 | xargs -0 -n1 php -l",
    },
    {
        "name": "composer-version-conflict",
        "fix": [("composer.json", '"acme/money": "^2.0"', '"acme/money": "^1.0"')],
        "language": "php",
        "ci": "github",
        "files": {
            # Packagist is not reachable here: the dependency is a package of the repository's
            # own, through a path repository, as monorepos keep them.
            "composer.json": '{\n    "name": "acme/widgets",\n    "require": {\n        "php": ">=8.1",\n        "acme/money": "^2.0"\n    },\n    "repositories": [\n        {"type": "path", "url": "packages/money", "options": {"symlink": false}},\n        {"packagist.org": false}\n    ]\n}\n',
            "packages/money/composer.json": '{\n    "name": "acme/money",\n    "version": "1.4.0",\n    "autoload": {"psr-4": {"Acme\\\\Money\\\\": "src/"}}\n}\n',
            "packages/money/src/Money.php": "<?php\n\nnamespace Acme\\Money;\n\nfinal class Money\n{\n}\n",
        },
        "run": "composer install --no-interaction --no-progress",
    },
    {
        "name": "composer-missing-extension",
        "fix": [("composer.json", '        "ext-imaginary": "*",\n', "")],
        "language": "php",
        "ci": "circleci",
        "files": {
            "composer.json": '{\n    "name": "acme/widgets",\n    "require": {\n        "ext-imaginary": "*",\n        "php": ">=8.1"\n    },\n    "repositories": [{"packagist.org": false}]\n}\n',
        },
        "run": "composer install --no-interaction --no-progress",
    },
    # ---- Elixir -----------------------------------------------------------------------
    {
        "name": "mix-test-failure",
        "fix": [('lib/basket.ex', 'Enum.sum(items) + 1', 'Enum.sum(items)')],
        "language": "elixir",
        "ci": "travis",
        "files": {
            "mix.exs": 'defmodule Widgets.MixProject do\n  use Mix.Project\n\n  def project do\n    [app: :widgets, version: "0.1.0", elixir: "~> 1.14", deps: []]\n  end\nend\n',
            "lib/basket.ex": "defmodule Basket do\n  def total(items), do: Enum.sum(items) + 1\nend\n",
            "test/test_helper.exs": "ExUnit.start()\n",
            "test/basket_test.exs": 'defmodule BasketTest do\n  use ExUnit.Case\n\n  test "adds the items" do\n    assert Basket.total([3, 4]) == 7\n  end\nend\n',
        },
        "env": {"MIX_ENV": "test"},
        "run": "mix test",
    },
    {
        "name": "mix-compile-error",
        "fix": [('lib/basket.ex', 'Enum.sum(itemz)', 'Enum.sum(items)')],
        "language": "elixir",
        "ci": "buildkite",
        "files": {
            "mix.exs": 'defmodule Widgets.MixProject do\n  use Mix.Project\n\n  def project do\n    [app: :widgets, version: "0.1.0", elixir: "~> 1.14", deps: []]\n  end\nend\n',
            "lib/basket.ex": "defmodule Basket do\n  def total(items), do: Enum.sum(itemz)\nend\n",
        },
        "run": "mix compile --warnings-as-errors",
    },
    # ---- Haskell ----------------------------------------------------------------------
    {
        "name": "cabal-ghc-error",
        "fix": [('src/Basket.hs', 'sum items ++ 1', 'sum items + 1')],
        "language": "haskell",
        "ci": "circleci",
        "files": {
            "widgets.cabal": "cabal-version: 2.4\nname: widgets\nversion: 0.1.0.0\n\nlibrary\n  exposed-modules: Basket\n  hs-source-dirs: src\n  build-depends: base\n  default-language: Haskell2010\n",
            "src/Basket.hs": "module Basket (total) where\n\ntotal :: [Int] -> Int\ntotal items = sum items ++ 1\n",
        },
        "env": {"CABAL_DIR": "/tmp/corpus-cabal"},
        "prepare": [CABAL_NO_INDEX],
        "run": "cabal build --offline",
    },
    {
        "name": "cabal-test-failure",
        "fix": [('src/Basket.hs', 'sum items + 1', 'sum items')],
        "language": "haskell",
        "ci": "github",
        "files": {
            "widgets.cabal": "cabal-version: 2.4\nname: widgets\nversion: 0.1.0.0\n\nlibrary\n  exposed-modules: Basket\n  hs-source-dirs: src\n  build-depends: base\n  default-language: Haskell2010\n\ntest-suite spec\n  type: exitcode-stdio-1.0\n  main-is: Spec.hs\n  hs-source-dirs: test\n  build-depends: base, widgets\n  default-language: Haskell2010\n",
            "src/Basket.hs": "module Basket (total) where\n\ntotal :: [Int] -> Int\ntotal items = sum items + 1\n",
            "test/Spec.hs": 'import Basket (total)\nimport System.Exit (exitFailure)\n\nmain :: IO ()\nmain =\n  if total [3, 4] == 7\n    then putStrLn "ok"\n    else do\n      putStrLn ("total [3,4]: expected 7, got " ++ show (total [3, 4]))\n      exitFailure\n',
        },
        "env": {"CABAL_DIR": "/tmp/corpus-cabal"},
        "prepare": [CABAL_NO_INDEX],
        "run": "cabal test --offline",
    },
    # ---- Bazel ------------------------------------------------------------------------
    {
        "name": "bazel-fetch-offline",
        "language": "cpp",
        "ci": "jenkins",
        "files": {
            "WORKSPACE": "",
            "BUILD": 'cc_binary(name = "widgets", srcs = ["main.cc"])\n',
            "main.cc": "#include <iostream>\n\nint main() {\n    std::cout << totl << std::endl;\n}\n",
        },
        "env": {"TEST_TMPDIR": "/tmp/corpus-bazel"},
        "run": "bazel build --noshow_progress //:widgets",
    },
    {
        "name": "bazel-test-failure",
        "fix": [('basket.cc', 'int sum = 1;', 'int sum = 0;')],
        "language": "cpp",
        "ci": "buildkite",
        "files": {
            **BAZEL_BASKET,
            "basket.cc": '#include "basket.h"\n\nint total(const int* items, int n) {\n    int sum = 1;\n    for (int i = 0; i < n; i++) sum += items[i];\n    return sum;\n}\n',
        },
        "env": {"TEST_TMPDIR": "/tmp/corpus-bazel-test"},
        "prepare": [BAZEL_OFFLINE],
        "run": "bazel test --noshow_progress --test_output=errors //...",
    },
    {
        "name": "bazel-compile-error",
        "fix": [('basket.cc', 'sum += items[i]\n', 'sum += items[i];\n')],
        "language": "cpp",
        "ci": "github",
        "files": {
            **BAZEL_BASKET,
            "basket.cc": '#include "basket.h"\n\nint total(const int* items, int n) {\n    int sum = 0;\n    for (int i = 0; i < n; i++) sum += items[i]\n    return sum;\n}\n',
        },
        "env": {"TEST_TMPDIR": "/tmp/corpus-bazel-build"},
        "prepare": [BAZEL_OFFLINE],
        "run": "bazel build --noshow_progress //...",
    },
]
