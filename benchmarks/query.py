"""Query latency through the gateway against raw Milvus and brute-force numpy, and index recall.

For each index size (default 100k and 1M stored detections), in one run:

1. fills a fresh collection with synthetic detections: embeddings of people drawn from a
   Gaussian fit to the bundle's image embeddings of rendered people (``EmbeddingGeometry``;
   ``--geometry isotropic``: random clusters), 40 crops per person on average, 16 cameras,
   capture times over one day, random attribute probabilities; waits until Milvus has built
   the index over every row, then has Milvus merge the inserted segments and waits for their
   indexes (``DetectionCollections.settle``): the queries are timed against the index at
   rest, not while Milvus compacts in the background;
2. for each HNSW ``ef`` of ``--ef`` (a gateway started with it), times, query by query
   (sequential, after a warm-up), p50 / p99 of
   - the text encoder alone (the bundle's ``encode_texts`` of one caption),
   - raw pymilvus ``search`` of the same query vectors (``[t ; w a_t]``: the stored vectors
     carry the attribute space, so the index ranks by CMAAM's latent + attribute similarity,
     ``pedsearch.schema.VectorLayout``), same limit, parameters and output fields as the gateway,
   - the gateway's ``SearchText`` over gRPC (encode + alias + search + response),
   - brute-force numpy (exact inner products over all stored vectors, top-k by
     ``argpartition``),
   each without a filter and with a camera + time filter (2 of 16 cameras, a quarter of the day);
3. recall@10 of Milvus against the exact numpy top 10 for the same filters, of the text
   queries and of image queries (near copies of stored crops).

The target (issue 4): gateway p50 <= 1.3 x raw Milvus p50 + the text encoder's p50, and
recall@10 >= 0.95. The embedded Milvus and Redis start on free ports in a temporary folder
unless PEDSEARCH_BENCH_MILVUS / PEDSEARCH_BENCH_REDIS give addresses.

    python benchmarks/query.py --sizes 100000 1000000 --ef 384 512
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import tempfile
import time

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pedsearch.config import Settings

console = Console(width=150)

CAMERAS = [f"cam-{i:02d}" for i in range(16)]
DAY_US = 86_400 * 1_000_000
T0_US = 1_764_633_600 * 1_000_000  # 2025-12-02 00:00 UTC
INSERT_BATCH = 2000


class EmbeddingGeometry:
    """A Gaussian fit to the shipped model's image embeddings, to sample stored vectors from.

    ``people`` synthetic people are rendered ``views`` times each and embedded with the
    bundle's image encoder. Identity centres are then drawn as ``mean + z @ between`` and crops
    as ``centre + z' @ within`` (``z`` standard normal; ``between`` / ``within`` are the
    centred per-person means and the deviations from them, scaled to unit-variance factors),
    then L2-normalised. So the stored vectors have the anisotropy and the person-to-person
    and view-to-view spreads of a real index, and queries from the real text encoder meet them
    as they would meet real crops (random isotropic vectors would make every text query
    equidistant from everything).
    """

    def __init__(self, bundle_path, *, people: int = 500, views: int = 3, seed: int = 0) -> None:
        from pedsearch.bundle import load_bundle
        from pedsearch.synthetic.people import sample_person
        from pedsearch.synthetic.render import render_crop

        rng = np.random.default_rng(seed)
        image = load_bundle(bundle_path, parts=("image",))
        crops = []
        with console.status(f"embedding {people} x {views} rendered people to fit the "
                            "embedding geometry..."):
            for i in range(people):
                spec = sample_person(10_000_000 + i, rng)
                crops += [render_crop(spec, rng) for _ in range(views)]
            emb, _ = image.encode_images(crops)
        e = emb.reshape(people, views, -1).astype(np.float64)
        centres = e.mean(axis=1)
        self.mean = centres.mean(axis=0)
        self.between = (centres - self.mean) / np.sqrt(people - 1)  # (people, D)
        self.within = ((e - centres[:, None]).reshape(people * views, -1)
                       / np.sqrt(people * (views - 1)))  # (people * views, D)

    def centres(self, rng: np.random.Generator, n: int) -> np.ndarray:
        z = rng.standard_normal((n, len(self.between)))
        return (self.mean + z @ self.between).astype(np.float32)

    def views(self, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
        """``(m, D)`` unit vectors: one view of each given centre."""
        z = rng.standard_normal((len(centres), len(self.within)))
        x = centres + (z @ self.within).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic_detections(n: int, dim: int, n_attr: int, seed: int, chunk: int = 50_000,
                         geometry: EmbeddingGeometry | None = None):
    """Yields chunks of (embeddings (m, dim) float32 L2-normalised, cameras, ts_us, attrs).

    ``n / 40`` identities, so a query near a person has tens of close neighbours, as a real
    person has many crops. With a ``geometry``, identities and their crops are drawn from it;
    without, centres are isotropic random directions and crops add isotropic noise.
    """
    rng = np.random.default_rng(seed)
    n_ids = max(1, n // 40)
    if geometry is not None:
        centres = geometry.centres(rng, n_ids)
    else:
        centres = rng.standard_normal((n_ids, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        ids = rng.integers(0, n_ids, m)
        if geometry is not None:
            x = geometry.views(rng, centres[ids])
        else:
            x = centres[ids] + 0.9 / np.sqrt(dim) * rng.standard_normal((m, dim),
                                                                         dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        cams = rng.integers(0, len(CAMERAS), m)
        ts = T0_US + rng.integers(0, DAY_US, m)
        attrs = rng.random((m, n_attr), dtype=np.float32)
        yield start, x, cams, ts, attrs


def fill_collection(client, settings: Settings, bundle, n: int, seed: int,
                    geometry: EmbeddingGeometry | None = None):
    """Creates the collection of ``bundle.version`` behind the alias and fills it.

    Returns (collection name, its vector layout, all stored vectors (n, layout.dim), camera
    index (n,), ts_us (n,)).
    """
    from pedsearch.schema import DetectionCollections

    cols = DetectionCollections(client, settings.milvus)
    schema = bundle.schema
    name = cols.ensure(bundle.version, embed_dim=bundle.embed_dim, attributes=schema)
    layout = cols.layout(name, bundle.embed_dim, schema)
    fields = schema.field_names()
    x_all = np.empty((n, layout.dim), np.float32)
    cam_all = np.empty(n, np.int64)
    ts_all = np.empty(n, np.int64)
    cols_progress = Progress(TextColumn("{task.description}"), BarColumn(),
                             TextColumn("{task.completed:,}/{task.total:,}"),
                             TimeRemainingColumn(), console=console)
    with cols_progress as progress:
        task = progress.add_task(f"inserting {n:,} detections", total=n)
        for start, x, cams, ts, attrs in synthetic_detections(n, bundle.embed_dim, len(fields),
                                                              seed, geometry=geometry):
            x = layout.stored(x, attrs, schema)  # [embedding ; attribute space]
            x_all[start:start + len(x)] = x
            cam_all[start:start + len(x)] = cams
            ts_all[start:start + len(x)] = ts
            for b in range(0, len(x), INSERT_BATCH):
                sl = slice(b, b + INSERT_BATCH)
                rows = []
                for j, (e, c, t, a) in enumerate(zip(x[sl], cams[sl], ts[sl], attrs[sl])):
                    i = start + b + j
                    row = {"id": i, "camera_id": CAMERAS[c], "ts_us": int(t), "track_id": i,
                           "frame_seq": 0, "box_x": 0.0, "box_y": 0.0, "box_w": 48.0,
                           "box_h": 128.0, "det_score": 0.9,
                           "crop_ref": f"{CAMERAS[c]}/2025120200/{i}.jpg",
                           "model_version": bundle.version, "embedding": e.tolist()}
                    row.update(zip(fields, a.tolist()))
                    rows.append(row)
                client.insert(name, rows, timeout=300)
                progress.advance(task, len(rows))
    client.flush(name, timeout=600)
    with console.status(f"Milvus builds the indexes over {n:,} rows...") as status:
        cols.wait_indexed(name, n, on_progress=lambda field, done: status.update(
            f"Milvus builds the index on {field}: {done:,}/{n:,} rows"))
    # time the index at rest: Milvus would otherwise merge the inserted segments and re-index
    # them in the background while the queries are timed (DetectionCollections.settle)
    t0 = time.monotonic()
    with console.status(f"Milvus merges the segments of {n:,} rows...") as status:
        cols.settle(name, n, on_progress=lambda phase: status.update(
            f"Milvus merges the segments of {n:,} rows ({phase})..."))
    console.print(f"segments merged and re-indexed in {time.monotonic() - t0:.0f} s")
    return name, layout, x_all, cam_all, ts_all


def percentile_ms(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def target_ratio(gateway, raw, encoder, axis: int | None = None):
    """The issue's target as one number: gateway p50 / (1.3 x raw Milvus p50 + encoder p50)
    (along ``axis``: one ratio per row of ``(R, n)`` times)."""
    return np.median(gateway, axis) / (1.3 * np.median(raw, axis) + np.median(encoder, axis))


def ratio_interval(gateway: list[float], raw: list[float], encoder: list[float], *,
                   rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of :func:`target_ratio` over the run's queries.

    The three lists hold one time per query, index ``i`` of each from the same query (the
    calls are interleaved), so queries are resampled as a whole: the interval says how much
    the ratio depends on which queries happened to be timed, not how a busier machine would
    move it (that takes repeated runs).
    """
    g, r, e = (np.asarray(a, np.float64) for a in (gateway, raw, encoder))
    if not len(g) == len(r) == len(e) > 0:
        raise ValueError("one time per query in each of gateway, raw and encoder")
    idx = np.random.default_rng(seed).integers(0, len(g), (rounds, len(g)))
    ratios = target_ratio(g[idx], r[idx], e[idx], axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def timed(fn, items, warmup: int = 5) -> tuple[list[float], list]:
    """Runs ``fn`` on each item sequentially; returns (seconds per call, results)."""
    for item in items[:warmup]:
        fn(item)
    times, out = [], []
    for item in items:
        t = time.perf_counter()
        out.append(fn(item))
        times.append(time.perf_counter() - t)
    return times, out


def exact_topk(x: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None) -> np.ndarray:
    """Ids of the k largest inner products of ``q (dim,)`` with rows of ``x (n, dim)``."""
    s = x @ q
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    top = np.argpartition(-s, k)[:k]
    return top[np.argsort(-s[top])]


def exact_topk_many(x: np.ndarray, qs: list[np.ndarray], k: int, mask: np.ndarray | None,
                    chunk: int = 100_000) -> list[np.ndarray]:
    """:func:`exact_topk` of many queries at once: one matrix product per row chunk (BLAS 3
    instead of a memory-bound pass over ``x`` per query)."""
    q = np.stack(qs).astype(np.float32)  # (Q, D)
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for start in range(0, len(x), chunk):
        s = q @ x[start:start + chunk].T  # (Q, chunk)
        if mask is not None:
            s = np.where(mask[start:start + chunk], s, -np.inf)
        idx = np.arange(start, start + s.shape[1])
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(idx, s.shape)], axis=1)
        top = np.argpartition(-cand_s, min(k, cand_s.shape[1] - 1), axis=1)[:, :k]
        best_s = np.take_along_axis(cand_s, top, axis=1)
        best_i = np.take_along_axis(cand_i, top, axis=1)
    order = np.argsort(-best_s, axis=1)
    return list(np.take_along_axis(best_i, order, axis=1))


