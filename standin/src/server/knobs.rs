use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Behaviour a test or the demo can change while the stand-in runs (also over HTTP:
/// `POST /_standin/knobs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Knobs {
    /// Delay before answering the run's jobs list, to hold a worker mid-triage.
    #[serde(default)]
    pub jobs_delay_ms: u64,
    /// Answer the next N jobs-list requests with a 502.
    #[serde(default)]
    pub fail_jobs: u32,
    /// Answer the next N listings of a workflow's runs with a 502.
    #[serde(default)]
    pub fail_workflow_runs: u32,
    /// Which `ci-logs/` file to serve as the failed job's log (default: rustfmt-check.log).
    #[serde(default)]
    pub log_fixture: Option<String>,
    /// A scenario's own log text instead of a fixture (tests that need a particular
    /// command to fail, e.g. a slow one).
    #[serde(default)]
    pub log_text: Option<String>,
    /// The log of every job of a green run the `workflow_runs` knob lists, whose jobs are the
    /// failing run's, passing (absent: GitHub no longer has it, 410).
    #[serde(default)]
    pub green_log_text: Option<String>,
    /// The failing job's name in the run's job listing (default: `test`), as a scenario's
    /// workflow names it.
    #[serde(default)]
    pub failing_job: Option<String>,
    /// The directory served as the repository's tarball at any ref (default: the stand-in's
    /// git repository, imported from examples/rust-format, whose breakage that log shows).
    #[serde(default)]
    pub repo_dir: Option<String>,
    /// The repository's `.github/selfheal.yml` on its default branch (absent: 404).
    #[serde(default)]
    pub repo_config: Option<String>,
    /// Delay before answering a pull-request creation, to hold a worker between ref and PR.
    #[serde(default)]
    pub pulls_delay_ms: u64,
    /// Delay after a commit is made (Git Data API) and before the answer: two workers
    /// delivering one incident at once overlap there.
    #[serde(default)]
    pub commits_delay_ms: u64,
    /// Delay after a merge is made and before GitHub's answer to it: a worker killed meanwhile
    /// leaves a merge GitHub made and it never heard of.
    #[serde(default)]
    pub merge_answer_delay_ms: u64,
    /// The check runs GitHub reports on every commit (a test's stand-in for the CI), as
    /// `{"name", "status", "conclusion"}`. None by default: as on GitHub, a new commit has
    /// no check until a CI reports one, and a test says which.
    #[serde(default)]
    pub fix_checks: Option<Vec<Value>>,
    /// Commit statuses (older CI) on every commit, as
    /// `{"context", "state"}` (absent: none, as on most repositories).
    #[serde(default)]
    pub fix_statuses: Vec<Value>,
    /// The workflow runs GitHub lists for every commit, as
    /// `{"name", "status", "conclusion"}` (none by default, as for checks).
    #[serde(default)]
    pub fix_workflows: Option<Vec<Value>>,
    /// The runs `GET .../actions/workflows/{id}/runs` knows, oldest first, as
    /// `{"workflow_id", "head_branch", "event", "conclusion", "head_sha"}` and optionally
    /// `"head_repository"` (a fork's full name; the repository's own by default) and
    /// `"skipped_jobs"` (names of jobs a successful run skipped). Listed
    /// newest first and filtered by `branch`, `event`, `status` and `head_sha` as GitHub
    /// filters them; none by default.
    #[serde(default)]
    pub workflow_runs: Vec<Value>,
    /// Collaborator permissions by login (`admin`, `maintain`, `write`, `triage`, `read`; a
    /// custom role as `name/base`, e.g. `deployer/write`; `none`: 404); others: `read`.
    #[serde(default)]
    pub permissions: std::collections::BTreeMap<String, String>,
    /// Answer the next N installation requests with GitHub's primary rate limit (403,
    /// `x-ratelimit-remaining: 0`, `x-ratelimit-reset` a second ahead).
    #[serde(default)]
    pub rate_limit_next: u32,
    /// Answer the next N installation requests with a secondary rate limit (429,
    /// `retry-after: 1`).
    #[serde(default)]
    pub retry_after_next: u32,
    /// Answer the next N installation requests with a secondary rate limit GitHub sends no
    /// header for: a bare 403 whose message says so.
    #[serde(default)]
    pub secondary_limit_next: u32,
    /// GitHub's secondary limit on content-creating requests (80 a minute, GitHub says): a
    /// write (POST, PUT, PATCH, DELETE) beyond `max` of one installation within `window_ms`
    /// is refused with that bare 403, and is not made.
    #[serde(default)]
    pub write_limit: Option<WriteLimit>,
    /// Branch protection on every base branch (absent: none, GitHub's default).
    #[serde(default)]
    pub protection: Option<Protection>,
    /// Pull requests (by number) that have an approving review.
    #[serde(default)]
    pub approved_pulls: Vec<i64>,
    /// Make the next N writes that are not idempotent (issue comments, check runs, reruns),
    /// then answer 502 as if GitHub timed out after making them (a client that posts again
    /// blindly does everything twice).
    #[serde(default)]
    pub fail_after_write: u32,
    /// Answer the next N issue comments 502 without making them.
    #[serde(default)]
    pub fail_writes: u32,
    /// More jobs failing the same way, by name (a matrix's other legs, another workflow's
    /// job), listed after the failing job.
    #[serde(default)]
    pub more_failing_jobs: Vec<String>,
    /// Job logs GitHub no longer has, by job name: `410` (expired past the retention) or
    /// `404` (deleted, or never written).
    #[serde(default)]
    pub log_status: BTreeMap<String, u16>,
    /// The App's installations and the repositories (`owner/name`) each may reach (absent:
    /// installation 4242 with `octo-org/octo-repo`, the recorded failing run's).
    #[serde(default)]
    pub installations: Option<BTreeMap<i64, Vec<String>>>,
    /// Lifetime of the installation tokens issued (default an hour, as GitHub's).
    #[serde(default)]
    pub token_ttl_secs: Option<i64>,
    /// Where the pre-signed log URLs point (default: the stand-in itself). A dead address
    /// shows whether a failed download reveals the URL's signature.
    #[serde(default)]
    pub signed_url_base: Option<String>,
}

/// The installation the recorded failing run comes from, and its repository.
pub const INSTALLATION_ID: i64 = 4242;
pub const REPOSITORY: &str = "octo-org/octo-repo";

impl Knobs {
    pub fn installations(&self) -> BTreeMap<i64, Vec<String>> {
        self.installations
            .clone()
            .unwrap_or_else(|| BTreeMap::from([(INSTALLATION_ID, vec![REPOSITORY.to_string()])]))
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WriteLimit {
    pub max: u32,
    pub window_ms: u64,
}

/// The rules of a protected branch that decide whether a pull request into it may merge.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Protection {
    /// Check runs (by name) or commit statuses (by context) that must have succeeded on the
    /// head.
    #[serde(default)]
    pub required_checks: Vec<String>,
    /// An approving review is required.
    #[serde(default)]
    pub required_review: bool,
    /// "Require branches to be up to date before merging".
    #[serde(default)]
    pub strict: bool,
}
