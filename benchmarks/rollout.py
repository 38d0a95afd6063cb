"""A roll-out's copy rate against a bare encoder loop, and query latency while it runs.

In one run, on the embedded Milvus and Redis (free ports in a temporary folder unless
PEDSEARCH_BENCH_MILVUS / PEDSEARCH_BENCH_REDIS give addresses):

1. ``--rows`` detections are stored in the collection of the shipped bundle's version, behind
   the alias: rendered synthetic people (``--people`` of them, 4 views each), each row with its
   own JPEG in a crop store, embedded by the shipped bundle;
2. **the bare loop** (the baseline): the bundle's ``encode_images`` over the same crops, already
   decoded, in the roll-out's batches -- what re-embedding costs with no I/O at all;
3. **the copy** (``deploy.rollout.rollout``, ``--no-switch``): every row read from Milvus, its
   crop read and decoded, embedded by a new version's bundle and written to the new
   collection. Printed: rows/s and copy / bare;
4. **queries during a roll-out**: a gateway in its own process (``pedsearch gateway serve``,
   started with the old version only) answers ``SearchText`` from a client that searches
   without pause, before, during and after a full roll-out to a third version (staged bundle,
   copy, wait for the gateway, switch). Printed: p50 / p99 per phase, failed queries, and the
   versions that answered -- the claim "no query downtime", measured.

Run (a 2-core machine: the copy and the gateway share the cores, so the during-phase latency is
an upper bound)::

    nice -n 10 .venv/bin/python benchmarks/rollout.py --rows 4000
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import tempfile
import threading
import time

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # query.py's helpers

console = Console(width=130)

CAPTIONS = ["a man in a black jacket and blue jeans", "a woman with a red backpack",
            "a person in a white shirt carrying a handbag", "a young woman in a long skirt",
            "a man wearing a cap and grey trousers"]


def bundle_as(src: pathlib.Path, dst: pathlib.Path, version: str) -> pathlib.Path:
    """The bundle at ``src`` under another model version (the same weights): a stand-in for a
    retrained bundle, costing exactly what a retrained one costs to embed with."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "bundle.json").read_text())
    (dst / "bundle.json").write_text(json.dumps({**manifest, "version": version}))
    return dst


def store_detections(settings, bundle, n: int, people: int, seed: int) -> list[np.ndarray]:
    """``n`` rows of rendered people in the collection of ``bundle.version`` (behind the alias)
    and their crops in the crop store; returns the ``n`` decoded crops."""
    import cv2

    from pedsearch.cropstore import CropStore
    from pedsearch.schema import DetectionCollections, DetectionRow, connect
    from pedsearch.synthetic.people import sample_person
    from pedsearch.synthetic.render import render_crop

    rng = np.random.default_rng(seed)
    with console.status(f"rendering {people} people x 4 views..."):
        pool = [render_crop(sample_person(20_000_000 + i, rng), rng)
                for i in range(people) for _ in range(4)]
    jpegs = [cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for c in pool]
    cols = DetectionCollections(connect(settings.milvus), settings.milvus)
    name = cols.ensure(bundle.version, embed_dim=bundle.embed_dim, attributes=bundle.schema)
    crops = CropStore(settings.paths.crops_dir)
    t0 = 1_764_633_600 * 1_000_000
    images = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console) as bar:
        task = bar.add_task("storing detections (crop, embedding, row)", total=n)
        for start in range(0, n, 256):
            idx = range(start, min(n, start + 256))
            batch = [pool[i % len(pool)] for i in idx]
            emb, probs = bundle.encode_images(batch)
            rows = []
            for i, e, p in zip(idx, emb, probs):
                cam, ts = f"cam-{i % 8}", t0 + i * 200_000
                ref = crops.put(CropStore.ref_for(cam, ts, i + 1), jpegs[i % len(pool)])
                rows.append(DetectionRow(
                    id=i + 1, camera_id=cam, ts_us=ts, track_id=i // 4, frame_seq=i,
                    box=(0.0, 0.0, 64.0, 128.0), det_score=0.9, crop_ref=ref,
                    model_version=bundle.version, embedding=e, attributes=p))
            cols.upsert(name, rows, bundle.schema)
            images += batch
            bar.advance(task, len(rows))
    cols.client.flush(name)
    return images


def bare_rate(bundle, images: list[np.ndarray], batch: int) -> float:
    """Crops/s of ``encode_images`` over decoded crops, in the roll-out's batch size."""
    bundle.encode_images(images[:batch])  # warm-up
    t = time.perf_counter()
    for start in range(0, len(images), batch):
        bundle.encode_images(images[start:start + batch])
    return len(images) / (time.perf_counter() - t)