def recall_at(found: list[list[int]], exact: list[np.ndarray], k: int) -> float:
    r = [len(set(f[:k]) & set(e[:k].tolist())) / k for f, e in zip(found, exact)]
    return float(np.mean(r))


@contextlib.contextmanager
def servers(settings: Settings):
    env = {k: os.environ.get(f"PEDSEARCH_BENCH_{k.upper()}") for k in ("milvus", "redis")}
    if all(env.values()):
        settings.milvus.uri, settings.redis.url = env["milvus"], env["redis"]
        yield settings
        return
    from deploy.stack import MilvusServer, RedisServer

    with tempfile.TemporaryDirectory(prefix="pedsearch-qbench-") as tmp:
        with console.status("starting the embedded Milvus and Redis..."):
            milvus = MilvusServer(port=0, data_dir=os.path.join(tmp, "milvus"))
            redis_server = RedisServer(port=0, data_dir=os.path.join(tmp, "redis"))
            stack = contextlib.ExitStack()
            stack.enter_context(milvus)
            stack.enter_context(redis_server)
        with stack:
            settings.milvus.uri, settings.redis.url = milvus.address, redis_server.address
            settings.paths.crops_dir = settings.paths.crops_dir.__class__(tmp) / "crops"
            yield settings


def text_weight(settings: Settings, bundle) -> float:
    """The weight the gateway ranks text queries with: the configured one, else the bundle's."""
    w = settings.gateway.text_attribute_weight
    return bundle.text_attribute_weight if w is None else w


