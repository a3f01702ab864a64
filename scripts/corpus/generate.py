#!/usr/bin/env python3
"""Regenerates the diagnosis corpus in fixtures/corpus/: real failing runs of real tools.

Each case is a small project with real dependencies and lockfiles where its ecosystem has
them (installed from PyPI, the npm registry or crates.io; toolchains from Debian's
packages), a few setup commands that succeed and one command that fails the way projects
fail. The output of every command is recorded as the tools printed it and laid out as the
named CI system lays out a job log (GitHub Actions, GitLab, Jenkins, CircleCI, Travis,
Buildkite: the layouts follow each system's documented log format; no log here was copied
from a public CI run). The project's directory is renamed to that CI's checkout directory.

The labels (fixtures/corpus/labels.json) were written by hand by reading each log: the
class, the tool, the culprit and the lines that say why the build failed. This script never
writes them; regenerating a log means checking its labels again.

Usage: python3 scripts/corpus/generate.py [--green] [case-name ...]   (needs network to the
registries and the Debian packages listed in scripts/corpus/README.md)
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from cases import CASES  # noqa: E402  (beside this file)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "corpus"

WORKSPACE = {
    "github": "/home/runner/work/widgets/widgets",
    "gitlab": "/builds/acme/widgets",
    "jenkins": "/var/lib/jenkins/workspace/widgets",
    "circleci": "/home/circleci/project",
    "travis": "/home/travis/build/acme/widgets",
    "buildkite": "/var/lib/buildkite-agent/builds/agent-1/acme/widgets",
}

# A fixed clock: the logs are reproducible apart from the tools' own timings.
T0 = 1795000000


def run(cmd, cwd, env, shell=("bash", "-c")):
    p = subprocess.run(
        [*shell, cmd],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=900,
    )
    return p.returncode, p.stdout.decode("utf-8", "replace")


def iso(i):
    s = T0 + i
    import datetime

    return datetime.datetime.fromtimestamp(s, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%f"
    ) + "0Z"


def lay_out(ci, steps, code, after_script=None):
    """steps: [(command, output)]; the last one failed with `code`. after_script: commands
    the CI runs after the failure (GitLab's after_script, Jenkins' post, Travis'
    after_failure) with their output."""
    out = []
    n = [0]

    def line(s=""):
        n[0] += 1
        out.append(s)

    def body(text):
        for l in text.splitlines():
            line(l)

    if ci == "github":
        for cmd, text in steps:
            out.append(f"{iso(len(out))} ##[group]Run {cmd.splitlines()[0]}")
            for c in cmd.splitlines():
                out.append(f"{iso(len(out))} {c}")
            out.append(f"{iso(len(out))} shell: /usr/bin/bash -e {{0}}")
            out.append(f"{iso(len(out))} ##[endgroup]")
            for l in text.splitlines():
                out.append(f"{iso(len(out))} {l}")
        if code:
            out.append(f"{iso(len(out))} ##[error]Process completed with exit code {code}.")
    elif ci == "gitlab":
        line("Running with gitlab-runner 17.5.3 (12030cf4)")
        line("  on docker-runner-1 t3_Xk2pQ, system ID: s_7f2c1e0a9b8d")
        line(f"section_start:{T0}:prepare_executor\r\x1b[0K\x1b[0K\x1b[36;1mPreparing the \"docker\" executor\x1b[0;m\x1b[0;m")
        line("\x1b[0KUsing Docker executor with image debian:bookworm ...\x1b[0;m")
        line(f"section_end:{T0 + 2}:prepare_executor\r\x1b[0K")
        line(f"section_start:{T0 + 2}:get_sources\r\x1b[0K\x1b[0K\x1b[36;1mGetting source from Git repository\x1b[0;m\x1b[0;m")
        line("\x1b[32;1mFetching changes with git depth set to 20...\x1b[0;m")
        line("\x1b[32;1mChecking out 4f2a91c0 as detached HEAD (ref is main)...\x1b[0;m")
        line(f"section_end:{T0 + 4}:get_sources\r\x1b[0K")
        line(f"section_start:{T0 + 4}:step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting \"step_script\" stage of the job script\x1b[0;m\x1b[0;m")
        for cmd, text in steps:
            line(f"\x1b[32;1m$ {cmd}\x1b[0;m")
            body(text)
        # gitlab-runner writes no newline after `section_end:…\r ESC[0K`: the next section's
        # header shares the physical line (helpers/build_section.go).
        after = after_script or []
        if after:
            line(f"section_end:{T0 + 60}:step_script\r\x1b[0Ksection_start:{T0 + 60}:after_script\r\x1b[0K\x1b[0K\x1b[36;1mRunning after_script\x1b[0;m\x1b[0;m")
            for cmd, text in after:
                line(f"\x1b[32;1m$ {cmd}\x1b[0;m")
                body(text)
            line(f"section_end:{T0 + 61}:after_script\r\x1b[0Ksection_start:{T0 + 61}:cleanup_file_variables\r\x1b[0K\x1b[0K\x1b[36;1mCleaning up project directory and file based variables\x1b[0;m\x1b[0;m")
        else:
            line(f"section_end:{T0 + 60}:step_script\r\x1b[0Ksection_start:{T0 + 60}:cleanup_file_variables\r\x1b[0K\x1b[0K\x1b[36;1mCleaning up project directory and file based variables\x1b[0;m\x1b[0;m")
        line(f"section_end:{T0 + 62}:cleanup_file_variables\r\x1b[0K")
        if code:
            line(f"\x1b[31;1mERROR: Job failed: exit code {code}\x1b[0;m")
        else:
            line("\x1b[32;1mJob succeeded\x1b[0;m")
    elif ci == "jenkins":
        line("Started by user Ada")
        line("[Pipeline] Start of Pipeline")
        line("[Pipeline] node")
        line(f"Running on agent-1 in {WORKSPACE['jenkins']}")
        line("[Pipeline] {")
        line("[Pipeline] stage")
        line("[Pipeline] { (Build and test)")
        for cmd, text in steps:
            # Jenkins runs `sh -xe`: the `+ ` lines in `text` are the shell's own trace.
            line("[Pipeline] sh")
            body(text)
        line("[Pipeline] }")
        line("[Pipeline] // stage")
        for cmd, text in after_script or []:
            line("[Pipeline] stage")
            line("[Pipeline] { (Declarative: Post Actions)")
            line("[Pipeline] sh")
            body(text)
            line("[Pipeline] }")
            line("[Pipeline] // stage")
        line("[Pipeline] }")
        line("[Pipeline] // node")
        line("[Pipeline] End of Pipeline")
        if code:
            line(f"ERROR: script returned exit code {code}")
            line("Finished: FAILURE")
        else:
            line("Finished: SUCCESS")
    elif ci == "circleci":
        # The text of a job's steps as the CircleCI UI shows them, one after another.
        line("Spin up environment")
        line("Build-agent version 1.0.253456-7c5e2a3b (2026-11-18T10:12:44+0000)")
        line("Starting container cimg/base:2024.11")
        for i, (cmd, text) in enumerate(steps):
            line("#!/bin/bash -eo pipefail")
            for c in cmd.splitlines():
                line(c)
            body(text)
            if i == len(steps) - 1 and code:
                line("")
                line(f"Exited with code exit status {code}")
    elif ci == "travis":
        line("travis_fold:start:worker_info\r\x1b[0K\x1b[33;1mWorker information\x1b[0m")
        line("hostname: 3c1e7b2a-travis-job")
        line("travis_fold:end:worker_info\r\x1b[0K")
        for i, (cmd, text) in enumerate(steps):
            line(f"travis_time:start:0a{i:02x}c\r\x1b[0K$ {cmd}")
            body(text)
            line(f"travis_time:end:0a{i:02x}c:start={T0 + 9 * i}000000000,finish={T0 + 9 * i + 8}000000000,duration=8000000000,event=script\r\x1b[0K")
            # travis-build's travis_result reports every script command, passing ones too.
            if i < len(steps) - 1:
                line(f"\x1b[32;1mThe command \"{cmd}\" exited with 0.\x1b[0m")
                line("")
        colour = "31" if code else "32"
        line(f"\x1b[{colour};1mThe command \"{steps[-1][0]}\" exited with {code}.\x1b[0m")
        for cmd, text in after_script or []:
            line(f"travis_fold:start:after_failure\r\x1b[0K$ {cmd}")
            body(text)
            line("travis_fold:end:after_failure\r\x1b[0K")
        line("")
        line(f"Done. Your build exited with {1 if code else 0}.")
    elif ci == "buildkite":
        # buildkite-agent's timestamps are application program commands: ESC _bk;t=<ms> BEL.
        clock = [T0 * 1000]

        def ts():
            clock[0] += 37
            return f"\x1b_bk;t={clock[0]}\x07"

        line(f"{ts()}~~~ Preparing working directory")
        line(f"{ts()}$ cd {WORKSPACE['buildkite']}")
        line(f"{ts()}$ git fetch -v --prune -- origin main")
        line(f"{ts()}~~~ Running commands")
        # The agent echoes the step's command script once; its commands' output follows.
        line(f"{ts()}$ {' && '.join(cmd for cmd, _ in steps)}")
        for _, text in steps:
            for l in text.splitlines():
                line(f"{ts()}{l}")
        if code:
            line(f"{ts()}^^^ +++")
            line(f"{ts()}🚨 Error: The command exited with status {code}")
            line(f"{ts()}user command error: exit status {code}")
    else:
        raise SystemExit(f"unknown CI {ci}")
    return "\n".join(out) + "\n"


def record(case, fixed):
    """Runs the case's project (fixed or not) as its CI job would; its log and exit code."""
    name, ci = case["name"], case["ci"]
    with tempfile.TemporaryDirectory(prefix="corpus-") as tmp:
        work = Path(tmp) / "widgets"
        work.mkdir()
        for rel, text in case["files"].items():
            p = work / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(text).lstrip("\n"))
        for rel, old, new in case["fix"] if fixed else []:
            p = work / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if old is None:
                p.write_text(new)
            else:
                text = p.read_text()
                if old not in text:
                    raise SystemExit(f"{name}: the fix's {old!r} is not in {rel}")
                p.write_text(text.replace(old, new))
        env = dict(os.environ)
        env.update(case.get("env", {}))
        env["HOME"] = env.get("CORPUS_HOME", os.environ["HOME"])
        env["NO_COLOR"] = env.get("NO_COLOR", "")
        # What the CI image would already hold; not part of the job's log.
        for cmd in case.get("prepare", []):
            code, text = run(cmd, work, env)
            if code != 0:
                raise SystemExit(f"{name}: prepare `{cmd}` failed ({code}):\n{text}")
        # Jenkins' `sh` step runs its script with `sh -xe`: the trace is part of the log.
        shell = ("sh", "-xec") if ci == "jenkins" else ("bash", "-c")
        steps = []
        for cmd in case.get("setup", []):
            code, text = run(cmd, work, env, shell)
            if code != 0:
                raise SystemExit(f"{name}: setup `{cmd}` failed ({code}):\n{text}")
            steps.append((cmd, text))
        code, text = run(case["run"], work, env, shell)
        if (code == 0) != fixed:
            raise SystemExit(f"{name} (fixed: {fixed}): `{case['run']}` exited {code}:\n{text}")
        steps.append((case["run"], text))
        after = [] if fixed else [(cmd, run(cmd, work, env, shell)[1]) for cmd in case.get("after", [])]
        log = lay_out(ci, steps, code, after)
        return log.replace(str(work), WORKSPACE[ci]).replace(tmp, "/tmp"), code


def generate(case, red=True):
    target = OUT / case["language"] / f"{case['name']}.log"
    target.parent.mkdir(parents=True, exist_ok=True)
    if red:
        log, code = record(case, fixed=False)
        target.write_text(log)
        print(f"{target.relative_to(ROOT)}: exit {code}, {len(log.splitlines())} lines")
    if "fix" in case:
        green, _ = record(case, fixed=True)
        target = target.with_suffix(".green.log")
        target.write_text(green)
        print(f"{target.relative_to(ROOT)}: exit 0, {len(green.splitlines())} lines")


def main():
    # `--green`: only the green runs (the red logs, labelled by hand, stay as they are).
    red = "--green" not in sys.argv[1:]
    wanted = {a for a in sys.argv[1:] if not a.startswith("--")}
    for case in CASES:
        if not wanted or case["name"] in wanted:
            generate(case, red)


if __name__ == "__main__":
    main()
