//! What one changed line is, in its file's language: a test's definition, a skip, an
//! assertion (and how strict), a muted failure, a threshold, a suppression, a network or
//! process call, a secret. The policies (policies/invariants.rego) decide what may not change;
//! this only says what each line does, reading code apart from its comment.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    Rust,
    Python,
    JavaScript,
    TypeScript,
    Go,
    Java,
    Kotlin,
    Ruby,
    Php,
    Shell,
    Yaml,
    Toml,
    Json,
    Ini,
    Make,
    Other,
}

impl Language {
    pub fn of(path: &str) -> Language {
        let name = path.rsplit('/').next().unwrap_or(path);
        if name == "Makefile" || name.ends_with(".mk") {
            return Language::Make;
        }
        if name == "Jenkinsfile" {
            return Language::Other;
        }
        match name.rsplit_once('.').map(|(_, e)| e) {
            Some("rs") => Language::Rust,
            Some("py" | "pyi") => Language::Python,
            Some("js" | "jsx" | "mjs" | "cjs") => Language::JavaScript,
            Some("ts" | "tsx" | "mts" | "cts") => Language::TypeScript,
            Some("go") => Language::Go,
            Some("java") => Language::Java,
            Some("kt" | "kts") => Language::Kotlin,
            Some("rb") => Language::Ruby,
            Some("php") => Language::Php,
            Some("sh" | "bash") => Language::Shell,
            Some("yml" | "yaml") => Language::Yaml,
            Some("toml") => Language::Toml,
            Some("json") => Language::Json,
            Some("cfg" | "ini") => Language::Ini,
            _ => Language::Other,
        }
    }

    /// Where a line comment starts, for the languages that have one.
    fn comment(self) -> Option<&'static str> {
        match self {
            Language::Rust
            | Language::JavaScript
            | Language::TypeScript
            | Language::Go
            | Language::Java
            | Language::Kotlin
            | Language::Php => Some("//"),
            Language::Python
            | Language::Ruby
            | Language::Shell
            | Language::Yaml
            | Language::Toml
            | Language::Ini
            | Language::Make => Some("#"),
            Language::Json | Language::Other => None,
        }
    }

    fn is_code(self) -> bool {
        !matches!(
            self,
            Language::Yaml
                | Language::Toml
                | Language::Json
                | Language::Ini
                | Language::Make
                | Language::Shell
                | Language::Other
        )
    }
}

/// How strictly an assertion checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strictness {
    /// Compares with an expected value, or expects a particular error.
    Exact,
    /// Only that something is true, present or not null.
    Loose,
    /// Cannot fail.
    Tautology,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    /// Lower case, `_` as `-`, without a leading `--`.
    pub key: String,
    pub value: f64,
}

/// What a line does; each field is absent unless the line does it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Facts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// The attribute that makes the next function a test (`#[test]`, `@Test`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub test_mark: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skip: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assert: Option<Strictness>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mute: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppression: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<&'static str>,
}

fn re(p: &str) -> Regex {
    Regex::new(p).expect("static regex")
}

/// The code before the line's comment, quotes respected (a `#` or `//` inside a string is
/// code).
fn code_of(text: &str, language: Language) -> &str {
    let Some(marker) = language.comment() else {
        return text;
    };
    let bytes = text.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            // Rust's lifetimes and chars: a lone `'a` is not a string.
            None if b == b'\'' && language == Language::Rust => {}
            None if b == b'"' || b == b'\'' || b == b'`' => quote = Some(b),
            // Compared as bytes: `i` may sit inside a multi-byte character.
            None if bytes[i..].starts_with(marker.as_bytes()) => return &text[..i],
            None => {}
        }
        i += 1;
    }
    text
}

struct Recognisers {
    test: Vec<Regex>,
    skip: Regex,
    exact: Regex,
    loose: Regex,
    tautology: Regex,
    network: Regex,
    process: Regex,
}

