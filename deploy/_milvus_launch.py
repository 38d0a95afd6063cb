"""Run Milvus standalone from the ``milvus`` package with exactly the given ports.

``python -m deploy._milvus_launch --data DIR --ports '{"proxy": 19530, ...}' --metrics-port N``

It does what the package's ``milvus-server`` command does before it starts the server (render
``configs/milvus.yaml`` from the package's template with the same keys as ``milvus-server``'s
``--*-port`` and ``--extra-config`` flags, unpack the bundled binaries into ``DIR/bin``) and
then *replaces itself* with the ``milvus`` binary. Measured reasons not to run ``milvus-server``
itself:

- it probes every port with a bind without SO_REUSEADDR and, when that fails, silently takes the
  next free port. After a stop with clients connected the proxy port sits in TIME_WAIT for a
  minute, so a restart either waits that minute or serves on another port than configured.
  Milvus itself binds with SO_REUSEADDR and does not care.
- its HTTP health/metrics port cannot be set (no flag, no ``--extra-config`` key): it takes the
  first free port from 9091 upwards. Here it is one of the derived ports.
- on SIGINT it kills Milvus one second later, and on SIGTERM it dies and leaves Milvus running;
  once exec'd, signals reach Milvus itself and it stops gracefully.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy._milvus_launch")
    parser.add_argument("--data", required=True, type=pathlib.Path, help="base data dir")
    parser.add_argument(
        "--ports", required=True,
        help='JSON {role: port}; roles are milvus-server flag names: {"proxy": 19530, ...}',
    )
    parser.add_argument("--metrics-port", required=True, type=int, help="HTTP health/metrics port")
    parser.add_argument(
        "--extra-config", action="append", default=[], metavar="KEY=VALUE",
        help="a dotted milvus.yaml key present in the template, e.g. common.gracefulStopTimeout=10",
    )
    args = parser.parse_args(argv)

    try:
        import milvus
        from milvus import MilvusServerConfig, _initialize_data_files
    except ImportError as exc:
        print(
            f"error: Milvus standalone ships in the pip package milvus ({exc}); "
            "`pip install 'milvus==2.3.5'`",
            file=sys.stderr,
        )
        return 3

    base = args.data.expanduser().absolute()
    config = MilvusServerConfig(data_dir=str(base))
    for role, port in json.loads(args.ports).items():
        key = f"{role}_port"
        if key not in config.configurable_items:
            print(f"error: milvus {milvus.__version__} has no port setting {key}", file=sys.stderr)
            return 3
        config.set(key, int(port))
    for item in args.extra_config:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --extra-config {item!r} is not KEY=VALUE", file=sys.stderr)
            return 3
        config.set(key, value)
    config.resolve_storage()
    missing = [k for k, (_, v) in config.configurable_items.items() if v is None]
    if missing:
        print(f"error: milvus.yaml settings left unresolved: {missing}", file=sys.stderr)
        return 3
    config.write_config()
    _initialize_data_files(str(base))

    exe = base / "bin" / "milvus"
    env = dict(os.environ)
    env.update(
        DEPLOY_MODE="STANDALONE",
        METRICS_PORT=str(args.metrics_port),
        MILVUS_RUN_DIR=str(base / "run"),
        LD_LIBRARY_PATH=":".join(p for p in (str(exe.parent), env.get("LD_LIBRARY_PATH")) if p),
    )
    print(
        f"milvus {milvus.__version__}: {exe} run standalone, config {base}/configs/milvus.yaml",
        flush=True,
    )
    os.chdir(base)
    os.execve(exe, [str(exe), "run", "standalone"], env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
