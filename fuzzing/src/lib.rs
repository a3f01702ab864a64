//! Harnesses for what selfheal reads from outside: webhook bodies, CI logs, the sandbox's
//! account of a change, paths, a repository's `.github/selfheal.yml` and text placed in a
//! pull request. Each is a function of arbitrary bytes that must not panic and must keep its
//! invariant whatever the bytes; an `assert!` failing is a finding. Two drivers run them:
//! `cargo fuzz` (`fuzz/`, nightly, libFuzzer, unbounded) and the property tests in
//! `tests/suite/fuzz.rs` (stable, bounded, in every CI run), which also replay the corpus and every
//! regression kept in `fuzz/`.

use std::path::{Component, Path};

use pulldown_cmark::{Event, Parser, Tag, TagEnd};
use selfheal_engine::changes::{check_path, ChangeSet};
use selfheal_engine::diagnose::{clean_line, diagnose};
use selfheal_engine::heal::refuses;
use selfheal_engine::invariants::{self, Change};
use selfheal_shared::events::{
    CheckRunEvent, CheckSuiteEvent, IssueCommentEvent, PullRequestEvent, StatusEvent,
    WorkflowRunEvent,
};
use selfheal_shared::installations::InstallationEvent;
use selfheal_worker::inputs::{changed_lines, markdown, repo_config, Defaults};

/// The events selfheal parses, by the `X-GitHub-Event` header's value.
pub use selfheal_shared::events::HANDLED as EVENTS;

/// A webhook body under any event name (the first byte picks it): parsed as ingest parses it,
/// and what ingest then asks of a parsed event answered.
pub fn webhook(data: &[u8]) {
    let Some((pick, body)) = data.split_first() else {
        return;
    };
    let event = EVENTS[usize::from(*pick) % EVENTS.len()];
    // Every delivery's envelope is read first, whatever the event. It checks what it skips by
    // syntax alone (web and Postgres check the rest), so it may read a body serde_json's
    // `Value` refuses (a number beyond f64, nesting past 128); where both read one, they
    // agree.
    let envelope = selfheal_shared::envelope::Envelope::parse(body);
    let value = serde_json::from_slice::<serde_json::Value>(body);
    if let (Ok(envelope), Ok(v)) = (&envelope, &value) {
        assert!(
            v.is_object(),
            "the envelope read a body that is not an object"
        );
        assert_eq!(
            envelope.action.as_deref(),
            v.get("action").and_then(serde_json::Value::as_str)
        );
    }
    match event {
        "workflow_run" => {
            if let Ok(ev) = WorkflowRunEvent::parse(body) {
                let _ = (ev.verdict(), ev.branch(), ev.head_repository_id());
                let _ = ev.untrusted_reason();
            }
        }
        "installation" | "installation_repositories" => {
            let _ = InstallationEvent::parse(event, body);
        }
        "issue_comment" => {
            if let Ok(ev) = IssueCommentEvent::parse(body) {
                let _ = ev.command();
            }
        }
        "pull_request" => {
            let _ = PullRequestEvent::parse(body);
        }
        "check_suite" => {
            if let Ok(ev) = CheckSuiteEvent::parse(body) {
                let _ = ev.is_actions();
            }
        }
        "check_run" => {
            let _ = CheckRunEvent::parse(body);
        }
        _ => {
            let _ = StatusEvent::parse(body);
        }
    }
}

/// A delivery's headers as an attacker sends them: the first byte splits the rest into the
/// `X-Hub-Signature-256` value and the body. A signature is accepted only when it is the
/// body's HMAC under the secret; anything else is refused, never a panic.
pub fn webhook_signature(data: &[u8]) {
    let Some((cut, rest)) = data.split_first() else {
        return;
    };
    let (header, body) = rest.split_at(usize::from(*cut).min(rest.len()));
    let secrets = [secrecy::SecretString::from("fuzzing-secret")];
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_bytes(header) {
        headers.insert("x-hub-signature-256", value);
    }
    // The one header that passes is the body's own HMAC, which random bytes never are.
    assert!(
        selfheal_web::verify_signature(&secrets, &headers, body).is_err(),
        "a forged signature passed: {:?}",
        String::from_utf8_lossy(header)
    );
}

