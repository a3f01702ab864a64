//! Failures of the machine or of dependency resolution, found by message rather than by a
//! tool's format: they mean the same whichever tool printed them.

use std::sync::LazyLock;

use regex::Regex;

use super::{finding, re, Finding};
use crate::diagnose::log::FailedStep;
use crate::diagnose::Class;

/// (pattern, what it means) for failures of the machine rather than the code.
static INFRA: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"(?i)failed to resolve address|could not resolve host|unknown host|name or service not known|temporary failure in name resolution|getaddrinfo (?:EAI_AGAIN|ENOTFOUND)", "network: DNS failure"),
        (r"(?i)connection timed out|operation timed out|ETIMEDOUT|ECONNRESET|network failure seems to have happened|TLS handshake timeout", "network: timeout"),
        // Not "connection refused": an integration test whose server did not start prints it.
        (r"(?i)network is unreachable", "network: unreachable"),
        (r"(?i)the runner has received a shutdown signal|lost communication with the server|the hosted runner encountered an error|runner.*was lost", "runner lost"),
        (r"(?i)no space left on device|ENOSPC|disk quota exceeded", "disk full"),
        (r"(?i)out of memory|oom-?kill|killed signal terminated program|signal: 9, SIGKILL|exit code 137", "out of memory"),
        (r"(?i)api rate limit exceeded|429 too many requests|toomanyrequests|secondary rate limit", "rate limited"),
        (r"(?i)the job running on runner .* has exceeded the maximum execution time|the operation was canceled", "timed out"),
    ]
    .into_iter()
    .map(|(p, m)| (re(p), m))
    .collect()
});

pub fn infra(step: &FailedStep) -> Option<Finding> {
    by_message(step, &INFRA, Class::Infra)
}

/// The first line matching one of `patterns` names the failure; every matching line (up to
/// four) explains it, with the tool's own detail under it (pip's conflict, Composer's
/// problems).
fn by_message(
    step: &FailedStep,
    patterns: &[(Regex, &'static str)],
    class: Class,
) -> Option<Finding> {
    let matches = |l: &str| patterns.iter().find(|(re, _)| re.is_match(l));
    let (at, what) = step
        .lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| matches(l).map(|(_, what)| (i, *what)))?;
    let mut explains: Vec<usize> = (at..step.lines.len())
        .filter(|&i| matches(&step.lines[i]).is_some())
        .take(4)
        .collect();
    // pip explains a conflict in an indented paragraph under this line.
    if let Some(cause) = step
        .lines
        .iter()
        .position(|l| l.trim() == "The conflict is caused by:")
    {
        explains.extend(
            (cause + 1..step.lines.len())
                .take(6)
                .take_while(|&i| step.lines[i].starts_with(' ')),
        );
    }
    // Composer numbers its problems (`  Problem 1`) and says each in the `- ` lines under it.
    let composer = what.starts_with("composer:");
    for (i, line) in step.lines.iter().enumerate().skip(at) {
        if !composer || explains.len() >= 10 {
            break;
        }
        let is_problem = line
            .trim()
            .strip_prefix("Problem ")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_problem {
            explains.extend(
                (i + 1..step.lines.len())
                    .take(4)
                    .take_while(|&j| step.lines[j].trim_start().starts_with("- ")),
            );
        }
    }
    Some(Finding {
        explains,
        ..finding(class, &tool_of(step), at, what)
    })
}

static DEPENDENCY: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"npm (?:ERR!|error) code ERESOLVE|ERESOLVE unable to resolve dependency tree|ERESOLVE could not resolve", "npm: ERESOLVE"),
        (r"can only install packages when your package\.json and package-lock\.json .*are in sync|lockfile .*(?:out of date|needs to be updated)|ERR_PNPM_OUTDATED_LOCKFILE|specifiers in the lockfile .* don't match specs|^npm (?:ERR!|error) Missing: .+ from lock file", "lockfile out of date"),
        (r"(?:cannot update the lock file .* because --locked was passed|the lock file .* needs to be updated but --locked was passed)", "Cargo.lock out of date"),
        (r"failed to select a version for|no matching package named|failed to select a version for the requirement", "cargo: resolution failed"),
        (r"ResolutionImpossible|Could not find a version that satisfies the requirement|No matching distribution found for|conflicting dependencies", "pip: resolution failed"),
        (r"Your requirements could not be resolved to an installable set of packages|Your lock file does not contain a compatible set of packages", "composer: resolution failed"),
        (r"go: (?:updates to go\.mod needed|missing go\.sum entry)", "go.mod/go.sum out of date"),
    ]
    .into_iter()
    .map(|(p, m)| (re(p), m))
    .collect()
});

pub fn dependency(step: &FailedStep) -> Option<Finding> {
    by_message(step, &DEPENDENCY, Class::Dependency)
}

/// The program the failed step ran (`cargo`, `npm`, `pip`, …), for classes found by
/// message rather than by a tool's format: the last command of a chain (`. venv/bin/activate
/// && pip install …` ran pip), past environment assignments and launchers.
fn tool_of(step: &FailedStep) -> String {
    let command = step.command.as_deref().unwrap_or("");
    let last = command
        .split(['&', ';', '|'])
        .map(str::trim)
        .rfind(|part| !part.is_empty())
        .unwrap_or("");
    let mut words = last
        .split_whitespace()
        .filter(|w| !w.contains('='))
        .skip_while(|w| matches!(*w, "sudo" | "env" | "time" | "exec" | "." | "source"));
    let tool = match words.next() {
        Some("npx") | Some("python3") | Some("python") | Some("bundle") | Some("poetry")
        | Some("uv") => {
            let tool = words
                .find(|w| !w.starts_with('-') && !matches!(*w, "exec" | "run"))
                .unwrap_or("unknown");
            // `npx pnpm@9.14.2`: the package without its version (`@scope/name` keeps its @).
            match tool.rsplit_once('@') {
                Some((name, _)) if !name.is_empty() => name.to_string(),
                _ => tool.to_string(),
            }
        }
        Some(w) => w.rsplit('/').next().unwrap_or(w).to_string(),
        None => "unknown".to_string(),
    };
    // The command is the log's text: a tool's name is a word, never markdown or a mention.
    let word = tool.len() <= 40
        && tool.starts_with(|c: char| c.is_ascii_alphanumeric())
        && tool
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'));
    if word {
        tool
    } else {
        "unknown".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::tool_of;
    use crate::diagnose::log::FailedStep;

    #[test]
    fn a_tool_named_by_the_log_is_a_plain_word() {
        let tool = |command: &str| {
            tool_of(&FailedStep {
                command: Some(command.to_string()),
                ..FailedStep::default()
            })
        };
        assert_eq!(tool(". .venv/bin/activate && pip install -r r.txt"), "pip");
        assert_eq!(tool("CI=1 npx -y pnpm@9.14.2 install"), "pnpm");
        assert_eq!(tool("python3 -m tox -q"), "tox");
        assert_eq!(tool("/usr/bin/make -j2"), "make");
        for hostile in [
            "npx [fix](https://evil.example)",
            "npx ![](https://t.example/x.png)",
            "make && @alice",
            "npx @org/team",
            "<img src=x>",
            "-",
        ] {
            assert_eq!(tool(hostile), "unknown", "{hostile}");
        }
    }
}
