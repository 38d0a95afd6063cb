"""Person detectors: box geometry, the registry and configs, and every plug-in on real inputs.

The learned detectors run on a real MOT17 frame with the real model files from
``paths.models_root`` / ``paths.data_root`` (skipped, saying why, when those folders are absent);
the TorchScript plug-in loads a real TorchScript file scripted here.
"""

from __future__ import annotations

import pathlib
import re

import cv2
import numpy as np
import pytest

from pedsearch.config import DetectorSpec, Settings
from pedsearch.errors import ConfigError, InvalidInput
from workers.detectors import DETECTORS, Detections, build_detector, iou_matrix, nms
from workers.detectors.darknet import with_yolo_thresh

MOT = "mot17/MOT17-04-FRCNN"
# torch 2.13 deprecates torch.jit.script/save, which the TorchScript contract is made of
no_jit_warnings = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
DARKNET_DIR = "yolo-fastest-1.1-body"
YOLOX_FILE = "yolox-nano/yolox_nano.onnx"


# ---------------------------------------------------------------- geometry


def test_iou_matrix_hand_computed():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 10, 10], [0, 0, 10, 10], [20, 20, 5, 5], [0, 0, 0, 0]], np.float32)
    iou = iou_matrix(a, b)
    # overlap 5x10 = 50, union 100 + 100 - 50 = 150
    np.testing.assert_allclose(iou, [[50 / 150, 1.0, 0.0, 0.0]])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)


def test_nms_keeps_best_of_overlapping_and_all_separate():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 10, 10], [0, 0, 10, 10]],
                     np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.8], np.float32)
    # box 1 (0.9) wins; box 0 overlaps it by 90/110 = 0.82 > 0.5 and goes, so does box 3
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    # at a threshold above 0.82 only the identical box 3 (IoU 1 with box 0) goes
    assert nms(boxes, scores, 0.85).tolist() == [1, 0, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_detections_validate_and_convert():
    det = Detections([[1, 2, 3, 4]], [0.5])
    assert det.boxes.dtype == np.float32 and det.boxes.shape == (1, 4)
    np.testing.assert_allclose(det.xyxy(), [[1, 2, 4, 6]])
    assert len(Detections.empty()) == 0
    with pytest.raises(InvalidInput, match="2 boxes but 1 scores"):
        Detections(np.zeros((2, 4)), np.zeros(1))


# ---------------------------------------------------------------- registry and config


def test_registry_lists_plugins_and_rejects_unknown_names_and_keys():
    assert DETECTORS.names() == ["bgsub", "darknet", "hog", "torchscript", "yolox"]
    with pytest.raises(ConfigError, match="known: bgsub, darknet, hog, torchscript, yolox"):
        build_detector(DetectorSpec(type="yolo9000"))
    with pytest.raises(ConfigError, match="winstride"):
        DETECTORS.build("hog", winstride=8)
    with pytest.raises(ConfigError, match="nms_iou"):
        DETECTORS.build("bgsub", nms_iou=1.5)
    with pytest.raises(ConfigError, match="max_box_height"):
        DETECTORS.build("hog", min_box_height=100, max_box_height=50)


def test_frames_are_validated():
    det = DETECTORS.build("hog")
    with pytest.raises(InvalidInput, match=r"\(H, W, 3\)"):
        det([np.zeros((64, 64), np.uint8)])
    with pytest.raises(InvalidInput, match="float32"):
        det([np.zeros((64, 64, 3), np.float32)])
    assert det([]) == []


def test_missing_model_file_is_a_config_error_naming_path_and_origin(tmp_path):
    missing = tmp_path / "nothing" / "yolo.cfg"
    with pytest.raises(ConfigError) as err:
        DETECTORS.build("darknet", cfg=missing, weights=missing)
    assert str(missing) in err.value.message and "Yolo-Fastest" in err.value.message
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / YOLOX_FILE))):
        DETECTORS.build("yolox", models_root=tmp_path)  # relative default under models_root
    with pytest.raises(ConfigError, match="models_root"):
        DETECTORS.build("torchscript", model="absent.pt", models_root=tmp_path)


