"""Pictures of evaluation results: CMC curves and training curves.

Figures are drawn with matplotlib's object API on an Agg canvas, so nothing here touches the
global pyplot state or needs a display. :func:`plot_cmc_html` writes the same CMC curves as a
self-contained HTML page (inline SVG, hover a point for its value) with a table of R@1/5/10.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> plot_cmc({"text->image": np.linspace(0.4, 1.0, 50)}, d / "cmc.png").stat().st_size > 0
    True
"""

from __future__ import annotations

import html
import math
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pedsearch.errors import InvalidInput

#: Ranks reported in the legend and the HTML table.
SUMMARY_RANKS = (1, 5, 10)


def _check_curves(curves: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not curves:
        raise InvalidInput("curves is empty; pass at least one name -> CMC array")
    out: dict[str, np.ndarray] = {}
    for name, c in curves.items():
        arr = np.asarray(c, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise InvalidInput(f"CMC curve {name!r} must be a non-empty 1-D array, got {arr.shape}")
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise InvalidInput(f"CMC curve {name!r} must hold fractions in [0, 1]")
        out[str(name)] = arr
    return out


def _at(cmc: np.ndarray, k: int) -> float:
    return float(cmc[min(k, len(cmc)) - 1])


def _save(fig: Figure, out_png: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(out_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    return path


def plot_cmc(
    curves: Mapping[str, np.ndarray],
    out_png: str | pathlib.Path,
    title: str = "CMC",
    *,
    max_rank: int = 20,
) -> pathlib.Path:
    """Plot one or more CMC curves (rank on x, match rate in % on y) to a PNG.

    Args:
        curves: name -> ``(G,)`` CMC array of fractions (``retrieval_metrics(...)["cmc"]``).
        out_png: output file; parent folders are created.
        title: figure title (e.g. the data set and split).
        max_rank: last rank drawn (curves shorter than this are drawn to their end).

    Returns:
        The path written.

    Raises:
        InvalidInput: no curve, a curve that is not 1-D fractions, or ``max_rank < 1``.
    """
    data = _check_curves(curves)
    if max_rank < 1:
        raise InvalidInput(f"max_rank must be >= 1, got {max_rank}")
    fig = Figure(figsize=(6.4, 4.8), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for name, cmc in data.items():
        n = min(max_rank, len(cmc))
        ranks = np.arange(1, n + 1)
        summary = ", ".join(f"R@{k} {100 * _at(cmc, k):.1f}" for k in SUMMARY_RANKS)
        label = f"{name}  ({summary})"
        ax.plot(ranks, 100 * cmc[:n], marker="o", markersize=3, linewidth=1.6, label=label)
    ax.set_xlim(0.5, max_rank + 0.5)
    ax.set_ylim(0, 100)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=min(max_rank, 10), integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, out_png)


def plot_cmc_html(
    curves: Mapping[str, np.ndarray],
    out_html: str | pathlib.Path,
    title: str = "CMC",
    *,
    max_rank: int = 20,
) -> pathlib.Path:
    """Write the CMC curves as one self-contained HTML page (inline SVG + an R@K table).

    Args:
        curves: name -> ``(G,)`` CMC array of fractions.
        out_html: output file; parent folders are created.
        title: page and chart title.
        max_rank: last rank drawn.

    Returns:
        The path written.

    Raises:
        InvalidInput: as :func:`plot_cmc`.
    """
    data = _check_curves(curves)
    if max_rank < 1:
        raise InvalidInput(f"max_rank must be >= 1, got {max_rank}")
    w, h, left, right, top, bottom = 640, 400, 56, 16, 16, 44
    pw, ph = w - left - right, h - top - bottom
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]

    def x(r: float) -> float:
        return left + (r - 0.5) / max_rank * pw

    def y(v: float) -> float:
        return top + (1 - v) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             'font-family="sans-serif" font-size="11">']
    for v in range(0, 101, 20):
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{y(v / 100):.1f}" '
                     f'y2="{y(v / 100):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y(v / 100) + 4:.1f}" text-anchor="end">{v}</text>')
    step = max(1, math.ceil(max_rank / 10))
    for r in range(1, max_rank + 1, step):
        parts.append(f'<text x="{x(r):.1f}" y="{h - bottom + 16}" text-anchor="middle">{r}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{h - 6}" text-anchor="middle">rank</text>'
                 f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" '
                 'text-anchor="middle">matching rate (%)</text>'
                 f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" '
                 'stroke="#888"/>')
    rows = []
    for i, (name, cmc) in enumerate(data.items()):
        col = colors[i % len(colors)]
        n = min(max_rank, len(cmc))
        pts = " ".join(f"{x(r + 1):.1f},{y(cmc[r]):.1f}" for r in range(n))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="2"/>')
        for r in range(n):
            parts.append(f'<circle cx="{x(r + 1):.1f}" cy="{y(cmc[r]):.1f}" r="3" fill="{col}">'
                         f"<title>{html.escape(name)}: rank {r + 1} = {100 * cmc[r]:.2f}%</title>"
                         "</circle>")
        cells = "".join(f"<td>{100 * _at(cmc, k):.2f}</td>" for k in SUMMARY_RANKS)
        rows.append(f'<tr><td><span style="color:{col}">&#9632;</span> {html.escape(name)}</td>'
                    f"{cells}</tr>")
    parts.append("</svg>")
    head = "".join(f"<th>R@{k} (%)</th>" for k in SUMMARY_RANKS)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:1.5em}}"
        "table{border-collapse:collapse;margin-top:1em}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>"
        f"<h2>{html.escape(title)}</h2>{''.join(parts)}"
        f"<table><tr><th>curve</th>{head}</tr>{''.join(rows)}</table></body></html>"
    )
    path = pathlib.Path(out_html)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def plot_training_curves(
    history: Sequence[Mapping[str, Any]],
    out_png: str | pathlib.Path,
    *,
    x: str = "step",
    title: str = "training",
    ncols: int = 3,
) -> pathlib.Path:
    """Plot every numeric metric of a training history, one small panel per metric.

    Entries may carry different keys (losses every step, R@K only after an evaluation); each
    metric is drawn over the entries that have it, with markers when it has few points.

    Args:
        history: entries like ``{"epoch": 1, "step": 200, "loss/id": 2.3, "val/R@1": 0.41}``.
            Non-numeric and non-finite values are skipped.
        out_png: output file; parent folders are created.
        x: key used for the x axis (``"step"`` or ``"epoch"``); entries without it are skipped.
        title: figure title.
        ncols: panels per row.

    Returns:
        The path written.

    Raises:
        InvalidInput: empty history, no entry with ``x``, no numeric metric, or ``ncols < 1``.
    """
    if not history:
        raise InvalidInput("history is empty; nothing to plot")
    if ncols < 1:
        raise InvalidInput(f"ncols must be >= 1, got {ncols}")
    axes_keys = {"epoch", "step", x}
    series: dict[str, tuple[list[float], list[float]]] = {}
    seen_x = False
    for entry in history:
        if not isinstance(entry, Mapping):
            raise InvalidInput(f"history entries must be mappings, got {type(entry).__name__}")
        xv = entry.get(x)
        if not _is_number(xv):
            continue
        seen_x = True
        for key, val in entry.items():
            if key in axes_keys or not _is_number(val):
                continue
            xs, ys = series.setdefault(str(key), ([], []))
            xs.append(float(xv))
            ys.append(float(val))
    if not seen_x:
        raise InvalidInput(f"no history entry has a numeric {x!r}; choose x='step' or x='epoch'")
    if not series:
        raise InvalidInput("history has no numeric metric besides epoch/step")

    names = sorted(series, key=lambda k: ("loss" not in k.lower(), k))
    cols = min(ncols, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.6 * cols, 2.6 * rows + 0.4), dpi=100, layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names):
        xs, ys = series[name]
        order = np.argsort(xs, kind="stable")
        xa, ya = np.asarray(xs)[order], np.asarray(ys)[order]
        ax.plot(xa, ya, marker="o" if len(xa) <= 30 else None, markersize=3, linewidth=1.4)
        ax.set_title(f"{name}  (last {ya[-1]:.4g})", fontsize=9)
        ax.set_xlabel(x, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    return _save(fig, out_png)


def _is_number(v: Any) -> bool:
    return (
        isinstance(v, (int, float, np.integer, np.floating))
        and not isinstance(v, bool)
        and math.isfinite(float(v))
    )
