"""CMC and training-curve plots write real, readable files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pedsearch.errors import InvalidInput
from training.metrics import retrieval_metrics
from training.plots import plot_cmc, plot_cmc_html, plot_training_curves


def _cmc(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), 3)
    emb = rng.standard_normal((10, 8))[labels] + 0.8 * rng.standard_normal((30, 8))
    return retrieval_metrics(emb @ emb.T - 1e9 * np.eye(30), labels, labels)["cmc"]


def test_plot_cmc_writes_a_png(tmp_path):
    out = plot_cmc({"image->image": _cmc(0), "shuffled": np.linspace(0.1, 1, 29)},
                   tmp_path / "sub" / "cmc.png", "toy gallery")
    img = cv2.imread(str(out))
    assert out.stat().st_size > 5_000
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 400
    assert img.std() > 10  # not a blank canvas


def test_plot_cmc_html_is_self_contained(tmp_path):
    cmc = np.array([0.5, 0.75, 1.0])
    page = plot_cmc_html({"text<->image": cmc}, tmp_path / "cmc.html", "R@K").read_text()
    assert "<svg" in page and "<polyline" in page
    assert "text&lt;-&gt;image" in page  # escaped
    # table: R@1 = 50.00, R@5 and R@10 past the end read the last rank = 100.00
    assert "<td>50.00</td><td>100.00</td><td>100.00</td>" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched


def test_plot_training_curves_handles_sparse_metrics(tmp_path):
    history = [{"epoch": e, "step": 10 * e, "loss/id": 3.0 / (e + 1), "loss/attr": 1.0 / (e + 1)}
               for e in range(20)]
    history += [{"epoch": e, "step": 10 * e, "val/R@1": 0.1 * e} for e in (4, 9, 14, 19)]
    history.append({"epoch": 20, "step": 200, "note": "done", "lr": float("nan")})  # skipped
    out = plot_training_curves(history, tmp_path / "train.png")
    img = cv2.imread(str(out))
    assert img is not None and img.std() > 10 and out.stat().st_size > 5_000


@pytest.mark.parametrize(
    "call",
    [
        lambda p: plot_cmc({}, p / "x.png"),
        lambda p: plot_cmc({"a": np.array([0.5, 1.5])}, p / "x.png"),
        lambda p: plot_training_curves([], p / "x.png"),
        lambda p: plot_training_curves([{"epoch": 1, "tag": "x"}], p / "x.png"),
        lambda p: plot_training_curves([{"loss": 1.0}], p / "x.png"),
    ],
)
def test_plots_reject_bad_input(tmp_path, call):
    with pytest.raises(InvalidInput):
        call(tmp_path)
