"""Draw the architecture picture of the README (``docs/img/architecture.png``) with matplotlib.

    python docs/img/architecture.py [--out docs/img/architecture.png]

The boxes are the parts of the system, the arrows what flows between them: frames on the ingest
side (left to right), queries and answers on the query side (right), models from training
(bottom). The two sides meet only in Milvus, Redis and the model bundle.
"""

from __future__ import annotations

import argparse
import pathlib

import matplotlib

matplotlib.use("Agg")  # files only; no display here
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent

# part -> (x, y, w, h) in figure units (0..16 x 0..9), title, lines, face colour
BOXES = {
    "cameras": ((0.2, 5.6, 2.4, 2.4), "cameras",
                ["RTSP / file / webcam", "synthetic scene", "pedsearch camera:",
                 "JPEG Frame at --fps"],
                "#e8eef7"),
    "kafka": ((3.3, 5.6, 2.5, 2.4), "Kafka  \"frames\"",
              ["key = camera id", "(per-camera order)", "poison -> frames.dlq", "Tansu locally"],
              "#fdf0dc"),
    "workers": ((6.5, 5.0, 3.6, 3.0), "Ray ingest workers",
                ["consumer actors (one group)", "decode -> detect -> track",
                 "-> best crop per window", "embedder pool (batched):",
                 "joint embedding + attributes", "upsert, then commit offsets"], "#e5f4e5"),
    "milvus": ((10.9, 5.8, 2.3, 2.2), "Milvus",
               ["alias \"detections\"", "-> detections_<version>", "vectors + attribute",
                "scalars"],
               "#f1e6f7"),
    "redis": ((10.9, 3.0, 2.3, 2.2), "Redis",
              ["checkpoints, metrics", "live feed of new", "detections, rate", "limits"],
              "#fbe3e3"),
    "crops": ((8.4, 2.9, 2.0, 1.3), "crop store", ["JPEG per detection"], "#f3f3f3"),
    "gateway": ((14.1, 3.6, 2.6, 3.4), "gRPC gateway",
                ["SearchText / Attributes", "/ Image, GetDetection,", "ListCameras, Watch",
                 "auth, TLS, rate limit,", "health, metrics"], "#dff3f5"),
    "clients": ((14.1, 0.3, 2.6, 2.0), "clients",
                ["pedsearch search / watch", "gateway.client (Python)", "any gRPC client"],
                "#e8eef7"),
    "training": ((0.2, 0.5, 5.2, 2.4), "Ray Train",
                 ["datasets (PETA, captions, synthetic)", "APR / AAIPR / CMAAM / SSAN losses",
                  "evaluate -> export"], "#fdf0dc"),
    "bundle": ((6.5, 0.5, 3.6, 1.6), "model bundle  <version>",
               ["image / text / attribute encoders"], "#fff9d6"),
}

# (from, to, label, from side, to side)
ARROWS = [
    ("cameras", "kafka", "frames", "r", "l"),
    ("kafka", "workers", "poll", "r", "l"),
    ("workers", "milvus", "upsert", "r", "l"),
    ("workers", "redis", "state, live feed", "r", "l"),
    ("workers", "crops", "crops", "b+1.1", "t+0.1"),
    ("milvus", "gateway", "search", "r", "l+0.9"),
    ("redis", "gateway", "watch, limits", "r", "l-0.9"),
    ("clients", "gateway", "queries / matches", "t", "b"),
    ("training", "bundle", "export", "r", "l"),
    ("bundle", "workers", "encode", "t-0.9", "b-0.9"),
]


def _anchor(box, side: str) -> tuple[float, float]:
    """Middle of a box's side ("l", "r", "t", "b"), moved along it by an offset ("t-0.9")."""
    (x, y, w, h) = box
    d = float(side[1:] or 0)
    return {"l": (x, y + h / 2 + d), "r": (x + w, y + h / 2 + d), "t": (x + w / 2 + d, y + h),
            "b": (x + w / 2 + d, y)}[side[0]]


def draw(out: pathlib.Path) -> pathlib.Path:
    fig, ax = plt.subplots(figsize=(16.8, 9.4), dpi=100)
    ax.set_xlim(0, 16.8)
    ax.set_ylim(0, 9.4)
    ax.axis("off")
    ax.text(0.2, 9.0, "pedsearch: cameras -> Kafka -> Ray -> Milvus, queried over gRPC",
            fontsize=15, weight="bold")
    ax.text(0.2, 8.55, "ingest side (left) and query side (right) meet only in Milvus, Redis and "
            "the model bundle", fontsize=10, color="#555")
    for (x, y, w, h), title, lines, face in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.15",
                                    fc=face, ec="#444", lw=1.2))
        ax.text(x + w / 2, y + h - 0.32, title, ha="center", va="center", fontsize=11.5,
                weight="bold")
        for i, line in enumerate(lines):
            ax.text(x + w / 2, y + h - 0.75 - 0.36 * i, line, ha="center", va="center",
                    fontsize=9, color="#222")
    # the gateway reads the crop store and loads the bundle too: dashed, not to clutter
    for src, dst, label, s_side, d_side in ARROWS:
        p0 = _anchor(BOXES[src][0], s_side)
        p1 = _anchor(BOXES[dst][0], d_side)
        ax.add_patch(FancyArrowPatch(p0, p1, arrowstyle="-|>", mutation_scale=16, lw=1.5,
                                     color="#333", connectionstyle="arc3,rad=0.0"))
        if label:
            ax.text((p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2 + 0.15, label, ha="center",
                    fontsize=8.5, color="#1f4e8c", style="italic")
    for src, dst, label in (("bundle", "gateway", "same version as the index"),
                            ("crops", "gateway", "crop JPEGs")):
        p0 = _anchor(BOXES[src][0], "r" if src == "bundle" else "b")
        p1 = _anchor(BOXES[dst][0], "b-0.9" if src == "bundle" else "b-0.3")
        ax.add_patch(FancyArrowPatch(p0, p1, arrowstyle="-|>", mutation_scale=14, lw=1.1,
                                     ls="--", color="#777", connectionstyle="arc3,rad=0.2"))
        ax.text((p0[0] + p1[0]) / 2 + 0.3, (p0[1] + p1[1]) / 2 - 0.25, label, ha="center",
                fontsize=8.5, color="#777", style="italic")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=HERE / "architecture.png")
    print(f"wrote {draw(ap.parse_args().out)}")


if __name__ == "__main__":
    main()