static RUST: LazyLock<Recognisers> = LazyLock::new(|| Recognisers {
    test: vec![re(r"^\s*(?:pub\s+)?(?:async\s+)?fn\s+(\w+)\s*\(")],
    // `#[cfg(any())]` and `#[cfg(not(all()))]` compile the test out.
    skip: re(
        r"#\[ignore\b|#\[cfg_attr\([^\]]*\bignore\b|#\[cfg\(\s*(?:any\(\s*\)|not\(\s*all\(\s*\)\s*\)|FALSE|false)\s*\)",
    ),
    exact: re(
        r"\b(?:assert_eq|assert_ne|assert_matches|debug_assert_eq|prop_assert_eq)!|\bassert!\(.*(?:==|!=|matches!)|\.expect_err\(|#\[should_panic\(expected",
    ),
    loose: re(r"\b(?:assert|debug_assert|prop_assert)!\(|#\[should_panic\]"),
    tautology: re(r"\bassert!\(\s*true\s*\)|\bassert_eq!\(\s*(\w+)\s*,\s*(\w+)\s*\)"),
    network: re(
        r"\breqwest::|\bTcpStream::connect|\bUdpSocket::|\bureq::|\bhyper::Client|\bToSocketAddrs",
    ),
    process: re(r"\bCommand::new\(|\bstd::process::Command"),
});
static PYTHON: LazyLock<Recognisers> = LazyLock::new(|| Recognisers {
    test: vec![re(r"^\s*(?:async\s+)?def\s+(test\w*)\s*\(")],
    skip: re(
        r"@(?:pytest\.)?mark\.(?:skip|skipif|xfail)\b|\bpytestmark\s*=.*\bmark\.(?:skip|skipif|xfail)\b|@unittest\.(?:skip|expectedFailure)|\bpytest\.(?:skip|xfail)\(|\.skipTest\(",
    ),
    exact: re(
        r"^\s*assert\s+.*(?:==|!=|\bis\b|\bin\b|<|>)|\.assert(?:Equal|Equals|NotEqual|In|NotIn|Is|IsNot|Raises|RaisesRegex|AlmostEqual|CountEqual|DictEqual|ListEqual)\(|\bpytest\.raises\(",
    ),
    loose: re(r"^\s*assert\b|\.assert(?:True|False|IsNotNone|IsNone|Truthy)\("),
    tautology: re(r"^\s*assert\s+(?:True|1)\s*(?:$|,)|\.assertTrue\(\s*True\s*\)"),
    network: re(
        r"\brequests\.(?:get|post|put|patch|delete|head|request|Session)\b|\burllib\.request\b|\burlopen\(|\bhttp\.client\b|\bsocket\.(?:socket|create_connection)\(|\bhttpx\.|\baiohttp\.",
    ),
    process: re(r"\bsubprocess\.|\bos\.(?:system|popen|exec\w*|spawn\w*)\(|\bpty\.spawn\("),
});
static JAVASCRIPT: LazyLock<Recognisers> = LazyLock::new(|| Recognisers {
    test: vec![re(r#"^\s*(?:it|test|describe)\s*\(\s*["'`](.+?)["'`]"#)],
    skip: re(
        // `.only` and `fit` focus one test: every other one is skipped.
        r"\b(?:it|test|describe|context|suite)\.(?:skip|todo|only)\(|\bf(?:it|describe)\(|\bx(?:it|test|describe)\(|\.skip\s*\(\s*\)|\bthis\.skip\(",
    ),
    exact: re(
        r"\.(?:toBe|toEqual|toStrictEqual|toThrow|toThrowError|toHaveBeenCalledWith|toHaveBeenCalledTimes|toMatch|toMatchObject|toHaveLength|toContain|toMatchSnapshot|rejects|resolves)\b|\bassert\.(?:equal|strictEqual|deepEqual|deepStrictEqual|notEqual|notStrictEqual|throws|rejects|match)\(",
    ),
    loose: re(r"\bexpect\(|\bassert\.ok\(|\bassert\("),
    tautology: re(
        r"\bexpect\(\s*(true|1)\s*\)\.toBe\(\s*(true|1)\s*\)|\bassert(?:\.ok)?\(\s*true\s*\)",
    ),
    network: re(
        r"\bfetch\(|\baxios\b|\bhttps?\.(?:request|get)\(|\bnet\.(?:connect|createConnection)\(|\bnew\s+WebSocket\(|\bXMLHttpRequest\b|\bgot\(",
    ),
    process: re(
        r"\bchild_process\b|\b(?:execSync|spawnSync|execFileSync|execa)\(|\bexec\(|\bspawn\(",
    ),
});
static GO: LazyLock<Recognisers> = LazyLock::new(|| Recognisers {
    test: vec![re(r"^\s*func\s+(Test\w*|Benchmark\w*|Fuzz\w*)\s*\(")],
    skip: re(r"\b[tbf]\.(?:Skip|Skipf|SkipNow)\("),
    exact: re(
        r"\b[tb]\.(?:Error|Errorf|Fatal|Fatalf|Fail|FailNow)\(|\b(?:assert|require)\.(?:Equal|EqualValues|NotEqual|ErrorIs|ErrorAs|ErrorContains|EqualError|Len|Contains|ElementsMatch|JSONEq|Panics)\(",
    ),
    loose: re(r"\b(?:assert|require)\.\w+\("),
    tautology: re(r"\b(?:assert|require)\.True\(\s*t\s*,\s*true\s*\)"),
    network: re(
        r"\bhttp\.(?:Get|Post|Head|PostForm|NewRequest|DefaultClient)\b|\bnet\.(?:Dial|DialTimeout|Listen)\(",
    ),
    process: re(r"\bexec\.Command(?:Context)?\(|\bsyscall\.Exec\(|\bos\.StartProcess\("),
});
static JVM: LazyLock<Recognisers> = LazyLock::new(|| Recognisers {
    test: vec![
        re(r"^\s*(?:public\s+|protected\s+|private\s+)?(?:static\s+)?void\s+(\w+)\s*\("),
        re(r"^\s*fun\s+`?([\w ]+?)`?\s*\("),
    ],
    skip: re(r"@Disabled\b|@Ignore\b|\bassumeTrue\(\s*false"),
    exact: re(
        r"\b(?:assertEquals|assertNotEquals|assertArrayEquals|assertThrows|assertSame|assertIterableEquals|assertLinesMatch)\(|\bassertThat\(.*\.(?:isEqualTo|containsExactly|hasSize|isInstanceOf|hasMessage)|\bassertThat\([^,]+,\s*(?:is|equalTo)\(",
    ),
    loose: re(r"\b(?:assertTrue|assertFalse|assertNotNull|assertNull|assertThat)\("),
    tautology: re(r"\bassertTrue\(\s*true\s*\)"),
    network: re(
        r"\bHttpClient\b|\bHttpURLConnection\b|\.openConnection\(|\bnew\s+Socket\(|\bOkHttpClient\b",
    ),
    process: re(r"\bRuntime\.getRuntime\(\)\.exec\(|\bProcessBuilder\("),
});
static RUBY: LazyLock<Recognisers> = LazyLock::new(|| Recognisers {
    test: vec![
        re(r#"^\s*(?:it|specify|describe|context)\s*\(?\s*["'](.+?)["']"#),
        re(r"^\s*def\s+(test_\w+)"),
    ],
    skip: re(r"^\s*(?:skip|pending)\b|\bx(?:it|describe|context|specify)\b"),
    exact: re(
        r"\.to\s+(?:eq|eql|equal|raise_error|match|include|contain_exactly|have_attributes)\b|\bassert_(?:equal|raises|match|includes|in_delta)\b",
    ),
    loose: re(r"\bexpect\b|\bassert\b|\bassert_\w+"),
    tautology: re(r"\bexpect\(\s*true\s*\)\.to\s+(?:be|eq)\(?\s*true|\bassert\(?\s*true\b"),
    network: re(r"\bNet::HTTP\b|\bopen-uri\b|\bFaraday\b|\bHTTParty\b|\bTCPSocket\b"),
    process: re(r"`[^`]+`|\bsystem\(|%x[\(\{\[]|\bIO\.popen\b|\bOpen3\.|\bspawn\("),
});
static PHP: LazyLock<Recognisers> = LazyLock::new(|| Recognisers {
    test: vec![re(r"^\s*(?:public\s+)?function\s+(test\w*)\s*\(")],
    skip: re(r"\bmarkTest(?:Skipped|Incomplete)\(|@group\s+skip"),
    exact: re(
        r"\bassert(?:Same|Equals|NotSame|NotEquals|Count|Contains|StringContainsString|InstanceOf|MatchesRegularExpression)\(|\bexpectException\(",
    ),
    loose: re(r"\bassert(?:True|False|NotNull|Null|NotEmpty|Empty)\("),
    tautology: re(r"\bassertTrue\(\s*true\s*\)"),
    network: re(
        r"\bcurl_init\(|\bfsockopen\(|\bfile_get_contents\(\s*['\x22]https?:|\bGuzzleHttp\\",
    ),
    process: re(r"\b(?:shell_exec|exec|system|passthru|proc_open|popen)\("),
});

fn recognisers(language: Language) -> Option<&'static Recognisers> {
    Some(match language {
        Language::Rust => &RUST,
        Language::Python => &PYTHON,
        Language::JavaScript | Language::TypeScript => &JAVASCRIPT,
        Language::Go => &GO,
        Language::Java | Language::Kotlin => &JVM,
        Language::Ruby => &RUBY,
        Language::Php => &PHP,
        _ => return None,
    })
}

/// The attribute lines that make the next function a test, per language.
static TEST_MARK: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^\s*#\[(?:tokio::|async_std::|rstest|test_case|proptest)?(?:test|rstest|test_case)\b|^\s*#\[(?:cfg_attr\(kani,\s*)?kani::proof(?:_for_contract)?\b|^\s*@(?:Test|ParameterizedTest|RepeatedTest|TestFactory)\b",
    )
});

