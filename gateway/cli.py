"""``pedsearch gateway serve``: run the gRPC query gateway until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import pathlib
import signal
import threading

from rich.console import Console

from pedsearch.argtypes import bounded, port
from pedsearch.config import load_settings
from pedsearch.errors import ConfigError

console = Console()


def register(subparsers) -> None:
    gw = subparsers.add_parser(
        "gateway", help="the gRPC query gateway",
        description="The gRPC Search service over the live index (see README, Gateway).",
    )
    sub = gw.add_subparsers(dest="gateway_command", metavar="COMMAND", required=True)
    serve = sub.add_parser(
        "serve", help="serve queries until Ctrl-C / SIGTERM",
        description="Load the model bundle, listen on --address and answer Search RPCs, health "
        "checks and reflection. Ctrl-C or SIGTERM stops it gracefully: open Watch streams end, "
        "running RPCs get --grace seconds.",
    )
    serve.add_argument("--address", default=None,
                       help="host:port to listen on (default: gateway.address, "
                       "127.0.0.1:50051; port 0 = a free port)")
    serve.add_argument("--bundle", action="append", default=None, metavar="DIR",
                       help="model bundle folder (default: model.bundle, else the shipped "
                       "bundle); repeated, the gateway also holds the others (gateway.bundles) "
                       "and answers with whichever version the Milvus alias points at")
    serve.add_argument("--metrics-port", type=port, default=None, metavar="PORT",
                       help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics")
    serve.add_argument("--grace", type=bounded(float, 0, 3600, unit=" seconds"), default=5.0,
                       help="seconds running RPCs get to finish on shutdown (0..3600)")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args) -> int:
    from gateway.metrics import serve_metrics
    from gateway.server import create_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    settings = load_settings(args.config)
    if args.bundle:
        settings.model.bundle = pathlib.Path(args.bundle[0])
        settings.gateway.bundles = [pathlib.Path(b) for b in args.bundle[1:]]
    if settings.gateway.encoder_threads:
        import torch  # the whole process: this command owns it

        torch.set_num_threads(settings.gateway.encoder_threads)
    metrics = None
    if args.metrics_port is not None:  # before the gateway: a taken port fails with nothing up
        try:
            metrics, _thread = serve_metrics(args.metrics_port)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on port {args.metrics_port}: "
                              f"{exc.strerror}; choose another --metrics-port") from None
    with console.status("loading the model bundle..."):
        server = create_server(args.address, settings=settings)
    if args.bundle and server.service.bundle is None:
        # asked for by name, a bundle that does not load is a mistake to fix now: a gateway
        # up without it would answer FAILED_PRECONDITION to every query
        raise ConfigError(f"--bundle {args.bundle[0]}: {server.service.bundle_error}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    bundle = server.service.bundle
    others = [v for v in server.service.milvus.bundles if bundle is None or v != bundle.version]
    # the address right after "listening on" is the one to connect to (scripts read it)
    where = server.address if server.bind_address == server.address else (
        f"{server.address} (bound to {server.bind_address}: every interface)")
    console.print(f"pedsearch gateway listening on {where} "
                  f"({'TLS' if server.tls else 'plaintext'}; model "
                  f"{bundle.version if bundle else 'NOT LOADED'}"
                  f"{'; also ' + ', '.join(others) if others else ''}; health "
                  f"{'SERVING' if server.serving else 'NOT_SERVING'})", highlight=False)
    if metrics is not None:
        console.print(f"metrics on http://127.0.0.1:{metrics.server_port}/metrics",
                      highlight=False)
    try:
        stop.wait()
    finally:
        console.print("stopping the gateway...")
        server.stop(grace=args.grace)
    return 0
