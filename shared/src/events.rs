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
    /// What triggered the run: `push`, `pull_request`, `merge_group`, `schedule`...
    #[serde(default)]
    pub event: Option<String>,
    /// Where the head commit lives. GitHub sends `null` when a fork was deleted; a missing
    /// field is treated the same way, as a head selfheal cannot place.
    #[serde(default)]
    pub head_repository: Option<HeadRepository>,
    // Read only to see a revert (`reverted_commits`): a value of another shape is taken as
    // absent, so it can never make a failed run's delivery a bad request.
    /// The commit the run ran on, as pushed: its message says whether it reverts another.
    #[serde(default, deserialize_with = "lenient")]
    pub head_commit: Option<HeadCommit>,
    /// When GitHub created the run: for a push, moments after it.
    #[serde(default, deserialize_with = "lenient")]
    pub created_at: Option<DateTime<Utc>>,
    /// Who pushed (or otherwise started) the run.
    #[serde(default, deserialize_with = "lenient")]
    pub actor: Option<Account>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HeadCommit {
    pub message: String,
}

/// `T` when the value is one, else `None`.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

#[derive(Debug, Clone, Deserialize)]
pub struct HeadRepository {
    pub id: i64,
    #[serde(default)]
    pub full_name: Option<String>,
}

/// The events whose runs selfheal heals: code the repository's own people pushed or ran.
/// Everything else (`pull_request_target`, comments, reviews, issues, other runs…) is started
/// by someone else's action and may feed the workflow code that is not the repository's.
const HEALED_EVENTS: [&str; 5] = [
    "push",
    "pull_request",
    "schedule",
    "workflow_dispatch",
    "repository_dispatch",
];

/// What `git revert` writes before the reverted commit's id.
const REVERTS: &str = "This reverts commit ";

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

    /// The commits a pushed run's head commit reverts, as `git revert` writes it ("This
    /// reverts commit <sha>.", also for a merge commit's revert). Only a push's: a pull
    /// request's run has reverted nothing on its branch yet. At most 16, each a full object id
    /// (40 or 64 hex digits), so a hostile message costs a bounded lookup.
    pub fn reverted_commits(&self) -> Vec<&str> {
        let wr = &self.workflow_run;
        let (Some("push"), Some(commit)) = (wr.event.as_deref(), wr.head_commit.as_ref()) else {
            return Vec::new();
        };
        commit
            .message
            .match_indices(REVERTS)
            .filter_map(|(at, _)| {
                let rest = &commit.message[at + REVERTS.len()..];
                let hex = rest
                    .bytes()
                    .take_while(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
                    .count();
                matches!(hex, 40 | 64).then(|| &rest[..hex])
            })
            .take(16)
            .collect()
    }

    /// The repository the head commit lives in (0 when GitHub does not say).
    pub fn head_repository_id(&self) -> i64 {
        self.workflow_run
            .head_repository
            .as_ref()
            .map_or(0, |r| r.id)
    }

    /// Why selfheal must never act on this run, if it must not: its code is not the
    /// repository's own branch. A fork's commit pushed to the base repository would run the
    /// fork's code with the base repository's secrets, and a merge-queue or tag run has no
    /// branch to fix. Checked before anything else, for green runs as well as red ones.
    pub fn untrusted_reason(&self) -> Option<String> {
        let wr = &self.workflow_run;
        let repo = &self.repository;
        match &wr.head_repository {
            None => {
                return Some(
                    "the run's head repository is unknown (a deleted fork?): selfheal heals only the repository's own branches".into(),
                )
            }
            Some(head) if head.id != repo.id => {
                return Some(format!(
                    "the run's head is in the fork {} (repository id {}), not in {}: selfheal never pushes a fork's code to the repository",
                    head.full_name.as_deref().unwrap_or("?"),
                    head.id,
                    repo.full_name
                ))
            }
            Some(_) => {}
        }
        // `pull_requests` is no guide: GitHub lists there any open pull request whose head
        // matches the run's, not the one that triggered it. `head_repository` places the code.
        if let Some(event) = wr
            .event
            .as_deref()
            .filter(|e| !HEALED_EVENTS.contains(e) && *e != "merge_group")
        {
            return Some(format!(
                "a {event} run: started by someone else's action, its log may come from code that is not the repository's"
            ));
        }
        if wr.event.as_deref() == Some("merge_group")
            || self.branch().starts_with("gh-readonly-queue/")
        {
            return Some(
                "a merge-queue run: its temporary branch is GitHub's, and the pull requests in it are healed on their own branches".into(),
            );
        }
        match wr.head_branch.as_deref() {
            None | Some("") => Some("the run has no head branch (a tag or a detached ref)".into()),
            Some(b) if b.starts_with("refs/tags/") || wr.event.as_deref() == Some("release") => {
                Some(format!(
                    "the run is for the tag or release {b}, not a branch"
                ))
            }
            Some(_) => None,
        }
    }
}