/// Failure muted in a CI file, a script or a build file.
static MUTE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\bcontinue-on-error:\s*(?:true|\$\{\{)|\ballow_failure:\s*true|\|\|\s*(?:true|:|exit\s+0)\b|\|\|\s*:\s*$|\bset\s+\+e\b|\bignore_errors:\s*true|^\s*-\s*(?:true|:)$",
    )
});

static THRESHOLD: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"(?i)(?:^|[\s"'{,(\-])(?:--)?(fail[_-]under|cov[_-]fail[_-]under|min(?:imum)?[_-]coverage|coverage[_-]threshold|max[_-]warnings|max[_-]line[_-]length|line[_-]length|max[_-]complexity|branches|functions|lines|statements)["']?\s*[=:]?\s*["']?(\d+(?:\.\d+)?)\b"#,
    )
});

/// Lint or coverage suppressions, wherever they are written (an attribute, a comment).
static SUPPRESSION: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"#!?\[allow\([^\]]*\)\]|#\s*noqa\b[:\w, ]*|#\s*type:\s*ignore\b(?:\[[\w, -]*\])?|#\s*pylint:\s*disable=[\w,-]+|#\s*pragma:\s*no\s*cover|eslint-disable(?:-next-line|-line)?\b[\w/@, -]*|@ts-(?:ignore|expect-error|nocheck)\b|istanbul\s+ignore\b|c8\s+ignore\b|//\s*nolint\b[:\w,]*|@SuppressWarnings\([^)]*\)|rubocop:disable\s+[\w/,]+|@phpstan-ignore[\w-]*|phpcs:(?:ignore|disable)\b|#\[cfg_attr\([^\]]*allow\(",
    )
});