def test_unreadable_model_file_is_a_config_error(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(ConfigError, match="cannot load ONNX model"):
        DETECTORS.build("yolox", model=bad)
    with pytest.raises(ConfigError, match="cannot load TorchScript"):
        DETECTORS.build("torchscript", model=bad)


def test_yolo_thresh_is_written_into_every_yolo_section():
    cfg = "[net]\nwidth=32\n[yolo]\nmask=0\nthresh = 0.7\n[conv]\nsize=1\n[yolo]\nmask=1\n"
    out = with_yolo_thresh(cfg, 0.05)
    assert out.count("thresh=0.05") == 2
    assert "0.7" not in out and "width=32" in out and "size=1" in out


def test_yolox_tiles_cover_the_frame_with_overlap():
    yolox = pytest.importorskip("workers.detectors.yolox")
    det = object.__new__(yolox.YoloxDetector)  # tiling geometry only, no model needed
    det.tiles, det.tile_overlap, det.whole_frame = (2, 2), 0.15, False
    windows = det.tile_windows(1920, 1080)
    assert len(windows) == 4
    covered = np.zeros((1080, 1920), bool)
    for x, y, w, h in windows:
        covered[y:y + h, x:x + w] = True
        assert x + w <= 1920 and y + h <= 1080
    assert covered.all()
    (x0, _, w0, _), (x1, _, _, _) = windows[0], windows[1]
    assert x0 + w0 - x1 == pytest.approx(0.15 * w0, abs=2)
    det.whole_frame = True
    assert det.tile_windows(1920, 1080)[0] == (0, 0, 1920, 1080)
    det.tiles = (1, 1)
    assert det.tile_windows(640, 480) == [(0, 0, 640, 480)]


def test_yolox_cut_boxes_are_those_on_borders_shared_with_another_tile():
    from workers.detectors.yolox import _touches_inner_edge

    # the top-left tile of a 2x2 grid: its right and bottom borders are inside the frame
    boxes = np.array([[0, 0, 50, 100],      # on the frame's own left/top border: kept
                      [950, 10, 50, 100],   # reaches the right border at x = 1000: cut
                      [10, 500, 50, 100],   # reaches the bottom border at y = 600: cut
                      [400, 200, 50, 100]], np.float32)
    cut = _touches_inner_edge(boxes, 0, 0, 1000, 600, 1920, 1080)
    assert cut.tolist() == [False, True, True, False]


# ---------------------------------------------------------------- background subtraction


def _noisy_scene(rng: np.random.Generator, n: int, rects: list[tuple[int, int, int, int, int]],
                 enter: int = 0):
    """A static textured background with sensor noise; from frame ``enter`` on, textured
    rectangles move right across it.

    ``rects`` are ``(x, y, w, h, dx)``; yields ``(frame, [(x, y, w, h), ...])``.
    """
    background = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (5, 5), 0)
    textures = [rng.integers(0, 120, (h, w, 3), dtype=np.uint8) + np.uint8(60)
                for _, _, w, h, _ in rects]
    for i in range(n):
        noise = rng.normal(0, 3, background.shape)
        frame = np.clip(background + noise, 0, 255).astype(np.uint8)
        boxes = []
        for (x, y, w, h, dx), texture in zip(rects, textures):
            if i < enter:
                continue
            x = x + dx * (i - enter)
            frame[y:y + h, x:x + w] = texture
            boxes.append((x, y, w, h))
        yield frame, boxes


WARMUP = 25  # the plug-in's default: for the median model also its memory


@pytest.mark.parametrize("method", ["median", "mog2"])
@pytest.mark.parametrize("enter", [WARMUP, 0])
def test_bgsub_finds_a_moving_rectangle_on_static_noisy_background(method, enter):
    """The rectangle walks in after the warm-up, or is there from the start (then the place
    it stood during the warm-up may show through for a few frames before the model settles)."""
    det = DETECTORS.build("bgsub", method=method, min_area=0.001)
    settled = WARMUP if enter else WARMUP + 5
    rng = np.random.default_rng(0)
    found = []
    for i, (frame, truth) in enumerate(_noisy_scene(rng, 60, [(10, 60, 30, 80, 3)], enter)):
        out = det([frame])[0]
        if i < WARMUP:
            assert len(out) == 0, "warm-up frames only teach the background"
            continue
        if i < settled:
            continue
        assert len(out) == 1, f"frame {i}: {out.boxes}"
        found.append(iou_matrix(out.boxes, np.array(truth, np.float32))[0, 0])
        assert 0.3 <= out.scores[0] <= 1.0
    assert min(found) > 0.8, found
    det.reset()
    assert det.frames_seen == 0 and len(det([frame])[0]) == 0


