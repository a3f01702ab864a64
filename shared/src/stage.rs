//! The pipeline's stages and the job that carries a run through one of them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Triage,
    Diagnose,
    Patch,
    Validate,
    Verify,
    Deliver,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Triage,
        Stage::Diagnose,
        Stage::Patch,
        Stage::Validate,
        Stage::Verify,
        Stage::Deliver,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Triage => "triage",
            Stage::Diagnose => "diagnose",
            Stage::Patch => "patch",
            Stage::Validate => "validate",
            Stage::Verify => "verify",
            Stage::Deliver => "deliver",
        }
    }

    pub fn next(self) -> Option<Stage> {
        let i = Stage::ALL.iter().position(|s| *s == self)?;
        Stage::ALL.get(i + 1).copied()
    }

    /// How long one attempt may take before it is given up as hung (a live worker stuck on a
    /// call that never answers keeps its lock, so nothing else would ever take the stage):
    /// past every wait the stage is meant to make.
    pub fn timeout(self) -> Duration {
        match self {
            // Sandbox runs, each bounded by the sandbox's own limit, several per stage.
            Stage::Patch | Stage::Validate => Duration::from_secs(60 * 60),
            // GitHub calls, with up to a quarter of an hour of secondary-rate-limit waits.
            Stage::Triage | Stage::Verify | Stage::Deliver => Duration::from_secs(30 * 60),
            Stage::Diagnose => Duration::from_secs(10 * 60),
        }
    }

    /// Attempts before the stage fails for good (and the run with it).
    pub fn retry_policy(self) -> RetryPolicy {
        match self {
            // Talks to GitHub, which has bad minutes: more patience.
            Stage::Triage | Stage::Verify | Stage::Deliver => RetryPolicy {
                max_attempts: 5,
                max_abandoned: 3,
                first_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(30),
            },
            _ => RetryPolicy {
                max_attempts: 3,
                max_abandoned: 3,
                first_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(10),
            },
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown stage {0:?}")]
pub struct UnknownStage(pub String);

impl FromStr for Stage {
    type Err = UnknownStage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStage(s.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    /// Attempts a worker may die in (killed, out of memory) before the stage is taken for a
    /// job that kills its worker and the run is failed, rather than crash replicas for ever.
    pub max_abandoned: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// Exponential backoff with jitter (backon's), capped per stage.
    pub fn backoffs(&self) -> impl Iterator<Item = Duration> {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(self.first_backoff)
            .with_max_delay(self.max_backoff)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// One stage of one run, as it travels through Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageJob {
    pub run_id: Uuid,
    pub stage: Stage,
    /// The W3C trace context of the span that made the job due (`trace_context`): the stage
    /// continues the run's trace. Absent when tracing is off, and in jobs from before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl StageJob {
    /// The job's name, used for its queue and in logs.
    pub const NAME: &'static str = "stage";

    /// The Postgres advisory lock a worker holds (in its own session) while it runs this
    /// stage: two workers never run one stage at once, and a lock nobody holds says no live
    /// worker is running it.
    pub fn lock_key(run_id: Uuid, stage: &str) -> String {
        format!("{run_id}:{stage}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_chain_in_order() {
        let mut order = vec![Stage::Triage];
        while let Some(next) = order.last().and_then(|s| s.next()) {
            order.push(next);
        }
        assert_eq!(order, Stage::ALL);
        for s in Stage::ALL {
            assert_eq!(s.as_str().parse::<Stage>().unwrap(), s);
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = Stage::Triage.retry_policy();
        let delays: Vec<_> = p.backoffs().take(12).collect();
        assert!(delays[0] >= p.first_backoff);
        assert!(delays.iter().all(|d| *d <= p.max_backoff * 2), "{delays:?}");
        assert!(delays[6] > delays[0]);
    }
}
