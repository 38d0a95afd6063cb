"""The README's demo command, at reduced size: it must run end to end and stop cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end(tmp_path, ingest_bundle_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEDSEARCH_")}
    env["RAY_ADDRESS"] = ""  # its own local Ray, as a user's first run has
    cmd = [sys.executable, "-m", "pedsearch.cli", "demo", "--cameras", "2", "--people", "4",
           "--duration", "12", "--queries", "3", "--out", str(out),
           "--bundle", str(ingest_bundle_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "R@1" in proc.stdout and "R@5" in proc.stdout
    assert (out / "contact_sheet.png").stat().st_size > 1000
    assert (out / "contact_sheet.html").is_file()
    report = json.loads((out / "results.json").read_text())
    assert {r["kind"] for r in report} == {"text", "attributes"}
    # the stack was stopped: its state file is gone
    assert not (out / "stack" / "stack.json").exists()


def test_demo_rejects_bad_arguments(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pedsearch.cli", "demo", "--cameras", "0",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--cameras must be >= 1" in proc.stderr
