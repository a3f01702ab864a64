//! The fuzzing harnesses (`fuzzing/`) as bounded property tests on stable: every corpus file
//! and kept regression under `fuzz/` replayed, then inputs generated the way an attacker would
//! shape them (real payloads with fields swapped for hostile values, tar archives with
//! hostile entry names, paths and Markdown built from the characters that matter). Longer
//! runs: `bash scripts/fuzz.sh` (cargo fuzz on nightly, else these with more cases).

use std::path::PathBuf;

use proptest::prelude::*;
use selfheal_fuzzing as harness;
use serde_json::Value;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

#[test]
fn every_corpus_input_and_kept_regression_passes_its_harness() {
    let mut replayed = 0;
    for (name, run) in harness::TARGETS {
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                run(&std::fs::read(&path).unwrap());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= 30, "only {replayed} inputs replayed");
}

/// Values an attacker puts where a field was.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::from),
        Just(Value::from("../../etc/passwd")),
        Just(Value::from("selfheal/x\u{0}y")),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!([null])),
    ]
}

/// Every (pointer, value) leaf of a JSON document.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                pointers(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Paths a hostile repository would name, and plain ones.
fn hostile_path() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a./g it]{1,16}",
        Just("../escape".to_string()),
        Just("/etc/passwd".to_string()),
        Just(".git/hooks/pre-commit".to_string()),
        Just("a/./b".to_string()),
        Just("a/.".to_string()),
        Just("a//b".to_string()),
        Just("src/lib.rs".to_string()),
        Just("src/lib.rs/inner".to_string()),
        Just("README.md".to_string()),
        Just("new/file.txt".to_string()),
    ]
}

/// A capture as the sandbox writes one: `files/<path>` entries (of a kind: 0 file, 1 symlink,
/// 2 hard link, 3 directory) and, for kind 4, the path in `deleted.list`. Names are written
/// raw, as a hostile tool would, past the tar crate's own checks.
fn capture(entries: Vec<(String, u8, Vec<u8>)>) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut deleted = Vec::new();
    for (name, kind, body) in entries {
        if kind == 4 {
            deleted.extend(name.as_bytes());
            deleted.push(0);
            continue;
        }
        let mut header = tar::Header::new_gnu();
        let kind = match kind {
            0 => tar::EntryType::Regular,
            1 => tar::EntryType::Symlink,
            2 => tar::EntryType::Link,
            _ => tar::EntryType::Directory,
        };
        header.set_entry_type(kind);
        header.set_mode(0o644);
        let data: &[u8] = if kind == tar::EntryType::Regular {
            &body
        } else {
            &[]
        };
        header.set_size(data.len() as u64);
        if kind == tar::EntryType::Symlink || kind == tar::EntryType::Link {
            let _ = header.set_link_name("../../outside");
        }
        let raw = format!("files/{name}");
        let gnu = header.as_old_mut();
        let n = raw.len().min(gnu.name.len());
        gnu.name[..n].copy_from_slice(&raw.as_bytes()[..n]);
        header.set_cksum();
        tar.append(&header, data).unwrap();
    }
    if !deleted.is_empty() {
        let mut header = tar::Header::new_gnu();
        header.set_path("deleted.list").unwrap();
        header.set_size(deleted.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append(&header, deleted.as_slice()).unwrap();
    }
    tar.into_inner().unwrap()
}

#[test]
fn a_well_formed_capture_gets_to_the_checks() {
    // Without this, a harness whose inputs were all refused early would pass for nothing.
    let changed = capture(vec![
        ("src/lib.rs".into(), 0, b"fn main() { }\n".to_vec()),
        ("README.md".into(), 4, Vec::new()),
        ("new/file.txt".into(), 0, b"hello\n".to_vec()),
    ]);
    assert!(harness::capture_accepted(&changed));
    let climbing = capture(vec![("../escape".into(), 0, b"x\n".to_vec())]);
    assert!(!harness::capture_accepted(&climbing));
}

#[test]
fn every_recorded_payload_in_the_corpus_parses() {
    use selfheal_shared::events::*;
    for (event, payload) in recorded_payloads() {
        let body = serde_json::to_vec(&payload).unwrap();
        let name = harness::EVENTS[event];
        let parsed = match name {
            "workflow_run" => WorkflowRunEvent::parse(&body).map(|_| ()),
            "installation" | "installation_repositories" => {
                selfheal_shared::installations::InstallationEvent::parse(name, &body).map(|_| ())
            }
            "issue_comment" => IssueCommentEvent::parse(&body).map(|_| ()),
            "pull_request" => PullRequestEvent::parse(&body).map(|_| ()),
            "check_suite" => CheckSuiteEvent::parse(&body).map(|_| ()),
            "check_run" => CheckRunEvent::parse(&body).map(|_| ()),
            _ => StatusEvent::parse(&body).map(|_| ()),
        };
        assert!(parsed.is_ok(), "a recorded {name} payload: {parsed:?}");
    }
}