def test_bgsub_median_model_restarted_on_its_memory_continues_identically():
    """What a worker restored from a checkpoint does: a fresh detector fed the last
    ``warmup_frames`` frames gives exactly the boxes of the one that never stopped."""
    frames = [f for f, _ in _noisy_scene(np.random.default_rng(3), 70,
                                         [(10, 60, 30, 80, 3), (250, 100, 24, 70, -2)], 20)]
    uninterrupted = DETECTORS.build("bgsub")
    reference = [uninterrupted([f])[0] for f in frames]
    cut = 45
    restored = DETECTORS.build("bgsub")
    restored(frames[cut - WARMUP:cut])  # re-warm on the memory before the checkpoint
    for f, ref in zip(frames[cut:], reference[cut:]):
        out = restored([f])[0]
        np.testing.assert_array_equal(out.boxes, ref.boxes)
        np.testing.assert_array_equal(out.scores, ref.scores)
    assert sum(len(r) for r in reference[cut:]) >= len(frames[cut:])  # something to compare


def test_bgsub_splits_two_people_side_by_side():
    # two 24x80 "people" 2 px apart walking together: one blob, two boxes
    scene = [(10, 60, 24, 80, 3), (36, 60, 24, 80, 3)]
    det = DETECTORS.build("bgsub", min_area=0.001)
    for frame, truth in _noisy_scene(np.random.default_rng(1), WARMUP + 8, scene, WARMUP):
        out = det([frame])[0]
    assert len(out) == 2, out.boxes
    iou = iou_matrix(np.array(truth, np.float32), out.boxes)
    assert iou.max(axis=1).min() > 0.7
    unsplit = DETECTORS.build("bgsub", min_area=0.001, split_wide=False, min_aspect=0.5)
    for frame, _ in _noisy_scene(np.random.default_rng(1), WARMUP + 8, scene, WARMUP):
        out = unsplit([frame])[0]
    assert len(out) == 1


def test_bgsub_groups_the_pieces_of_one_body():
    """Head-and-torso and legs apart by 10 px (trousers the colour of the pavement)."""
    pieces = [(10, 40, 30, 30, 3), (10, 80, 30, 50, 3)]
    grouped = DETECTORS.build("bgsub", min_area=0.001)
    apart = DETECTORS.build("bgsub", min_area=0.001, merge_fragments=False)
    for frame, truth in _noisy_scene(np.random.default_rng(2), WARMUP + 8, pieces, WARMUP):
        one, two = grouped([frame])[0], apart([frame])[0]
    x, y = truth[0][:2]
    np.testing.assert_allclose(one.boxes, [[x, y, 30, 90]], atol=2)
    assert len(two) >= 2 and (two.boxes[:, 3] <= 50).all()  # pieces stay apart


def test_bgsub_median_needs_its_lags_inside_the_memory():
    with pytest.raises(ConfigError, match="warmup_frames"):
        DETECTORS.build("bgsub", warmup_frames=5, lags=7)
    with pytest.raises(ConfigError, match="odd"):
        DETECTORS.build("bgsub", lags=4)


# ---------------------------------------------------------------- real frames, real models


def _roots() -> tuple[pathlib.Path | None, pathlib.Path | None]:
    paths = Settings().paths
    return paths.resolved_data_root(), paths.resolved_models_root()


