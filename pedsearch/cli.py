"""The ``pedsearch`` command line.

Sub-commands are plug-ins: each part of the system (``deploy``, ``workers``, ``training``,
``gateway``) declares a ``register(subparsers)`` function under the ``pedsearch.commands`` entry
point group in ``pyproject.toml``. This module discovers them, so it imports none of the parts
until the user runs one of their commands.

A handler is ``handler(args) -> int | None``; it reads its configuration with
``pedsearch.config.load_settings(args.config)``. A :class:`~pedsearch.errors.PedsearchError`
is printed as ``error: ...`` and exits with status 2 (1 for any other failure).
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from pedsearch import __version__
from pedsearch.errors import PedsearchError

ENTRY_POINT_GROUP = "pedsearch.commands"
err_console = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pedsearch",
        description="Distributed streaming person search: cameras -> Kafka -> Ray -> Milvus, "
        "queried by text, attributes and image over gRPC.",
    )
    parser.add_argument("--version", action="version", version=f"pedsearch {__version__}")
    parser.add_argument(
        "--config", default=None,
        help="YAML configuration file (default: $PEDSEARCH_CONFIG, else built-in defaults; "
        "PEDSEARCH_<SECTION>__<FIELD> environment variables override both)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except Exception as exc:  # a broken plug-in must not take the whole CLI down
            err_console.print(f"[yellow]warning:[/] command {ep.name!r} unavailable: {exc}")
            continue
        register(subparsers)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(name)s: %(message)s", datefmt="[%X]",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=True)],
    )
    # pedsearch's own progress is INFO even when libraries stay at WARNING
    logging.getLogger("pedsearch").setLevel(min(level, logging.INFO))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    try:
        code = args.handler(args)
    except PedsearchError as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}")
        return 2
    except OSError as exc:
        if exc.filename is None:  # a socket, a pipe...: not the user's path; keep the traceback
            raise
        # a path the user gave that cannot be made, read or written (a file where a folder
        # belongs, no permission, a full disk): its own words, with the path, suffice
        logging.getLogger("pedsearch").debug("OS error", exc_info=True)
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
