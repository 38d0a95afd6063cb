"""Training and embedding throughput, each against a bare loop measured in the same run.

1. **Training** (images/s): the same configuration trained

   - by a bare loop: :class:`training.step.TrainStep` in this process, no Ray, no DDP (the
     baseline);
   - by ``pedsearch train`` (:func:`training.job.run_training`, Ray Train ``TorchTrainer``) with
     1 and with 2 workers (gloo all-reduce on CPU).

   Ray runs are timed by the workers' own ``train_seconds`` of the last epoch (the first epoch
   pays for start-up), so data preparation and Ray start are left out; the bare loop is timed
   over the same number of steps. Images/s counts every worker's images. Printed: images/s,
   Ray 1 worker / bare, and the 2-worker / 1-worker scaling ratio.
2. **Embedding** (crops/s): the exported bundle's image encoder through
   ``Bundle.encode_images`` (BGR crops of mixed sizes -> resize, normalise, forward, unit
   embeddings and attribute probabilities) at batch 1, 16 and 64, against a bare loop of the
   same model's ``encode_image`` on a pre-built tensor batch (no preprocessing).

Run (a 2-core machine shared with other work: use nice and read the ratios, not the absolute
rates)::

    nice -n 10 .venv/bin/python benchmarks/train.py --steps 12 --rounds 3
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

console = Console()


def train_config(out: pathlib.Path, steps: int, workers: int, batch: int):
    from training.config import load_train_config

    return load_train_config("tiny.yaml", overrides={
        "output_dir": str(out), "run_name": f"bench-w{workers}", "epochs": 2,
        "num_workers": workers, "max_steps_per_epoch": steps, "batch_size": batch,
        # 120 people (288 training images): enough batches that every worker runs `steps`
        "data": {"max_val_images": 8,
                 "sources": [{"type": "synthetic", "num_ids": 120, "images_per_id": 4,
                              "seed": 7, "height_px": 128}]},
        "keep_checkpoints": 1,
    })


def bare_training(cfg, steps: int) -> float:
    """Images/s of TrainStep in this process on the run's own data and sampler."""
    from pedsearch.attributes import AttributeSchema
    from training.data import ShardedBatchSampler, make_dataset, prepare_data
    from training.datasets.torch_data import collate
    from training.step import TrainStep

    torch.set_num_threads(cfg.torch_threads or 1)
    schema = AttributeSchema.default()
    data = prepare_data(cfg, schema=schema)
    step = TrainStep.build(cfg, num_identities=data.num_ids, semantic_table=data.semantic_table,
                           vocab=data.vocab(), schema=schema, attr_prior=data.attr_prior)
    ds = make_dataset(data.train, cfg, train=True, schema=schema, pid_index=data.pid_index)
    sampler = ShardedBatchSampler([data.pid_index[r.pid] for r in data.train],
                                  batch_size=cfg.batch_size,
                                  images_per_id=cfg.sampler.images_per_id, rank=0, world_size=1,
                                  seed=0, max_batches=steps)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate)
    for epoch in range(2):  # epoch 0 warms up, epoch 1 is timed (as the Ray runs)
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        n = 0
        for b in loader:
            step(b, epoch)
            n += len(b["pid"])
        dt = time.perf_counter() - t0
    return n / dt


def ray_training(cfg) -> tuple[float, pathlib.Path]:
    from training.job import read_history, run_training

    out = run_training(cfg, overwrite=True, ray_num_cpus=2)
    epochs = [h for h in read_history(out.run_dir / "metrics.jsonl") if "train_seconds" in h]
    # steps of the timed (last) epoch, from the step counter, times every worker's batch
    steps = int(epochs[-1]["step"]) - int(epochs[-2]["step"])
    images = steps * cfg.batch_size * cfg.num_workers
    return images / float(epochs[-1]["train_seconds"]), out.run_dir


