//! Reading the recorded fixtures. PyGithub's replay files (LGPL) are read from `../shared`
//! at run time and never copied into this project.

use std::path::{Path, PathBuf};

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

/// `SELFHEAL_FIXTURES_DIR`, or `../shared/fixtures` beside the project checkout.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("SELFHEAL_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
}

/// One recorded HTTP exchange of a PyGithub replay file.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct Fixtures {
    pub dir: PathBuf,
}

impl Fixtures {
    pub fn new(dir: PathBuf) -> Self {
        Fixtures { dir }
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

    /// Exchanges of `github-rest/pygithub-replay/<name>`: ten lines each (scheme, method,
    /// host, port, path, request headers, request body, status, response headers, body),
    /// separated by a blank line.
    pub fn replay(&self, name: &str) -> Result<Vec<Exchange>, FixtureError> {
        let rel = format!("github-rest/pygithub-replay/{name}");
        let text = self.read(&rel)?;
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i + 10 <= lines.len() {
            if lines[i].trim().is_empty() {
                i += 1;
                continue;
            }
            let status = lines[i + 7]
                .trim()
                .parse::<u16>()
                .map_err(|e| FixtureError::Shape {
                    path: self.dir.join(&rel),
                    reason: format!("status line {}: {e}", i + 8),
                })?;
            out.push(Exchange {
                method: lines[i + 1].to_string(),
                path: lines[i + 4].to_string(),
                status,
                body: lines[i + 9].to_string(),
            });
            i += 10;
        }
        Ok(out)
    }

    pub fn replay_json(
        &self,
        name: &str,
        method: &str,
        path_part: &str,
    ) -> Result<Value, FixtureError> {
        let exchange = self
            .replay(name)?
            .into_iter()
            .find(|e| {
                e.method == method && e.path.split('?').next().unwrap_or("").contains(path_part)
            })
            .ok_or_else(|| FixtureError::Shape {
                path: self.dir.join(name),
                reason: format!("no {method} …{path_part}… exchange"),
            })?;
        serde_json::from_str(&exchange.body).map_err(|e| FixtureError::Shape {
            path: self.dir.join(name),
            reason: e.to_string(),
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
