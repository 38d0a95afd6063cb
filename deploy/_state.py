"""The state file of a running local stack (``<data_dir>/stack.json``).

``pedsearch stack up`` writes it once the servers are started (before they are ready, so an
interrupted start can still be taken down) and again when all are ready; ``status`` and ``down``
read it from any other process. Pids are stored with their start tick so a pid the kernel has
since given to another program is never signalled.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import tempfile
from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from pedsearch.errors import StackError

STATE_FILE = "stack.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServiceState(_Strict):
    """One embedded server as started."""

    name: str = Field(description="kafka, milvus or redis")
    pid: int = Field(gt=0, description="pid of the started process; also its process group id")
    start_ticks: int | None = Field(None, description="/proc start time of pid (pid reuse guard)")
    port: int = Field(ge=1, le=65535, description="the client port")
    ports: dict[str, int] = Field(default_factory=dict, description="every port it listens on")
    address: str = Field(description="what clients are given: host:port, http://..., redis://...")
    log: pathlib.Path = Field(description="the log file its output goes to")
    logs: list[pathlib.Path] = Field(default_factory=list, description="further log files")
    ready_s: float | None = Field(None, description="seconds from start to ready; None = not yet")


class StackState(_Strict):
    """Everything ``status`` and ``down`` need to find a stack started by another process."""

    version: Literal[1] = 1
    data_dir: pathlib.Path
    host: str
    started_at: datetime.datetime
    owner_pid: int = Field(description="the `pedsearch stack up` process")
    foreground: bool = False
    services: dict[str, ServiceState] = Field(description="in start order")


def state_path(data_dir: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(data_dir) / STATE_FILE


def write_state(path: pathlib.Path, state: StackState) -> None:
    """Write ``state`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".stack-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(state.model_dump_json(indent=2))
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def read_state(path: pathlib.Path) -> StackState | None:
    """The state at ``path``; ``None`` if there is none.

    Raises:
        StackError: the file exists but is not a state file this version can read.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return StackState.model_validate(json.loads(text))
    except (json.JSONDecodeError, pydantic.ValidationError) as exc:
        raise StackError(
            f"the stack state file {path} is unreadable ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}). If no stack from this data dir is running, delete it "
            "and run `pedsearch stack up` again; otherwise stop the servers by their pids first."
        ) from exc


def remove_state(path: pathlib.Path) -> None:
    path.unlink(missing_ok=True)
