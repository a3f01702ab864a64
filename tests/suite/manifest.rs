//! The app manifest asks for what selfheal's GitHub calls need, and no more.

use serde_json::Value;

#[test]
fn the_manifest_covers_every_call_and_asks_nothing_extra() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/github-app-manifest.json");
    let manifest: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let perms = manifest["default_permissions"].as_object().unwrap();
    let mut names: Vec<&str> = perms.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "actions",
            "checks",
            "contents",
            "issues",
            "metadata",
            "pull_requests",
            "statuses"
        ]
    );
    // Writes selfheal makes: reruns (actions), Git Data API (contents), PRs and their merge,
    // comments (issues), the config check run (checks).
    for (perm, level) in [
        ("actions", "write"),
        ("contents", "write"),
        ("pull_requests", "write"),
        ("issues", "write"),
        ("checks", "write"),
    ] {
        assert_eq!(perms[perm], level, "{perm}");
    }
    assert_eq!(perms["metadata"], "read");
    let events: Vec<&str> = manifest["default_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(events.contains(&"workflow_run"));
    assert!(events.contains(&"issue_comment"), "the /selfheal commands");
    assert!(
        events.contains(&"check_suite"),
        "external CI on selfheal's fix"
    );
    assert!(manifest["hook_attributes"]["url"]
        .as_str()
        .unwrap()
        .ends_with("/webhooks/github"));
}
