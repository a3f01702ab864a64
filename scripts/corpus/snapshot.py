#!/usr/bin/env python3
"""Records the excerpt line numbers `selfheal diagnose` gives each corpus log
(fixtures/corpus/excerpts.json). A test compares them, log by log: an excerpt that changes
fails it until the change has been checked against the labels and recorded again here.

Usage: cargo build --bin selfheal && python3 scripts/corpus/snapshot.py
"""

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fixtures" / "corpus"
out = {}
for case in json.loads((CORPUS / "labels.json").read_text()):
    d = json.loads(
        subprocess.run(
            [str(ROOT / "target/debug/selfheal"), "diagnose", "--format", "json", "--log", str(CORPUS / case["file"])],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    out[case["file"]] = d["excerpt_lines"]
(CORPUS / "excerpts.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
print(f"{len(out)} excerpts recorded")
