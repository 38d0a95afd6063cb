"""The README's demo command, at reduced size: it must run end to end through the gRPC gateway
and stop cleanly."""

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
    # every query went through the gRPC gateway: each RPC is recorded with the hits it returned
    report = json.loads((out / "results.json").read_text())
    host, port = report["gateway"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert "gRPC gateway serving at " + report["gateway"] in proc.stdout
    queries = report["queries"]
    assert {q["rpc"] for q in queries} == {"SearchText", "SearchAttributes", "SearchImage"}
    assert [q["rpc"] for q in queries].count("SearchText") == 3
    assert [q["rpc"] for q in queries].count("SearchAttributes") == 3
    for q in queries:
        assert q["hits"], q
        assert all(h["camera"].startswith("demo") for h in q["hits"])
        scores = [h["score"] for h in q["hits"]]
        assert scores == sorted(scores, reverse=True)
    # the image query was a stored crop (JPEG round trip): that detection is among its hits
    image = next(q for q in queries if q["rpc"] == "SearchImage")
    assert int(image["query"].rsplit(" ", 1)[1]) in [h["id"] for h in image["hits"]]
    assert (out / "example_crop.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert set(report["summary"]) == {"text", "attributes", "image"}
    assert set(report["latency_ms_median"]) >= {"SearchText", "SearchAttributes", "SearchImage"}
    # the stack was stopped: its state file is gone
    assert not (out / "stack" / "stack.json").exists()


def test_demo_rejects_bad_arguments(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pedsearch.cli", "demo", "--cameras", "0",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--cameras must be >= 1" in proc.stderr
