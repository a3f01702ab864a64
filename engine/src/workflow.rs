//! The failing step as the CI ran it: read from the workflow files at the failing commit (its
//! whole `run:` script, `shell`, `working-directory`, the workflow, job and step `env`, and
//! matrix values inferred from the job's name), cross-checked against the log, whose
//! `##[group]Run …` header shows the script's first line as GitHub evaluated it. What the
//! sandbox cannot reproduce (secrets, services, other expressions, `uses:` actions, the
//! versions `actions/setup-*` chose) is said in the notes, never silently dropped.
//!
//! The workflow files are the repository's and hostile: what is read here only ever becomes a
//! script for the sandbox, a working directory inside the checkout, or a note.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use crate::sandbox::toolchain::{setup_action_language, Requested};

/// A workflow file bigger than this is not read.
const MAX_WORKFLOW_BYTES: u64 = 1 << 20;
const MAX_WORKFLOWS: usize = 100;

/// What the sandbox runs, and what it shows as the step's command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepCommand {
    /// The command as the log's `Run` header shows it: its first line.
    pub display: String,
    /// The shell script the sandbox runs.
    pub script: String,
    /// Where it came from and what could not be reproduced.
    pub source: Source,
    pub notes: Vec<String>,
    /// The toolchains the failing job's setup steps ask for (they choose the sandbox's
    /// image and are compared with its versions).
    #[serde(default)]
    pub toolchains: Vec<Requested>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "from")]
pub enum Source {
    /// Given by a person (`selfheal heal --cmd`).
    Given,
    /// Only the log's `Run` header: the workflow step was not found (see the notes).
    Log,
    /// The step of a workflow file at the failing commit.
    Workflow {
        file: String,
        job: String,
        step: String,
    },
}

impl StepCommand {
    /// A command run as it is, e.g. from `--cmd`.
    pub fn given(command: &str) -> StepCommand {
        StepCommand {
            display: first_line(command),
            script: command.to_string(),
            source: Source::Given,
            notes: Vec::new(),
            toolchains: Vec::new(),
        }
    }

