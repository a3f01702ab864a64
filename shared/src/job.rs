//! What travels through Redis: a stage of a run, or a `/selfheal` command. Each kind carries
//! its own name and retry policy.

use serde::{Deserialize, Serialize};

use crate::stage::{RetryPolicy, StageJob};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    Stage(StageJob),
    Command(CommandJob),
}

impl Job {
    /// The queue's name (under the deployment's key prefix).
    pub const QUEUE: &'static str = "jobs";

    pub fn name(&self) -> &'static str {
        match self {
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
    }
}
