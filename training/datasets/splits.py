"""Identity-disjoint splits and re-identification query/gallery splits, deterministic by seed.

The result depends only on the set of records and the seed, never on their order: identities
are sorted before they are shuffled with ``numpy.random.default_rng(seed)``.

Example:
    >>> s = split_by_identity(records, fractions=(0.7, 0.1, 0.2), seed=0)   # doctest: +SKIP
    >>> q = query_gallery_split(s.test, seed=0)                              # doctest: +SKIP
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from pedsearch.errors import InvalidInput

from training.datasets import ImageRecord


@dataclass(frozen=True)
class IdentitySplit:
    """Three lists of records whose identities are pairwise disjoint."""

    train: list[ImageRecord]
    val: list[ImageRecord]
    test: list[ImageRecord]

    def pids(self, part: str) -> set[str]:
        return {r.pid for r in getattr(self, part)}


@dataclass(frozen=True)
class ReidSplit:
    """Queries and the gallery they are searched in.

    Every query's identity has at least one gallery image of another image file, from another
    camera when both cameras are known. Gallery images of identities without a query are
    distractors.
    """

    query: list[ImageRecord]
    gallery: list[ImageRecord]


def _by_pid(records: Sequence[ImageRecord]) -> dict[str, list[ImageRecord]]:
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in records:
        groups[r.pid].append(r)
    for g in groups.values():
        g.sort(key=lambda r: str(r.path))
    return dict(sorted(groups.items()))


def by_source_and_subset(record: ImageRecord) -> str:
    """Default stratum of :func:`split_by_identity`: ``"<source>/<subset>"``."""
    return f"{record.source}/{record.subset}"


def split_by_identity(
    records: Sequence[ImageRecord],
    *,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    stratify: Callable[[ImageRecord], str] | None = by_source_and_subset,
) -> IdentitySplit:
    """Split records into train / val / test with no identity in two parts.

    Args:
        records: images of any sources; identities are ``record.pid``.
        fractions: shares of identities for train, val and test (summing to 1).
        seed: the same seed and records give the same split.
        stratify: identities are split separately within each group this function names
            (default: per source and subset, so every PETA subset is spread over the three
            parts in proportion); ``None`` splits all identities together.

    Returns:
        The three parts; within each, records keep their input order.

    Raises:
        InvalidInput: fractions are negative or do not sum to 1.
    """
    fr = np.asarray(fractions, np.float64)
    if fr.shape != (3,) or (fr < 0).any() or abs(fr.sum() - 1.0) > 1e-6:
        raise InvalidInput(f"fractions must be three shares >= 0 summing to 1, got {fractions}")
    groups: dict[str, set[str]] = defaultdict(set)
    for r in records:
        groups[stratify(r) if stratify else ""].add(r.pid)
    seen: dict[str, str] = {}
    for g, pids in groups.items():
        for p in pids:
            if p in seen and seen[p] != g:
                raise InvalidInput(f"identity {p!r} is in two strata ({seen[p]!r}, {g!r})")
            seen[p] = g
    part_of: dict[str, int] = {}
    rng = np.random.default_rng(seed)
    for g in sorted(groups):
        pids = sorted(groups[g])
        order = rng.permutation(len(pids))
        n = len(pids)
        n_train = int(round(fr[0] * n))
        n_val = min(int(round(fr[1] * n)), n - n_train)
        if fr[2] == 0:  # no test share: what rounding leaves over is not held out for it
            n_val = n - n_train if fr[1] > 0 else 0
            n_train = n - n_val
        for rank, k in enumerate(order):
            part_of[pids[k]] = 0 if rank < n_train else 1 if rank < n_train + n_val else 2
    parts: list[list[ImageRecord]] = [[], [], []]
    for r in records:
        parts[part_of[r.pid]].append(r)
    return IdentitySplit(*parts)


def query_gallery_split(
    records: Sequence[ImageRecord], *, seed: int = 0, distractors: bool = True
) -> ReidSplit:
    """Pick one query image per identity; the rest of the images form the gallery.

    An identity gets a query only if it has at least two images and, when cameras are known,
    an image from a camera other than the query's. The query is drawn (by ``seed``) among the
    images that have such a partner. Gallery images of the query's own camera stay in the
    gallery (standard evaluators drop same-camera matches per query; see
    :func:`valid_matches`).

    Args:
        records: images of the evaluation identities.
        seed: the same seed and records give the same split.
        distractors: keep images of identities without a query in the gallery.

    Returns:
        Queries and gallery, disjoint in images.
    """
    rng = np.random.default_rng(seed)
    query: list[ImageRecord] = []
    gallery: list[ImageRecord] = []
    for pid, imgs in _by_pid(records).items():
        candidates = [q for q in imgs if any(_partner(q, g) for g in imgs)]
        if not candidates:
            if distractors:
                gallery.extend(imgs)
            continue
        q = candidates[int(rng.integers(len(candidates)))]
        query.append(q)
        gallery.extend(g for g in imgs if g is not q)
    return ReidSplit(query, gallery)


def _partner(q: ImageRecord, g: ImageRecord) -> bool:
    """``g`` is a valid match of query ``q``: another image, another camera where known."""
    if g is q or g.path == q.path or g.pid != q.pid:
        return False
    return q.camera is None or g.camera is None or q.camera != g.camera


def valid_matches(query: ImageRecord, gallery: Sequence[ImageRecord]) -> np.ndarray:
    """Boolean mask ``(len(gallery),)``: gallery images that count as correct for ``query``."""
    return np.fromiter((_partner(query, g) for g in gallery), bool, len(gallery))


def ignored_matches(query: ImageRecord, gallery: Sequence[ImageRecord]) -> np.ndarray:
    """Boolean mask ``(len(gallery),)``: the query's identity seen by the query's camera.

    Market-1501's protocol neither rewards nor punishes these ("junk"): drop them from the
    ranking before computing CMC / mAP.
    """
    return np.fromiter(
        (g.pid == query.pid and not _partner(query, g) for g in gallery), bool, len(gallery)
    )


def camera_codes(records: Sequence[ImageRecord]) -> np.ndarray:
    """Integer camera per record ``(N,)`` for ``training.metrics.retrieval_metrics``.

    Known cameras get codes ``>= 0`` (by sorted name); an unknown camera gets its own negative
    code per record, so ``exclude_same_cam=True`` never drops an image whose camera is unknown.
    """
    names = sorted({r.camera for r in records if r.camera is not None})
    code = {n: i for i, n in enumerate(names)}
    return np.array(
        [code[r.camera] if r.camera is not None else -1 - i for i, r in enumerate(records)],
        np.int64,
    )


def pid_codes(records: Sequence[ImageRecord]) -> np.ndarray:
    """Integer identity per record ``(N,)`` (by sorted pid), for the metrics functions."""
    code = {p: i for i, p in enumerate(sorted({r.pid for r in records}))}
    return np.array([code[r.pid] for r in records], np.int64)


__all__ = [
    "IdentitySplit",
    "ReidSplit",
    "by_source_and_subset",
    "camera_codes",
    "pid_codes",
    "ignored_matches",
    "query_gallery_split",
    "split_by_identity",
    "valid_matches",
]