fn recorded_payloads() -> Vec<(usize, Value)> {
    // In name order: a failing case names the same payload on every run.
    let mut files: Vec<PathBuf> = std::fs::read_dir(fuzz_dir().join("corpus/webhook"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).unwrap();
            let (pick, body) = bytes.split_first().unwrap();
            (usize::from(*pick), serde_json::from_slice(body).unwrap())
        })
        .collect()
}

// 256 cases each (proptest's default); `PROPTEST_CASES` asks for more.
proptest! {
    #[test]
    fn webhook_bodies_of_any_bytes(event in 0u8..8, body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut data = vec![event];
        data.extend(body);
        harness::webhook(&data);
    }

    /// GitHub's recorded payloads with up to four fields swapped for hostile values, and
    /// perhaps removed: deep inside the parsers, where random bytes never get.
    #[test]
    fn recorded_webhooks_with_hostile_fields(
        which in any::<prop::sample::Index>(),
        swaps in proptest::collection::vec((any::<prop::sample::Index>(), hostile_value(), any::<bool>()), 1..4),
    ) {
        let payloads = recorded_payloads();
        let (event, mut payload) = payloads[which.index(payloads.len())].clone();
        for (at, value, remove) in swaps {
            let mut all = Vec::new();
            pointers(&payload, String::new(), &mut all);
            let pointer = &all[at.index(all.len())];
            if pointer.is_empty() {
                continue;
            }
            if remove {
                let (parent, key) = pointer.rsplit_once('/').unwrap();
                if let Some(Value::Object(m)) = payload.pointer_mut(parent) {
                    m.remove(&key.replace("~1", "/").replace("~0", "~"));
                }
            } else if let Some(slot) = payload.pointer_mut(pointer) {
                *slot = value;
            }
        }
        let mut data = vec![u8::try_from(event).unwrap()];
        data.extend(serde_json::to_vec(&payload).unwrap());
        harness::webhook(&data);
    }

    #[test]
    fn webhook_signatures_of_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        harness::webhook_signature(&data);
    }

    /// Signatures shaped like GitHub's: the prefix, hex of any length, near-misses.
    #[test]
    fn webhook_signatures_shaped_like_githubs(
        prefix in prop_oneof![Just("sha256="), Just("sha1="), Just(""), Just("SHA256=")],
        digest in "[0-9a-fA-F]{0,70}",
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let header = format!("{prefix}{digest}");
        let mut data = vec![u8::try_from(header.len()).unwrap()];
        data.extend(header.as_bytes());
        data.extend(body);
        harness::webhook_signature(&data);
    }

    /// Diffs built from the lines a unified diff is made of.
    #[test]
    fn patch_diffs_made_of_diff_lines(lines in proptest::collection::vec(prop_oneof![
        Just("--- a/tests/test_x.py".to_string()),
        Just("+++ b/tests/test_x.py".to_string()),
        Just("--- a/src/lib.rs".to_string()),
        Just("+++ /dev/null".to_string()),
        Just("@@ -1,3 +1,2 @@".to_string()),
        Just("-    assert x == 1".to_string()),
        Just("+@pytest.mark.skip".to_string()),
        Just("+#[ignore]".to_string()),
        Just("-def test_y():".to_string()),
        Just(" context".to_string()),
        "[-+ @]{0,3}[ -~]{0,40}",
    ], 0..60)) {
        harness::patch_diff(lines.join("\n").as_bytes());
    }

    #[test]
    fn ci_logs_of_any_bytes(log in proptest::collection::vec(any::<u8>(), 0..8192)) {
        harness::ci_log(&log);
    }

    /// Logs built from the lines tools print, in any order and number.
    #[test]
    fn ci_logs_made_of_tool_lines(lines in proptest::collection::vec(prop_oneof![
        Just("##[group]Run cargo fmt --check".to_string()),
        Just("##[endgroup]".to_string()),
        Just("##[error]Process completed with exit code 1.".to_string()),
        Just("Diff in /home/runner/work/app/app/src/lib.rs at line 1:".to_string()),
        Just("error[E0308]: mismatched types".to_string()),
        Just("  --> src/main.rs:4:5".to_string()),
        Just("FAILED tests/test_x.py::test_y - AssertionError".to_string()),
        Just("would reformat src/app.py".to_string()),
        Just("2026-11-20T10:00:00.0000000Z \u{1b}[31merror\u{1b}[0m".to_string()),
        Just("test result: FAILED. 1 passed; 1 failed".to_string()),
        // The other CIs' markers and the other tools' heads, where index arithmetic lives.
        Just("section_start:1795000004:step_script\r\u{1b}[0KExecuting".to_string()),
        Just("$ pytest".to_string()),
        Just("ERROR: Job failed: exit code 1".to_string()),
        Just("+ make".to_string()),
        Just("ERROR: script returned exit code 2".to_string()),
        Just("#!/bin/bash -eo pipefail".to_string()),
        Just("Exited with code exit status 1".to_string()),
        Just("The command \"npm test\" exited with 1.".to_string()),
        Just("🚨 Error: The command exited with status 1".to_string()),
        Just("--- FAIL: TestAdd (0.00s)".to_string()),
        Just("     Failure/Error: expect(x).to eq(7)".to_string()),
        Just("There was 1 failure:".to_string()),
        Just("1) BasketTest::testAddsItems".to_string()),
        Just("  1) test adds (BasketTest)".to_string()),
        Just("  1 failing".to_string()),
        Just("  1) daysIn".to_string()),
        Just("The following tests FAILED:".to_string()),
        Just("Test suite spec: RUNNING...".to_string()),
        Just("Test suite spec: FAIL".to_string()),
        Just("CMake Error at CMakeLists.txt:3 (find_package):".to_string()),
        Just("acme.BasketTest > addsItems FAILED".to_string()),
        Just("[info] - adds *** FAILED ***".to_string()),
        Just("  Failed App.Tests.Adds [4 ms]".to_string()),
        Just("  Error Message:".to_string()),
        Just("src/Basket.hs:4:15: error:".to_string()),
        Just("FAILED tests/test_x.py".to_string()),
        Just("ERROR tests/test_x.py".to_string()),
        Just(" FAIL  src/sum.test.ts > sum > adds".to_string()),
        Just(" ❯ src/sum.test.ts:6:23".to_string()),
        Just("== Compilation error in file lib/basket.ex ==".to_string()),
        Just("warning: variable \"x\" does not exist".to_string()),
        Just("The conflict is caused by:".to_string()),
        "[ -~]{0,80}",
        ".{0,80}",
    ], 0..200)) {
        harness::ci_log(lines.join("\n").as_bytes());
    }

    /// Paths from the characters that matter to a path.
    #[test]
    fn paths_from_the_characters_that_matter(path in "[a./\\\\g it~\u{0}\n:]{0,24}") {
        harness::repo_path(path.as_bytes());
    }

    #[test]
    fn sandbox_captures_of_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        harness::sandbox_capture(&data);
    }

    /// Well-formed captures (entries under `files/`, a `deleted.list`) whose entries a
    /// hostile repository named and typed.
    #[test]
    fn sandbox_captures_with_hostile_entries(entries in proptest::collection::vec((
        hostile_path(),
        0u8..5,
        proptest::collection::vec(any::<u8>(), 0..64),
    ), 0..8)) {
        harness::sandbox_capture(&capture(entries));
    }

    #[test]
    fn selfheal_yml_of_any_text(text in ".{0,400}") {
        harness::selfheal_yml(text.as_bytes());
    }

    /// `.github/selfheal.yml` shaped like one, with hostile values.
    #[test]
    fn selfheal_yml_with_hostile_values(
        key in prop::sample::select(vec!["enabled_classes", "max_diff_lines", "protected_paths", "dry_run",
            "auto_merge_classes", "reviewers", "max_attempts", "merge_method", "external_ci",
            "external_statuses", "unknown_key"]),
        value in prop_oneof![
            Just("~".to_string()), Just("-1".to_string()), Just("99999999999999999999".to_string()),
            Just("[a, [b]]".to_string()), Just("{a: {b: c}}".to_string()), Just("&a [*a]".to_string()),
            Just("!!binary aGk=".to_string()), "[ -~]{0,30}",
        ],
    ) {
        harness::selfheal_yml(format!("{key}: {value}\n").as_bytes());
    }

    /// Text made of what Markdown is made of.
    #[test]
    fn markdown_from_its_own_characters(text in "[`~\\[\\]()!<>*_#@\\\\\n\r a-z:/.&;-]{0,60}") {
        harness::markdown_text(text.as_bytes());
    }

    #[test]
    fn markdown_of_any_text(text in ".{0,200}") {
        harness::markdown_text(text.as_bytes());
    }
}
