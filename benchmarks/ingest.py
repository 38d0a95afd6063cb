"""Ingest throughput and freshness: the Ray pipeline against a bare single-process loop.

Measures, on the same pre-encoded frames, in one run:

1. bare loop: decode -> detector -> tracker -> crop selector -> embedder, one process, no
   Kafka / Ray / Milvus (the baseline);
2. the pipeline with 1 and with 2 workers (consumer + embedder actors each), and with 1
   consumer that embeds in-process (``workers.embedders = 0``): frames published to a fresh
   topic first, then drained into Milvus; throughput counted from the first frame handled to
   the Milvus acknowledgement of the last frames' crops, plus the write time of the track
   windows still open at the end (which a consumer closes only after ``idle_exit_s`` without
   frames; the bare loop closes them at once). The bare loop and the 1-worker runs are
   repeated in ``--repeat`` rounds; each ratio is taken within a round (the machine may be
   shared);
3. freshness (capture -> written to Milvus) with 1 worker while frames are published in real
   time at half the 1-worker maximum rate.

Prints frames/s, crops/s and the pipeline/bare ratios. The embedded stack is started on free
ports in a temporary folder unless PEDSEARCH_BENCH_KAFKA / _MILVUS / _REDIS give addresses.

    python benchmarks/ingest.py --cameras 4 --seconds 30 --fps 5 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
import uuid

import numpy as np
from rich.console import Console
from rich.table import Table

from pedsearch.config import Settings
from pedsearch.envelope import decode_frame, make_frame

console = Console()


def synthetic_frames(cameras: int, people: int, seconds: float, fps: float, seed: int):
    """Pre-encoded envelopes [(camera_id, bytes)] of a synthetic scene, in time order."""
    from workers.camera.sources import SyntheticSource

    src = SyntheticSource(camera_id="bench", cameras=cameras, people=people, seed=seed, fps=fps,
                          duration_s=seconds, realtime=False)
    seqs: dict[str, int] = {}
    out = []
    for sf in src.frames(threading.Event()):
        seq = seqs.get(sf.camera_id, 0)
        seqs[sf.camera_id] = seq + 1
        f = make_frame(camera_id=sf.camera_id, seq=seq, image=sf.image,
                       capture_ts_us=sf.capture_ts_us)
        out.append((sf.camera_id, f.SerializeToString()))
    return out


def bare_loop(settings: Settings, frames) -> dict:
    from workers.embedder import Embedder
    from workers.pipeline import pipeline_factory

    make = pipeline_factory(settings)
    embedder = Embedder(bundle_path=settings.model.bundle, device="cpu",
                        batch_size=settings.workers.embed_batch)
    pipes = {}
    pending = []
    crops = 0
    t0 = time.perf_counter()
    for cam, raw in frames:
        d = decode_frame(raw, key=None, max_bytes=settings.kafka.max_message_bytes)
        pipe = pipes.get(cam) or pipes.setdefault(cam, make(cam))
        pending += pipe.process(d)
        if len(pending) >= settings.workers.embed_batch:
            embedder([c.crop for c in pending])
            crops += len(pending)
            pending = []
    for pipe in pipes.values():
        pending += pipe.finish()
    embedder([c.crop for c in pending])
    crops += len(pending)
    dt = time.perf_counter() - t0
    return {"frames": len(frames), "crops": crops, "seconds": dt}


def publish(settings: Settings, frames, rate: float | None = None) -> None:
    from workers.camera.publisher import make_producer

    producer = make_producer(settings.kafka)
    period = 1.0 / rate if rate else 0.0
    t_next = time.monotonic()
    for cam, raw in frames:
        if period:
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
            # re-stamp at "capture" so freshness is measured from now
            from pedsearch.v1 import frame_pb2

            f = frame_pb2.Frame.FromString(raw)
            f.capture_ts_us = int(time.time() * 1e6)
            raw = f.SerializeToString()
        producer.send(settings.kafka.frames_topic, key=cam.encode(), value=raw)
    producer.flush()
    producer.close()


def pipeline_run(settings: Settings, frames, workers: int, *, rate: float | None = None,
                 idle_exit_s: float = 6.0, embedders: int | None = None) -> dict:
    from workers.runtime import IngestWorkers

    s = settings.model_copy(deep=True)
    s.kafka.frames_topic = f"bench-{uuid.uuid4().hex[:8]}"
    s.kafka.consumer_group = f"bench-{uuid.uuid4().hex[:8]}"
    s.workers.consumers = workers
    s.workers.embedders = workers if embedders is None else embedders
    ingest = IngestWorkers(s)
    stop = threading.Event()
    if rate is None:
        publish(s, frames)
        try:
            results = ingest.run(stop, idle_exit_s=idle_exit_s)
        finally:
            ingest.shutdown()
    else:
        # the topic must exist and the group must have joined before the clock starts,
        # else the first frames wait out the broker's join delay in Kafka
        publish(s, frames[:1])
        box: dict = {}
        runner = threading.Thread(
            target=lambda: box.setdefault("r", ingest.run(stop, idle_exit_s=idle_exit_s)),
            daemon=True)
        runner.start()
        wait_assigned(s, workers)
        publish(s, frames[1:], rate)
        runner.join()
        ingest.shutdown()
        results = box["r"]
    # from the first frame handled until the crops of the last frames are in Milvus, plus the
    # write time of the windows still open at the end: a consumer cannot know that the stream
    # ended, so it closes them only after idle_exit_s without frames, a wait the bare loop
    # (which knows its input ends) does not have and which is not throughput
    first = min(r["first_frame_at"] for r in results if r["first_frame_at"])
    last = max(max(r["last_frame_at"] or 0.0, r["stream_write_at"] or 0.0) for r in results)
    last += max(r["end_write_s"] for r in results)
    fresh = np.array([x for r in results for x in r["freshness_s"]])
    return {
        "frames": sum(r["frames"] for r in results),
        "crops": sum(r["crops"] for r in results),
        "seconds": last - first,
        "fresh_p50": float(np.percentile(fresh, 50)) if len(fresh) else float("nan"),
        "fresh_p99": float(np.percentile(fresh, 99)) if len(fresh) else float("nan"),
    }


def wait_assigned(settings: Settings, workers: int, timeout: float = 120.0) -> None:
    import redis

    from workers.metrics import read_snapshots, total

    client = redis.Redis.from_url(settings.redis.url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snaps = [x for x in read_snapshots(client)
                 if x["worker"].startswith(settings.kafka.consumer_group + ":")]
        if total(snaps, "pedsearch_assigned_partitions") >= 1 and len(snaps) >= workers:
            return
        time.sleep(0.2)
    raise RuntimeError("the consumers got no partitions in time")


@contextlib.contextmanager
def stack_or_env(settings: Settings):
    env = {k: os.environ.get(f"PEDSEARCH_BENCH_{k.upper()}") for k in ("kafka", "milvus", "redis")}
    if all(env.values()):
        settings.kafka.bootstrap_servers = env["kafka"]
        settings.milvus.uri = env["milvus"]
        settings.redis.url = env["redis"]
        yield settings
        return
    from deploy.stack import LocalStack

    with tempfile.TemporaryDirectory(prefix="pedsearch-bench-") as tmp:
        settings.stack.data_dir = settings.stack.data_dir.__class__(tmp)
        settings.stack.kafka_port = 0
        settings.stack.milvus_port = 0
        settings.stack.redis_port = 0
        settings.paths.crops_dir = settings.paths.crops_dir.__class__(tmp) / "crops"
        with LocalStack.from_config(settings) as stack:
            addr = stack.addresses()
            settings.kafka.bootstrap_servers = addr["kafka"]
            settings.milvus.uri = addr["milvus"]
            settings.redis.url = addr["redis"]
            yield settings


def track_fragmentation(settings: Settings, seeds=(11, 12, 13)) -> dict:
    """Stored crops per ground-truth walk on the drain test's scenes, without Kafka or Milvus.

    Each scene (3 cameras, 8 people, 24 s at 5 fps) runs through the camera pipelines
    (detector, tracker, best-crop selector); every emitted crop is matched to the ground-truth
    person of its frame by IoU >= 0.5. Returns means over the seeds of: distinct tracker ids per
    found person-walk (1 = never split), stored crops per walk, the share of walks found
    (visibility >= 0.5) and the share of crops that are a person.
    """
    from workers.camera.sources import SyntheticSource
    from workers.detectors.base import iou_matrix
    from workers.pipeline import pipeline_factory

    out: dict[str, list[float]] = {"tracks per walk": [], "crops per walk": [],
                                   "walks found": [], "crops that are people": []}
    for seed in seeds:
        src = SyntheticSource(camera_id="cam", cameras=3, people=8, seed=seed, fps=5.0,
                              duration_s=24.0, realtime=False)
        make = pipeline_factory(settings)
        pipes: dict = {}
        truth: dict[str, list] = {}
        crops: dict[int, object] = {}
        for sf in src.frames(threading.Event()):
            seq = len(truth.setdefault(sf.camera_id, []))
            truth[sf.camera_id].append(sf.truth)
            d = decode_frame(make_frame(camera_id=sf.camera_id, seq=seq, image=sf.image,
                                        capture_ts_us=sf.capture_ts_us).SerializeToString(),
                             key=None, max_bytes=settings.kafka.max_message_bytes)
            pipe = pipes.get(sf.camera_id) or pipes.setdefault(sf.camera_id, make(sf.camera_id))
            crops.update({c.id: c for c in pipe.process(d)})
        for pipe in pipes.values():
            crops.update({c.id: c for c in pipe.finish()})
        ids: dict[tuple, set] = {}
        per_walk: dict[tuple, int] = {}
        people_crops = 0
        for c in crops.values():
            people = list(truth[c.camera_id][c.frame_seq].people)
            if not people:
                continue
            gt = np.array([[p.box.x, p.box.y, p.box.w, p.box.h] for p in people], np.float32)
            iou = iou_matrix(np.asarray([c.box], np.float32), gt)[0]
            j = int(iou.argmax())
            if iou[j] >= 0.5:
                people_crops += 1
                key = (c.camera_id, people[j].track_id)
                ids.setdefault(key, set()).add(c.track_id)
                per_walk[key] = per_walk.get(key, 0) + 1
        walks = {(cam, p.track_id) for cam, frames in truth.items() for f in frames
                 for p in f.people if p.visibility >= 0.5}
        found = walks & set(ids)
        out["tracks per walk"].append(float(np.mean([len(ids[k]) for k in found])))
        out["crops per walk"].append(float(np.mean([per_walk[k] for k in found])))
        out["walks found"].append(len(found) / max(1, len(walks)))
        out["crops that are people"].append(people_crops / max(1, len(crops)))
    return {k: float(np.mean(v)) for k, v in out.items()}


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--people", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30.0, help="scene length per camera")
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bundle", default=None, help="model bundle (default: the shipped one)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of (bare loop, 1-worker pipelines) run back to back; the "
                    "ratios are taken within a round and their median reported, so a load "
                    "change on a shared machine hits both sides of a ratio alike")
    ap.add_argument("--freshness-only", type=float, default=None, metavar="FPS",
                    help="measure only the freshness run, with frames published at FPS (to "
                    "repeat it when the machine's load changed during a full run)")
    ap.add_argument("--tracking-only", action="store_true",
                    help="measure only how often the tracker splits a walk: the drain test's "
                    "scenes with the motion gate off and at tracking.center_gate")
    args = ap.parse_args(argv)
    if args.tracking_only:
        settings = Settings()
        table = Table(title="stored crops per ground-truth walk (seeds 11-13, 3 cameras x 8 "
                      "people x 24 s)")
        rows = []
        for gate in (0.0, settings.tracking.center_gate):
            s = settings.model_copy(deep=True)
            s.tracking.center_gate = gate
            rows.append((gate, track_fragmentation(s)))
        table.add_column("tracking.center_gate", justify="right")
        for col in rows[0][1]:
            table.add_column(col, justify="right")
        for gate, r in rows:
            table.add_row(f"{gate:g}", *(f"{v:.3f}" for v in r.values()))
        console.print(table)
        return 0
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if args.freshness_only is not None and args.freshness_only <= 0:
        ap.error("--freshness-only needs a rate > 0")

    settings = Settings()
    if args.bundle:
        settings.model.bundle = args.bundle
    settings.kafka.max_poll_interval_ms = 10_000
    import ray

    # N workers = N consumer + N embedder actors of 1 logical CPU each: give Ray 4 logical CPUs
    # so the 2-worker run can be placed (the physical cores are shared all the same)
    ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    console.print(f"rendering {args.cameras} cameras x {args.seconds:.0f} s at {args.fps} fps")
    frames = synthetic_frames(args.cameras, args.people, args.seconds, args.fps, args.seed)
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {"bare loop": [], "pipeline, 1 worker": [],
                                   "pipeline, 1 worker, in-process embedder": []}
    ratios: dict[str, list[float]] = {k: [] for k in runs}

    def fps(r: dict) -> float:
        return r["frames"] / r["seconds"]

    if args.freshness_only is not None:
        with stack_or_env(settings) as settings:
            r = pipeline_run(settings, frames, 1, rate=args.freshness_only)
        load_after = os.getloadavg()
        console.print(f"1 worker, frames at {args.freshness_only:.1f} fps: "
                      f"{r['frames'] / r['seconds']:.1f} frames/s, freshness p50 "
                      f"{r['fresh_p50']:.2f} s, p99 {r['fresh_p99']:.2f} s")
        console.print("load average (1, 5, 15 min) before: %.2f %.2f %.2f, after: %.2f %.2f %.2f"
                      % (*load_before, *load_after))
        ray.shutdown()
        return 0
    with stack_or_env(settings) as settings:
        for i in range(args.repeat):
            bare = bare_loop(settings, frames)
            one = pipeline_run(settings, frames, 1)
            inproc = pipeline_run(settings, frames, 1, embedders=0)
            for name, r in (("bare loop", bare), ("pipeline, 1 worker", one),
                            ("pipeline, 1 worker, in-process embedder", inproc)):
                runs[name].append(r)
                ratios[name].append(fps(r) / fps(bare))
            console.print(f"round {i + 1}/{args.repeat}: bare {fps(bare):.1f} frames/s, "
                          f"1 worker {fps(one):.1f} ({fps(one) / fps(bare):.2f} x), in-process "
                          f"embedder {fps(inproc):.1f} ({fps(inproc) / fps(bare):.2f} x), "
                          f"load {os.getloadavg()[0]:.1f}")
        two = pipeline_run(settings, frames, 2)
        runs["pipeline, 2 workers"] = [two]
        ratios["pipeline, 2 workers"] = [fps(two) / fps(runs["bare loop"][-1])]
        half = 0.5 * _median([fps(r) for r in runs["pipeline, 1 worker"]])
        fresh_name = f"1 worker, frames at {half:.1f} fps"
        runs[fresh_name] = [pipeline_run(settings, frames, 1, rate=half)]
    load_after = os.getloadavg()

    table = Table(title=f"ingest: {len(frames)} frames of {args.cameras} cameras, "
                  f"median of {args.repeat} round(s)")
    for col in ("run", "frames/s", "crops/s", "x bare (same round)", "freshness p50 s",
                "freshness p99 s"):
        table.add_column(col, justify="right")
    for name, rs in runs.items():
        f_s = _median([fps(r) for r in rs])
        c_s = _median([r["crops"] / r["seconds"] for r in rs])
        ratio = f"{_median(ratios[name]):.2f}" if name in ratios else ""
        if name == fresh_name:
            p50, p99 = f"{rs[0]['fresh_p50']:.2f}", f"{rs[0]['fresh_p99']:.2f}"
        else:  # a drained backlog: crops wait in Kafka, their age says nothing
            p50 = p99 = "" if name == "bare loop" else "(backlog)"
        table.add_row(name, f"{f_s:.1f}", f"{c_s:.1f}", ratio, p50, p99)
    console.print(table)
    for name, rs in ratios.items():
        console.print(f"{name}: x bare per round {', '.join(f'{x:.2f}' for x in rs)}")
    console.print("load average (1, 5, 15 min) before: %.2f %.2f %.2f, after: %.2f %.2f %.2f"
                  % (*load_before, *load_after))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
