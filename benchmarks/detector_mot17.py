"""Person detectors on real street frames: recall, precision and time on MOT17-04.

Runs every detector plug-in that makes sense on the 8 frames of ``mot17/MOT17-04-FRCNN``
(1920x1080, 336 annotated pedestrians) and matches its boxes to the ground truth rows of
frames 1-8 with class 1 (pedestrian) and conf 1, greedily by descending score at IoU >= 0.5:

- recall: matched pedestrians / pedestrians;
- recall >= 50 % visible: the same over pedestrians whose ``visibility`` is at least 0.5;
- precision: matched detections / detections (a box on anything that is not an annotated
  pedestrian counts as false, including the static people and reflections MOT17 labels with
  other classes -- ``FP on other`` says how many of the false ones lie on those);
- ms / frame: median wall time of one ``detector([frame])`` call, after one warm-up call;
- CPU ms / frame: median CPU time of the process (all threads) for that call;
- time ÷ ref: that time over Yolo-Fastest 1024x576's, both measured in this process.

Background subtraction is not run: it needs a static camera and a learned background (its
warm-up alone is longer than these 8 frames), and MOT17-04 is a crowd in which most people
stand or walk slowly, so its figures here would say nothing about it.

Usage::

    python benchmarks/detector_mot17.py --out runs/detector_mot17.md --sheet runs/mot17.png

Paths come from ``paths.data_root`` / ``paths.models_root`` of the settings (``--config`` or
``PEDSEARCH_PATHS__DATA_ROOT`` / ``PEDSEARCH_PATHS__MODELS_ROOT``), or ``--data-root`` /
``--models-root``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from pedsearch.config import load_settings
from pedsearch.errors import ConfigError, PedsearchError
from pedsearch.markdown import table as table_lines
from workers.detectors import DETECTORS, Detections, iou_matrix

SEQUENCE = "mot17/MOT17-04-FRCNN"
PEDESTRIAN = 1
# MOT17 classes of person-like things that are not counted as pedestrians
PERSON_LIKE_OTHER = {2, 7, 8, 12}  # person on vehicle, static person, distractor, reflection

# (label, plug-in, options); every variant shares the threshold/NMS given on the command line
# (label, plug-in, options); options override the threshold/NMS given on the command line.
# The models README scores Yolo-Fastest as objectness x column 5, but OpenCV's [yolo] layer has
# already multiplied column 5 by objectness, so its "score >= 0.3" is objectness^2 * p >= 0.3,
# i.e. our score >= sqrt(0.3) = 0.55: the "@0.55" rows are the README's operating point.
REFERENCE = "Yolo-Fastest 1024x576"
VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    ("HOG, native 1920x1080", "hog", {}),
    ("HOG, resized to 640 wide", "hog", {"resize_width": 640}),
    ("Yolo-Fastest 1024x576", "darknet", {"input_width": 1024, "input_height": 576}),
    ("Yolo-Fastest 1024x576 @0.55", "darknet",
     {"input_width": 1024, "input_height": 576, "score_threshold": 0.55}),
    ("Yolo-Fastest 640x352", "darknet", {"input_width": 640, "input_height": 352}),
    ("Yolo-Fastest 640x352 @0.55", "darknet",
     {"input_width": 640, "input_height": 352, "score_threshold": 0.55}),
    ("YOLOX-nano, whole frame", "yolox", {}),
    ("YOLOX-nano, 2x2 tiles", "yolox", {"tiles_x": 2, "tiles_y": 2}),
    ("YOLOX-nano, 3x2 tiles", "yolox", {"tiles_x": 3, "tiles_y": 2}),
    ("YOLOX-nano, 2x2 tiles + whole, cut dropped", "yolox",
     {"tiles_x": 2, "tiles_y": 2, "whole_frame": True, "drop_cut_boxes": True}),
]


@dataclass
class GroundTruth:
    """Annotated boxes of one frame: pedestrians ``(P, 4)`` xywh with visibility ``(P,)``,
    and person-like boxes of other classes ``(Q, 4)``."""

    boxes: np.ndarray
    visibility: np.ndarray
    other: np.ndarray


@dataclass
class Result:
    label: str
    gt: int = 0
    gt_visible: int = 0
    matched: int = 0
    matched_visible: int = 0
    detections: int = 0
    true_positives: int = 0
    fp_on_other: int = 0
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    per_frame: list[Detections] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.matched / max(self.gt, 1)

    @property
    def recall_visible(self) -> float:
        return self.matched_visible / max(self.gt_visible, 1)

    @property
    def precision(self) -> float:
        return self.true_positives / max(self.detections, 1)

    @property
    def ms_per_frame(self) -> float:
        """Median over frames (and repeats): robust to other work on the machine."""
        return 1000 * float(np.median(self.seconds)) if self.seconds else float("nan")

    @property
    def cpu_ms_per_frame(self) -> float:
        """Median CPU time of this process (all threads) per frame: what a frame costs, and
        less disturbed than wall time by other work on a shared machine."""
        return 1000 * float(np.median(self.cpu_seconds)) if self.cpu_seconds else float("nan")


def load_sequence(root: pathlib.Path, frames: int) -> tuple[list[np.ndarray], list[GroundTruth]]:
    """The first ``frames`` images of the sequence and their ground truth.

    Raises:
        ConfigError: the folder, an image or ``gt/gt.txt`` is missing.
    """
    seq = root / SEQUENCE
    gt_file = seq / "gt" / "gt.txt"
    if not gt_file.is_file():
        raise ConfigError(f"{gt_file} not found: point --data-root (or paths.data_root) at the "
                          "folder holding mot17/MOT17-04-FRCNN")
    images = []
    for i in range(1, frames + 1):
        path = seq / "img1" / f"{i:06d}.jpg"
        image = cv2.imread(str(path))
        if image is None:
            raise ConfigError(f"cannot read frame {path}")
        images.append(image)
    rows = np.loadtxt(gt_file, delimiter=",", ndmin=2)
    truths = []
    for i in range(1, frames + 1):
        r = rows[rows[:, 0] == i]
        ped = r[(r[:, 7] == PEDESTRIAN) & (r[:, 6] == 1)]
        other = r[np.isin(r[:, 7], list(PERSON_LIKE_OTHER))]
        truths.append(GroundTruth(ped[:, 2:6].astype(np.float32), ped[:, 8],
                                  other[:, 2:6].astype(np.float32)))
    return images, truths


def match(det: Detections, gt_boxes: np.ndarray, iou_threshold: float) -> tuple[np.ndarray,
                                                                                np.ndarray]:
    """Greedy matching by descending score, each ground-truth box used once.

    Returns:
        ``(tp, gt_hit)``: ``(N,)`` bool per detection, ``(P,)`` bool per ground-truth box.
    """
    tp = np.zeros(len(det), bool)
    gt_hit = np.zeros(len(gt_boxes), bool)
    if len(det) == 0 or len(gt_boxes) == 0:
        return tp, gt_hit
    ious = iou_matrix(det.boxes, gt_boxes)
    for i in np.argsort(-det.scores, kind="stable"):
        candidates = np.where(gt_hit, -1.0, ious[i])
        j = int(np.argmax(candidates))
        if candidates[j] >= iou_threshold:
            tp[i] = True
            gt_hit[j] = True
    return tp, gt_hit


def evaluate(result: Result, truths: list[GroundTruth], iou_threshold: float) -> None:
    for det, gt in zip(result.per_frame, truths):
        tp, gt_hit = match(det, gt.boxes, iou_threshold)
        visible = gt.visibility >= 0.5
        result.gt += len(gt.boxes)
        result.gt_visible += int(visible.sum())
        result.matched += int(gt_hit.sum())
        result.matched_visible += int((gt_hit & visible).sum())
        result.detections += len(det)
        result.true_positives += int(tp.sum())
        false = det.take(~tp)
        if len(false) and len(gt.other):
            on_other = iou_matrix(false.boxes, gt.other).max(axis=1) >= iou_threshold
            result.fp_on_other += int(on_other.sum())


def run_variant(label: str, name: str, options: dict[str, Any], images: list[np.ndarray],
                progress: Progress, task: Any, repeats: int = 1) -> Result:
    detector = DETECTORS.build(name, **options)
    detector([images[0]])  # warm-up: first forward allocates
    result = Result(label)
    for r in range(repeats):
        for image in images:
            start, cpu = time.perf_counter(), time.process_time()
            det = detector([image])[0]
            result.seconds.append(time.perf_counter() - start)
            result.cpu_seconds.append(time.process_time() - cpu)
            if r == 0:
                result.per_frame.append(det)
            progress.advance(task)
    return result


def relative_time(results: list[Result]) -> dict[str, float]:
    """Time per frame of each variant over the reference (Yolo-Fastest 1024x576, else the
    first row), measured in this same process: ratios survive a busy machine better."""
    ref = next((r for r in results if r.label == REFERENCE), results[0] if results else None)
    return {r.label: r.ms_per_frame / ref.ms_per_frame for r in results} if ref else {}


COLUMNS = ("detector", "recall", "recall ≥50% visible", "precision", "FP on other",
           "detections", "ms / frame", "CPU ms / frame", "time ÷ ref")


def _cells(r: Result, ratio: dict[str, float]) -> list[str]:
    return [r.label, f"{r.recall:.2f}", f"{r.recall_visible:.2f}", f"{r.precision:.2f}",
            str(r.fp_on_other), str(r.detections), f"{r.ms_per_frame:.0f}",
            f"{r.cpu_ms_per_frame:.0f}", f"{ratio.get(r.label, float('nan')):.2f}"]


def table(results: list[Result], title: str) -> Table:
    out = Table(title=title)
    for col in COLUMNS:
        out.add_column(col, justify="left" if col == "detector" else "right",
                       no_wrap=col == "detector")
    ratio = relative_time(results)
    for r in results:
        out.add_row(*_cells(r, ratio))
    return out


def markdown(results: list[Result], header: str) -> str:
    ratio = relative_time(results)
    lines = [header, "", *table_lines(COLUMNS, [_cells(r, ratio) for r in results])]
    return "\n".join(lines) + "\n"


def contact_sheet(image: np.ndarray, truth: GroundTruth, results: list[Result], frame: int,
                  path: pathlib.Path, columns: int = 2, width: int = 960) -> None:
    """One panel per detector: the frame with ground truth (green) and detections (red)."""
    scale = width / image.shape[1]
    height = round(image.shape[0] * scale)
    panels = []
    for r in results:
        panel = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        for x, y, w, h in (truth.boxes * scale).round().astype(int):
            cv2.rectangle(panel, (x, y), (x + w, y + h), (0, 200, 0), 2)
        for x, y, w, h in (r.per_frame[frame].boxes * scale).round().astype(int):
            cv2.rectangle(panel, (x, y), (x + w, y + h), (0, 0, 255), 2)
        text = f"{r.label}: recall {r.recall:.2f}, precision {r.precision:.2f}"
        cv2.rectangle(panel, (0, 0), (width, 30), (0, 0, 0), -1)
        cv2.putText(panel, text, (8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1,
                    cv2.LINE_AA)
        panels.append(panel)
    while len(panels) % columns:
        panels.append(np.zeros_like(panels[0]))
    rows = [np.hstack(panels[i:i + columns]) for i in range(0, len(panels), columns)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.vstack(rows)):
        raise ConfigError(f"cannot write {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="pedsearch YAML settings (paths section)")
    parser.add_argument("--data-root", type=pathlib.Path, default=None,
                        help="folder with mot17/ (default: paths.data_root)")
    parser.add_argument("--models-root", type=pathlib.Path, default=None,
                        help="folder with yolo-fastest-1.1-body/ and yolox-nano/ "
                        "(default: paths.models_root)")
    parser.add_argument("--frames", type=int, default=8, help="frames 1..N (the data has 8)")
    plugins = ", ".join(sorted({v[1] for v in VARIANTS}))
    parser.add_argument("--only", nargs="*", default=None, metavar="PLUGIN",
                        help=f"run only these plug-ins ({plugins})")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--nms-iou", type=float, default=0.45)
    parser.add_argument("--iou", type=float, default=0.5, help="IoU of a correct detection")
    parser.add_argument("--threads", type=int, default=2, help="cv2.setNumThreads")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time the frames this many times (the median is reported)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="write the table (.md)")
    parser.add_argument("--sheet", type=pathlib.Path, default=None,
                        help="write a picture of frame 1 with GT (green) and detections (red)")
    args = parser.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=140)
    try:
        settings = load_settings(args.config)
        data_root = args.data_root or settings.paths.resolved_data_root()
        models_root = args.models_root or settings.paths.resolved_models_root()
        if data_root is None or models_root is None:
            raise ConfigError("no data/models folder: pass --data-root and --models-root or set "
                              "paths.data_root / paths.models_root")
        cv2.setNumThreads(args.threads)
        images, truths = load_sequence(data_root, args.frames)
        variants = [v for v in VARIANTS if args.only is None or v[1] in args.only]
        common = {"score_threshold": args.score_threshold, "nms_iou": args.nms_iou}
        results = []
        with Progress(console=console, transient=True) as progress:
            for label, name, options in variants:
                task = progress.add_task(label, total=len(images) * args.repeats)
                opts = {**common, **options}
                if "models_root" in DETECTORS.config_model(name).model_fields:
                    opts["models_root"] = models_root
                results.append(run_variant(label, name, opts, images, progress, task,
                                           repeats=args.repeats))
        for r in results:
            evaluate(r, truths, args.iou)
    except PedsearchError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    title = (f"{SEQUENCE}, frames 1-{len(images)}, {sum(len(t.boxes) for t in truths)} "
             f"pedestrians; IoU ≥ {args.iou}, score ≥ {args.score_threshold}, "
             f"NMS {args.nms_iou}, {args.threads} OpenCV threads")
    console.print(table(results, title))
    console.print("background subtraction (bgsub): not run -- it needs a static camera and "
                  "more frames than its warm-up; 8 frames of a slow crowd say nothing about it")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown(results, title))
        console.print(f"table written to {args.out}")
    if args.sheet and results:
        contact_sheet(images[0], truths[0], results, 0, args.sheet)
        console.print(f"contact sheet written to {args.sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
