"""The README's demo command, at reduced size: it must run end to end through the gRPC gateway
and stop cleanly."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

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


def test_demo_keep_running_serves_the_printed_search_command_until_stopped(
        tmp_path, ingest_bundle_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEDSEARCH_")}
    env.update(RAY_ADDRESS="", COLUMNS="200", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "pedsearch.cli", "demo", "--cameras", "1", "--people", "2",
           "--duration", "8", "--queries", "1", "--out", str(out),
           "--bundle", str(ingest_bundle_path), "--keep-running"]
    demo = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(demo.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 900
        while not any("stops the gateway and the stack" in x for x in lines):
            assert demo.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.5)
        # the command the demo prints, run as printed, reaches its gateway
        printed = next(x.strip() for x in lines if x.strip().startswith('pedsearch search "'))
        args = shlex.split(printed)[1:]
        assert args[-2] == "--gateway"
        search = subprocess.run([sys.executable, "-m", "pedsearch.cli", *args, "--out",
                                 str(tmp_path / "mine")], env=env, capture_output=True,
                                text=True, timeout=300)
        assert search.returncode == 0, search.stdout + search.stderr
        assert "demo-0" in search.stdout
        assert (tmp_path / "mine" / "contact_sheet.html").is_file()
        # SIGTERM (kill, a service manager) as Ctrl-C: Ray's own handler would end the process
        # at once and leave the stack running
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=300) == 0, "".join(lines)
        assert not (out / "stack" / "stack.json").exists()  # it stopped the stack too
    finally:
        _stop_demo(demo, out / "stack", env)


def _stop_demo(demo: subprocess.Popen, stack_dir, env) -> None:
    """After a failure: Ctrl-C the demo (its own clean-up), then kill it; its stack servers
    run in their own sessions, so a killed demo would leave them behind: bring them down."""
    if demo.poll() is None:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=120)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
    if (stack_dir / "stack.json").exists():
        subprocess.run([sys.executable, "-m", "pedsearch.cli", "stack", "down", "--data-dir",
                        str(stack_dir)], env=env, capture_output=True, timeout=180)


@pytest.mark.parametrize("flag, value, message", [
    ("--cameras", "0", "--cameras must be 1..64, not 0"),
    ("--cameras", "65", "--cameras must be 1..64, not 65"),
    ("--people", "10001", "--people must be 1..10000"),
    ("--seed", "-1", "--seed must be 0.."),
])
def test_demo_rejects_bad_arguments_before_starting_anything(tmp_path, flag, value, message):
    proc = subprocess.run([sys.executable, "-m", "pedsearch.cli", "demo", flag, value,
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "stack").exists()  # no server was started


def test_demo_without_a_bundle_says_how_to_get_one(tmp_path):
    # (without --no-train it trains one: `pedsearch train --config tiny.yaml --export DIR`, the
    # same command the training integration test runs)
    missing = tmp_path / "no-bundle"
    proc = subprocess.run([sys.executable, "-m", "pedsearch.cli", "demo", "--bundle",
                           str(missing), "--no-train", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.replace("\n", "")  # the console wraps long lines
    assert f"no model bundle at {missing}" in err
    assert "pedsearch train --config default.yaml --export" in " ".join(err.split())