def embedding(bundle_dir: pathlib.Path, batches: tuple[int, ...], rounds: int) -> list[dict]:
    from pedsearch.bundle import load_bundle
    from pedsearch.models.image import preprocess_crops

    torch.set_num_threads(2)
    bundle = load_bundle(bundle_dir, parts=("image",))
    model = bundle.model
    rng = np.random.default_rng(0)
    rows = []
    for b in batches:
        n = max(64, b * 4)
        crops = [rng.integers(0, 256, (int(rng.integers(60, 200)), int(rng.integers(30, 90)), 3),
                              dtype=np.uint8) for _ in range(n)]
        x = preprocess_crops(crops[:b], size=bundle.image_size, mean=model.pixel_mean,
                             std=model.pixel_std).contiguous(memory_format=torch.channels_last)
        bundle.encode_images(crops[:b], batch_size=b)  # warm-up
        best_api = best_bare = 0.0
        for _ in range(rounds):  # best of rounds: the host is shared
            t0 = time.perf_counter()
            for lo in range(0, n, b):
                bundle.encode_images(crops[lo:lo + b], batch_size=b)
            best_api = max(best_api, n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            with torch.inference_mode():
                for _ in range(n // b):
                    model.encode_image(x)
            best_bare = max(best_bare, (n // b) * b / (time.perf_counter() - t0))
        rows.append({"batch": b, "bundle": best_api, "bare": best_bare})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12, help="steps per epoch (2 epochs per run)")
    ap.add_argument("--batch", type=int, default=16, help="images per worker and step")
    ap.add_argument("--rounds", type=int, default=3, help="embedding rounds (best is kept)")
    ap.add_argument("--bundle", default=None, help="bundle to embed with (default: the one "
                    "exported from the 1-worker run; required with --only embed)")
    ap.add_argument("--only", choices=("train", "embed"), default=None,
                    help="run one of the two measurements")
    args = ap.parse_args(argv)
    if args.only == "embed" and args.bundle is None:
        ap.error("--only embed needs --bundle (e.g. pedsearch/bundles/default)")
    emb: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="pedsearch-trainbench-") as tmp:
        out = pathlib.Path(tmp)
        if args.only != "embed":
            bare = bare_training(train_config(out, args.steps, 1, args.batch), args.steps)
            console.print(f"bare loop: {bare:.1f} images/s")
            one, run1 = ray_training(train_config(out, args.steps, 1, args.batch))
            console.print(f"Ray Train, 1 worker: {one:.1f} images/s")
            two, _ = ray_training(train_config(out, args.steps, 2, args.batch))
            console.print(f"Ray Train, 2 workers: {two:.1f} images/s")
            print_training(args, bare, one, two)
        if args.only != "train":
            bundle_dir = pathlib.Path(args.bundle) if args.bundle else out / "bundle"
            if args.bundle is None:
                from training.export import export_bundle

                export_bundle(run1, bundle_dir, which="last")
            emb = embedding(bundle_dir, (1, 16, 64), args.rounds)
            print_embedding(args, emb, bundle_dir)
    return 0


def print_training(args: argparse.Namespace, bare: float, one: float, two: float) -> None:
    t = Table(title=f"training throughput (tiny.yaml, batch {args.batch}/worker, "
                    f"{args.steps} steps timed)")
    for c in ("run", "images/s", "vs bare loop"):
        t.add_column(c, justify="right")
    t.add_row("bare loop (TrainStep, no Ray)", f"{bare:.1f}", "1.00")
    t.add_row("Ray Train, 1 worker", f"{one:.1f}", f"{one / bare:.2f}")
    t.add_row("Ray Train, 2 workers", f"{two:.1f}", f"{two / bare:.2f}")
    console.print(t)
    console.print(f"scaling 2 workers / 1 worker: [bold]{two / one:.2f}x[/]")


def print_embedding(args: argparse.Namespace, emb: list[dict], bundle_dir: pathlib.Path) -> None:
    from pedsearch.bundle import read_manifest

    m = read_manifest(bundle_dir)
    t = Table(title=f"embedding throughput of the image encoder of {m['version']} "
                    f"({m['image']['size'][0]}x{m['image']['size'][1]}; crops/s, best of "
                    f"{args.rounds})")
    for c in ("batch", "Bundle.encode_images", "bare encode_image", "bundle / bare"):
        t.add_column(c, justify="right")
    for r in emb:
        t.add_row(str(r["batch"]), f"{r['bundle']:.1f}", f"{r['bare']:.1f}",
                  f"{r['bundle'] / r['bare']:.2f}")
    console.print(t)


if __name__ == "__main__":
    raise SystemExit(main())
