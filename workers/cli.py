"""`pedsearch camera`, `pedsearch workers` and `pedsearch status`."""

from __future__ import annotations

import itertools
import logging
import signal
import threading
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from pedsearch.argtypes import bounded
from pedsearch.config import load_settings
from pedsearch.envelope import check_camera_id
from pedsearch.errors import InvalidInput, Unavailable

log = logging.getLogger("pedsearch.workers")
console = Console()


def register(subparsers) -> None:
    cam = subparsers.add_parser(
        "camera", help="publish a camera's frames to Kafka",
        description="Sample frames from a source at --fps, JPEG-encode them and publish Frame "
        "envelopes keyed by camera id. SOURCE: a video file, an image folder, an rtsp:// or "
        "http:// URL, a webcam index, or 'synthetic' (a multi-camera scene with ground truth; "
        "its cameras are named <camera-id>-0, <camera-id>-1, ...).",
    )
    cam.add_argument("--source", required=True, help="FILE | FOLDER | RTSP-URL | INDEX | synthetic")
    cam.add_argument("--camera-id", required=True, help="camera id (1-64 of [A-Za-z0-9_.:-])")
    cam.add_argument("--fps", type=bounded(float, 0, open_low=True), default=5.0,
                     help="frames per second")
    cam.add_argument("--frames", type=bounded(int, 0, open_low=True), default=None,
                     help="stop after N frames (a synthetic scene: N frames of all its "
                     "cameras together)")
    cam.add_argument("--loop", action="store_true", help="replay a file source at its end")
    cam.add_argument("--as-fast-as-possible", action="store_true",
                     help="do not pace frames (benchmarks, backfills)")
    cam.add_argument("--jpeg-quality", type=bounded(int, 30, 100), default=85,
                     metavar="30..100")
    syn = cam.add_argument_group("synthetic scene")
    syn.add_argument("--cameras", type=bounded(int, 0, open_low=True), default=4)
    syn.add_argument("--people", type=bounded(int, 0, open_low=True), default=12)
    syn.add_argument("--duration", type=bounded(float, 0, open_low=True), default=60.0,
                     help="seconds of scene")
    syn.add_argument("--seed", type=int, default=0)
    cam.set_defaults(handler=cmd_camera)

    wk = subparsers.add_parser(
        "workers", help="run the ingest workers on Ray",
        description="Consumer actors (one consumer group) decode, detect, track and crop; an "
        "embedder actor pool embeds; rows go to Milvus. Runs until Ctrl-C, or until the topic "
        "was idle for --until-idle seconds.",
    )
    wk.add_argument("--consumers", type=bounded(int, 0, open_low=True), default=None)
    wk.add_argument("--embedders", type=bounded(int, 0), default=None,
                    help="embedder actors; 0 = embed inside each consumer (CPU, one node)")
    wk.add_argument("--until-idle", type=bounded(float, 0, open_low=True), default=None,
                    metavar="SECONDS")
    wk.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                    help="serve the workers' Prometheus metrics on http://127.0.0.1:PORT/metrics")
    wk.set_defaults(handler=cmd_workers)

    st = subparsers.add_parser(
        "status", help="ingest metrics of the running workers, and the gateways' model versions",
        description="Reads Redis: the workers' ingest counters and latencies, then each running "
        "gateway (its health, the collection the alias is on as it sees it, the model versions "
        "it holds, bundles it could not load) and the bundles a roll-out staged.")
    st.add_argument("--watch", action="store_true", help="refresh every 2 s until Ctrl-C")
    st.set_defaults(handler=cmd_status)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum, _frame):
        console.print(f"[yellow]{signal.Signals(signum).name}: stopping...[/]")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


#: SceneConfig field -> the `pedsearch camera` flag that sets it
SCENE_FLAGS = {"num_cameras": "--cameras", "num_people": "--people", "fps": "--fps",
               "duration_s": "--duration", "seed": "--seed"}


