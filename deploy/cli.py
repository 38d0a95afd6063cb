"""``pedsearch stack up | status | down``: the embedded local stack from the command line.

``up`` starts a Kafka-API broker (Tansu, in-memory storage), Milvus standalone and Redis from
the packages installed with pedsearch, waits until each answers its readiness check, and prints
``export PEDSEARCH_...=`` lines on stdout (so ``eval "$(pedsearch stack up)"`` points the shell
at them); everything else goes to stderr. By default the servers keep running after ``up``
returns; ``--foreground`` keeps the command attached and stops them on Ctrl-C.
"""

from __future__ import annotations

import argparse
import pathlib
import signal
import time
from typing import Any

import pydantic
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from pedsearch.argtypes import bounded, port
from pedsearch.config import Settings, load_settings
from pedsearch.errors import ConfigError, PedsearchError

console = Console(stderr=True)


def register(subparsers: Any) -> None:
    """Add ``stack`` and its actions to the ``pedsearch`` command line."""
    parser = subparsers.add_parser(
        "stack",
        help="run the embedded local stack: Kafka-API broker, Milvus, Redis",
        description="Run a Kafka-API broker (Tansu; storage in memory only), Milvus standalone and "
        "Redis as local child processes, from the packages pedsearch installs.",
    )
    actions = parser.add_subparsers(dest="stack_action", metavar="ACTION", required=True)

    up = actions.add_parser(
        "up", help="start the stack and wait until it is ready",
        description="Start the three servers, wait until each is ready, print their addresses and "
        "the `export PEDSEARCH_...=` lines (on stdout) that point other commands at them.",
    )
    _data_dir_arg(up)
    for name, key in (("kafka", "kafka_port"), ("milvus", "milvus_port"), ("redis", "redis_port")):
        up.add_argument(
            f"--{name}-port", dest=key, type=port, default=None, metavar="N",
            help=f"{name} client port (default: stack.{key}; 0 picks a free one)"
            + ("; Milvus also uses the 11 ports after it" if name == "milvus" else ""),
        )
    up.add_argument(
        "--timeout", dest="start_timeout_s", type=bounded(float, 0, 1800, open_low=True),
        default=None, metavar="S",
        help="seconds to wait for readiness (default: stack.start_timeout_s)",
    )
    up.add_argument(
        "--foreground", action="store_true",
        help="stay attached and stop the servers on Ctrl-C (default: leave them running)",
    )
    up.set_defaults(handler=cmd_up)

    status = actions.add_parser(
        "status", help="show whether each server runs and is ready (exit 0 only if all are)"
    )
    _data_dir_arg(status)
    status.set_defaults(handler=cmd_status)

    down = actions.add_parser("down", help="stop the stack started from the data dir")
    _data_dir_arg(down)
    down.set_defaults(handler=cmd_down)


def _data_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=pathlib.Path, default=None, metavar="DIR",
        help="state, data and logs of the stack (default: stack.data_dir)",
    )



_FLAGS = {
    "data_dir": "--data-dir", "kafka_port": "--kafka-port", "milvus_port": "--milvus-port",
    "redis_port": "--redis-port", "start_timeout_s": "--timeout",
}


def settings_from_args(args: argparse.Namespace) -> Settings:
    """``load_settings(args.config)`` with the command-line flags over file and environment."""
    settings = load_settings(getattr(args, "config", None))
    for key, flag in _FLAGS.items():
        value = getattr(args, key, None)
        if value is not None:
            try:
                setattr(settings.stack, key, value)
            except pydantic.ValidationError as exc:
                reason = "; ".join(e["msg"] for e in exc.errors())
                raise ConfigError(f"invalid {flag} {value}: {reason}") from exc
    return settings


def _stack(args: argparse.Namespace):
    from deploy.stack import LocalStack

    return LocalStack.from_config(settings_from_args(args))


class _ProgressView:
    """One spinner line per service, fed by ``LocalStack.up/down``'s progress callback."""

    def __init__(self) -> None:
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, service: str, phase: str, detail: str) -> None:
        if service not in self.tasks:
            self.tasks[service] = self.progress.add_task(service, total=1)
        style = {"ready": "green", "stopped": "green", "failed": "red"}.get(phase, "yellow")
        text = f"[bold]{service:<6}[/] [{style}]{phase}[/]"
        if detail:
            text += f"  {escape(detail)}"
        done = phase in ("ready", "stopped", "failed")
        self.progress.update(self.tasks[service], description=text, completed=1 if done else 0)


