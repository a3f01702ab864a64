//! Reading the recorded fixtures in `fixtures/` (sources and licences in its SOURCE.md).
//! Nothing outside this repository is read: a clone runs the demo and the tests alone.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read fixture {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fixture {path} is not what was expected: {reason}")]
    Shape { path: PathBuf, reason: String },
}

/// The repository's own `fixtures/` folder.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

const MORE_OPERATIONS: &str = "github-openapi/more-operations.json";
const REST_DESCRIPTION: &str = "github-openapi/rest-subset.json";

#[derive(Debug, Clone)]
pub struct Fixtures {
    pub dir: PathBuf,
    /// GitHub's OpenAPI description, parsed once (1.8 MB) and shared by every request.
    rest: Arc<OnceLock<Result<Value, String>>>,
}

impl Fixtures {
    pub fn new(dir: PathBuf) -> Self {
        Fixtures {
            dir,
            rest: Arc::new(OnceLock::new()),
        }
    }

    fn read(&self, rel: &str) -> Result<String, FixtureError> {
        let path = self.dir.join(rel);
        std::fs::read_to_string(&path).map_err(|source| FixtureError::Read { path, source })
    }

    pub fn json(&self, rel: &str) -> Result<Value, FixtureError> {
        let text = self.read(rel)?;
        serde_json::from_str(&text).map_err(|e| FixtureError::Shape {
            path: self.dir.join(rel),
            reason: e.to_string(),
        })
    }

    /// The response example GitHub's OpenAPI description gives for `method path` answering
    /// `status` (`example` names one where there are several). These replace recorded
    /// exchanges we may not copy (PyGithub's replay files are LGPL).
    pub fn example(
        &self,
        method: &str,
        path: &str,
        status: u16,
        example: &str,
    ) -> Result<Value, FixtureError> {
        let location = self.dir.join(REST_DESCRIPTION);
        let more = self.dir.join(MORE_OPERATIONS);
        let rest = self.rest.get_or_init(|| {
            let text = std::fs::read_to_string(&location).map_err(|e| e.to_string())?;
            let mut rest = serde_json::from_str::<Value>(&text).map_err(|e| e.to_string())?;
            // Operations copied from the same OpenAPI description beside the subset.
            let text = std::fs::read_to_string(&more).map_err(|e| e.to_string())?;
            let more = serde_json::from_str::<Value>(&text).map_err(|e| e.to_string())?;
            for (template, ops) in more["paths"].as_object().into_iter().flatten() {
                for (method, op) in ops.as_object().into_iter().flatten() {
                    rest["paths"][template][method] = op.clone();
                }
            }
            Ok(rest)
        });
        let rest = rest.as_ref().map_err(|reason| FixtureError::Shape {
            path: location.clone(),
            reason: reason.clone(),
        })?;
        rest["paths"][path][method.to_ascii_lowercase()]["responses"][status.to_string()]["content"]
            ["application/json"]["examples"][example]["value"]
            .as_object()
            .map(|o| Value::Object(o.clone()))
            .ok_or_else(|| FixtureError::Shape {
                path: location,
                reason: format!("no example {example:?} for {method} {path} {status}"),
            })
    }

    pub fn ci_log(&self, name: &str) -> Result<String, FixtureError> {
        self.read(&format!("ci-logs/{name}"))
    }
}

/// octokit's recorded `workflow_run.completed` payload, adapted into what GitHub sends a
/// GitHub App for a failed run: `conclusion: failure`, the installation added, and the ids
/// and time the scenario needs.
pub fn failing_workflow_run(
    fixtures: &Fixtures,
    installation_id: i64,
    run_id: i64,
    completed_at: &str,
) -> Result<Value, FixtureError> {
    workflow_run(fixtures, "failure", installation_id, run_id, completed_at)
}

/// The same recorded payload as a green run (its recorded conclusion).
pub fn successful_workflow_run(
    fixtures: &Fixtures,
    installation_id: i64,
    run_id: i64,
    completed_at: &str,
) -> Result<Value, FixtureError> {
    workflow_run(fixtures, "success", installation_id, run_id, completed_at)
}

fn workflow_run(
    fixtures: &Fixtures,
    conclusion: &str,
    installation_id: i64,
    run_id: i64,
    completed_at: &str,
) -> Result<Value, FixtureError> {
    let mut payload = fixtures.json("github-webhooks/workflow_run/completed.payload.json")?;
    payload["installation"] = serde_json::json!({ "id": installation_id, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ==" });
    let run = &mut payload["workflow_run"];
    run["conclusion"] = Value::from(conclusion);
    run["id"] = Value::from(run_id);
    run["updated_at"] = Value::from(completed_at);
    Ok(payload)
}