class Searcher(threading.Thread):
    """Searches without pause; records (phase, seconds, model version or error, monotonic
    time the answer came)."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.phase = "before"
        self.records: list[tuple[str, float, str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import grpc

        from pedsearch.v1 import search_pb2, search_pb2_grpc

        with grpc.insecure_channel(self.address) as channel:
            stub = search_pb2_grpc.SearchStub(channel)
            i = 0
            while not self.stop.is_set():
                req = search_pb2.SearchTextRequest(text=CAPTIONS[i % len(CAPTIONS)], top_k=10)
                i += 1
                t = time.perf_counter()
                try:
                    outcome = stub.SearchText(req, timeout=30).model_version
                except grpc.RpcError as exc:
                    outcome = f"error {exc.code().name}: {exc.details()}"
                done = time.perf_counter()
                self.records.append((self.phase, done - t, outcome, done))


def phase_table(records: list[tuple]) -> Table:
    table = Table(title="SearchText through the gateway during a roll-out")
    for col in ("phase", "queries", "failed", "p50 (ms)", "p99 (ms)", "answered by"):
        table.add_column(col, justify="left" if col in ("phase", "answered by") else "right")
    for phase in ("before", "during", "after"):
        rec = [r for r in records if r[0] == phase]
        if not rec:
            continue
        ms = np.array([r[1] for r in rec]) * 1e3
        failed = [r[2] for r in rec if r[2].startswith("error")]
        versions = sorted({r[2] for r in rec if not r[2].startswith("error")})
        table.add_row(phase, str(len(rec)), str(len(failed)), f"{np.percentile(ms, 50):.1f}",
                      f"{np.percentile(ms, 99):.1f}", ", ".join(versions))
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=4000, help="stored detections (>= 256)")
    ap.add_argument("--people", type=int, default=100, help="distinct rendered people")
    ap.add_argument("--phase-s", type=float, default=15.0,
                    help="seconds of queries before and after the roll-out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.rows < 256 or args.people < 1 or not 1 <= args.phase_s <= 600:
        ap.error("--rows must be >= 256, --people >= 1, --phase-s 1..600")

    import redis

    from deploy.rollout import BATCH, rollout
    from pedsearch.bundle import default_bundle_path, load_bundle
    from pedsearch.config import Settings
    from pedsearch.cropstore import CropStore
    from pedsearch.fleet import Fleet
    from pedsearch.schema import DetectionCollections, connect
    from query import servers, spawn_gateway

    settings = Settings()
    src = default_bundle_path()
    settings.model.bundle = src
    old = load_bundle(src, parts=("image",))
    with tempfile.TemporaryDirectory(prefix="pedsearch-rbench-") as tmp, servers(settings):
        settings.paths.crops_dir = pathlib.Path(tmp) / "crops"
        images = store_detections(settings, old, args.rows, args.people, args.seed)
        with console.status("the bare encoder loop..."):
            bare = bare_rate(old, images, BATCH)
        cols = DetectionCollections(connect(settings.milvus), settings.milvus)
        crops = CropStore(settings.paths.crops_dir)
        new_a = load_bundle(bundle_as(src, pathlib.Path(tmp) / "a", "vBenchA"), parts=("image",))
        with console.status(f"copying {args.rows:,} detections into vBenchA..."):
            t = time.perf_counter()
            report = rollout(cols, crops, new_a, switch=False)
            copy_s = time.perf_counter() - t
        rate = report.stats.copied / copy_s
        table = Table(title=f"re-embedding {args.rows:,} stored detections (batch {BATCH})")
        for col in ("what", "crops/s", "ratio"):
            table.add_column(col, justify="left" if col == "what" else "right")
        table.add_row("bare encode_images loop (decoded crops, no I/O)", f"{bare:.1f}", "1.00")
        table.add_row("roll-out copy (Milvus read, crop read + decode, embed, upsert)",
                      f"{rate:.1f}", f"{rate / bare:.2f}")
        console.print(table)
        console.print(f"copied {report.stats.copied:,} in {copy_s:.1f} s; at this rate 1M "
                      f"detections take {1e6 / rate / 3600:.1f} h on this machine")

        path_b = bundle_as(src, pathlib.Path(tmp) / "b", "vBenchB")
        address, stop_gateway = spawn_gateway(settings)
        searcher = Searcher(address)
        try:
            searcher.start()
            time.sleep(args.phase_s)
            searcher.phase = "during"
            fleet = Fleet(redis.Redis.from_url(settings.redis.url), settings.milvus.alias)
            with console.status("rolling out vBenchB while the client searches..."):
                t = time.perf_counter()
                done = rollout(cols, crops, load_bundle(path_b, parts=("image",)), fleet=fleet,
                               bundle_path=str(path_b))
                rollout_s = time.perf_counter() - t
            searcher.phase = "after"
            switched_at = time.perf_counter()  # the switch is the roll-out's last Milvus call
            time.sleep(args.phase_s)
        finally:
            searcher.stop.set()
            searcher.join(timeout=60)
            stop_gateway()
        console.print(phase_table(searcher.records))
        old_after = [r[3] - switched_at for r in searcher.records
                     if r[0] == "after" and r[2] == old.version]
        if old_after:
            console.print(f"after the roll-out returned, {len(old_after)} queries were still "
                          f"answered by {old.version}, the last {max(old_after):.2f} s after it "
                          "(the gateway caches the alias for 1 s)")
        failed = [r[2] for r in searcher.records if r[2].startswith("error")]
        console.print(f"roll-out to vBenchB (stage, copy, wait for the gateway, switch): "
                      f"{rollout_s:.1f} s, {done.stats.copied:,} copied, switched "
                      f"{done.switched}; failed queries: {len(failed)}"
                      + (f" (first: {failed[0]})" if failed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
