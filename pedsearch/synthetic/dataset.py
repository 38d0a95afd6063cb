"""Write a synthetic text-based person-search data set in the published CUHK-PEDES layout.

Layout under ``out_dir``::

    imgs/<split>/<pid>/<n>.jpg   crops (height_px x height_px/2)
    reid_raw.json                [{"split", "captions": [c1, c2], "file_path",
                                   "processed_tokens": [[...], [...]], "id"}, ...]
    attributes.json              {file_path: {family: value | [values]}}
    people.json                  [PersonSpec.to_dict(), ...] (identity-only appearance too)
    meta.json                    seed, sizes, split counts, schema version

``file_path`` is relative to ``imgs/`` exactly as in CUHK-PEDES, so a CUHK-PEDES loader pointed
at ``out_dir`` reads it unchanged. Identities (``id`` from 1) are split train/val/test without
overlap; each identity gets ``images_per_id`` crops cycling through front, back and side views
with pose, scale, offset, light, background, occlusion, blur and JPEG quality drawn per image.
Every image is a pure function of ``(seed, id, n)``.

Example:
    >>> import tempfile
    >>> root = generate_dataset(tempfile.mkdtemp(), num_ids=3, images_per_id=2, seed=0,
    ...                         height_px=64, progress=False)
    >>> sorted(p.name for p in root.iterdir())
    ['attributes.json', 'imgs', 'meta.json', 'people.json', 'reid_raw.json']
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Sequence

import cv2
import numpy as np

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput
from pedsearch.synthetic.people import PersonSpec, sample_person
from pedsearch.synthetic.render import VIEWS, render_crop

SPLITS = ("train", "val", "test")
GENERATOR_VERSION = 1
JPEG_WRITE_QUALITY = 95
_TOKEN = re.compile(r"[a-z]+")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens, as CUHK-PEDES ``processed_tokens`` hold them."""
    return _TOKEN.findall(text.lower())


def split_ids(num_ids: int, fractions: Sequence[float], seed: int) -> dict[str, list[int]]:
    """Identity-disjoint train/val/test assignment of ids ``1..num_ids``.

    Counts follow ``fractions`` by largest remainder; a split with a positive fraction gets at
    least one identity when there are enough.

    Raises:
        InvalidInput: fractions are not three non-negative numbers summing to 1.
    """
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise InvalidInput(f"splits must be three non-negative fractions (train, val, test) "
                           f"summing to 1, got {tuple(fractions)}")
    raw = np.asarray(fr) * num_ids
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: num_ids - counts.sum()]:
        counts[i] += 1
    positive = [i for i in range(3) if fr[i] > 0]
    if num_ids >= len(positive):
        for i in positive:
            if counts[i] == 0:
                donor = int(np.argmax(counts))
                counts[donor] -= 1
                counts[i] += 1
    perm = np.random.default_rng([seed, 0x5917]).permutation(num_ids) + 1
    out, k = {}, 0
    for name, c in zip(SPLITS, counts):
        out[name] = sorted(int(x) for x in perm[k:k + c])
        k += c
    return out


def _identity_job(args: tuple[dict[str, Any], str, int, int, int, str]) -> list[dict[str, Any]]:
    """Render, write and caption every image of one identity (runs in a worker process)."""
    spec_d, split, images_per_id, seed, height_px, root = args
    from pedsearch.synthetic.captions import describe

    spec = PersonSpec.from_dict(spec_d)
    pid = spec.person_id
    folder = pathlib.Path(root) / "imgs" / split / str(pid)
    folder.mkdir(parents=True, exist_ok=True)
    first_view = int(np.random.default_rng([seed, pid, 0xF1E]).integers(0, len(VIEWS)))
    entries = []
    for n in range(images_per_id):
        rng = np.random.default_rng([seed, pid, n])
        view = VIEWS[(first_view + n) % len(VIEWS)]
        img = render_crop(spec, rng, size=(height_px, max(16, height_px // 2)), view=view)
        rel = f"{split}/{pid}/{n}.jpg"
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_WRITE_QUALITY])
        if not ok:  # pragma: no cover - OpenCV always encodes a uint8 BGR image
            raise InvalidInput(f"could not encode {rel}")
        (folder / f"{n}.jpg").write_bytes(buf.tobytes())
        crng = np.random.default_rng([seed, pid, n, 0xCA9])
        captions = [describe(spec.attributes, crng) for _ in range(2)]
        entries.append({
            "split": split,
            "captions": captions,
            "file_path": rel,
            "processed_tokens": [tokenize(c) for c in captions],
            "id": pid,
        })
    return entries


def _write_json(path: pathlib.Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=None, separators=(",", ":")))
    os.replace(tmp, path)


