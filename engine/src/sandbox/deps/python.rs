//! What a Python repository asks pip for: its requirements files, `pyproject.toml`'s
//! dependency lists and the formatter and linter revisions `.pre-commit-config.yaml` pins,
//! gathered into one requirements file of index requirements only.

use std::path::Path;

use super::read_input;
use crate::sandbox::SandboxError;

/// Requirements gathered from a Python repository, as one pip requirements file.
pub(super) struct PythonWanted {
    pub(super) requirements: Vec<String>,
    pub(super) inputs: Vec<&'static str>,
    /// Every requirement pins one exact version.
    pub(super) pinned: bool,
    pub(super) skipped: Vec<String>,
}

const PYTHON_INPUTS: [&str; 6] = [
    "requirements.txt",
    "requirements-dev.txt",
    "requirements-test.txt",
    "dev-requirements.txt",
    "pyproject.toml",
    ".pre-commit-config.yaml",
];

/// A requirement specifier pip can take from an index, with nothing that names a path, a URL,
/// an option or an editable install (each of which could build or run the repository's code).
/// pip reads options anywhere on a line (`attrs==1 --no-binary=:all:`), expands `${VAR}`,
/// joins `\` continuations and splits lines at characters Rust's `lines()` does not: only
/// plain ASCII from a small set passes, and no word may start with `-`.
fn is_index_requirement(line: &str) -> bool {
    let safe = |c: char| c.is_ascii_alphanumeric() || " ._-[],<>=!~;\"'()*+".contains(c);
    if !line.chars().all(safe) || line.split(' ').any(|word| word.starts_with('-')) {
        return false;
    }
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
        .unwrap_or(line.len());
    if name_end == 0 || !line.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return false;
    }
    let rest = line[name_end..].trim_start();
    let rest = match rest.strip_prefix('[') {
        Some(extras) => match extras.split_once(']') {
            Some((names, after))
                if names
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-, ".contains(c)) =>
            {
                after.trim_start()
            }
            _ => return false,
        },
        None => rest,
    };
    !rest.contains("://")
        && !rest.contains('@')
        && (rest.is_empty() || rest.starts_with(['<', '>', '=', '!', '~', ';']))
}

pub(super) fn requirements(repo: &Path) -> Result<PythonWanted, SandboxError> {
    let mut wanted = PythonWanted {
        requirements: Vec::new(),
        inputs: PYTHON_INPUTS.to_vec(),
        pinned: true,
        skipped: Vec::new(),
    };
    let add = |wanted: &mut PythonWanted, source: &str, line: &str| {
        let line = line.trim();
        if is_index_requirement(line) {
            let spec = line.split(';').next().unwrap_or(line);
            if !spec.contains("==") {
                wanted.pinned = false;
            }
            wanted.requirements.push(line.to_string());
        } else if !line.is_empty() {
            wanted.skipped.push(format!(
                "{source}: `{line}` (not a requirement from the index)"
            ));
        }
    };
    let mut has_requirements_file = false;
    for rel in &PYTHON_INPUTS[..4] {
        let Some(bytes) = read_input(repo, rel)? else {
            continue;
        };
        has_requirements_file = true;
        for raw in String::from_utf8_lossy(&bytes).lines() {
            let line = raw.split(" #").next().unwrap_or(raw);
            if line.trim_start().starts_with('#') {
                continue;
            }
            add(&mut wanted, rel, line);
        }
    }
    // Where requirements files exist they are the lock (pyproject.toml's ranges are what they
    // were resolved from): whether they pin every version says whether the fetch is locked.
    let locked_by_files = has_requirements_file.then_some(wanted.pinned);
    if let Some(bytes) = read_input(repo, "pyproject.toml")? {
        match toml::from_str::<toml::Table>(&String::from_utf8_lossy(&bytes)) {
            Ok(doc) => {
                let project = doc.get("project");
                let mut lists: Vec<&toml::Value> = Vec::new();
                if let Some(deps) = project.and_then(|p| p.get("dependencies")) {
                    lists.push(deps);
                }
                for table in [
                    project.and_then(|p| p.get("optional-dependencies")),
                    doc.get("dependency-groups"),
                ]
                .into_iter()
                .flatten()
                {
                    if let Some(groups) = table.as_table() {
                        lists.extend(groups.values());
                    }
                }
                for item in lists.iter().filter_map(|l| l.as_array()).flatten() {
                    match item.as_str() {
                        Some(line) => add(&mut wanted, "pyproject.toml", line),
                        None => wanted.skipped.push(format!(
                            "pyproject.toml: {item} (an include, not a requirement)"
                        )),
                    }
                }
            }
            Err(e) => wanted
                .skipped
                .push(format!("pyproject.toml: unreadable ({})", e.message())),
        }
    }
    if let Some(locked) = locked_by_files {
        wanted.pinned = locked;
    }
    // The formatters and linters a repository pins for pre-commit are the versions its CI
    // runs (pre-commit's own hook), so those are the versions the sandbox runs.
    if let Some(bytes) = read_input(repo, ".pre-commit-config.yaml")? {
        if let Ok(doc) = serde_yaml_ng::from_slice::<serde_yaml_ng::Value>(&bytes) {
            for hook_repo in doc["repos"].as_sequence().into_iter().flatten() {
                let url = hook_repo["repo"].as_str().unwrap_or_default();
                let rev = hook_repo["rev"].as_str().unwrap_or_default();
                let rev = rev.strip_prefix('v').unwrap_or(rev);
                let tool = match url.trim_end_matches(".git").rsplit('/').next() {
                    Some("black") | Some("black-pre-commit-mirror") => "black",
                    Some("ruff-pre-commit") => "ruff",
                    Some("flake8") => "flake8",
                    Some("isort") => "isort",
                    _ => continue,
                };
                let line = format!("{tool}=={rev}");
                if is_index_requirement(&line) {
                    wanted.requirements.push(line);
                }
            }
        }
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_index_requirements_are_fetched() {
        for ok in [
            "attrs==24.2.0",
            "black>=24",
            "requests[socks]==2.32.3",
            "pytest",
            "tomli; python_version < \"3.11\"",
        ] {
            assert!(is_index_requirement(ok), "{ok}");
        }
        for refused in [
            "-e .",
            ".",
            "./local/pkg",
            "-r other.txt",
            "--index-url http://evil",
            "pkg @ https://example.com/pkg.tar.gz",
            "git+https://github.com/x/y",
            "pkg @ file:///etc",
            "/abs/path",
            "attrs==24.2.0 --no-binary=:all:",
            "attrs==24.2.0\r.",
            "attrs==1\u{2028}.",
            "black==24.8.0\n-e .",
            "pkg==${VERSION}",
            "pkg==1 \\",
            "pkg; python_version > '3' --index-url=http://evil",
        ] {
            assert!(!is_index_requirement(refused), "{refused}");
        }
    }
}