fn secret_kind(text: &str) -> Option<&'static str> {
    static SHAPES: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
        [
            ("private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
            (
                "GitHub token",
                r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{22,}",
            ),
            (
                "model service key",
                r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}",
            ),
            ("AWS access key", r"\bAKIA[0-9A-Z]{16}\b"),
            ("Slack token", r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),
            ("Google API key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
            (
                "credentials in a URL",
                r"(?i)\b[a-z][a-z0-9+.\-]*://[^\s/:@\x22'$]+:[^\s/@\x22'$]{3,}@",
            ),
        ]
        .into_iter()
        .map(|(k, p)| (k, re(p)))
        .collect()
    });
    SHAPES
        .iter()
        .find(|(_, p)| p.is_match(text))
        .map(|(k, _)| *k)
}

/// Reads the lines of one side of one file in order (`previous` carries a test attribute to
/// the function it marks).
pub struct Reader {
    language: Language,
    shell_like: bool,
    marked: bool,
}

impl Reader {
    /// `shell_like`: lines there are commands or settings (CI files, scripts, build files).
    pub fn new(language: Language, shell_like: bool) -> Reader {
        Reader {
            language,
            shell_like,
            marked: false,
        }
    }

    pub fn read(&mut self, text: &str) -> Facts {
        let mut facts = Facts {
            secret: secret_kind(text),
            suppression: SUPPRESSION
                .find(text)
                .map(|m| m.as_str().trim().to_string()),
            ..Facts::default()
        };
        let code = code_of(text, self.language);
        if self.shell_like || !self.language.is_code() {
            if self.shell_like {
                facts.mute = MUTE.find(code).map(|m| m.as_str().trim().to_string());
            }
            facts.threshold = THRESHOLD.captures(code).and_then(|c| {
                Some(Threshold {
                    key: c[1].to_ascii_lowercase().replace('_', "-"),
                    value: c[2].parse().ok()?,
                })
            });
        }
        let Some(r) = recognisers(self.language) else {
            return facts;
        };
        let marked = std::mem::take(&mut self.marked);
        if TEST_MARK.is_match(code) {
            self.marked = true;
            facts.test_mark = true;
        } else if code.trim_start().starts_with("#[") || code.trim_start().starts_with('@') {
            // Further attributes between the mark and the function.
            self.marked = marked;
        }
        // A function is a test by its name (Python, Go, PHP, `test_` in Ruby), by the call
        // that declares it (JavaScript, RSpec), or by the attribute before it (Rust, JUnit).
        let by_mark = matches!(
            self.language,
            Language::Rust | Language::Java | Language::Kotlin
        );
        if !by_mark || marked {
            facts.test = r
                .test
                .iter()
                .find_map(|t| t.captures(code))
                .map(|c| c[1].trim().to_string());
        }
        facts.skip = r.skip.is_match(code);
        facts.assert = if r.tautology.captures(code).is_some_and(|c| {
            // `assert_eq!(x, x)`: the same word twice.
            c.get(1)
                .zip(c.get(2))
                .is_none_or(|(a, b)| a.as_str() == b.as_str())
        }) {
            Some(Strictness::Tautology)
        } else if r.exact.is_match(code) {
            Some(Strictness::Exact)
        } else if r.loose.is_match(code) {
            Some(Strictness::Loose)
        } else {
            None
        };
        facts.network = r.network.find(code).map(|m| m.as_str().to_string());
        facts.process = r.process.find(code).map(|m| m.as_str().to_string());
        facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &str, lines: &[&str]) -> Vec<Facts> {
        let mut r = Reader::new(Language::of(path), false);
        lines.iter().map(|l| r.read(l)).collect()
    }

