//! What a late admission may change: a failed run is admitted after it was received, possibly
//! after a newer delivery of the same repository was admitted.

use serde_json::Value;

use crate::support::*;

/// A repository renamed between two failures, whose newer failure is admitted first (a
/// backlog, two workers): the older one's admission leaves the new name in place.
#[tokio::test]
async fn a_late_admission_does_not_undo_a_newer_repository_name() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let mut before = env.failing_run(2601, &now());
    before["repository"]["full_name"] = Value::from("octo-org/octo-repo-before-rename");
    let (_, older) = app.deliver("workflow_run", &before).await;
    let mut after = env.failing_run(2602, &now());
    after["workflow_run"]["head_branch"] = Value::from("release");
    let renamed = after["repository"]["full_name"].clone();
    let (_, newer) = app.deliver("workflow_run", &after).await;
    assert_eq!(newer["status"], "accepted", "{newer}");
    let db = env.db().await;
    let name = || async {
        db.query_one("SELECT full_name FROM repositories", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(env.admit(&newer).await["outcome"], "run_created");
    assert_eq!(name().await, renamed.as_str().unwrap());
    assert_eq!(env.admit(&older).await["outcome"], "run_created");
    assert_eq!(name().await, renamed.as_str().unwrap());

    // A newer delivery admitted last does rename it.
    let mut later = env.failing_run(2603, &now());
    later["workflow_run"]["head_branch"] = Value::from("next");
    later["repository"]["full_name"] = Value::from("octo-org/octo-repo-renamed-again");
    let (_, latest) = app.deliver("workflow_run", &later).await;
    assert_eq!(env.admit(&latest).await["outcome"], "run_created");
    assert_eq!(name().await, "octo-org/octo-repo-renamed-again");
}
