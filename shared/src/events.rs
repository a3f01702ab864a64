//! The parts of GitHub's webhook payloads selfheal acts on. Payloads vary over time, so only
//! the fields used are parsed, and leniently: unknown fields are ignored.

use chrono::{DateTime, Utc};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("invalid {event} payload: {message}")]
pub struct PayloadError {
    pub event: String,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowRunEvent {
    pub action: String,
    pub workflow_run: WorkflowRun,
    pub repository: Repository,
    pub installation: Option<Installation>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowRun {
    pub id: i64,
    #[serde(default)]
    pub name: Option<String>,
    pub head_branch: Option<String>,
    pub head_sha: String,
    pub status: Option<String>,
    pub conclusion: Option<String>,
    pub workflow_id: i64,
    /// `.github/workflows/ci.yml`
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default = "first_attempt")]
    pub run_attempt: i32,
    pub updated_at: DateTime<Utc>,
}

fn first_attempt() -> i32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    pub id: i64,
    pub full_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Installation {
    pub id: i64,
    #[serde(default)]
    pub account: Option<Account>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    pub login: String,
}

/// What a `workflow_run` delivery means for selfheal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunVerdict {
    /// Completed red: open (or join) an incident and heal it.
    Failed,
    /// Completed green: resolves the open incident of the same repo + branch + workflow.
    Succeeded,
    /// Anything else (requested, in progress, cancelled, skipped...): stored, no action.
    Ignored,
}

impl WorkflowRunEvent {
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        parse_payload("workflow_run", body)
    }

    pub fn verdict(&self) -> RunVerdict {
        if self.action != "completed" {
            return RunVerdict::Ignored;
        }
        match self.workflow_run.conclusion.as_deref() {
            Some("failure") | Some("timed_out") => RunVerdict::Failed,
            Some("success") => RunVerdict::Succeeded,
            _ => RunVerdict::Ignored,
        }
    }

    pub fn branch(&self) -> &str {
        self.workflow_run.head_branch.as_deref().unwrap_or("")
    }
}

/// Parses a payload and names the offending field (`workflow_run.head_sha: missing field`).
pub fn parse_payload<T: for<'de> Deserialize<'de>>(
    event: &str,
    body: &[u8],
) -> Result<T, PayloadError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {inner}")
        } else if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        PayloadError {
            event: event.to_string(),
            message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../shared/fixtures/github-webhooks/workflow_run/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn parses_recorded_payloads() {
        let ev = WorkflowRunEvent::parse(&fixture("completed.payload.json")).unwrap();
        assert_eq!(ev.workflow_run.id, 289782451);
        assert_eq!(ev.repository.full_name, "octo-org/octo-repo");
        assert_eq!(ev.verdict(), RunVerdict::Succeeded);
        let ev = WorkflowRunEvent::parse(&fixture("requested.payload.json")).unwrap();
        assert_eq!(ev.verdict(), RunVerdict::Ignored);
    }

    #[test]
    fn names_the_missing_field() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixture("completed.payload.json")).unwrap();
        v["workflow_run"]
            .as_object_mut()
            .unwrap()
            .remove("head_sha");
        let err = WorkflowRunEvent::parse(v.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("workflow_run"), "{err}");
        assert!(err.to_string().contains("head_sha"), "{err}");
        let err = WorkflowRunEvent::parse(b"{not json").unwrap_err();
        assert!(err.to_string().contains("malformed JSON"), "{err}");
    }
}
