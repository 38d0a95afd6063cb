"""``pedsearch demo``: the whole system on one machine, scored against a scene's ground truth.

1. starts the embedded stack (Kafka-API broker, Milvus, Redis) on free ports;
2. renders a synthetic scene of several cameras with known people and publishes its frames;
3. runs the ingest workers on Ray (detect, track, crop, embed, index) until the stream drains;
4. starts the gRPC gateway (in this process, on a free port) and asks it, through the client
   the ``pedsearch search`` command uses, a text query (the person described in words) and an
   attribute query per person, and one query by an example crop; scores them: R@1 / R@5 = the
   top 1 / 5 hits hold a crop of that person;
5. writes a contact sheet (PNG + HTML) of the top hits and ``results.json`` (every RPC and its
   hits), and stops everything (``--keep-running`` keeps the stack and the gateway up, printing
   the ``pedsearch search ... --gateway ...`` commands to try, until Ctrl-C).
"""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import signal
import threading
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from pedsearch.config import load_settings

console = Console()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="run the whole system on a synthetic scene and score its queries",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--cameras", type=int, default=4, help="cameras in the scene (>= 1)")
    p.add_argument("--people", type=int, default=12, help="people walking through it")
    p.add_argument("--duration", type=float, default=40.0, help="seconds of scene")
    p.add_argument("--fps", type=float, default=5.0, help="frames per second per camera")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--queries", type=int, default=12, help="people to search for")
    p.add_argument("--out", default="demo-out", help="folder for the contact sheets and results")
    p.add_argument("--data-dir", default=None, help="stack data (default: <out>/stack)")
    p.add_argument("--bundle", default=None,
                   help="model bundle (default: the shipped one); trained first if missing")
    p.add_argument("--train-config", default="tiny.yaml",
                   help="training configuration for a missing bundle (default: tiny.yaml)")
    p.add_argument("--no-train", action="store_true",
                   help="fail instead of training when the bundle is missing")
    p.add_argument("--keep-running", action="store_true",
                   help="keep the stack and the gateway up for your own queries until Ctrl-C")
    p.set_defaults(handler=cmd_demo)


def _check(args) -> None:
    from pedsearch.errors import InvalidInput

    # the scene's own bounds (pedsearch.synthetic.scene.SceneConfig), checked before the stack
    # starts rather than by a validation error after it
    for name, low, high in (("cameras", 1, 64), ("people", 1, 10_000), ("queries", 1, 10_000),
                            ("seed", 0, 2**32 - 1)):
        if not low <= getattr(args, name) <= high:
            raise InvalidInput(f"--{name} must be {low}..{high}, not {getattr(args, name)}")
    if not 5 <= args.duration <= 3600:
        raise InvalidInput("--duration must be 5..3600 seconds")
    if not 0.5 <= args.fps <= 30:
        raise InvalidInput("--fps must be 0.5..30")
    given = pathlib.Path(args.data_dir) if args.data_dir else None
    if given is not None and given.is_dir() and any(given.iterdir()):
        # an earlier scene's detections there would be scored against this scene's people
        raise InvalidInput(f"--data-dir {given} holds an earlier stack's data: the demo scores "
                           "what it finds against its own scene, so give an empty folder (or "
                           "leave --data-dir out: <out>/stack is started afresh)")


def train_bundle(bundle_path: pathlib.Path, args) -> None:
    """No bundle yet: train one the README's way (``pedsearch train --export``), with progress.

    ``--train-config`` picks the configuration (default ``tiny.yaml``: minutes on 2 cores, weak
    but real; ``default.yaml`` is what the shipped bundle was trained with).
    """
    import subprocess
    import sys

    from pedsearch.errors import NotReady

    if args.no_train:
        raise NotReady(f"no model bundle at {bundle_path}; train one with `pedsearch train "
                       f"--config default.yaml --export {bundle_path}` or drop --no-train")
    cmd = [sys.executable, "-c", "import sys; from pedsearch.cli import main; sys.exit(main())",
           "train", "--config", args.train_config, "--export", str(bundle_path),
           "--output-dir", str(pathlib.Path(args.out).absolute() / "training"),
           # one scratch run per bundle, started afresh: an earlier demo's run (another bundle,
           # or one interrupted) must not stop this one with "run folder already exists"
           "--run-name", "demo-" + (re.sub(r"[^A-Za-z0-9_-]", "_", bundle_path.name) or "bundle"),
           "--overwrite"]
    console.print(f"[yellow]no model bundle at {bundle_path}[/]: training one first with\n  "
                  f"pedsearch train --config {args.train_config} --export {bundle_path}")
    # its own process: the training job owns its Ray session and progress display
    if subprocess.call(cmd) != 0 or not (bundle_path / "bundle.json").exists():
        raise NotReady(f"training a bundle into {bundle_path} failed (its output is above)")