    #[test]
    fn a_comment_is_not_code_and_a_string_is_not_a_comment() {
        assert_eq!(
            code_of("let x = 1; // assert!(true)", Language::Rust),
            "let x = 1; "
        );
        assert_eq!(
            code_of("url = 'http://x#y'  # c", Language::Python),
            "url = 'http://x#y'  "
        );
        assert_eq!(
            code_of("fn f<'a>(x: &'a str) // c", Language::Rust),
            "fn f<'a>(x: &'a str) "
        );
        // A skip written in a comment skips nothing.
        assert!(!read("tests/a.rs", &["// #[ignore] was here"])[0].skip);
    }

    #[test]
    fn tests_are_named_by_each_languages_own_rule() {
        let rust = read(
            "tests/a.rs",
            &[
                "#[test]",
                "#[should_panic]",
                "fn parses() {",
                "fn helper() {",
            ],
        );
        assert_eq!(rust[2].test.as_deref(), Some("parses"));
        assert_eq!(
            rust[3].test, None,
            "a function without #[test] is not a test"
        );
        assert_eq!(
            read("t/test_x.py", &["def test_parse(tmp):"])[0]
                .test
                .as_deref(),
            Some("test_parse")
        );
        assert_eq!(
            read("a.test.ts", &["  it('adds two', () => {"])[0]
                .test
                .as_deref(),
            Some("adds two")
        );
        assert_eq!(
            read("a_test.go", &["func TestAdd(t *testing.T) {"])[0]
                .test
                .as_deref(),
            Some("TestAdd")
        );
        let java = read(
            "src/test/java/ATest.java",
            &["    @Test", "    void adds() {"],
        );
        assert_eq!(java[1].test.as_deref(), Some("adds"));
        assert_eq!(
            read("spec/a_spec.rb", &["  it \"adds\" do"])[0]
                .test
                .as_deref(),
            Some("adds")
        );
        assert_eq!(
            read("tests/ATest.php", &["    public function testAdds(): void"])[0]
                .test
                .as_deref(),
            Some("testAdds")
        );
    }

    #[test]
    fn skips_in_each_language() {
        for (path, line) in [
            ("tests/a.rs", "#[ignore = \"flaky\"]"),
            ("tests/test_a.py", "@pytest.mark.skip(reason='later')"),
            ("tests/test_a.py", "    pytest.skip('no')"),
            ("a.test.js", "it.skip('adds', () => {"),
            ("a.spec.ts", "xdescribe('suite', () => {"),
            ("a_test.go", "\tt.Skip(\"later\")"),
            ("src/test/java/ATest.java", "    @Disabled"),
            ("spec/a_spec.rb", "    skip 'later'"),
            (
                "tests/ATest.php",
                "        $this->markTestSkipped('later');",
            ),
        ] {
            assert!(read(path, &[line])[0].skip, "{path}: {line}");
        }
        assert!(!read("a.test.js", &["const skip = 1;"])[0].skip);
    }