def check_scene_flags(args) -> None:
    """The synthetic scene's own bounds, checked before the producer connects.

    Raises:
        InvalidInput: naming the flag, or a ``--camera-id`` too long for its cameras' names.
    """
    import pydantic

    from pedsearch.synthetic.scene import SceneConfig

    try:
        SceneConfig(num_cameras=args.cameras, num_people=args.people, fps=args.fps,
                    duration_s=args.duration, seed=args.seed)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        raise InvalidInput(f"{SCENE_FLAGS.get(field, field)}: {err['msg'].lower()} for a "
                           "synthetic scene") from None
    last = f"{args.camera_id}-{args.cameras - 1}"
    if len(last) > 64:
        raise InvalidInput(f"--camera-id is too long for {args.cameras} cameras: their ids "
                           f"run up to {last!r}, over 64 characters")


def cmd_camera(args) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from workers.camera.publisher import FramePublisher, make_producer
    from workers.camera.sources import open_source

    settings = load_settings(args.config)
    check_camera_id(args.camera_id)
    extra = {"max_frames": args.frames, "loop": args.loop, "realtime": not args.as_fast_as_possible}
    if args.source == "synthetic":
        check_scene_flags(args)
        extra = {"cameras": args.cameras, "people": args.people, "duration_s": args.duration,
                 "seed": args.seed, "realtime": not args.as_fast_as_possible}
    elif args.source.isdigit() or "://" in args.source:
        extra = {"max_frames": args.frames}
    source = open_source(args.source, camera_id=args.camera_id, fps=args.fps, **extra)
    publisher = FramePublisher(producer=make_producer(settings.kafka),
                               topic=settings.kafka.frames_topic, jpeg_quality=args.jpeg_quality,
                               max_bytes=settings.kafka.max_message_bytes)
    stop = _stop_on_signals()
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed} frames"),
        TextColumn("{task.fields[rate]:.1f} fps acked, {task.fields[failed]} failed"),
        TextColumn("{task.fields[link]}"), TimeElapsedColumn(), console=console,
    )
    # stream sources report their connection (reconnects, watchdog stalls) as they go
    stream = getattr(source, "stats", None)

    def link() -> str:
        if stream is None:
            return ""
        return (f"{stream.connects} connect(s), {stream.stalls} stall(s), "
                f"{stream.read_failures + stream.open_failures} failure(s)")

    total = args.frames
    with progress:
        task = progress.add_task(f"{args.camera_id} -> {settings.kafka.frames_topic}",
                                 total=total, rate=0.0, failed=0, link=link())
        try:
            frames = source.frames(stop)
            if args.frames is not None:  # the synthetic scene has no max_frames of its own
                frames = itertools.islice(frames, args.frames)
            for sf in frames:
                publisher.publish(sf)
                s = publisher.stats
                progress.update(task, completed=s.sent, rate=s.rate, failed=s.failed, link=link())
        finally:
            publisher.close()
            s = publisher.stats
            progress.update(task, completed=s.sent, rate=s.rate, failed=s.failed)
    s = publisher.stats
    oversized = f" ({s.oversized} over kafka.max_message_bytes)" if s.oversized else ""
    console.print(f"published {s.acked}/{s.sent} frames ({s.bytes / 1e6:.1f} MB) from "
                  f"{len(s.per_camera)} camera(s); {s.failed} failed{oversized}")
    if stream is not None:
        console.print(f"stream {source.url}: {stream.summary()}")
    return 1 if s.failed else 0


