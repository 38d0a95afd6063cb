"""Process groups and log files of the embedded servers (POSIX; ``/proc`` where Linux has it).

Every embedded server runs in its own session, so its process group id equals the pid of the
process we started and holds every process it forks. Signalling the group reaches them all; the
group is gone when no live process is left in it. A zombie counts as dead only once all its
threads are gone: a multi-threaded server's main thread can turn zombie while its other threads
still hold the listening sockets (seen with Milvus on a busy machine: its metrics port stayed
taken after a "clean" stop, and the restart found it in use).
"""

from __future__ import annotations

import collections
import os
import pathlib
import signal
import subprocess
import time

_PROC = pathlib.Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name; ``None`` if unreadable."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    # the command name may hold spaces and parentheses: split after its last ')'
    return raw[raw.rfind(")") + 2:].split()


def _exited(pid: int, state: str) -> bool:
    """Whether a process in ``/proc`` state ``state`` has fully exited, all its threads included.

    The kernel shows a thread-group leader that has exited as a zombie even while its other
    threads still run, and those threads keep the process's files (its sockets) open.
    """
    if state not in ("Z", "X"):
        return False
    try:
        return len(os.listdir(_PROC / str(pid) / "task")) <= 1
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return True


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (tells a reused pid apart), or ``None``."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` is a live process (a zombie whose threads have all exited counts as dead).

    Args:
        pid: process id.
        start_ticks: if given, the process must also have started at this tick (else the pid was
            reused by another process since).
    """
    if pid <= 0:
        return False
    fields = _stat_fields(pid)
    if fields is not None:
        if _exited(pid, fields[0]):
            return False
        return start_ticks is None or process_start_ticks(pid) == start_ticks
    if _PROC.is_dir():
        return False
    try:  # no /proc (macOS): ask the kernel
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (zombies with no thread left do not count)."""
    if not _PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        # fields: state ppid pgrp ...
        if fields and len(fields) > 2 and int(fields[2]) == pgid:
            if not _exited(int(entry.name), fields[0]):
                members.append(int(entry.name))
    return sorted(members)


def group_alive(pgid: int) -> bool:
    """Whether any live process is left in process group ``pgid``."""
    return pgid > 0 and bool(group_members(pgid))


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; ``False`` if the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_group(
    pgid: int,
    *,
    grace_s: float,
    first_signal: int = signal.SIGTERM,
    popen: subprocess.Popen | None = None,
    poll_s: float = 0.1,
) -> bool:
    """Stop a whole process group: ``first_signal``, then SIGKILL after ``grace_s``.

    Args:
        pgid: the process group (the pid of the process that was started in its own session).
        grace_s: seconds the group gets to exit cleanly before SIGKILL.
        first_signal: the polite signal (SIGTERM or SIGINT).
        popen: the ``Popen`` of the group leader when this process started it, so it is reaped.
        poll_s: how often to look.

    Returns:
        ``True`` if the group exited within the grace period, ``False`` if it had to be killed.
    """

    def gone() -> bool:
        if popen is not None:
            popen.poll()  # reap the leader so it does not linger as a zombie
        return not group_alive(pgid)

    if gone():
        return True
    signal_group(pgid, first_signal)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if gone():
            return True
        time.sleep(poll_s)
    signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and not gone():
        time.sleep(poll_s)
    if popen is not None:
        try:
            popen.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
    return False


def tail(path: pathlib.Path, lines: int = 20, max_line: int = 300) -> str:
    """The last ``lines`` lines of a text file, each cut to ``max_line`` characters; '' if none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            text = fh.read().decode("utf-8", "replace")
        last = collections.deque(text.splitlines(), maxlen=lines)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return ""
    return "\n".join(line if len(line) <= max_line else line[:max_line] + " ..." for line in last)