    #[test]
    fn assertions_by_strictness() {
        let s = |path: &str, line: &str| read(path, &[line])[0].assert;
        assert_eq!(
            s("src/lib.rs", "assert_eq!(add(1, 2), 3);"),
            Some(Strictness::Exact)
        );
        assert_eq!(
            s("src/lib.rs", "assert!(add(1, 2) > 0);"),
            Some(Strictness::Loose)
        );
        assert_eq!(
            s("src/lib.rs", "assert!(true);"),
            Some(Strictness::Tautology)
        );
        assert_eq!(
            s("src/lib.rs", "assert_eq!(got, got);"),
            Some(Strictness::Tautology)
        );
        assert_eq!(
            s("t/test_a.py", "    assert add(1, 2) == 3"),
            Some(Strictness::Exact)
        );
        assert_eq!(
            s("t/test_a.py", "    assert add(1, 2)"),
            Some(Strictness::Loose)
        );
        assert_eq!(
            s("t/test_a.py", "    assert True"),
            Some(Strictness::Tautology)
        );
        assert_eq!(
            s("a.test.js", "expect(add(1, 2)).toBe(3);"),
            Some(Strictness::Exact)
        );
        assert_eq!(
            s("a.test.js", "expect(add(1, 2)).toBeTruthy();"),
            Some(Strictness::Loose)
        );
        assert_eq!(
            s("a.test.js", "expect(true).toBe(true);"),
            Some(Strictness::Tautology)
        );
        assert_eq!(
            s("a_test.go", "\t\tt.Errorf(\"got %d\", got)"),
            Some(Strictness::Exact)
        );
        assert_eq!(
            s("ATest.java", "assertEquals(3, add(1, 2));"),
            Some(Strictness::Exact)
        );
        assert_eq!(
            s("ATest.java", "assertNotNull(add(1, 2));"),
            Some(Strictness::Loose)
        );
        assert_eq!(s("src/lib.rs", "let asserted = 1;"), None);
    }

    #[test]
    fn mutes_thresholds_suppressions_calls_and_secrets() {
        let mut ci = Reader::new(Language::Yaml, true);
        assert_eq!(
            ci.read("        continue-on-error: true").mute.as_deref(),
            Some("continue-on-error: true")
        );
        assert_eq!(
            ci.read("      - run: cargo test || true").mute.as_deref(),
            Some("|| true")
        );
        assert!(ci.read("      - run: cargo test || exit 1").mute.is_none());
        let mut cfg = Reader::new(Language::Toml, false);
        let t = cfg.read("fail_under = 85").threshold.unwrap();
        assert_eq!((t.key.as_str(), t.value), ("fail-under", 85.0));
        let t = ci
            .read("      - run: pytest --cov-fail-under=90")
            .threshold
            .unwrap();
        assert_eq!((t.key.as_str(), t.value), ("cov-fail-under", 90.0));
        assert!(
            read("src/lib.rs", &["#[allow(clippy::needless_range_loop)]"])[0]
                .suppression
                .is_some()
        );
        assert!(read("a.py", &["import os  # noqa: F401"])[0]
            .suppression
            .is_some());
        assert!(read("a.ts", &["// @ts-ignore"])[0].suppression.is_some());
        assert!(read("a.go", &["x := f() //nolint:errcheck"])[0]
            .suppression
            .is_some());
        assert!(read("src/lib.rs", &["let allow = 1;"])[0]
            .suppression
            .is_none());
        assert!(read("tests/test_a.py", &["r = requests.get(url)"])[0]
            .network
            .is_some());
        assert!(
            read("tests/a.rs", &["let out = Command::new(\"sh\").output();"])[0]
                .process
                .is_some()
        );
        assert!(read(
            "a.test.js",
            &["const { execSync } = require('child_process');"]
        )[0]
        .process
        .is_some());
        assert_eq!(
            read(
                "config.py",
                &["TOKEN = 'ghp_0123456789abcdefghijABCDEFGHIJ0123'"]
            )[0]
            .secret,
            Some("GitHub token")
        );
        assert_eq!(
            read("a.yml", &["url: postgres://app:hunter22@db/app"])[0].secret,
            Some("credentials in a URL")
        );
        assert_eq!(
            read("a.yml", &["url: postgres://app:${PASSWORD}@db/app"])[0].secret,
            None
        );
    }
}