def generate_dataset(
    out_dir: str | os.PathLike[str],
    *,
    num_ids: int,
    images_per_id: int,
    seed: int,
    splits: Sequence[float] = (0.8, 0.1, 0.1),
    height_px: int = 256,
    progress: bool = True,
    workers: int = 1,
    overwrite: bool = False,
) -> pathlib.Path:
    """Generate a synthetic CUHK-PEDES-format data set (see the module docstring).

    Args:
        out_dir: folder to write; created if missing.
        num_ids: identities (>= 1).
        images_per_id: crops per identity (>= 1).
        seed: the same seed gives the same images, captions and splits.
        splits: (train, val, test) fractions of identities, summing to 1.
        height_px: crop height (32..1024); width is half of it.
        progress: show a rich progress bar.
        workers: processes to render with (1 = in this process).
        overwrite: allow writing into a folder that already holds a data set.

    Returns:
        ``out_dir`` as a :class:`pathlib.Path`.

    Raises:
        InvalidInput: a bad size, fraction or count, or ``out_dir`` already holds files and
            ``overwrite`` is false.
    """
    for name, v, lo in (("num_ids", num_ids, 1), ("images_per_id", images_per_id, 1),
                        ("workers", workers, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise InvalidInput(f"{name} must be an integer >= {lo}, got {v!r}")
    if not 32 <= int(height_px) <= 1024:
        raise InvalidInput(f"height_px must be in 32..1024, got {height_px}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer, got {seed!r}")
    root = pathlib.Path(out_dir)
    if root.exists() and not root.is_dir():
        raise InvalidInput(f"{root} exists and is not a folder")
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise InvalidInput(f"{root} is not empty; choose an empty folder or pass overwrite=True")
    assignment = split_ids(int(num_ids), splits, int(seed))
    root.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng([int(seed), 0x9E0])
    people = [sample_person(pid, rng) for pid in range(1, int(num_ids) + 1)]
    split_of = {pid: s for s, ids in assignment.items() for pid in ids}
    jobs = [(p.to_dict(), split_of[p.person_id], int(images_per_id), int(seed), int(height_px),
             str(root)) for p in people]

    entries: list[dict[str, Any]] = []
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    with Progress(TextColumn("[bold]synthetic dataset"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("images"), TimeElapsedColumn(), TimeRemainingColumn(),
                  disable=not progress, transient=False) as bar:
        task = bar.add_task("render", total=len(jobs) * int(images_per_id))
        if workers == 1:
            results = map(_identity_job, jobs)
            for res in results:
                entries.extend(res)
                bar.advance(task, len(res))
        else:
            with ProcessPoolExecutor(max_workers=int(workers)) as pool:
                for res in pool.map(_identity_job, jobs, chunksize=4):
                    entries.extend(res)
                    bar.advance(task, len(res))

    order = {s: i for i, s in enumerate(SPLITS)}
    entries.sort(key=lambda e: (order[e["split"]], e["id"], e["file_path"]))
    by_pid = {p.person_id: p for p in people}
    schema = AttributeSchema.default()
    _write_json(root / "reid_raw.json", entries)
    _write_json(root / "attributes.json", {
        e["file_path"]: {k: (list(v) if not isinstance(v, str) else v)
                         for k, v in by_pid[e["id"]].attributes.items()} for e in entries})
    _write_json(root / "people.json", [p.to_dict() for p in people])
    meta = {
        "format": "cuhk-pedes",
        "generator": "pedsearch.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "num_ids": int(num_ids),
        "images_per_id": int(images_per_id),
        "height_px": int(height_px),
        "width_px": max(16, int(height_px) // 2),
        "fractions": [float(f) for f in splits],
        "splits": {s: {"ids": len(assignment[s]),
                       "images": len(assignment[s]) * int(images_per_id)} for s in SPLITS},
        "schema_version": schema.version,
        "schema": schema.to_dict(),
    }
    _write_json(root / "meta.json", meta)
    return root