def cmd_workers(args) -> int:
    from workers.runtime import run_ingest

    overrides = {}
    if args.consumers:
        overrides["consumers"] = args.consumers
    if args.embedders is not None:
        overrides["embedders"] = args.embedders
    settings = load_settings(args.config, workers=overrides)
    stop = _stop_on_signals()
    if args.metrics_port is not None:
        import redis

        from workers.metrics import serve_metrics

        if not 0 < args.metrics_port < 65536:
            raise InvalidInput(f"--metrics-port must be 1..65535, got {args.metrics_port}")
        try:
            serve_metrics(redis.Redis.from_url(settings.redis.url), args.metrics_port)
        except OSError as exc:
            raise InvalidInput(f"cannot serve metrics on port {args.metrics_port}: {exc}; "
                               "choose another --metrics-port") from exc
        console.print(f"metrics: http://127.0.0.1:{args.metrics_port}/metrics")
    console.print(f"ingest: {settings.kafka.bootstrap_servers} topic "
                  f"{settings.kafka.frames_topic} -> Milvus {settings.milvus.uri} "
                  f"({settings.workers.consumers} consumer(s), "
                  f"{settings.workers.embedders} embedder(s))")
    results = run_ingest(settings, idle_exit_s=args.until_idle, stop=stop)
    frames = sum(r["frames"] for r in results)
    crops = sum(r["crops"] for r in results)
    dead = sum(r["dead_letters"] for r in results)
    console.print(f"done: {frames} frames, {crops} crops stored, {dead} dead letters")
    return 0


def status_table(snapshots) -> Table:
    from workers.metrics import histogram_quantile, total

    table = Table(title="pedsearch ingest")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("live workers", f"{len(snapshots)}"),
        ("frames", f"{total(snapshots, 'pedsearch_frames_total'):.0f}"),
        ("detections", f"{total(snapshots, 'pedsearch_detections_total'):.0f}"),
        ("crops embedded", f"{total(snapshots, 'pedsearch_crops_embedded_total'):.0f}"),
        ("rows written", f"{total(snapshots, 'pedsearch_rows_written_total'):.0f}"),
        ("dead letters", f"{total(snapshots, 'pedsearch_dead_letters_total'):.0f}"),
        ("offset commits", f"{total(snapshots, 'pedsearch_offset_commits_total'):.0f}"),
        ("consumer lag", f"{total(snapshots, 'pedsearch_consumer_lag'):.0f}"),
    ]
    for q in (0.5, 0.99):
        v = histogram_quantile(snapshots, "pedsearch_freshness_seconds", q)
        rows.append((f"freshness p{int(q * 100)} (s, bucket bound)",
                     "-" if v is None else f"{v:g}"))
    for stage in ("decode", "detect", "track", "embed_index"):
        v = histogram_quantile(snapshots, "pedsearch_stage_seconds", 0.5, stage=stage)
        rows.append((f"{stage} p50 (s)", "-" if v is None else f"{v:g}"))
    for name, value in rows:
        table.add_row(name, value)
    return table


def versions_table(fleet) -> Table:
    """The gateways reporting in Redis (:mod:`pedsearch.fleet`): what each holds and serves,
    and the bundles a roll-out staged."""
    staged = fleet.staged()
    table = Table(title="pedsearch gateways and model versions")
    for name in ("gateway", "health", "alias on", "holds", "problems"):
        table.add_column(name, overflow="fold")
    for g in fleet.gateways():
        table.add_row(g.address, "SERVING" if g.serving else "NOT_SERVING", g.aliased or "-",
                      ", ".join(g.versions),
                      "; ".join(f"{v}: {why}" for v, why in g.errors.items()) or "-")
    table.caption = ("staged: " + ", ".join(f"{v} ({path})" for v, path in staged.items())
                     if staged else "staged: none (no roll-out under way)")
    return table


def cmd_status(args) -> int:
    import redis
    from rich.console import Group

    from pedsearch.fleet import Fleet
    from workers.metrics import read_snapshots

    settings = load_settings(args.config)
    client = redis.Redis.from_url(settings.redis.url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise Unavailable(
            f"cannot reach Redis at {settings.redis.url} ({exc}); is the stack up "
            "(`pedsearch stack status`)?"
        ) from exc
    fleet = Fleet(client, settings.milvus.alias)

    def view() -> Group:
        return Group(status_table(read_snapshots(client)), versions_table(fleet))

    if not args.watch:
        console.print(view())
        return 0
    with Live(view(), console=console) as live:
        try:
            while True:
                time.sleep(2)
                live.update(view())
        except KeyboardInterrupt:
            return 0