/// An `issue_comment` delivery: the place `/selfheal …` commands come from.
#[derive(Debug, Clone, Deserialize)]
pub struct IssueCommentEvent {
    pub action: String,
    pub issue: Issue,
    pub comment: Comment,
    pub repository: Repository,
    pub installation: Option<Installation>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Issue {
    pub number: i32,
    /// Present when the issue is a pull request.
    #[serde(default)]
    pub pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Comment {
    pub id: i64,
    /// When the comment was written (an approval covers what its author could see then).
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub body: Option<String>,
    pub user: User,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub login: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// What a `/selfheal` comment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandRequest {
    Command(&'static str),
    /// `/selfheal <word>` with a word selfheal does not know.
    Unknown(String),
}

pub const COMMANDS: [&str; 4] = ["retry", "explain", "stop", "approve"];

impl IssueCommentEvent {
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        parse_payload("issue_comment", body)
    }

    /// The command in a newly created comment by a person, if its first line is one. Bots
    /// (selfheal among them) are never obeyed, so selfheal cannot command itself.
    pub fn command(&self) -> Option<CommandRequest> {
        if self.action != "created" || self.comment.user.kind.as_deref() == Some("Bot") {
            return None;
        }
        let body = self.comment.body.as_deref()?;
        let first = body.lines().next()?.trim();
        let rest = first.strip_prefix("/selfheal")?;
        if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
            return None;
        }
        let word = rest
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        Some(
            COMMANDS
                .into_iter()
                .find(|c| *c == word)
                .map(CommandRequest::Command)
                .unwrap_or(CommandRequest::Unknown(word)),
        )
    }
}

/// A `pull_request` delivery: selfheal watches its own PRs being closed or merged by people.
#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestEvent {
    pub action: String,
    pub pull_request: PullRequest,
    pub repository: Repository,
    pub sender: User,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PullRequest {
    pub number: i32,
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(default)]
    pub merge_commit_sha: Option<String>,
    #[serde(default)]
    pub merged_by: Option<User>,
    /// When GitHub merged it.
    #[serde(default)]
    pub merged_at: Option<chrono::DateTime<chrono::Utc>>,
    pub head: Ref,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Ref {
    #[serde(rename = "ref")]
    pub name: String,
}

impl PullRequestEvent {
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        parse_payload("pull_request", body)
    }
}