def _fresh_demo_data(out: pathlib.Path) -> None:
    """Start the demo's own stack data and crops afresh: an earlier demo's index would answer
    this scene's queries with another scene's people (or another model version's). A stack
    still running there (``--keep-running``) is left alone; ``stack.up`` then says so."""
    import shutil

    from deploy._state import read_state, state_path
    from deploy.stack import service_alive

    state = read_state(state_path(out / "stack"))
    if state is not None and any(service_alive(s) for s in state.services.values()):
        return
    for folder in (out / "stack", out / "crops"):
        if folder.exists():
            console.print(f"starting afresh: removing the previous demo's {folder}")
            shutil.rmtree(folder)


def _stop_on_signals() -> None:
    """SIGTERM (``kill``, a service manager) stops the demo as Ctrl-C does: the ``finally``
    blocks stop the gateway and the stack. Called again once Ray is up, since Ray installs its
    own SIGTERM handler, which ends the process at once and leaves the stack running; SIGINT
    is set too, because a shell starts background jobs with it ignored."""
    def interrupt(signum: int, frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second one must not cut the clean-up
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


def cmd_demo(args) -> int:
    from rich.progress import Progress

    from deploy.stack import LocalStack
    from pedsearch.bundle import default_bundle_path, read_manifest
    from workers.camera.publisher import FramePublisher, make_producer
    from workers.camera.sources import SyntheticSource
    from workers.runtime import IngestWorkers, init_ray

    _check(args)
    _stop_on_signals()
    out = pathlib.Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    bundle_path = pathlib.Path(args.bundle) if args.bundle else default_bundle_path()
    if not (bundle_path / "bundle.json").exists():
        train_bundle(bundle_path, args)
    # the gateway loads the bundle; here only its version is shown (and a missing one caught)
    console.print(f"model bundle {read_manifest(bundle_path)['version']} ({bundle_path})")

    if not args.data_dir:
        _fresh_demo_data(out)
    settings = load_settings(args.config, stack={
        "data_dir": str(pathlib.Path(args.data_dir).absolute() if args.data_dir else out / "stack"),
        "kafka_port": 0, "milvus_port": 0, "redis_port": 0,
    })
    settings.model.bundle = bundle_path
    settings.paths.crops_dir = out / "crops"
    settings.kafka.max_poll_interval_ms = 10_000
    stack = LocalStack.from_config(settings)
    t_start = time.monotonic()
    with console.status("starting the embedded stack (Kafka-API broker, Milvus, Redis)..."):
        stack.up()
    try:
        addr = stack.addresses()
        settings.kafka.bootstrap_servers = addr["kafka"]
        settings.milvus.uri = addr["milvus"]
        settings.redis.url = addr["redis"]
        console.print(f"stack up in {time.monotonic() - t_start:.0f} s: " + ", ".join(
            f"{k} {v}" for k, v in addr.items()))

        # -- the scene, published as fast as the broker takes it -------------------------------
        source = SyntheticSource(camera_id="demo", cameras=args.cameras, people=args.people,
                                 seed=args.seed, fps=args.fps, duration_s=args.duration,
                                 realtime=False)
        scene = source.build_scene()
        truth: dict[str, list] = {}
        publisher = FramePublisher(producer=make_producer(settings.kafka),
                                   topic=settings.kafka.frames_topic)
        total = int(args.duration * args.fps) * args.cameras
        with Progress(console=console) as progress:
            task = progress.add_task("rendering and publishing frames", total=total)
            for sf in source.frames(threading.Event()):
                publisher.publish(sf)
                truth.setdefault(sf.camera_id, []).append(
                    [(p.person_id, (p.box.x, p.box.y, p.box.w, p.box.h)) for p in sf.truth.people])
                progress.advance(task)
        publisher.close()

        # -- ingest -------------------------------------------------------------------------------
        init_ray(settings)
        _stop_on_signals()
        t0 = time.monotonic()
        with console.status(f"ingesting {publisher.stats.acked} frames: detect, track, crop, "
                            "embed, index (pedsearch status shows the counters)..."):
            workers = IngestWorkers(settings)
            try:
                results = workers.run(threading.Event(), idle_exit_s=8.0)
            finally:
                workers.shutdown()
        crops = sum(r["crops"] for r in results)
        console.print(f"ingested {sum(r['frames'] for r in results)} frames -> {crops} crops "
                      f"in {time.monotonic() - t0:.0f} s")

        # -- the gateway, and the queries through it ---------------------------------------------
        with console.status("starting the gRPC gateway (loads the model bundle)..."):
            server = _start_gateway(settings)
        gateway = server.address
        console.print(f"gRPC gateway serving at {gateway}")
        try:
            report = _run_queries(gateway, args, scene, truth, crops, out)
            if args.keep_running:
                _serve_until_interrupted(settings, gateway, report)
        finally:
            with console.status("stopping the gateway..."):
                server.stop(grace=2.0)
    finally:
        with console.status("stopping the stack..."):
            stack.down()
        import ray

        ray.shutdown()
    return 0


def _start_gateway(settings):
    """The real gRPC gateway, in this process, on a free loopback port."""
    from gateway.server import create_server

    return create_server("127.0.0.1:0", settings=settings).start()


def _run_queries(gateway: str, args, scene, truth, crops: int, out: pathlib.Path) -> dict:
    """Text, attribute and one image query per chosen person through the gRPC client; scores
    them against the scene's truth, writes the contact sheet and ``results.json``."""
    from rich.progress import Progress

    from gateway.client import connect
    from pedsearch.contact_sheet import contact_sheet, contact_sheet_html
    from pedsearch.synthetic.captions import describe

    seen = sorted({pid for frames in truth.values() for f in frames for pid, _ in f})
    if not seen or not crops:
        from pedsearch.errors import NotReady

        raise NotReady(f"the scene showed {len(seen)} people and the workers stored {crops} "
                       "crops: nothing to search for; give the people time to walk past "
                       "(raise --duration, --fps or --people)")
    rng = np.random.default_rng(args.seed)
    chosen = [int(x) for x in rng.permutation(seen)[: args.queries]]
    queries, sheet, rows = [], [], []
    found_at: dict[str, list[list[bool]]] = {"text": [], "attributes": [], "image": []}
    latency: dict[str, list[float]] = {}
    with connect(gateway) as gw, Progress(console=console) as progress:
        task = progress.add_task("queries through the gateway", total=2 * len(chosen) + 1)

        def run(rpc: str, kind: str, pid: int | None, query, call, exclude: int | None = None):
            t0 = time.perf_counter()
            result = call()
            latency.setdefault(rpc, []).append((time.perf_counter() - t0) * 1e3)
            found = [pid is not None and person_of(h.detection, truth) == pid
                     for h in result.hits]
            # recall counts the other crops of the person, not the query crop finding itself
            found_at[kind].append([ok for h, ok in zip(result.hits, found)
                                   if h.detection.id != exclude])
            queries.append({
                "rpc": rpc, "kind": kind, "person": pid, "query": query,
                "model_version": result.model_version,
                "hits": [{"id": h.detection.id, "score": round(h.score, 4),
                          "camera": h.detection.camera_id, "ts_us": h.detection.ts_us,
                          "ok": ok} for h, ok in zip(result.hits, found)]})
            progress.advance(task)
            return result, found

        for pid in chosen:
            person = scene.person(pid)
            text = describe(person.attributes, np.random.default_rng(pid))
            attrs = {k: person.attributes[k] for k in ("gender", "upper_color", "lower_color",
                                                       "backpack", "hat")}
            result, found = run("SearchText", "text", pid, text,
                                lambda: gw.search_text(text, k=5))
            run("SearchAttributes", "attributes", pid, attrs,
                lambda: gw.search_attributes(attrs, k=5))
            rows.append((pid, text))
            if len(sheet) < 40:
                for rank, (h, ok) in enumerate(zip(result.hits, found), 1):
                    d = h.detection
                    jpeg = gw.get_detection(d.id, include_crop=True).crop_jpeg
                    sheet.append({"image": _decode(jpeg), "title": f"p{pid} #{rank} {h.score:.2f}",
                                  "subtitle": d.camera_id, "ok": ok, "score": h.score,
                                  "camera": d.camera_id, "time": d.ts_us / 1e6})
        # query by example: a stored crop a text query found (of its person, if it found one)
        example = next((q for q in queries if q["kind"] == "text" and any(
            h["ok"] for h in q["hits"])), queries[0])
        probe = next((h for h in example["hits"] if h["ok"]), example["hits"][0]
                     if example["hits"] else None)
        example_crop = None
        if probe is not None:
            got = gw.get_detection(probe["id"], include_crop=True)
            example_crop = out / "example_crop.jpg"
            example_crop.write_bytes(got.crop_jpeg)
            run("SearchImage", "image", person_of(got.detection, truth),
                f"crop of detection {probe['id']}",
                lambda: gw.search_image(got.crop_jpeg, k=6), exclude=probe["id"])

    table = Table(title=f"demo: {len(chosen)} people searched among {crops} stored crops, "
                        f"through the gRPC gateway at {gateway}")
    for name in ("query kind", "RPC", "queries", "R@1", "R@5", "chance R@1"):
        table.add_column(name, justify="left" if name in ("query kind", "RPC") else "right")
    summary = {}
    for (kind, found), rpc in zip(found_at.items(), ("SearchText", "SearchAttributes",
                                                     "SearchImage")):
        if not found:
            continue
        r1 = float(np.mean([bool(f and f[0]) for f in found]))
        r5 = float(np.mean([any(f) for f in found]))
        summary[kind] = {"rpc": rpc, "queries": len(found), "R@1": r1, "R@5": r5}
        table.add_row(kind, rpc, str(len(found)), f"{r1:.2f}", f"{r5:.2f}",
                      f"{1 / max(1, len(seen)):.2f}")
    console.print(table)
    console.print("gateway latency, median per call: " + ", ".join(
        f"{rpc} {np.median(ms):.0f} ms" for rpc, ms in latency.items()))
    for pid, text in rows[:3]:
        console.print(f"  person {pid}: [italic]{text}[/]")
    report = {"gateway": gateway, "summary": summary, "queries": queries,
              "example_crop": str(example_crop) if example_crop else None,
              "latency_ms_median": {rpc: float(np.median(ms)) for rpc, ms in latency.items()}}
    (out / "results.json").write_text(json.dumps(report, indent=1))
    if not sheet:  # no text query found anybody: the figures say so, there is nothing to show
        console.print(f"no hits to show in a contact sheet; results: {out / 'results.json'}")
        return report
    png = contact_sheet(sheet, out / "contact_sheet.png", cols=5,
                        title="text queries: top 5 per person (green = that person)")
    contact_sheet_html(sheet, out / "contact_sheet.html", title="pedsearch demo")
    console.print(f"contact sheet: {png}  results: {out / 'results.json'}")
    return report


def _serve_until_interrupted(settings, gateway: str, report: dict) -> None:
    """``--keep-running``: print how to query the running system, then wait for Ctrl-C."""
    text = next((q["query"] for q in report["queries"] if q["kind"] == "text"),
                "a person in a red top")
    console.print("\nThe stack and the gateway keep running. Try, from another shell:")
    console.print(f"  pedsearch search \"{text}\" --gateway {gateway}", soft_wrap=True)
    console.print(f"  pedsearch search --attr upper_color=red --attr backpack=yes --gateway "
                  f"{gateway}", soft_wrap=True)
    if report.get("example_crop"):
        console.print(f"  pedsearch search --image {report['example_crop']} --gateway {gateway}",
                      soft_wrap=True)
    console.print(f"  pedsearch watch \"a person\" --threshold 0.3 --gateway {gateway}",
                  soft_wrap=True)
    console.print(f"  pedsearch cameras --gateway {gateway}")
    console.print("Other commands (pedsearch camera, workers, gateway serve, status) reach "
                  "this stack, its crop store and its model with:")
    for k, v in (("KAFKA__BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers),
                 ("MILVUS__URI", settings.milvus.uri), ("REDIS__URL", settings.redis.url),
                 ("MILVUS__ALIAS", settings.milvus.alias),
                 ("PATHS__CROPS_DIR", pathlib.Path(settings.paths.crops_dir).absolute()),
                 ("MODEL__BUNDLE", pathlib.Path(settings.model.bundle).absolute())):
        console.print(f"  export PEDSEARCH_{k}={shlex.quote(str(v))}", soft_wrap=True)
    console.print("[bold]Ctrl-C (or SIGTERM) stops the gateway and the stack.[/]")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        console.print("stopping...")


def person_of(det, truth) -> int | None:
    """Ground-truth person of a stored crop: the scene person its box overlaps (IoU >= 0.5)."""
    from workers.detectors.base import iou_matrix

    frames = truth.get(det.camera_id)
    if frames is None or det.frame_seq >= len(frames):
        return None
    people = frames[det.frame_seq]
    if not people:
        return None
    gt = np.array([p[1] for p in people], np.float32)
    iou = iou_matrix(np.array([det.box], np.float32), gt)[0]
    j = int(iou.argmax())
    return people[j][0] if iou[j] >= 0.5 else None


def _decode(jpeg: bytes):
    import cv2

    if not jpeg:
        return None
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