/// A patch's unified diff (what a strategy or a pull request holds), judged for deleted or
/// skipped tests and its changed lines counted: no panic, whatever the diff (regexes and
/// line slicing over hostile text). Nothing a diff says first can hide a skipped test after it.
pub fn patch_diff(data: &[u8]) {
    let diff = String::from_utf8_lossy(data);
    let _ = refuses(&diff);
    let _ = changed_lines(&diff);
    let skipping = format!(
        "{diff}\n--- a/tests/test_app.py\n+++ b/tests/test_app.py\n@@ -1 +1,2 @@\n+@pytest.mark.skip\n def test_app():\n"
    );
    assert!(refuses(&skipping).is_some(), "a skipped test let through");
    // The invariants read the same diff: every line they describe is one of its own, and a
    // file that starts at `diff --git` is read as one whatever came before it.
    let change = Change::describe(&diff, "test", "ai_patch", usize::MAX, &[]);
    for file in &change.files {
        for line in &file.added {
            assert!(
                diff.lines()
                    .any(|l| l.strip_prefix('+') == Some(line.text.as_str())),
                "an added line the diff does not hold: {:?}",
                line.text
            );
        }
    }
    let skipping = format!(
        "{diff}\ndiff --git a/tests/test_app.py b/tests/test_app.py\n--- a/tests/test_app.py\n+++ b/tests/test_app.py\n@@ -1 +1,2 @@\n+@pytest.mark.skip\n def test_app():\n"
    );
    let change = Change::describe(&skipping, "test", "ai_patch", usize::MAX, &[]);
    let denials = invariants::check(
        &change,
        invariants::DEFAULT_POLICY,
        &[],
        &invariants::InProcess,
    )
    .expect("the policy evaluates");
    assert!(
        denials.iter().any(|d| d.invariant == "tests-kept"),
        "a skipped test let through the invariants: {denials:?}"
    );
}

/// Lines of a diagnosis's excerpt at most: a few lines that say why, never the log.
pub const EXCERPT_LINES: usize = 20;

/// A CI log (any bytes: logs are not always UTF-8) diagnosed: the excerpt stays a few lines.
pub fn ci_log(data: &[u8]) {
    let log = String::from_utf8_lossy(data);
    let d = diagnose(&log);
    let lines = d.excerpt.split('\n').count();
    assert!(
        lines <= EXCERPT_LINES,
        "an excerpt of {lines} lines: {:?}",
        d.excerpt
    );
    assert!(!d.fingerprint.is_empty(), "no fingerprint");
    // The excerpt is the log's own lines, cleaned, at the line numbers it names.
    let raw: Vec<&str> = log.lines().collect();
    let numbers = &d.excerpt_lines;
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "excerpt lines out of order: {numbers:?}"
    );
    assert!(
        numbers.iter().all(|&n| (1..=raw.len()).contains(&n)),
        "an excerpt line outside the log's {} lines: {numbers:?}",
        raw.len()
    );
    if !numbers.is_empty() {
        let shown: Vec<&str> = d.excerpt.split('\n').collect();
        assert_eq!(
            shown.len(),
            numbers.len(),
            "{:?} for {numbers:?}",
            d.excerpt
        );
        for (&n, text) in numbers.iter().zip(shown) {
            let clean = clean_line(raw[n - 1]);
            let clean = clean.strip_prefix("##[error]").unwrap_or(&clean);
            let same = text == clean
                || (text.ends_with('…') && clean.starts_with(text.trim_end_matches('…')));
            assert!(same, "excerpt line {n} is {text:?}, the log's is {clean:?}");
        }
    }
    // What a log names is bounded, and a culprit is a path inside the repository.
    assert!(
        d.failing_tests.len() <= 50,
        "{} failing tests",
        d.failing_tests.len()
    );
    if let Some(path) = &d.culprit_file {
        assert!(
            !path.starts_with('/')
                && !path.contains('\\')
                && path.split('/').all(|part| part != ".."),
            "culprit {path:?}"
        );
    }
}

/// A path as a sandbox or a log may name it: accepted only when it stays inside the
/// repository, spelled one way, outside `.git`.
pub fn repo_path(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(path) = check_path(&text) {
        assert_inside(path);
    }
}

fn assert_inside(path: &str) {
    assert!(!path.is_empty(), "an empty path accepted");
    // Read as the filesystem would...
    for component in Path::new(path).components() {
        assert!(
            matches!(component, Component::Normal(_)),
            "{path:?} accepted with a {component:?} component"
        );
    }
    // ...and spelled one way only (`Path` would quietly drop a `.` or an empty part).
    for part in path.split('/') {
        assert!(
            !matches!(part, "" | "." | ".." | ".git"),
            "{path:?} accepted with a {part:?} part"
        );
    }
}

/// The sandbox's `changes.tar` (what a repository's code left behind, so anything): a change
/// is accepted only with paths inside the repository, one entry per path, in order. Returns
/// whether it was accepted (the drivers check that their inputs get that far).
pub fn sandbox_capture(data: &[u8]) {
    let _ = capture_accepted(data);
}

/// [`sandbox_capture`], saying whether the change was accepted.
pub fn capture_accepted(data: &[u8]) -> bool {
    // A checkout with a file to change and one to delete.
    let checkout = tempfile::tempdir().expect("a temporary checkout");
    std::fs::create_dir_all(checkout.path().join("src")).expect("src/");
    std::fs::write(checkout.path().join("src/lib.rs"), "fn main() {}\n").expect("src/lib.rs");
    std::fs::write(checkout.path().join("README.md"), "# readme\n").expect("README.md");
    let Ok(changes) = ChangeSet::from_capture(data, checkout.path()) else {
        return false;
    };
    let paths: Vec<&str> = changes.paths().collect();
    for path in &paths {
        assert_inside(path);
    }
    assert!(
        paths.windows(2).all(|w| w[0] < w[1]),
        "paths not sorted and unique: {paths:?}"
    );
    true
}