/// Parses a payload and names the offending field (`workflow_run.head_sha: missing field`).
pub fn parse_payload<T: for<'de> Deserialize<'de>>(
    event: &str,
    body: &[u8],
) -> Result<T, PayloadError> {
    // Parsed plainly first: tracking the path through every field of a 19 KB payload costs a
    // good part of ingest's time, and is needed only to say where a bad payload is bad.
    let plain = match serde_json::from_slice(body) {
        Ok(parsed) => return Ok(parsed),
        Err(e) => e,
    };
    let de = &mut serde_json::Deserializer::from_slice(body);
    let message = match serde_path_to_error::deserialize::<_, T>(de) {
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                format!("malformed JSON: {inner}")
            } else if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            }
        }
        // Only the plain parse looks past the value (trailing characters).
        Ok(_) => format!("malformed JSON: {plain}"),
    };
    Err(PayloadError {
        event: event.to_string(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../fixtures/github-webhooks/workflow_run/{name}",
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
    fn a_pushed_revert_names_the_commits_git_revert_wrote() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixture("completed.payload.json")).unwrap();
        let (a, b) = ("a".repeat(40), "0123456789abcdef".repeat(4));
        let reverted = |v: &serde_json::Value| {
            let ev = WorkflowRunEvent::parse(v.to_string().as_bytes()).unwrap();
            ev.reverted_commits()
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert!(
            reverted(&v).is_empty(),
            "the recorded commit reverts nothing"
        );
        for (message, want) in [
            (
                format!("Revert \"x\"\n\nThis reverts commit {a}."),
                vec![a.clone()],
            ),
            // A merge commit's revert, and a squash of two reverts.
            (
                format!(
                    "Revert \"Merge\"\n\nThis reverts commit {a}, reversing\nchanges made to {b}."
                ),
                vec![a.clone()],
            ),
            (
                format!("This reverts commit {a}.\nThis reverts commit {b}."),
                vec![a.clone(), b.clone()],
            ),
            // Not a whole object id, upper case, or merely mentioned.
            (format!("This reverts commit {}.", &a[..39]), vec![]),
            (format!("This reverts commit {a}0."), vec![]),
            (format!("This reverts commit {}.", a.to_uppercase()), vec![]),
            (format!("Follows up on {a}."), vec![]),
        ] {
            v["workflow_run"]["event"] = "push".into();
            v["workflow_run"]["head_commit"]["message"] = message.clone().into();
            assert_eq!(reverted(&v), want, "{message}");
            // Only a push has reverted anything on its branch.
            v["workflow_run"]["event"] = "pull_request".into();
            assert!(reverted(&v).is_empty(), "{message}");
        }
        v["workflow_run"]["event"] = "push".into();
        v["workflow_run"]["head_commit"]["message"] =
            format!("This reverts commit {a}.\n").repeat(100).into();
        assert_eq!(reverted(&v).len(), 16, "bounded");
        // Fields read only for this, in another shape than GitHub's: no revert, no error.
        for (field, odd) in [
            ("head_commit", serde_json::json!({"message": null})),
            ("head_commit", serde_json::json!("x")),
            ("created_at", serde_json::json!("yesterday")),
            ("actor", serde_json::json!({"id": 1})),
        ] {
            let mut v = v.clone();
            v["workflow_run"][field] = odd;
            let ev = WorkflowRunEvent::parse(v.to_string().as_bytes()).unwrap();
            assert!(field != "head_commit" || ev.reverted_commits().is_empty());
        }
    }

    #[test]
    fn reads_commands_from_recorded_comments() {
        let path = format!(
            "{}/../fixtures/github-webhooks/issue_comment/created.with-installation.payload.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let ev = IssueCommentEvent::parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(ev.command(), None, "an ordinary comment is no command");
        for (body, want) in [
            ("/selfheal stop", Some(CommandRequest::Command("stop"))),
            (
                "/selfheal  Retry please\nthanks",
                Some(CommandRequest::Command("retry")),
            ),
            (
                "/selfheal frobnicate",
                Some(CommandRequest::Unknown("frobnicate".into())),
            ),
            ("/selfhealer stop", None),
            ("please /selfheal stop", None),
        ] {
            v["comment"]["body"] = body.into();
            let ev = IssueCommentEvent::parse(v.to_string().as_bytes()).unwrap();
            assert_eq!(ev.command(), want, "{body}");
        }
        v["comment"]["body"] = "/selfheal stop".into();
        v["comment"]["user"]["type"] = "Bot".into();
        let ev = IssueCommentEvent::parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(ev.command(), None, "bots are not obeyed");
    }

    #[test]
    fn recorded_runs_of_the_repositorys_own_branches_are_trusted() {
        for name in [
            "completed.payload.json",
            // Lists a pull request whose head is in another repository: GitHub lists open PRs
            // matching the run's head there, which says nothing about where the code lives.
            "completed.with-pull-requests.payload.json",
        ] {
            let ev = WorkflowRunEvent::parse(&fixture(name)).unwrap();
            assert_eq!(ev.untrusted_reason(), None, "{name}");
        }
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixture("completed.with-pull-requests.payload.json")).unwrap();
        // Null entries (the webhook schema allows them) parse.
        v["workflow_run"]["pull_requests"] = serde_json::json!([null]);
        assert!(WorkflowRunEvent::parse(v.to_string().as_bytes()).is_ok());
        v["workflow_run"]["head_repository"]["id"] = 1.into();
        let ev = WorkflowRunEvent::parse(v.to_string().as_bytes()).unwrap();
        assert!(ev.untrusted_reason().unwrap().contains("fork"));
        v["workflow_run"]["head_repository"]["id"] = v["repository"]["id"].clone();
        v["workflow_run"]["event"] = "pull_request_target".into();
        let ev = WorkflowRunEvent::parse(v.to_string().as_bytes()).unwrap();
        assert!(ev
            .untrusted_reason()
            .unwrap()
            .contains("pull_request_target"));
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

/// The events selfheal parses, by their `X-GitHub-Event` header (`ping` is answered, not
/// parsed).
pub const HANDLED: [&str; 8] = [
    "workflow_run",
    "installation",
    "installation_repositories",
    "issue_comment",
    "pull_request",
    "check_suite",
    "check_run",
    "status",
];

/// A `check_suite` delivery: external CI (an app other than GitHub Actions) reporting on a
/// commit through the Checks API. selfheal reads it for the commits it pushed.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckSuiteEvent {
    pub action: String,
    pub check_suite: CheckSuite,
    pub repository: Repository,
    #[serde(default)]
    pub installation: Option<Installation>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckSuite {
    pub id: i64,
    #[serde(default)]
    pub head_branch: Option<String>,
    pub head_sha: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    pub app: CheckSuiteApp,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckSuiteApp {
    pub id: i64,
    #[serde(default)]
    pub slug: Option<String>,
}

impl CheckSuiteEvent {
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        parse_payload("check_suite", body)
    }

    /// GitHub Actions' own suites: their workflow runs are delivered as `workflow_run`.
    pub fn is_actions(&self) -> bool {
        is_actions(&self.check_suite.app)
    }
}

/// A `check_run` delivery: one check of an external CI on a commit. Apps with `checks: write`
/// receive these whether they subscribe or not; selfheal reads completed ones on its commits.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckRunEvent {
    pub action: String,
    pub check_run: CheckRun,
    pub repository: Repository,
    #[serde(default)]
    pub installation: Option<Installation>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckRun {
    pub id: i64,
    pub head_sha: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    pub app: CheckSuiteApp,
    pub check_suite: CheckRunSuite,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckRunSuite {
    #[serde(default)]
    pub head_branch: Option<String>,
}

impl CheckRunEvent {
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        parse_payload("check_run", body)
    }
}

/// A `status` delivery: a commit status (the older API that CI such as Jenkins or Travis
/// reports through), named by its `context` rather than by an app.
#[derive(Debug, Clone, Deserialize)]
pub struct StatusEvent {
    pub id: i64,
    pub sha: String,
    pub state: String,
    pub context: String,
    /// Branches that contain this commit (at most ten, GitHub says; not only those whose
    /// head it is).
    #[serde(default)]
    pub branches: Vec<StatusBranch>,
    /// Who posted the status.
    pub sender: User,
    pub repository: Repository,
    #[serde(default)]
    pub installation: Option<Installation>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StatusBranch {
    pub name: String,
}

impl StatusEvent {
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        parse_payload("status", body)
    }
}

/// GitHub Actions' own checks: its workflow runs are delivered as `workflow_run`.
pub fn is_actions(app: &CheckSuiteApp) -> bool {
    app.slug.as_deref() == Some("github-actions") || app.id == 15368
}
