//! What travels through Redis: a failed run's delivery to admit, a stage of a run, or a
//! `/selfheal` command. Each kind carries its own name and retry policy.

use serde::{Deserialize, Serialize};

use crate::stage::{RetryPolicy, StageJob};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    Admit(AdmitJob),
    Stage(StageJob),
    Command(CommandJob),
}

impl Job {
    /// The queue's name (under the deployment's key prefix).
    pub const QUEUE: &'static str = "jobs";

    pub fn name(&self) -> &'static str {
        match self {
            Job::Admit(_) => AdmitJob::NAME,
            Job::Stage(_) => StageJob::NAME,
            Job::Command(_) => CommandJob::NAME,
        }
    }
}

impl From<StageJob> for Job {
    fn from(job: StageJob) -> Self {
        Job::Stage(job)
    }
}

impl From<AdmitJob> for Job {
    fn from(job: AdmitJob) -> Self {
        Job::Admit(job)
    }
}

impl From<CommandJob> for Job {
    fn from(job: CommandJob) -> Self {
        Job::Command(job)
    }
}

/// A `/selfheal …` comment, stored in `commands`, to be checked and carried out by a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandJob {
    pub command_id: i64,
}

impl CommandJob {
    pub const NAME: &'static str = "command";

    /// Commands talk to GitHub (permission check, comments, merge): GitHub's patience.
    pub fn retry_policy() -> RetryPolicy {
        crate::stage::Stage::Deliver.retry_policy()
    }
}

/// A failed run's delivery, stored and answered by the webhook, for a worker to admit
/// (`failed_run::admit`): the gates, the dedup by GitHub run, the incident and the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmitJob {
    pub delivery_id: String,
    /// The webhook's trace, which the run's stages continue (W3C `traceparent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl AdmitJob {
    pub const NAME: &'static str = "admit";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::Stage;

    #[test]
    fn jobs_say_what_they_are_on_the_wire() {
        let job = Job::from(StageJob {
            run_id: uuid::Uuid::nil(),
            stage: Stage::Verify,
            traceparent: None,
        });
        let text = serde_json::to_string(&job).unwrap();
        assert_eq!(
            text,
            r#"{"job":"stage","run_id":"00000000-0000-0000-0000-000000000000","stage":"verify"}"#
        );
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), job);
        let cmd: Job = serde_json::from_str(r#"{"job":"command","command_id":7}"#).unwrap();
        assert_eq!(cmd, Job::Command(CommandJob { command_id: 7 }));
        assert_eq!(cmd.name(), "command");
        let admit: Job = serde_json::from_str(r#"{"job":"admit","delivery_id":"d-1"}"#).unwrap();
        assert_eq!(
            admit,
            Job::Admit(AdmitJob {
                delivery_id: "d-1".into(),
                traceparent: None,
            })
        );
    }
}