    pub fn from_log(log_command: &str, notes: Vec<String>) -> StepCommand {
        StepCommand {
            display: log_command.to_string(),
            script: log_command.to_string(),
            source: Source::Log,
            notes,
            toolchains: Vec::new(),
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The workflow files of the checkout: regular files only, bounded, and no link followed on
/// the way (`.github` or `workflows` could point anywhere on the host).
fn workflow_files(repo: &Path) -> Vec<(String, String)> {
    let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if !is_dir(&repo.join(".github")) || !is_dir(&repo.join(".github/workflows")) {
        return Vec::new();
    }
    let dir = repo.join(".github/workflows");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let meta = std::fs::symlink_metadata(e.path()).ok()?;
            let yaml = name.ends_with(".yml") || name.ends_with(".yaml");
            (yaml && meta.is_file() && meta.len() <= MAX_WORKFLOW_BYTES)
                .then(|| {
                    Some((
                        format!(".github/workflows/{name}"),
                        std::fs::read_to_string(e.path()).ok()?,
                    ))
                })
                .flatten()
        })
        .take(MAX_WORKFLOWS)
        .collect();
    files.sort();
    files
}

/// The job's matrix values, read from its name as GitHub shows it (`test (3.12, ubuntu)`):
/// the values in parentheses, in the order of the matrix's keys.
fn matrix_values(job: &Value, job_name: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(name) = job_name else { return out };
    let Some(inner) = name
        .rfind(" (")
        .filter(|_| name.ends_with(')'))
        .map(|i| &name[i + 2..name.len() - 1])
    else {
        return out;
    };
    let keys: Vec<&str> = job["strategy"]["matrix"]
        .as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(Value::as_str)
                .filter(|k| *k != "include" && *k != "exclude")
                .collect()
        })
        .unwrap_or_default();
    let values: Vec<&str> = inner.split(", ").collect();
    if keys.len() == values.len() {
        for (k, v) in keys.into_iter().zip(values) {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

/// Does the job's name (as the jobs API gives it) name this job?
fn names_job(id: &str, job: &Value, job_name: &str) -> bool {
    let base = job_name
        .rfind(" (")
        .filter(|_| job_name.ends_with(')'))
        .map_or(job_name, |i| &job_name[..i]);
    match job["name"].as_str() {
        // A templated name (`test ${{ matrix.python }}`): its literal start must match.
        Some(name) if name.contains("${{") => {
            let literal = name.split("${{").next().unwrap_or_default().trim();
            !literal.is_empty() && job_name.starts_with(literal)
        }
        Some(name) => name == job_name || name == base,
        None => id == job_name || id == base,
    }
}

/// Replaces `${{ matrix.k }}` with the inferred values; `Err` names the first expression that
/// stays (a secret, a context the sandbox does not have).
fn substitute(text: &str, matrix: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            return Err(rest[start..].chars().take(60).collect());
        };
        let expr = rest[start + 3..start + end].trim();
        match expr.strip_prefix("matrix.").and_then(|k| matrix.get(k)) {
            Some(v) => out.push_str(v),
            None => return Err(format!("${{{{ {expr} }}}}")),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn valid_env_name(k: &str) -> bool {
    !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.starts_with(|c: char| c.is_ascii_digit())
}

/// A working directory inside the checkout, or why not.
fn working_directory(dir: &str) -> Result<String, String> {
    let d = dir.trim().trim_start_matches("./");
    if d.is_empty() || d == "." {
        return Ok(String::new());
    }
    if d.starts_with('/')
        || d.contains('\0')
        || d.split('/').any(|p| p == "..")
        || d.contains("${{")
    {
        return Err(format!(
            "working-directory {dir:?} is not a path inside the repository"
        ));
    }
    Ok(d.trim_end_matches('/').to_string())
}

/// How GitHub runs a `run:` step with this `shell:` on Linux (`{0}` is the script file).
fn shell_template(shell: Option<&str>) -> Result<String, String> {
    Ok(match shell.map(str::trim) {
        None => "bash -e {0}".into(),
        Some("bash") => "bash --noprofile --norc -eo pipefail {0}".into(),
        Some("sh") => "sh -e {0}".into(),
        Some("python") => "python3 {0}".into(),
        Some(s @ ("pwsh" | "powershell" | "cmd")) => {
            return Err(format!("shell {s} is not available in the sandbox"))
        }
        Some(custom) if custom.contains("{0}") => custom.to_string(),
        Some(custom) => format!("{custom} {{0}}"),
    })
}

/// Finds the step the log's `Run` header names in the checkout's workflows and builds its
/// script; falls back to the log's command, with the reason in the notes.
pub fn reproduce(repo: &Path, log_command: &str, job_name: Option<&str>) -> StepCommand {
    let files = workflow_files(repo);
    if files.is_empty() {
        return StepCommand::from_log(
            log_command,
            vec![
                "no workflow file in the checkout: the log's command (its first line) is run"
                    .into(),
            ],
        );
    }
    let mut unread = Vec::new();
    for (file, text) in &files {
        let doc: Value = match serde_yaml_ng::from_str(text) {
            Ok(d) => d,
            Err(e) => {
                unread.push(format!("{file} is not readable YAML ({e})"));
                continue;
            }
        };
        let Some(jobs) = doc["jobs"].as_mapping() else {
            continue;
        };
        for (id, job) in jobs {
            let id = id.as_str().unwrap_or_default();
            if job_name.is_some_and(|n| !names_job(id, job, n)) {
                continue;
            }
            let matrix = matrix_values(job, job_name);
            let steps = job["steps"].as_sequence().cloned().unwrap_or_default();
            for (index, step) in steps.iter().enumerate() {
                let Some(run) = step["run"].as_str() else {
                    continue;
                };
                let Ok(evaluated) = substitute(run, &matrix) else {
                    // The step is recognisable by its literal start, but not evaluable here.
                    let first = first_line(run);
                    let literal = first.split("${{").next().unwrap_or_default().trim_end();
                    if !literal.is_empty() && log_command.trim().starts_with(literal) {
                        return StepCommand::from_log(
                            log_command,
                            vec![format!(
                                "{file}: job {id}, step {}: its script uses expressions the sandbox cannot evaluate; the log's command (its first line) is run",
                                index + 1
                            )],
                        );
                    }
                    continue;
                };
                if first_line(&evaluated) != log_command.trim() {
                    continue;
                }
                return build(
                    file,
                    &doc,
                    id,
                    job,
                    &steps,
                    index,
                    &evaluated,
                    &matrix,
                    log_command,
                );
            }
        }
    }
    let mut notes = unread;
    notes.push(format!(
        "no `run:` step in the workflows at the failing commit{} starts with the log's command: the log's command (its first line) is run",
        job_name.map(|n| format!(" (job {n:?})")).unwrap_or_default()
    ));
    StepCommand::from_log(log_command, notes)
}

#[allow(clippy::too_many_arguments)]
fn build(
    file: &str,
    doc: &Value,
    id: &str,
    job: &Value,
    steps: &[Value],
    index: usize,
    run: &str,
    matrix: &BTreeMap<String, String>,
    log_command: &str,
) -> StepCommand {
    let step = &steps[index];
    let step_name = step["name"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("Run {}", first_line(run)));
    let mut notes = Vec::new();
    let mut toolchains = Vec::new();
    let fallback = |notes: Vec<String>| StepCommand::from_log(log_command, notes);

    let pick = |key: &str| {
        step[key]
            .as_str()
            .or_else(|| job["defaults"]["run"][key].as_str())
            .or_else(|| doc["defaults"]["run"][key].as_str())
    };
    let dir = match pick("working-directory").map(working_directory).transpose() {
        Ok(d) => d.unwrap_or_default(),
        Err(why) => {
            return fallback(vec![format!(
                "{file}: {why}; the log's command is run from the root"
            )])
        }
    };
    let template = match shell_template(pick("shell")) {
        Ok(t) => t,
        Err(why) => {
            return fallback(vec![format!(
                "{file}: {why}; the log's command is run with sh"
            )])
        }
    };

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for scope in [&doc["env"], &job["env"], &step["env"]] {
        for (k, v) in scope.as_mapping().into_iter().flatten() {
            let Some(k) = k.as_str() else { continue };
            if !valid_env_name(k) {
                notes.push(format!("env {k:?} is not a variable name: left out"));
                continue;
            }
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    notes.push(format!("env {k}: not a plain value, left out"));
                    continue;
                }
            };
            match substitute(&v, matrix) {
                Ok(v) => {
                    env.insert(k.to_string(), v);
                }
                Err(expr) if expr.contains("secrets.") => {
                    env.remove(k);
                    notes.push(format!(
                        "env {k}: a secret ({expr}), not available in the sandbox"
                    ));
                }
                Err(expr) => {
                    env.remove(k);
                    notes.push(format!(
                        "env {k}: {expr} is not evaluated in the sandbox, left out"
                    ));
                }
            }
        }
    }
    if let Some(services) = job["services"].as_mapping() {
        let names: Vec<&str> = services.keys().filter_map(Value::as_str).collect();
        notes.push(format!(
            "the job's services ({}) are not started in the sandbox",
            names.join(", ")
        ));
    }
    if !job["container"].is_null() {
        notes.push("the job's container image is not used: the sandbox runs its own".into());
    }
    for earlier in &steps[..index] {
        if let Some(setup) = earlier["run"].as_str() {
            // `npm ci`, `pip install -r …`: what the dependency fetch stands in for.
            notes.push(format!(
                "earlier step `{}` is not run: the fetched dependencies stand in for it",
                first_line(setup)
            ));
            continue;
        }
        let Some(uses) = earlier["uses"].as_str() else {
            continue;
        };
        if uses.starts_with("actions/checkout") {
            continue;
        }
        let with = &earlier["with"];
        if let Some(request) = setup_request(uses, with, matrix) {
            toolchains.push(request);
        }
        let version = setup_version(with)
            .map(|(k, v)| format!(" with {k} {v}"))
            .unwrap_or_default();
        notes.push(format!(
            "step `uses: {uses}`{version} is not run: the sandbox's own toolchain and the fetched dependencies stand in for it"
        ));
    }
    if !matrix.is_empty() {
        let values: Vec<String> = matrix.iter().map(|(k, v)| format!("{k}={v}")).collect();
        notes.push(format!(
            "matrix values from the job's name: {}",
            values.join(", ")
        ));
    }

    let mut script = String::new();
    if !dir.is_empty() {
        script.push_str(&format!("cd {} || exit 1\n", shell_quote(&dir)));
    }
    for (k, v) in &env {
        script.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    script.push_str(&format!(
        "printf '%s\\n' {} >/tmp/selfheal-step.sh\n",
        shell_quote(run)
    ));
    script.push_str(&template.replace("{0}", "/tmp/selfheal-step.sh"));
    StepCommand {
        display: first_line(run),
        script,
        source: Source::Workflow {
            file: file.to_string(),
            job: id.to_string(),
            step: step_name,
        },
        notes,
        toolchains,
    }
}

/// The version a setup step's `with:` names, and the key it is under (a YAML number as
/// written: `3.10` unquoted is 3.1, as GitHub reads it too; a list's first line).
fn setup_version(with: &Value) -> Option<(&'static str, String)> {
    [
        "python-version",
        "node-version",
        "go-version",
        "java-version",
        "toolchain",
    ]
    .into_iter()
    .find_map(|k| {
        let v = &with[k];
        v.as_str()
            .map(|s| s.lines().next().unwrap_or_default().trim().to_string())
            .or_else(|| v.as_f64().map(|f| f.to_string()))
            .or_else(|| v.as_u64().map(|n| n.to_string()))
            .map(|v| (k, v))
    })
}

/// The toolchain a setup step asks for: its language from the action, its version from
/// `with:` (a matrix expression resolved from the job's name where it can be), or from the
/// action's ref for `dtolnay/rust-toolchain@1.75`.
fn setup_request(uses: &str, with: &Value, matrix: &BTreeMap<String, String>) -> Option<Requested> {
    let (action, reference) = uses.split_once('@').unwrap_or((uses, ""));
    let language = setup_action_language(action)?;
    let from_with = setup_version(with).map(|(_, v)| v);
    let version = match from_with {
        Some(v) => {
            let expr = v.trim();
            match expr
                .strip_prefix("${{")
                .and_then(|e| e.strip_suffix("}}"))
                .map(str::trim)
                .and_then(|e| e.strip_prefix("matrix."))
            {
                Some(key) => matrix.get(key).cloned().unwrap_or(v),
                None => v,
            }
        }
        // `dtolnay/rust-toolchain@1.75`, `@stable`: the ref names the toolchain.
        None if action.eq_ignore_ascii_case("dtolnay/rust-toolchain") && reference != "master" => {
            reference.to_string()
        }
        None => return None,
    };
    (!version.is_empty() && version.len() <= 64).then(|| Requested {
        language,
        version,
        from: format!("`uses: {uses}`"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with(workflow: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".github/workflows")).unwrap();
        std::fs::write(dir.path().join(".github/workflows/ci.yml"), workflow).unwrap();
        dir
    }

    const CI: &str = r#"
name: CI
on: [push]
env:
  CARGO_TERM_COLOR: always
jobs:
  lint:
    runs-on: ubuntu-latest
    services:
      postgres:
        image: postgres:16
    defaults:
      run:
        working-directory: app
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - name: Check
        env:
          TOKEN: ${{ secrets.TOKEN }}
          LEVEL: strict
        run: |
          black --check .
          pytest -q
  test:
    name: test
    strategy:
      matrix:
        python: ["3.11", "3.12"]
        os: [ubuntu-latest]
    runs-on: ${{ matrix.os }}
    steps:
      - run: tox -e py${{ matrix.python }}
"#;

    #[test]
    fn the_whole_step_is_run_as_the_ci_ran_it() {
        let repo = repo_with(CI);
        let c = reproduce(repo.path(), "black --check .", Some("lint"));
        assert!(
            matches!(&c.source, Source::Workflow { job, step, .. } if job == "lint" && step == "Check"),
            "{c:?}"
        );
        assert_eq!(c.display, "black --check .");
        assert!(c.script.starts_with("cd 'app' || exit 1\n"), "{}", c.script);
        assert!(
            c.script
                .contains("export CARGO_TERM_COLOR='always'\nexport LEVEL='strict'\n"),
            "{}",
            c.script
        );
        assert!(!c.script.contains("TOKEN"), "{}", c.script);
        assert!(
            c.script.contains("pytest -q"),
            "the whole script, not its first line"
        );
        assert!(
            c.script.ends_with("bash -e /tmp/selfheal-step.sh"),
            "{}",
            c.script
        );
        let notes = c.notes.join("\n");
        assert!(notes.contains("env TOKEN: a secret"), "{notes}");
        assert!(notes.contains("services (postgres)"), "{notes}");
        assert!(
            notes.contains("actions/setup-python@v5` with python-version 3.12"),
            "{notes}"
        );
    }

    #[test]
    fn matrix_values_come_from_the_job_name() {
        let repo = repo_with(CI);
        let c = reproduce(
            repo.path(),
            "tox -e py3.12",
            Some("test (3.12, ubuntu-latest)"),
        );
        assert!(matches!(c.source, Source::Workflow { .. }), "{c:?}");
        assert!(c.script.contains("'tox -e py3.12'"), "{}", c.script);
        // Another matrix leg is another command: the log's header decides.
        let c = reproduce(
            repo.path(),
            "tox -e py3.12",
            Some("test (3.11, ubuntu-latest)"),
        );
        assert!(matches!(c.source, Source::Log), "{c:?}");
    }

    #[test]
    fn the_toolchains_the_job_sets_up_are_read_with_their_versions() {
        let repo = repo_with(CI);
        let c = reproduce(repo.path(), "black --check .", Some("lint"));
        assert_eq!(
            c.toolchains,
            vec![Requested {
                language: crate::sandbox::Language::Python,
                version: "3.12".into(),
                from: "`uses: actions/setup-python@v5`".into(),
            }]
        );
        let matrix = repo_with(
            r#"
jobs:
  test:
    strategy:
      matrix:
        node: [18, 20]
    steps:
      - uses: dtolnay/rust-toolchain@1.75
      - uses: actions/setup-node@v4
        with:
          node-version: ${{ matrix.node }}
      - uses: actions/setup-go@v5
      - run: npm test
"#,
        );
        let c = reproduce(matrix.path(), "npm test", Some("test (20)"));
        let got: Vec<(&str, &str)> = c
            .toolchains
            .iter()
            .map(|r| (r.language.as_str(), r.version.as_str()))
            .collect();
        // The matrix leg's value, not the expression; setup-go names no version.
        assert_eq!(got, vec![("rust", "1.75"), ("node", "20")]);
    }

    #[test]
    fn what_cannot_be_found_or_trusted_falls_back_to_the_log_and_says_why() {
        let repo = repo_with(CI);
        let c = reproduce(repo.path(), "make lint", None);
        assert!(matches!(c.source, Source::Log));
        assert_eq!(c.script, "make lint");
        assert!(c.notes[0].contains("no `run:` step"), "{:?}", c.notes);

        let escape = repo_with(
            "jobs:\n  a:\n    steps:\n      - run: make\n        working-directory: ../../etc\n",
        );
        let c = reproduce(escape.path(), "make", Some("a"));
        assert!(matches!(c.source, Source::Log), "{c:?}");
        assert!(
            c.notes[0].contains("not a path inside the repository"),
            "{:?}",
            c.notes
        );

        let none = tempfile::tempdir().unwrap();
        let c = reproduce(none.path(), "cargo test", None);
        assert!(matches!(c.source, Source::Log));
    }

    #[cfg(unix)]
    #[test]
    fn a_workflows_folder_that_is_a_link_is_not_followed() {
        let elsewhere = repo_with(CI);
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir(repo.path().join(".github")).unwrap();
        std::os::unix::fs::symlink(
            elsewhere.path().join(".github/workflows"),
            repo.path().join(".github/workflows"),
        )
        .unwrap();
        let c = reproduce(repo.path(), "black --check .", Some("lint"));
        assert!(matches!(c.source, Source::Log), "{c:?}");
        let linked = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            elsewhere.path().join(".github"),
            linked.path().join(".github"),
        )
        .unwrap();
        assert!(matches!(
            reproduce(linked.path(), "black --check .", Some("lint")).source,
            Source::Log
        ));
    }

    #[test]
    fn shells_are_run_the_way_github_runs_them() {
        assert_eq!(
            shell_template(Some("bash")).unwrap(),
            "bash --noprofile --norc -eo pipefail {0}"
        );
        assert_eq!(shell_template(Some("sh")).unwrap(), "sh -e {0}");
        assert_eq!(shell_template(Some("python")).unwrap(), "python3 {0}");
        assert!(shell_template(Some("pwsh")).is_err());
        assert_eq!(shell_template(Some("perl {0}")).unwrap(), "perl {0}");
    }
}