def spawn_gateway(settings: Settings):
    """``pedsearch gateway serve`` as its own process, configured through the environment."""
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ)
    env.update({
        "PEDSEARCH_MILVUS__URI": settings.milvus.uri,
        "PEDSEARCH_MILVUS__ALIAS": settings.milvus.alias,
        "PEDSEARCH_MILVUS__COLLECTION_PREFIX": settings.milvus.collection_prefix,
        "PEDSEARCH_MILVUS__SEARCH_PARAMS": json.dumps(settings.milvus.search_params),
        "PEDSEARCH_REDIS__URL": settings.redis.url,
        "PEDSEARCH_MODEL__BUNDLE": str(settings.model.bundle),
        "PEDSEARCH_GATEWAY__RATE_LIMIT_PER_S": "0",
    })
    if settings.gateway.text_attribute_weight is not None:
        env["PEDSEARCH_GATEWAY__TEXT_ATTRIBUTE_WEIGHT"] = str(
            settings.gateway.text_attribute_weight)
    exe = [sys.executable, "-c", "import sys; from pedsearch.cli import main; sys.exit(main())"]
    log = open(os.path.join(tempfile.gettempdir(), f"pedsearch-qbench-gateway-{port}.log"), "w+")
    proc = subprocess.Popen([*exe, "gateway", "serve", "--address", f"127.0.0.1:{port}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    with console.status("starting the gateway process..."):
        while "listening on" not in pathlib.Path(log.name).read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the gateway did not start:\n"
                                   + pathlib.Path(log.name).read_text())
            time.sleep(0.5)

    def stop() -> None:
        crashed = proc.poll() is not None  # it ended before we asked: its log says why
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if crashed:
            console.print(f"[red]the gateway process ended on its own (exit {proc.returncode});"
                          f" its log: {log.name}")
        else:  # a clean run leaves nothing behind in the temp folder
            pathlib.Path(log.name).unlink(missing_ok=True)

    return f"127.0.0.1:{port}", stop


def measure_case(bundle, gw, raw, x, texts, qv, recall_vecs, mask, flt, args) -> dict:
    """Latencies of one filter case, interleaved query by query, and recall@k of Milvus.

    ``raw(v)`` is the pymilvus search of one query vector with the case's filter; ``flt`` the
    same filter as ``search_text`` keywords and ``mask`` as a boolean row mask (None: none).
    """
    # interleaved query by query, so load from other processes hits all three alike
    t_enc, t_raw, t_gw, t_srv_enc, t_srv_search = [], [], [], [], []
    for i, (text, v) in enumerate(zip(texts, qv)):
        for times, fn in ((t_enc, lambda: bundle.encode_texts([text])),
                          (t_raw, lambda: raw(v)),
                          (t_gw, lambda: gw.search_text(text, k=args.k, **flt))):
            t = time.perf_counter()
            res = fn()
            if i >= 5:  # warm-up
                times.append(time.perf_counter() - t)
        if i >= 5:  # the encoder's and Milvus' time inside the gateway, as it reports them
            t_srv_enc.append(res.encode_ms / 1e3)
            t_srv_search.append(res.search_ms / 1e3)
    n_np = min(len(qv), args.numpy_queries)
    t_np, _ = timed(lambda v: exact_topk(x, v, args.k, mask), qv[:n_np], warmup=1)
    recall = {}
    for kind, vecs in recall_vecs.items():
        found = [raw(v) for v in vecs]
        exact = exact_topk_many(x, vecs, args.k, mask)
        recall[kind] = recall_at(found, exact, args.k)
    # what the gateway adds per query: gRPC both ways, request checks, building the hits
    t_own = [g - e - s for g, e, s in zip(t_gw, t_srv_enc, t_srv_search)]
    return {"encode": percentile_ms(t_enc), "server_encode": percentile_ms(t_srv_enc),
            "server_search": percentile_ms(t_srv_search), "gateway_own": percentile_ms(t_own),
            "raw": percentile_ms(t_raw), "gateway": percentile_ms(t_gw),
            "numpy": percentile_ms(t_np), "recall": recall,
            "ratio": float(target_ratio(t_gw, t_raw, t_srv_enc)),
            "ratio_ci": ratio_interval(t_gw, t_raw, t_srv_enc),
            "matching": int(mask.sum()) if mask is not None else len(x)}


def bench_size(settings: Settings, bundle, n: int, args,
               geometry: EmbeddingGeometry | None) -> list[dict]:
    from pymilvus import MilvusClient

    from gateway.client import connect
    from gateway.search import search_params as gateway_search_params
    from gateway.server import create_server
    from pedsearch.schema import SCALAR_FIELDS
    from pedsearch.synthetic.captions import describe
    from pedsearch.synthetic.people import sample_person

    tag = f"q{n}"
    settings.milvus.alias = f"bench_{tag}"
    settings.milvus.collection_prefix = f"bench_{tag}_"
    client = MilvusClient(uri=settings.milvus.uri)
    name, layout, x, cams, ts = fill_collection(client, settings, bundle, n, args.seed,
                                                geometry)

    rng = np.random.default_rng(args.seed + 1)
    texts = [describe(sample_person(i, rng).attributes, rng) for i in range(args.queries)]
    emb, probs = bundle.encode_texts_with_attributes(texts)
    # the vectors the gateway searches: [t ; w a_t], CMAAM's latent + attribute similarity
    w = text_weight(settings, bundle)
    qv = [layout.query(t, a, w)[0] for t, a in zip(emb, bundle.schema.attribute_space(probs))]
    # recall of the text queries, and of image queries (near copies of stored crops: SearchImage
    # with a crop of a stored person, which searches [e ; 0])
    d = bundle.embed_dim
    near = x[rng.integers(0, n, args.queries), :d]
    near = near + 0.3 / np.sqrt(d) * rng.standard_normal(near.shape, dtype=np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    recall_vecs = {"text": qv, "image": list(layout.query(near))}

    cam_pick = [CAMERAS[0], CAMERAS[1]]
    since, until = T0_US + DAY_US // 4, T0_US + DAY_US // 2
    filters = {
        "none": ("", None, {}),
        "camera+time": (
            f'camera_id in ["{cam_pick[0]}", "{cam_pick[1]}"] and ts_us >= {since} '
            f"and ts_us <= {until}",
            np.isin(cams, [0, 1]) & (ts >= since) & (ts <= until),
            {"cameras": cam_pick, "since_us": since, "until_us": until},
        ),
    }
    out_fields = [f for f in SCALAR_FIELDS if f != "id"] + bundle.schema.field_names()
    settings.gateway.rate_limit_per_s = 0  # measure the query path, not the limiter
    rows = []
    try:
        for ef in args.ef or [settings.milvus.search_params.get("ef")]:
            if ef:
                settings.milvus.search_params = {**settings.milvus.search_params, "ef": ef}
            # the index ranks by the text query's whole score: the gateway asks for k rows
            limit = args.k
            search_params = {"metric_type": settings.milvus.metric_type,
                             "params": gateway_search_params(settings.milvus.search_params,
                                                             limit)}

            def raw(v, expr, search_params=search_params, limit=limit):
                res = client.search(name, data=[v.tolist()], anns_field="embedding",
                                    limit=limit, filter=expr, search_params=search_params,
                                    output_fields=out_fields, timeout=60)
                return [int(h["id"]) for h in res[0]]

            if args.in_process:
                server = create_server("127.0.0.1:0", settings=settings).start()
                address, stop = server.address, lambda: server.stop(grace=1.0)
            else:
                address, stop = spawn_gateway(settings)
            gw = connect(address, connect_timeout_s=120)
            try:
                for fname, (expr, mask, flt) in filters.items():
                    row = measure_case(bundle, gw, lambda v, e=expr: raw(v, e), x, texts, qv,
                                       recall_vecs, mask, flt, args)
                    rows.append(row | {"size": n, "filter": fname, "ef": ef})
            finally:
                gw.close()
                stop()
    finally:
        client.drop_alias(settings.milvus.alias)
        client.drop_collection(name)
        client.close()
    return rows


def report(rows: list[dict], k: int) -> None:
    t = Table(title=f"SearchText latency (ms, p50 / p99) and recall@{k}")
    for col in ("size", "ef", "filter", "text encoder", "encoder in gateway", "raw Milvus",
                "Milvus in gateway", "gateway's own",
                "gateway", "numpy exact", "gateway / (1.3 raw + enc)",
                f"recall@{k} text / image"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            f"{r['size']:,}", str(r["ef"]), f"{r['filter']} ({r['matching']:,} rows)",
            "%.1f / %.1f" % r["encode"], "%.1f / %.1f" % r["server_encode"],
            "%.1f / %.1f" % r["raw"], "%.1f / %.1f" % r["server_search"],
            "%.1f / %.1f" % r["gateway_own"],
            "%.1f / %.1f" % r["gateway"],
            "%.1f / %.1f" % r["numpy"],
            f"{r['ratio']:.3f}",
            f"{r['recall']['text']:.3f} / {r['recall']['image']:.3f}",
        )
    console.print(t)
    for r in rows:  # the interval does not fit the table's column
        lo, hi = r["ratio_ci"]
        console.print(f"{r['size']:,} rows, ef {r['ef']}, {r['filter']}: gateway / (1.3 raw + "
                      f"enc) = {r['ratio']:.3f}, 95 % interval {lo:.3f}-{hi:.3f}")
    console.print("target: gateway p50 / (1.3 x raw Milvus p50 + the encoder's p50 inside the "
                  "gateway) <= 1.00; recall@10 >= 0.95")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200, help="timed queries per case")
    ap.add_argument("--numpy-queries", type=int, default=50,
                    help="timed brute-force queries per case (slow at 1M)")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index", default=None, help="index type (default: the configured one)")
    ap.add_argument("--index-params", type=json.loads, default=None, metavar="JSON",
                    help='index build parameters, e.g. \'{"M": 32, "efConstruction": 400}\' '
                         "(default: the configured ones)")
    ap.add_argument("--scalar-indexes", nargs="*", default=None,
                    choices=("camera_id", "ts_us", "track_id"), metavar="FIELD",
                    help="scalar fields to index (default: the configured ones; none: no "
                         "scalar index, the filters scan every row)")
    ap.add_argument("--geometry", choices=("model", "isotropic"), default="model",
                    help="stored vectors drawn from a Gaussian fit to the bundle's image "
                         "embeddings of rendered people (default), or isotropic clusters")
    ap.add_argument("--ef", type=int, nargs="+", default=None,
                    help="HNSW search ef values, each measured on the same filled collection "
                         "(default: the configured one)")
    ap.add_argument("--in-process", action="store_true",
                    help="run the gateway in this process (default: its own process, as deployed)")
    ap.add_argument("--bundle", default=None, help="model bundle (default: the shipped one)")
    ap.add_argument("--text-attribute-weight", type=float, default=None, metavar="W",
                    help="the gateway's text_attribute_weight (default: the configured one, "
                         "else the bundle's; 0 searches by the cosine alone)")
    args = ap.parse_args(argv)
    if any(s < 1000 for s in args.sizes) or args.queries < 10 or not 1 <= args.k <= 1000:
        ap.error("--sizes must be >= 1000, --queries >= 10, -k 1..1000")
    if args.ef and any(not args.k <= ef <= 32768 for ef in args.ef):
        ap.error(f"--ef values must be within k..32768 (k is {args.k})")

    import torch

    from pedsearch.bundle import default_bundle_path, load_bundle

    settings = Settings()
    if args.index:
        settings.milvus.index_type = args.index
    if args.index_params is not None:
        if not isinstance(args.index_params, dict):
            ap.error("--index-params must be a JSON object")
        settings.milvus.index_params = args.index_params
    if args.scalar_indexes is not None:
        settings.milvus.scalar_indexes = args.scalar_indexes
    if args.text_attribute_weight is not None:
        if not 0 <= args.text_attribute_weight <= 10:
            ap.error("--text-attribute-weight must be within 0..10")
        settings.gateway.text_attribute_weight = args.text_attribute_weight
    bundle_path = args.bundle or default_bundle_path()
    settings.model.bundle = bundle_path
    bundle = load_bundle(bundle_path, parts=("text",))
    torch.set_num_threads(1)  # the bare encoder timing must not fight the gateway for cores
    console.print(f"bundle {bundle.version}, dim {bundle.embed_dim}; index "
                  f"{settings.milvus.index_type} {settings.milvus.index_params}, search "
                  f"{settings.milvus.search_params}; scalar indexes on "
                  f"{', '.join(settings.milvus.scalar_indexes) or 'none'}; text queries "
                  f"ranked with text_attribute_weight {text_weight(settings, bundle)} "
                  f"(searched as \\[t ; w a_t] over \\[e ; a]: no re-ranking)")
    geometry = (EmbeddingGeometry(bundle_path, seed=args.seed) if args.geometry == "model"
                else None)
    rows = []
    with servers(settings):
        for n in args.sizes:
            rows += bench_size(settings, bundle, n, args, geometry)
            report(rows, args.k)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
