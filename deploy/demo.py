"""``pedsearch demo``: the whole system on one machine, scored against a scene's ground truth.

1. starts the embedded stack (Kafka-API broker, Milvus, Redis) on free loopback ports;
2. renders a synthetic scene of several cameras with known people and publishes its frames;
3. runs the ingest workers on Ray (detect, track, crop, embed, index) until the stream drains;
4. asks text queries (each person described in words) and attribute queries through the query
   core, and scores them: R@1 / R@5 = the top 1 / 5 hits hold a crop of that person;
5. writes a contact sheet (PNG + HTML) of the top hits, and stops everything
   (``--keep-running`` leaves the stack up for your own queries).
"""

from __future__ import annotations

import json
import pathlib
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
    p.add_argument("--bundle", default=None, help="model bundle (default: the shipped one)")
    p.add_argument("--keep-running", action="store_true",
                   help="leave the stack up afterwards (stop it with `pedsearch stack down`)")
    p.set_defaults(handler=cmd_demo)


def _check(args) -> None:
    from pedsearch.errors import InvalidInput

    for name, low in (("cameras", 1), ("people", 1), ("queries", 1)):
        if getattr(args, name) < low:
            raise InvalidInput(f"--{name} must be >= {low}")
    if not 5 <= args.duration <= 3600:
        raise InvalidInput("--duration must be 5..3600 seconds")
    if not 0.5 <= args.fps <= 30:
        raise InvalidInput("--fps must be 0.5..30")


def person_of_hit(hit, truth) -> int | None:
    """Ground-truth person of a stored crop: the scene person its box overlaps (IoU >= 0.5)."""
    from workers.detectors.base import iou_matrix

    frames = truth.get(hit.camera_id)
    if frames is None or hit.frame_seq >= len(frames):
        return None
    people = frames[hit.frame_seq]
    if not people:
        return None
    gt = np.array([p[1] for p in people], np.float32)
    iou = iou_matrix(np.array([hit.box], np.float32), gt)[0]
    j = int(iou.argmax())
    return people[j][0] if iou[j] >= 0.5 else None


def cmd_demo(args) -> int:
    from pedsearch.bundle import default_bundle_path, load_bundle
    from pedsearch.contact_sheet import contact_sheet, contact_sheet_html
    from pedsearch.cropstore import CropStore
    from pedsearch.synthetic.captions import describe
    from pymilvus import MilvusClient

    from deploy.stack import LocalStack
    from gateway.search import Searcher
    from workers.camera.publisher import FramePublisher, make_producer
    from workers.camera.sources import SyntheticSource
    from workers.runtime import IngestWorkers, init_ray

    _check(args)
    out = pathlib.Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    bundle_path = pathlib.Path(args.bundle) if args.bundle else default_bundle_path()
    bundle = load_bundle(bundle_path, parts=("text", "attributes"))
    console.print(f"model bundle {bundle.version} ({bundle_path})")

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
        from rich.progress import Progress

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

        # -- queries ------------------------------------------------------------------------------
        client = MilvusClient(uri=settings.milvus.uri)
        searcher = Searcher(client=client, cfg=settings.milvus, bundle=bundle)
        searcher.client.load_collection(searcher.collection())
        seen = sorted({pid for frames in truth.values() for f in frames for pid, _ in f})
        rng = np.random.default_rng(args.seed)
        chosen = [int(x) for x in rng.permutation(seen)[: args.queries]]
        store = CropStore(settings.paths.crops_dir)
        rows, sheet, report = [], [], []
        hits_at = {"text": [], "attributes": []}
        for pid in chosen:
            person = scene.person(pid)
            text = describe(person.attributes, np.random.default_rng(pid))
            attrs = {k: person.attributes[k] for k in ("gender", "upper_color", "lower_color",
                                                       "backpack", "hat")}
            for kind, hits in (("text", searcher.search_text(text, k=5)),
                               ("attributes", searcher.search_attributes(attrs, k=5))):
                found = [person_of_hit(h, truth) == pid for h in hits]
                hits_at[kind].append(found)
                report.append({"person": pid, "kind": kind,
                               "query": text if kind == "text" else attrs,
                               "hits": [{"id": h.id, "score": h.score, "camera": h.camera_id,
                                         "ok": ok} for h, ok in zip(hits, found)]})
                if kind == "text" and len(sheet) < 40:
                    for rank, (h, ok) in enumerate(zip(hits, found), 1):
                        img = _decode(store.get(h.crop_ref))
                        sheet.append({"image": img, "title": f"p{pid} #{rank} {h.score:.2f}",
                                      "subtitle": h.camera_id, "ok": ok, "score": h.score,
                                      "camera": h.camera_id, "time": h.ts_us / 1e6})
            rows.append((pid, text))
        client.close()

        table = Table(title=f"demo: {len(chosen)} people searched among {crops} stored crops")
        table.add_column("query kind")
        table.add_column("R@1", justify="right")
        table.add_column("R@5", justify="right")
        table.add_column("chance R@1", justify="right")
        for kind, found in hits_at.items():
            r1 = np.mean([bool(f and f[0]) for f in found]) if found else 0.0
            r5 = np.mean([any(f) for f in found]) if found else 0.0
            table.add_row(kind, f"{r1:.2f}", f"{r5:.2f}", f"{1 / max(1, len(seen)):.2f}")
        console.print(table)
        for pid, text in rows[:3]:
            console.print(f"  person {pid}: [italic]{text}[/]")
        png = contact_sheet(sheet, out / "contact_sheet.png", cols=5,
                            title="text queries: top 5 per person (green = that person)")
        contact_sheet_html(sheet, out / "contact_sheet.html", title="pedsearch demo")
        (out / "results.json").write_text(json.dumps(report, indent=1))
        console.print(f"contact sheet: {png}  results: {out / 'results.json'}")
    finally:
        if args.keep_running:
            console.print("the stack keeps running; these point other commands at it:")
            for k, v in (("KAFKA__BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers),
                         ("MILVUS__URI", settings.milvus.uri), ("REDIS__URL", settings.redis.url),
                         ("MILVUS__ALIAS", settings.milvus.alias)):
                console.print(f"  export PEDSEARCH_{k}={v}")
            console.print(f"stop it with: pedsearch stack down --data-dir {settings.stack.data_dir}")
        else:
            with console.status("stopping the stack..."):
                stack.down()
        import ray

        ray.shutdown()
    return 0


def _decode(jpeg: bytes):
    import cv2

    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
