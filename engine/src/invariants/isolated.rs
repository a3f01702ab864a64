//! A repository's policy evaluated in a process of its own. Rego's time limit is checked
//! between the interpreter's steps, and one builtin call (`numbers.range` over billions, a
//! `concat` of a huge array) can allocate past any memory before it: in the worker, an
//! allocation that fails aborts the process, and the job would then kill every worker that
//! takes it. Here it ends a child with limits on its address space and CPU, killed at a wall
//! clock deadline, and the policy denies with that reason.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One policy to evaluate over one input (`check`'s serialised [`super::Change`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub name: String,
    pub policy: String,
    pub package: String,
    pub input: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Denials(Vec<String>),
    Error(String),
}

/// How a repository's policies are evaluated.
pub trait Evaluator: Send + Sync {
    fn denials(&self, request: &Request) -> Result<Vec<String>, String>;
}

/// In this process: for tests, and for the child itself ([`serve`]).
pub struct InProcess;

impl Evaluator for InProcess {
    fn denials(&self, r: &Request) -> Result<Vec<String>, String> {
        super::denials_of(&r.name, &r.policy, &r.package, &r.input, true)
    }
}

/// In a child, `program policy-eval` (the selfheal binary: [`serve`] answers there).
pub struct Isolated {
    pub program: PathBuf,
}

/// The child's address space: the engine, one policy and one input fit many times over.
const MEMORY_BYTES: u64 = 1 << 30;
/// CPU seconds, and the wall clock, one evaluation may take (Rego's own limit is 2 s).
const CPU_SECONDS: u64 = 5;
const DEADLINE: Duration = Duration::from_secs(10);
/// What the child may answer.
const ANSWER_BYTES: u64 = 4 << 20;

impl Evaluator for Isolated {
    fn denials(&self, request: &Request) -> Result<Vec<String>, String> {
        let mut command = Command::new(&self.program);
        command
            .arg("policy-eval")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                for (resource, limit) in [
                    (libc::RLIMIT_AS, MEMORY_BYTES),
                    (libc::RLIMIT_CPU, CPU_SECONDS),
                ] {
                    let cap = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(resource, &cap) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("the policy evaluator did not start: {e}"))?;
        let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        let mut stdin = child.stdin.take().ok_or("no stdin to the evaluator")?;
        // Written from a thread: a child that stops reading must not block this one.
        let writer = std::thread::spawn(move || stdin.write_all(&body));
        let mut stdout = child.stdout.take().ok_or("no stdout from the evaluator")?;
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = (&mut stdout).take(ANSWER_BYTES).read_to_end(&mut out);
            out
        });
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() > DEADLINE => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "its evaluation ran past {} s and was stopped",
                        DEADLINE.as_secs()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("the policy evaluator is lost: {e}")),
            }
        };
        let _ = writer.join();
        let out = reader.join().unwrap_or_default();
        if !status.success() {
            use std::os::unix::process::ExitStatusExt;
            return Err(match status.signal() {
                Some(signal) => format!(
                    "its evaluation was ended by signal {signal} (past its memory or CPU limit)"
                ),
                None => format!("its evaluation failed ({status})"),
            });
        }
        match serde_json::from_slice::<Answer>(&out) {
            Ok(Answer::Denials(d)) => Ok(d),
            Ok(Answer::Error(e)) => Err(e),
            Err(e) => Err(format!("the evaluator's answer is unreadable: {e}")),
        }
    }
}

/// The child's side (`selfheal policy-eval`): one request on stdin, one answer on stdout.
pub fn serve(input: &mut impl Read, output: &mut impl Write) -> std::io::Result<()> {
    let mut body = Vec::new();
    input.read_to_end(&mut body)?;
    let answer = match serde_json::from_slice::<Request>(&body) {
        Ok(request) => match InProcess.denials(&request) {
            Ok(d) => Answer::Denials(d),
            Err(e) => Answer::Error(e),
        },
        Err(e) => Answer::Error(format!("unreadable request: {e}")),
    };
    serde_json::to_writer(&mut *output, &answer)?;
    output.flush()
}