/// A repository's `.github/selfheal.yml`: any text is a config or a clear error.
pub fn selfheal_yml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(problem) = repo_config(&Defaults::default(), &text) {
        assert!(!problem.is_empty(), "an error that says nothing");
    }
}

/// Text from outside placed in a pull request's Markdown (a code span, a fenced block): as
/// GitHub's CommonMark renders it, it stays inert text, with no link, image or HTML, and
/// nothing escapes its span or block.
pub fn markdown_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_span(&format!("before {} after", markdown::code(&text)));
    check_block(&format!("before\n\n{}\n\nafter\n", markdown::fenced(&text)));
}

/// One code span inside the paragraph, which ends where it should.
fn check_span(span: &str) {
    let events: Vec<Event> = Parser::new(span).collect();
    assert_inert(span, &events);
    let codes = events
        .iter()
        .filter(|e| matches!(e, Event::Code(_)))
        .count();
    assert_eq!(codes, 1, "{span:?} rendered as {events:?}");
    assert!(
        matches!(events.last(), Some(Event::End(TagEnd::Paragraph))),
        "{span:?} rendered as {events:?}"
    );
}

/// One code block, and "after" outside it: the text did not keep it open.
fn check_block(block: &str) {
    let events: Vec<Event> = Parser::new(block).collect();
    assert_inert(block, &events);
    let blocks = events
        .iter()
        .filter(|e| matches!(e, Event::Start(Tag::CodeBlock(_))))
        .count();
    assert_eq!(blocks, 1, "{block:?} rendered as {events:?}");
    assert!(
        events
            .iter()
            .rev()
            .take(3)
            .any(|e| matches!(e, Event::Text(t) if t.as_ref() == "after")),
        "{block:?} rendered as {events:?}"
    );
}

fn assert_inert(markdown: &str, events: &[Event]) {
    for event in events {
        let live = matches!(
            event,
            Event::Html(_)
                | Event::InlineHtml(_)
                | Event::Start(Tag::Link { .. })
                | Event::Start(Tag::Image { .. })
                | Event::Start(Tag::HtmlBlock)
        );
        assert!(!live, "{markdown:?} renders {event:?}");
    }
}

/// A harness: arbitrary bytes in, a panic when an invariant breaks.
pub type Harness = fn(&[u8]);

/// Every harness by name, for drivers that pick one.
pub const TARGETS: [(&str, Harness); 8] = [
    ("webhook", webhook),
    ("webhook_signature", webhook_signature),
    ("patch_diff", patch_diff),
    ("ci_log", ci_log),
    ("repo_path", repo_path),
    ("sandbox_capture", sandbox_capture),
    ("selfheal_yml", selfheal_yml),
    ("markdown_text", markdown_text),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn fails(check: impl FnOnce() + std::panic::UnwindSafe) -> bool {
        std::panic::catch_unwind(check).is_err()
    }

    /// The invariants catch what they are for: a naive span or fence, a path that climbs out.
    #[test]
    fn the_invariants_refuse_what_a_naive_version_would_let_through() {
        let text = "a` [x](https://evil.example) `b";
        assert!(fails(|| check_span(&format!("before `{text}` after"))));
        check_span(&format!("before {} after", markdown::code(text)));
        let text = "```\n<img src=x>\n[x](https://evil.example)";
        assert!(fails(|| check_block(&format!(
            "before\n\n```\n{text}\n```\n\nafter\n"
        ))));
        check_block(&format!("before\n\n{}\n\nafter\n", markdown::fenced(text)));
        assert!(fails(|| assert_inside("a/../../etc")));
        assert!(fails(|| assert_inside(".git/config")));
        assert!(fails(|| assert_inside("/etc/passwd")));
        assert_inside("src/lib.rs");
    }

    /// The signature harness would see a forgery pass: the body's own HMAC does pass.
    #[test]
    fn the_bodys_own_signature_passes_and_one_changed_byte_does_not() {
        use hmac::{Hmac, Mac};
        let body = br#"{"action":"completed"}"#;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"fuzzing-secret").unwrap();
        mac.update(body);
        let header = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let mut headers = http::HeaderMap::new();
        headers.insert("x-hub-signature-256", header.parse().unwrap());
        let secrets = [secrecy::SecretString::from("fuzzing-secret")];
        assert!(selfheal_web::verify_signature(&secrets, &headers, body).is_ok());
        let mut data = vec![u8::try_from(header.len()).unwrap()];
        data.extend(header.as_bytes());
        data.extend(body);
        assert!(fails(|| webhook_signature(&data)));
        let last = data.len() - 1;
        data[last] ^= 1;
        webhook_signature(&data);
    }
}