def _print_state(state, title: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("service")
    table.add_column("address", no_wrap=True)
    table.add_column("pid")
    table.add_column("ready after")
    for name, svc in state.services.items():
        ready = f"{svc.ready_s:.1f} s" if svc.ready_s is not None else "-"
        table.add_row(name, svc.address, str(svc.pid), ready)
    console.print(table)
    console.print(f"logs: {state.data_dir}/<service>/<service>.log")


def _print_exports(state) -> None:
    from deploy.stack import env_exports

    for line in env_exports({n: s.address for n, s in state.services.items()}):
        print(line, flush=True)


def _printing_errors(handler):
    """Print a pedsearch error here, escaped: messages quote server logs full of [brackets]."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except PedsearchError as exc:
            console.print(f"[bold red]error:[/] {escape(exc.message)}")
            return 2

    run.__name__ = run.__qualname__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


@_printing_errors
def cmd_up(args: argparse.Namespace) -> int:
    """``pedsearch stack up``."""
    from deploy.stack import StackAlreadyRunning

    stack = _stack(args)
    try:
        with _ProgressView() as view:
            state = stack.up(progress=view, foreground=args.foreground)
    except StackAlreadyRunning as exc:
        console.print(f"[yellow]already up:[/] {escape(exc.message)}")
        asked = {name: getattr(args, f"{name}_port", None) for name in stack.servers}
        moved = {name: (want, exc.state.services[name].port) for name, want in asked.items()
                 if want and name in exc.state.services
                 and want != exc.state.services[name].port}
        if moved:  # the running stack keeps its ports: say so, not silently
            listing = ", ".join(f"{n} {want} (it runs on {have})" for n, (want, have) in
                                moved.items())
            console.print(f"[yellow]note:[/] ports asked for were not applied: {listing}; "
                          f"`pedsearch stack down --data-dir {stack.data_dir}` first to move them")
        _print_state(exc.state, f"stack in {stack.data_dir}")
        _print_exports(exc.state)
        return 0
    _print_state(state, f"stack up in {stack.data_dir}")
    console.print(
        "Kafka (Tansu) keeps topics, messages and offsets in memory only: `stack down` forgets "
        "them. Milvus and Redis keep their data in the data dir."
    )
    _print_exports(state)
    if not args.foreground:
        console.print(
            "The servers keep running. Stop them with "
            f"`pedsearch stack down --data-dir {stack.data_dir}`."
        )
        return 0
    return _stay_in_foreground(stack)


def _stay_in_foreground(stack) -> int:
    def to_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, to_interrupt)
    console.print("Running in the foreground; Ctrl-C stops the stack.")
    try:
        while True:
            time.sleep(1.0)
            if not stack.state_path.exists():
                console.print("the stack was taken down from elsewhere")
                return 0
            dead = [s for s in stack.servers.values() if not s.is_running()]
            if dead and stack.busy():  # a `stack down` from elsewhere is stopping them
                continue
            if dead:
                for server in dead:
                    console.print(
                        f"[bold red]error:[/] {server.title} stopped unexpectedly.\n"
                        + escape(server.log_excerpt())
                    )
                with _ProgressView() as view:
                    stack.down(progress=view)
                return 1
    except KeyboardInterrupt:
        console.print("stopping the stack ...")
        with _ProgressView() as view:
            stack.down(progress=view)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _elsewhere(args: argparse.Namespace) -> str:
    """A hint when the data folder is relative: a stack started from another folder has its
    state there, and this command looks in the current one."""
    given = settings_from_args(args).stack.data_dir
    if pathlib.Path(given).is_absolute():
        return ""
    return (f"; stack.data_dir {given} is relative to the current folder: run this where "
            "`stack up` ran, or give --data-dir")


@_printing_errors
def cmd_status(args: argparse.Namespace) -> int:
    """``pedsearch stack status``: exit 0 only if every server runs and is ready."""
    stack = _stack(args)
    state = stack.read_state()
    if state is None:
        console.print(f"no stack was started from {stack.data_dir} (`pedsearch stack up` starts "
                      f"one){_elsewhere(args)}")
        return 1
    with console.status("checking the servers ..."):
        rows = stack.status()
    started = f"{state.started_at:%Y-%m-%d %H:%M:%S %Z}"
    table = Table(title=f"stack in {stack.data_dir}, started {started}", title_justify="left")
    table.add_column("service")
    table.add_column("address", no_wrap=True)
    for column in ("pid", "process", "ready", "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.name, row.address, str(row.pid),
            "[green]up[/]" if row.running else "[red]down[/]",
            "[green]yes[/]" if row.ready else "[red]no[/]",
            escape(row.detail if row.running else f"log: {row.log}"),
        )
    console.print(table)
    return 0 if rows and all(r.running and r.ready for r in rows) else 1


@_printing_errors
def cmd_down(args: argparse.Namespace) -> int:
    """``pedsearch stack down``."""
    stack = _stack(args)
    if stack.read_state() is None:
        console.print(f"no stack is running from {stack.data_dir}{_elsewhere(args)}")
        return 0
    with _ProgressView() as view:
        stopped = stack.down(progress=view)
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was still running'}")
    return 0
