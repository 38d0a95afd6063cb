"""The stack state file and the process-group helpers that read it."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time

import pytest

from deploy import _procs
from deploy._state import (
    ServiceState,
    StackState,
    read_state,
    remove_state,
    state_path,
    write_state,
)
from deploy.stack import service_alive
from pedsearch.errors import StackError


def _state(tmp_path, pid: int = 4242, ticks: int | None = 7) -> StackState:
    return StackState(
        data_dir=tmp_path, host="127.0.0.1",
        started_at=datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        owner_pid=1,
        services={
            "kafka": ServiceState(name="kafka", pid=pid, start_ticks=ticks, port=19092,
                                  ports={"client": 19092}, address="127.0.0.1:19092",
                                  log=tmp_path / "kafka" / "kafka.log", ready_s=0.4),
            "redis": ServiceState(name="redis", pid=pid + 1, port=16379,
                                  address="redis://127.0.0.1:16379/0",
                                  log=tmp_path / "redis" / "redis.log"),
        },
    )


def test_state_round_trips_and_keeps_service_order(tmp_path):
    path = state_path(tmp_path)
    assert path.name == "stack.json"
    write_state(path, _state(tmp_path))
    back = read_state(path)
    assert back == _state(tmp_path)
    assert list(back.services) == ["kafka", "redis"]
    assert [p.name for p in tmp_path.iterdir()] == ["stack.json"]  # no temp file left behind


def test_missing_state_is_none_and_remove_is_idempotent(tmp_path):
    assert read_state(state_path(tmp_path)) is None
    remove_state(state_path(tmp_path))


@pytest.mark.parametrize("text", ["{not json", '{"version": 1}', '{"version": 9, "services": {}}'])
def test_unreadable_state_says_what_to_do(tmp_path, text):
    path = state_path(tmp_path)
    path.write_text(text)
    with pytest.raises(StackError, match="delete it"):
        read_state(path)


def test_own_process_is_alive_with_its_start_ticks():
    ticks = _procs.process_start_ticks(os.getpid())
    assert _procs.pid_alive(os.getpid(), ticks)
    if ticks is not None:
        assert not _procs.pid_alive(os.getpid(), ticks + 1)


def test_service_with_a_reused_pid_counts_as_gone(tmp_path):
    # our own pid, but recorded with another start time: the recorded process is gone
    ticks = _procs.process_start_ticks(os.getpid())
    if ticks is None:
        pytest.skip("no /proc start times on this platform")
    svc = _state(tmp_path, pid=os.getpid(), ticks=ticks + 1)
    assert not service_alive(svc.services["kafka"])


def _session_child(script: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script], start_new_session=True, **kw)


def test_stop_group_stops_leader_and_its_children():
    # the leader forks a grandchild in the same group, like milvus-server does
    proc = _session_child(
        "import subprocess, sys, time;"
        " subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        " time.sleep(60)"
    )
    try:
        for _ in range(100):
            if len(_procs.group_members(proc.pid)) == 2:
                break
            time.sleep(0.05)
        assert len(_procs.group_members(proc.pid)) == 2
        assert _procs.stop_group(proc.pid, grace_s=10, popen=proc) is True
        assert not _procs.group_alive(proc.pid)
    finally:
        _procs.signal_group(proc.pid, signal.SIGKILL)


def test_stop_group_kills_what_ignores_sigterm():
    proc = _session_child(
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print('ready', flush=True); time.sleep(60)",
        stdout=subprocess.PIPE, text=True,
    )
    try:
        # SIGTERM before the child ignores it would end it early: wait until it says so
        assert proc.stdout.readline().strip() == "ready"
        assert _procs.stop_group(proc.pid, grace_s=0.5, popen=proc) is False
        assert not _procs.group_alive(proc.pid)
        assert proc.returncode == -signal.SIGKILL
    finally:
        _procs.signal_group(proc.pid, signal.SIGKILL)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux /proc")
def test_zombie_leader_whose_threads_still_run_is_alive():
    # the main thread exits while another keeps running (and would keep the sockets open):
    # the kernel shows the leader as a zombie, but the process is not gone
    proc = _session_child(
        "import ctypes, threading, time;"
        " threading.Thread(target=time.sleep, args=(60,)).start();"
        " ctypes.CDLL(None).pthread_exit(None)"
    )
    try:
        for _ in range(200):
            fields = _procs._stat_fields(proc.pid)
            if fields and fields[0] == "Z":
                break
            time.sleep(0.05)
        assert fields and fields[0] == "Z"
        assert _procs.pid_alive(proc.pid)
        assert _procs.group_members(proc.pid) == [proc.pid]
        assert _procs.stop_group(proc.pid, grace_s=10, popen=proc) is True
        assert not _procs.group_alive(proc.pid)
        assert not _procs.pid_alive(proc.pid)
    finally:
        _procs.signal_group(proc.pid, signal.SIGKILL)


def test_tail_returns_last_lines_cut_to_width(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "y" * 500 + "\n")
    text = _procs.tail(log, lines=3, max_line=20)
    assert text.splitlines()[:2] == ["line 98", "line 99"]
    assert text.splitlines()[2] == "y" * 20 + " ..."
    assert _procs.tail(tmp_path / "absent.log") == ""


def test_status_and_down_from_another_folder_say_where_they_looked(tmp_path, monkeypatch,
                                                                   capfd):
    """stack.data_dir is relative: `stack down` from another folder said only "no stack is
    running", while the stack kept its ports."""
    from pedsearch.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PEDSEARCH_STACK__DATA_DIR", raising=False)
    assert main(["stack", "down"]) == 0
    assert main(["stack", "status"]) == 1
    out = " ".join(capfd.readouterr().err.split())  # the stack commands print to stderr
    assert out.count("stack.data_dir .pedsearch is relative to the current folder: run this "
                     "where `stack up` ran, or give --data-dir") == 2
    assert main(["stack", "status", "--data-dir", str(tmp_path / "elsewhere")]) == 1
    assert "relative" not in capfd.readouterr().err
