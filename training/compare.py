"""Two models scored on the same queries: which of their differences are real.

Deciding whether a retrained bundle should replace the one in service means comparing figures
that move by a few points between two trainings of one recipe. A test set of a few hundred
images gives few queries per protocol (42 image -> image queries on PETA's held-out identities
at 512 images), and queries of one person are not independent. So each figure's difference
``candidate - baseline`` gets a 95 % interval from a **paired cluster bootstrap**: both models
answered the same queries, whole persons (a protocol's query label: the identity of a caption
or an image query, the description of an attribute query) are resampled with replacement, and
the difference of the means is recomputed on each resample. A difference whose interval
excludes 0 is called better or worse; the rest are "not decided".

``pedsearch eval --bundle NEW --against OLD`` runs this (``compare.json``, ``compare.png``).

Example:
    >>> import numpy as np
    >>> base = {"text": {"rank": np.array([1, 3, 1, 2]), "ap": np.array([1., .3, 1., .5]),
    ...                  "cluster": np.array([0, 0, 1, 1])}}
    >>> cand = {"text": {"rank": np.array([1, 1, 1, 2]), "ap": np.array([1., 1., 1., .5]),
    ...                  "cluster": np.array([0, 0, 1, 1])}}
    >>> d = compare_per_query(base, cand, metrics=("R@1",))[0]
    >>> d.metric, d.baseline, d.candidate
    ('text_R@1', 0.5, 0.75)
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from pedsearch.errors import InvalidInput
from training.metrics import attribute_metrics

#: Protocols in the order they are reported; ``text_served`` is the one the gateway answers
#: text queries with (:func:`served_text`).
ORDER = ("text_served", "text", "textla", "textpred", "attrsoft", "attr", "attrpred", "image")
#: What the gateway serves, and the attribute-prediction baseline answering the same queries.
BASELINES = (("text_served", "textpred"), ("attrsoft", "attrpred"))
#: Figures compared for each retrieval protocol.
METRICS = ("R@1", "R@10", "mAP")
#: Resamples of the bootstrap (the interval's ends move by about 0.1 point between seeds).
RESAMPLES = 2000


@dataclass(frozen=True)
class Difference:
    """One figure of two models and the interval of ``candidate - baseline``.

    Attributes:
        metric: e.g. ``text_R@1``, ``image_mAP``, ``attr_mA`` (fractions, as ``pedsearch eval``).
        baseline, candidate: the figure of each model.
        low, high: the 95 % bootstrap interval of the difference.
        queries: queries (or images, for ``attr_mA``) the figure is over.
        clusters: persons / descriptions they belong to (the bootstrap's units).
    """

    metric: str
    baseline: float
    candidate: float
    low: float
    high: float
    queries: int
    clusters: int

    @property
    def delta(self) -> float:
        return self.candidate - self.baseline

    @property
    def verdict(self) -> str:
        """``better`` / ``worse`` when the interval excludes 0, else ``not decided``."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "not decided"


def cluster_bootstrap(
    diff: np.ndarray,
    clusters: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the mean of ``diff`` when whole clusters are resampled.

    Args:
        diff: ``(Q,)`` per-query differences (candidate minus baseline).
        clusters: ``(Q,)`` labels; queries with one label are drawn together.
        resamples: bootstrap resamples.
        level: coverage of the interval.
        seed: seed of the resampling (the same inputs give the same interval).

    Returns:
        ``(low, high)``.

    Raises:
        InvalidInput: empty input, or lengths that disagree.
    """
    diff = np.asarray(diff, np.float64)
    clusters = np.asarray(clusters)
    if diff.ndim != 1 or diff.size == 0 or clusters.shape != diff.shape:
        raise InvalidInput(f"diff and clusters must be equal non-empty 1-D arrays, got "
                           f"{diff.shape} and {clusters.shape}")
    _, inverse = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inverse, weights=diff)
    counts = np.bincount(inverse).astype(np.float64)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, len(sums), size=(resamples, len(sums)))  # (R, C) clusters per resample
    return _percentile_interval(sums[draw].sum(axis=1) / counts[draw].sum(axis=1), level)


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap ``values``."""
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_statistic(
    statistic: Callable[[np.ndarray], float],
    clusters: np.ndarray,
    *,
    resamples: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` over cluster resamples, for figures that
    are not a mean over queries (attribute mA: a mean of per-attribute balanced accuracies).

    Args:
        statistic: ``(n,) int indices into the items -> float`` (e.g. a difference of mA);
            NaN where a resample leaves it undefined (a resample of one person has no
            attribute with both values, so no mA): those resamples are left out.
        clusters: ``(N,)`` the items' clusters.

    Returns:
        ``(low, high)``; NaN when most resamples left the statistic undefined (too few
        clusters to say anything).
    """
    clusters = np.asarray(clusters)
    if clusters.ndim != 1 or clusters.size == 0:
        raise InvalidInput("clusters must be a non-empty 1-D array")
    _, inverse = np.unique(clusters, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(inverse.max() + 1)]
    rng = np.random.default_rng(seed)
    values = np.array([
        statistic(np.concatenate([members[c] for c in rng.integers(0, len(members),
                                                                   len(members))]))
        for _ in range(resamples)])
    values = values[np.isfinite(values)]
    if values.size < resamples / 2:
        return math.nan, math.nan
    return _percentile_interval(values, level)


def served_text(per_query: Mapping[str, Mapping[str, np.ndarray]], weight: float) -> str:
    """The protocol the gateway answers a bundle's text queries with: ``textla`` when its
    text-attribute weight is above 0 (:attr:`pedsearch.bundle.Bundle.text_attribute_weight`),
    else ``text`` (the cosine alone)."""
    return "textla" if weight > 0 and "textla" in per_query else "text"


def _figure(scores: Mapping[str, np.ndarray], metric: str) -> np.ndarray:
    """Per-query values whose mean is ``metric`` (``R@K`` hit indicators, or ``mAP`` APs)."""
    if metric == "mAP":
        return np.asarray(scores["ap"], np.float64)
    k = int(metric.removeprefix("R@"))
    return (np.asarray(scores["rank"]) <= k).astype(np.float64)


def compare_per_query(
    baseline: Mapping[str, Mapping[str, np.ndarray]],
    candidate: Mapping[str, Mapping[str, np.ndarray]],
    *,
    metrics: Sequence[str] = METRICS,
    weights: tuple[float, float] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> list[Difference]:
    """Every figure both evaluations measured, paired query by query.

    Args:
        baseline, candidate: ``per_query`` of :func:`training.evaluate.evaluate_encoders` for
            the two models, on the same evaluation set.
        metrics: retrieval figures to compare (``R@K``, ``mAP``).
        weights: the two bundles' text-attribute weights; adds ``text_served``, each model's
            text queries ranked as the gateway serves them.
        resamples, seed: of the bootstrap.

    Returns:
        One :class:`Difference` per protocol and figure (in :data:`ORDER`), then ``attr_mA``.

    Raises:
        InvalidInput: the two evaluations scored different queries (another data set, split,
            or attribute schema).
    """
    base, cand = dict(baseline), dict(candidate)
    if weights is not None and "text" in base and "text" in cand:
        base["text_served"] = base[served_text(base, weights[0])]
        cand["text_served"] = cand[served_text(cand, weights[1])]
    out: list[Difference] = []
    for name in [p for p in ORDER if p in base and p in cand]:
        if not np.array_equal(base[name]["cluster"], cand[name]["cluster"]):
            raise InvalidInput(f"the two evaluations scored different {name} queries; compare "
                               "bundles on the same images (--data) with the same schema")
        out += _paired(name, base[name], cand[name], metrics, resamples, seed)
    if "recognition" in base and "recognition" in cand:
        out.append(_compare_mA(base["recognition"], cand["recognition"], seed=seed))
    return out


def against_baselines(
    per_query: Mapping[str, Mapping[str, np.ndarray]],
    weight: float,
    *,
    metrics: Sequence[str] = METRICS,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> list[Difference]:
    """One model's answers as the gateway serves them against its attribute-prediction
    baselines, on the same queries: text queries (``text_served``) against ``textpred``,
    attribute queries (``attrsoft``) against ``attrpred``. ``baseline`` of each
    :class:`Difference` is the attribute prediction's figure, ``candidate`` the served one's.

    Args:
        per_query: of :func:`training.evaluate.evaluate_encoders`.
        weight: the bundle's text-attribute weight (which text ranking it serves).
    """
    pq = dict(per_query)
    if "text" in pq:
        pq["text_served"] = pq[served_text(pq, weight)]
    out: list[Difference] = []
    for served, base in BASELINES:
        if served in pq and base in pq:
            out += _paired(served, pq[base], pq[served], metrics, resamples, seed,
                           label=f"{served} vs {base}")
    return out


def _paired(name: str, a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray],
            metrics: Sequence[str], resamples: int, seed: int, label: str | None = None
            ) -> list[Difference]:
    """``b - a`` for each figure, over the queries both answered (same order)."""
    n_clusters = len(np.unique(a["cluster"]))
    out = []
    for metric in metrics:
        x, y = _figure(a, metric), _figure(b, metric)
        low, high = cluster_bootstrap(y - x, a["cluster"], resamples=resamples, seed=seed)
        out.append(Difference(f"{name}_{metric}" if label is None else f"{label} {metric}",
                              float(x.mean()), float(y.mean()), low, high, len(x), n_clusters))
    return out


def _compare_mA(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], *,
                seed: int) -> Difference:
    targets, masks = np.asarray(a["targets"]), np.asarray(a["masks"])
    if not (np.array_equal(targets, b["targets"]) and np.array_equal(masks, b["masks"])):
        raise InvalidInput("the two evaluations scored different images; compare bundles on "
                           "the same images (--data) with the same schema")

    def mA(probs: np.ndarray, idx: np.ndarray) -> float:
        try:
            return float(attribute_metrics(probs[idx], targets[idx], masks[idx])["mA"])
        except InvalidInput:  # no attribute has both values among these images
            return math.nan

    every = np.arange(len(targets))
    pa, pb = np.asarray(a["probs"]), np.asarray(b["probs"])
    low, high = bootstrap_statistic(lambda idx: mA(pb, idx) - mA(pa, idx), a["cluster"],
                                    seed=seed)
    return Difference("attr_mA", mA(pa, every), mA(pb, every), low, high, len(targets),
                      len(np.unique(a["cluster"])))


def write_comparison(
    differences: Sequence[Difference],
    out_dir: str | pathlib.Path,
    *,
    baseline: str,
    candidate: str,
    stem: str = "compare",
) -> pathlib.Path:
    """``<stem>.json`` (every difference with its interval and verdict) and ``<stem>.png``
    (the differences in points with their intervals, coloured by verdict)."""
    import json

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{**asdict(d), "delta": d.delta, "verdict": d.verdict} for d in differences]
    (out / f"{stem}.json").write_text(json.dumps(
        {"baseline": baseline, "candidate": candidate, "level": 0.95,
         "method": "paired cluster bootstrap over persons / descriptions",
         "differences": rows}, indent=2))
    colours = {"better": "#2a9d3f", "worse": "#c0392b", "not decided": "#7f7f7f"}
    fig = Figure(figsize=(7.5, 0.32 * len(differences) + 1.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for y, d in enumerate(reversed(differences)):
        c = colours[d.verdict]
        ax.plot([100 * d.low, 100 * d.high], [y, y], color=c, lw=2)
        ax.plot([100 * d.delta], [y], "o", color=c)
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(range(len(differences)))
    ax.set_yticklabels([d.metric for d in reversed(differences)], fontsize=8)
    ax.set_xlabel(f"{candidate} minus {baseline} (points, 95 % interval)")
    ax.set_title("green: better, red: worse, grey: not decided", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)
    return out


__all__ = [
    "BASELINES",
    "Difference",
    "against_baselines",
    "bootstrap_statistic",
    "cluster_bootstrap",
    "compare_per_query",
    "served_text",
    "write_comparison",
]