@pytest.fixture(scope="module")
def mot_frame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MOT17-04 frame 1 (BGR), its pedestrian boxes ``(P, 4)`` and visibilities ``(P,)``."""
    data_root, _ = _roots()
    seq = data_root / MOT if data_root else None
    if seq is None or not (seq / "gt" / "gt.txt").is_file():
        pytest.skip(f"MOT17 frames not found (looked for {MOT} under paths.data_root = "
                    f"{data_root}); set PEDSEARCH_PATHS__DATA_ROOT to run these tests")
    frame = cv2.imread(str(seq / "img1" / "000001.jpg"))
    rows = np.loadtxt(seq / "gt" / "gt.txt", delimiter=",")
    rows = rows[(rows[:, 0] == 1) & (rows[:, 6] == 1) & (rows[:, 7] == 1)]
    return frame, rows[:, 2:6].astype(np.float32), rows[:, 8]


@pytest.fixture(scope="module")
def models_root() -> pathlib.Path:
    _, root = _roots()
    if root is None or not (root / DARKNET_DIR).is_dir() or not (root / YOLOX_FILE).is_file():
        pytest.skip(f"detector files not found under paths.models_root = {root} (need "
                    f"{DARKNET_DIR}/ and {YOLOX_FILE}); set PEDSEARCH_PATHS__MODELS_ROOT")
    return root


def _recall_precision(det: Detections, gt: np.ndarray, visible: np.ndarray) -> tuple[float,
                                                                                       float]:
    iou = iou_matrix(gt, det.boxes)
    hit = iou.max(axis=1) >= 0.5 if len(det) else np.zeros(len(gt), bool)
    true_det = iou.max(axis=0) >= 0.5 if len(det) else np.zeros(0, bool)
    return float(hit[visible >= 0.5].mean()), float(true_det.mean()) if len(det) else 0.0


def _check_boxes(det: Detections, frame: np.ndarray) -> None:
    h, w = frame.shape[:2]
    assert det.boxes.dtype == np.float32 and det.scores.dtype == np.float32
    assert (det.boxes[:, :2] >= 0).all() and (det.boxes[:, 2:] > 0).all()
    assert (det.boxes[:, 0] + det.boxes[:, 2] <= w + 1e-3).all()
    assert (det.boxes[:, 1] + det.boxes[:, 3] <= h + 1e-3).all()
    assert (np.diff(det.scores) <= 0).all(), "sorted by descending score"


@pytest.mark.needs_data
def test_darknet_finds_pedestrians_on_a_real_frame(mot_frame, models_root):
    frame, gt, visible = mot_frame
    spec = DetectorSpec(type="darknet", models_root=str(models_root))
    det = build_detector(spec)
    out = det([frame])[0]
    _check_boxes(out, frame)
    recall, precision = _recall_precision(out, gt, visible)
    # measured on frame 1: recall 0.92 of >= 50 % visible pedestrians, precision 0.76
    assert recall >= 0.75 and precision >= 0.6, (recall, precision)
    # a batch is one forward pass and gives the same boxes as one frame at a time
    both = det([frame, cv2.flip(frame, 1)])
    np.testing.assert_allclose(both[0].boxes, out.boxes, atol=1e-3)
    assert len(both[1]) > 0


@pytest.mark.needs_data
def test_darknet_height_bounds_and_low_thresh(mot_frame, models_root):
    frame, _, _ = mot_frame
    tall = DETECTORS.build("darknet", models_root=models_root, min_box_height=200)([frame])[0]
    assert len(tall) > 0 and (tall.boxes[:, 3] >= 200).all()
    low = DETECTORS.build("darknet", models_root=models_root, score_threshold=0.05)
    assert low.thresh == 0.05  # OpenCV would zero scores below 0.2 otherwise
    default = DETECTORS.build("darknet", models_root=models_root, score_threshold=0.05,
                              thresh=0.2)
    assert len(low([frame])[0]) > len(default([frame])[0])


@pytest.mark.needs_data
def test_yolox_whole_frame_and_tiles_on_a_real_frame(mot_frame, models_root):
    frame, gt, visible = mot_frame
    whole = DETECTORS.build("yolox", models_root=models_root)([frame])[0]
    tiled = DETECTORS.build("yolox", models_root=models_root, tiles_x=2, tiles_y=2)([frame])[0]
    _check_boxes(whole, frame)
    _check_boxes(tiled, frame)
    recall_whole, precision_whole = _recall_precision(whole, gt, visible)
    recall_tiled, _ = _recall_precision(tiled, gt, visible)
    # measured on frame 1: 0.60 whole frame (precision 0.93), 0.88 with 2x2 tiles
    assert recall_whole >= 0.45 and precision_whole >= 0.8, (recall_whole, precision_whole)
    assert recall_tiled > recall_whole + 0.15, (recall_tiled, recall_whole)


@pytest.mark.needs_data
def test_hog_runs_on_a_real_frame(mot_frame):
    frame, _, _ = mot_frame
    out = DETECTORS.build("hog", resize_width=960)([frame])[0]
    _check_boxes(out, frame)
    # 64x128 window on a half-size frame: nothing shorter than 256 px can be found
    assert (out.boxes[:, 3] >= 255).all()


# ---------------------------------------------------------------- TorchScript


def _script_bright_blob_detector(path: pathlib.Path, stacked: bool = False) -> None:
    """A tiny detector honouring the contract: the box of the pixels brighter than 0.5, scored
    by the mean of input channel 2 there (1.0 for a blue BGR object fed as RGB)."""
    torch = pytest.importorskip("torch")

    class BrightBlob(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            out: list[torch.Tensor] = []
            for i in range(x.shape[0]):
                mask = x[i].max(dim=0).values > 0.5
                ys = torch.nonzero(mask.any(dim=1)).flatten()
                xs = torch.nonzero(mask.any(dim=0)).flatten()
                if ys.numel() == 0:
                    out.append(torch.zeros(0, 5))
                    continue
                score = x[i, 2][mask].mean()
                row = torch.stack([xs.min().float(), ys.min().float(), xs.max().float() + 1,
                                   ys.max().float() + 1, score])
                out.append(row.unsqueeze(0))
            return out

    class Stacked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = BrightBlob()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rows = self.inner(x)
            # pad every image to 2 rows; padding rows score 0
            return torch.stack([torch.cat([r, torch.zeros(2 - r.shape[0], 5)]) for r in rows])

    module = Stacked() if stacked else BrightBlob()
    torch.jit.save(torch.jit.script(module), str(path))


def _blue_box_frame() -> np.ndarray:
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[20:70, 40:80] = (255, 0, 0)  # pure blue in BGR
    return frame


@no_jit_warnings
@pytest.mark.parametrize("stacked", [False, True])
def test_torchscript_detector_loads_a_real_file_and_keeps_contract(tmp_path, stacked):
    path = tmp_path / "bright.pt"
    _script_bright_blob_detector(path, stacked=stacked)
    det = DETECTORS.build("torchscript", model=path, device="auto")
    empty = np.zeros((100, 200, 3), np.uint8)
    out = det([_blue_box_frame(), empty])
    np.testing.assert_allclose(out[0].boxes, [[40, 20, 40, 50]])
    # channel 2 of the input is blue, so frames were converted BGR -> RGB and scaled to 0..1
    np.testing.assert_allclose(out[0].scores, [1.0])
    assert len(out[1]) == 0  # a padding row of score 0 is dropped by score_threshold


@no_jit_warnings
def test_torchscript_resizes_input_and_scales_boxes_back(tmp_path):
    path = tmp_path / "bright.pt"
    _script_bright_blob_detector(path)
    det = DETECTORS.build("torchscript", model=path, input_width=100, input_height=50)
    out = det([_blue_box_frame()])[0]
    np.testing.assert_allclose(out.boxes, [[40, 20, 40, 50]], atol=2.5)
    # frames of different sizes are grouped by size when fed natively
    native = DETECTORS.build("torchscript", model=path)
    big = cv2.resize(_blue_box_frame(), (400, 200), interpolation=cv2.INTER_NEAREST)
    out = native([_blue_box_frame(), big])
    np.testing.assert_allclose(out[1].boxes, [[80, 40, 80, 100]])


@no_jit_warnings
def test_torchscript_contract_violation_is_reported(tmp_path):
    torch = pytest.importorskip("torch")

    class Wrong(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(1, 2, 3))

    path = tmp_path / "wrong.pt"
    torch.jit.save(torch.jit.script(Wrong()), str(path))
    det = DETECTORS.build("torchscript", model=path)
    with pytest.raises(ConfigError, match=r"broke the contract.*\(2,\)"):
        det([_blue_box_frame(), _blue_box_frame()])
    with pytest.raises(ConfigError, match="input_width"):
        DETECTORS.build("torchscript", model=path, input_width=64)
