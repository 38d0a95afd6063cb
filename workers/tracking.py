"""Per-camera multi-object tracking: SORT (Bewley et al., 2016) with DeepSORT's noise model.

Each track is a constant-velocity Kalman filter on the box centre and size
``(cx, cy, w, h, vcx, vcy, vw, vh)``, with process and measurement noise proportional to the
box height (Wojke et al., 2017). Every frame: predict all tracks (one step per frame of
sequence gap), match them to the detections by the Hungarian algorithm on IoU
(``scipy.optimize.linear_sum_assignment``), accept pairs with IoU >= ``iou_threshold``, then
match what is left by motion gating (below), update the matched, start a tentative track per
unmatched detection, and drop tracks not matched for more than ``max_age_frames`` frames. A
tentative track becomes confirmed after ``min_hits`` matched frames and dies at its first
unmatched frame before that (DeepSORT's rule, which keeps one-frame false detections from
becoming tracks); only confirmed tracks matched in the current frame are returned.

Motion gating (second stage). At a few frames per second a walking person's box can move by
more than its width between frames, or a background-subtraction box can change shape; the IoU
with the prediction then falls below the threshold and SORT starts a new track, which splits
one walk into several tracks (and stores the person once per piece). The tracks and detections
left over by the IoU stage are therefore matched again, by the Hungarian algorithm on the
distance between the predicted and the detected box centre divided by the predicted box
height, accepting pairs closer than ``center_gate`` whose heights differ by less than a factor
``1 + center_gate``. The Kalman prediction carries the velocity, so the gate follows the walk.

Track ids are deterministic and unique per camera without any shared counter: a track born at
frame ``seq`` as the ``k``-th new track of that frame has id ``(origin + seq) * ID_STRIDE + k``,
where ``origin`` is fixed at the tracker's first frame: that frame's capture time in
microseconds, less its ``seq``. Replaying the same frames (after a worker crash, from a restored
tracker or from the same first frame) gives the same ids. A tracker started afresh later in the
stream (its state lost, or dropped as incompatible, while Kafka still has the offset) numbers
from a later instant: ``seq`` grows by one a frame, so an earlier tracker's ids stay below the
later one's first capture time in microseconds (unless its camera numbered more than a frame a
microsecond), and the crop ids derived from the track ids never overwrite somebody else's rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from pedsearch.errors import InvalidInput
from workers.detectors.base import Detections, iou_matrix

log = logging.getLogger(__name__)

ID_STRIDE = 1000
"""At most this many tracks start in one frame; ids are ``(origin + birth_seq) * ID_STRIDE + k``
(an int64 until capture times in the year 2262)."""

_STD_POSITION = 1.0 / 20  # DeepSORT's weights: noise relative to the box height
_STD_VELOCITY = 1.0 / 160
_MIN_SIZE = 1.0


@dataclass(frozen=True)
class Track:
    """A confirmed track as seen in one frame.

    Attributes:
        track_id: stable id within the camera (see the module docstring).
        box: ``(4,)`` float32 ``x, y, w, h`` of the matched detection in this frame.
        smoothed_box: ``(4,)`` float32 ``x, y, w, h`` of the Kalman state after the update.
        score: the detection's score.
        det_index: index of the detection in this frame's :class:`Detections`.
        frame_seq: this frame's sequence number.
        ts: this frame's timestamp (seconds).
        start_seq: frame at which the track was born (its first detection).
        start_ts: timestamp of that frame; crop windows are aligned to it.
        hits: frames matched so far.
    """

    track_id: int
    box: np.ndarray
    smoothed_box: np.ndarray
    score: float
    det_index: int
    frame_seq: int
    ts: float
    start_seq: int
    start_ts: float
    hits: int


class KalmanBoxFilter:
    """Constant-velocity Kalman filter of one box; state ``(8,)``, covariance ``(8, 8)``."""

    _F = np.eye(8) + np.eye(8, k=4)
    _H = np.eye(4, 8)

    def __init__(self, box_xywh: np.ndarray) -> None:
        x, y, w, h = (float(v) for v in box_xywh)
        self.mean = np.array([x + w / 2, y + h / 2, w, h, 0, 0, 0, 0], np.float64)
        std = np.array([2 * _STD_POSITION * h] * 4 + [10 * _STD_VELOCITY * h] * 4)
        self.cov = np.diag(np.square(std))

    def predict(self) -> None:
        h = max(self.mean[3], _MIN_SIZE)
        q = np.diag(np.square([_STD_POSITION * h] * 4 + [_STD_VELOCITY * h] * 4))
        self.mean = self._F @ self.mean
        self.cov = self._F @ self.cov @ self._F.T + q
        self.mean[2:4] = np.maximum(self.mean[2:4], _MIN_SIZE)

    def update(self, box_xywh: np.ndarray) -> None:
        x, y, w, h = (float(v) for v in box_xywh)
        z = np.array([x + w / 2, y + h / 2, w, h])
        r = np.diag(np.square([_STD_POSITION * max(self.mean[3], _MIN_SIZE)] * 4))
        s = self._H @ self.cov @ self._H.T + r
        gain = np.linalg.solve(s, self._H @ self.cov).T  # P H^T S^-1, S symmetric
        self.mean = self.mean + gain @ (z - self._H @ self.mean)
        self.cov = (np.eye(8) - gain @ self._H) @ self.cov
        self.mean[2:4] = np.maximum(self.mean[2:4], _MIN_SIZE)

    def box(self) -> np.ndarray:
        """``(4,)`` float32 ``x, y, w, h`` of the current state."""
        cx, cy, w, h = self.mean[:4]
        return np.array([cx - w / 2, cy - h / 2, w, h], np.float32)


@dataclass
class _TrackState:
    track_id: int
    kf: KalmanBoxFilter
    start_seq: int
    start_ts: float
    last_seq: int
    hits: int = 1
    confirmed: bool = False


class Tracker:
    """SORT-style tracker of one camera's detections.

    Args:
        iou_threshold: smallest IoU between a predicted track box and a detection to match.
        max_age_frames: frames a confirmed track survives without a match.
        min_hits: matched frames, without a miss, before a track is confirmed (returned).
        id_origin: added to the birth frame's seq in track ids (module docstring); ``None``
            takes the first frame's capture time in microseconds less its seq, so that trackers
            started at different points of a stream never share an id.

    Example:
        >>> tracker = Tracker.from_config(settings.tracking)
        >>> for seq, ts, dets in stream:
        ...     for track in tracker.update(dets, seq, ts):
        ...         print(track.track_id, track.box)
        ...     finished = tracker.ended_ids      # confirmed tracks dropped in this update
    """

    def __init__(self, *, iou_threshold: float = 0.3, max_age_frames: int = 5,
                 min_hits: int = 2, center_gate: float = 0.0,
                 id_origin: int | None = None) -> None:
        if not 0 < iou_threshold < 1:
            raise InvalidInput(f"iou_threshold must be in (0, 1), got {iou_threshold}")
        if max_age_frames < 1 or min_hits < 1:
            raise InvalidInput(f"max_age_frames ({max_age_frames}) and min_hits ({min_hits}) "
                               "must be at least 1")
        self.iou_threshold = float(iou_threshold)
        self.max_age_frames = int(max_age_frames)
        self.min_hits = int(min_hits)
        if not 0 <= center_gate <= 5:
            raise InvalidInput(f"center_gate must be in [0, 5] box heights, got {center_gate}")
        self.center_gate = float(center_gate)
        if id_origin is not None and id_origin < 0:
            raise InvalidInput(f"id_origin must be >= 0, got {id_origin}")
        self._origin_option = id_origin
        self.id_origin = id_origin
        self._tracks: list[_TrackState] = []
        self._last_seq: int | None = None
        self.ended_ids: tuple[int, ...] = ()

    @classmethod
    def from_config(cls, cfg: object, **options: int | None) -> Tracker:
        """Build from a :class:`pedsearch.config.TrackingConfig`; ``options``: ``id_origin``."""
        return cls(iou_threshold=cfg.iou_threshold,  # type: ignore[attr-defined]
                   max_age_frames=cfg.max_age_frames,  # type: ignore[attr-defined]
                   min_hits=cfg.min_hits,  # type: ignore[attr-defined]
                   center_gate=getattr(cfg, "center_gate", 0.0), **options)

    def configure(self, cfg: object) -> None:
        """Take the matching options of ``cfg`` (a :class:`pedsearch.config.TrackingConfig`),
        keeping the tracks: they only steer the frames to come.

        Raises:
            InvalidInput: an option out of bounds.
        """
        checked = Tracker.from_config(cfg)
        self.iou_threshold = checked.iou_threshold
        self.max_age_frames = checked.max_age_frames
        self.min_hits = checked.min_hits
        self.center_gate = checked.center_gate

    def reset(self) -> None:
        """Forget every track (a new stream, or before replaying frames already seen)."""
        self._tracks = []
        self._last_seq = None
        self.ended_ids = ()
        # replaying from the same first frame numbers the same ids again
        self.id_origin = getattr(self, "_origin_option", 0)

    @property
    def last_seq(self) -> int | None:
        return self._last_seq

    def active_ids(self) -> list[int]:
        """Ids of the confirmed tracks still alive."""
        return [t.track_id for t in self._tracks if t.confirmed]

    def update(self, detections: Detections, frame_seq: int, ts: float) -> list[Track]:
        """Advance to frame ``frame_seq`` with its detections.

        Args:
            detections: this frame's detections.
            frame_seq: the frame's sequence number; strictly increasing per camera (a gap
                counts as that many frames without detections).
            ts: the frame's timestamp in seconds.

        Returns:
            The confirmed tracks matched in this frame, by ascending ``track_id``. The
            confirmed tracks dropped in this call are in :attr:`ended_ids`.

        Raises:
            InvalidInput: ``frame_seq`` is negative or not after the previous frame's.
        """
        frame_seq = int(frame_seq)
        if frame_seq < 0:
            raise InvalidInput(f"frame seq must be >= 0, got {frame_seq}")
        if self._last_seq is not None and frame_seq <= self._last_seq:
            raise InvalidInput(
                f"frame seq {frame_seq} is not after the previous frame {self._last_seq}; "
                "frames of a camera must arrive in order (call reset() before a replay)"
            )
        steps = 1 if self._last_seq is None else frame_seq - self._last_seq
        self._last_seq = frame_seq
        # trackers pickled before id origins existed numbered from 0: they go on doing so
        origin = getattr(self, "id_origin", 0)
        if origin is None:
            origin = self.id_origin = max(0, round(ts * 1e6) - frame_seq)
        ended: list[int] = []
        if steps > 1:  # frames that never arrived count as frames without a match
            ended += self._drop(lambda t: frame_seq - t.last_seq - 1 > self._allowed_misses(t))
        for track in self._tracks:
            for _ in range(steps):
                track.kf.predict()

        matches, unmatched_tracks, unmatched_dets = self._associate(detections)
        out: list[Track] = []
        for ti, di in matches:
            track = self._tracks[ti]
            track.kf.update(detections.boxes[di])
            track.hits += 1
            track.last_seq = frame_seq
            track.confirmed = track.confirmed or track.hits >= self.min_hits
            if track.confirmed:
                out.append(self._public(track, detections, di, frame_seq, ts))

        unmatched = {id(self._tracks[ti]) for ti in unmatched_tracks}
        ended += self._drop(lambda t: id(t) in unmatched
                            and frame_seq - t.last_seq > self._allowed_misses(t))

        for k, di in enumerate(sorted(unmatched_dets)):
            if k >= ID_STRIDE:
                log.warning("frame %d: more than %d new tracks, the rest are ignored",
                            frame_seq, ID_STRIDE)
                break
            track = _TrackState(track_id=(origin + frame_seq) * ID_STRIDE + k,
                                kf=KalmanBoxFilter(detections.boxes[di]), start_seq=frame_seq,
                                start_ts=float(ts), last_seq=frame_seq)
            track.confirmed = track.hits >= self.min_hits
            self._tracks.append(track)
            if track.confirmed:
                out.append(self._public(track, detections, di, frame_seq, ts))
        self._tracks.sort(key=lambda t: t.track_id)
        self.ended_ids = tuple(sorted(ended))
        return sorted(out, key=lambda t: t.track_id)

    def _allowed_misses(self, track: _TrackState) -> int:
        return self.max_age_frames if track.confirmed else 0

    def _drop(self, dead: Callable[[_TrackState], bool]) -> list[int]:
        """Remove the tracks ``dead`` picks; returns the ids of the confirmed ones."""
        gone = [t for t in self._tracks if dead(t)]
        self._tracks = [t for t in self._tracks if not dead(t)]
        return [t.track_id for t in gone if t.confirmed]

    def _associate(self, detections: Detections
                   ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        n_tracks, n_dets = len(self._tracks), len(detections)
        if n_tracks == 0 or n_dets == 0:
            return [], list(range(n_tracks)), list(range(n_dets))
        predicted = np.stack([t.kf.box() for t in self._tracks])
        iou = iou_matrix(predicted, detections.boxes)
        rows, cols = linear_sum_assignment(-iou)
        matches = [(int(r), int(c)) for r, c in zip(rows, cols)
                   if iou[r, c] >= self.iou_threshold]
        matched_t = {r for r, _ in matches}
        matched_d = {c for _, c in matches}
        # tracker states pickled before the motion gate existed have no such attribute
        gate = getattr(self, "center_gate", 0.0)
        if gate > 0:
            left_t = [i for i in range(n_tracks) if i not in matched_t]
            left_d = [j for j in range(n_dets) if j not in matched_d]
            for r, c in self._gated(predicted[left_t], detections.boxes[left_d], gate):
                matches.append((left_t[r], left_d[c]))
                matched_t.add(left_t[r])
                matched_d.add(left_d[c])
        return (matches, [i for i in range(n_tracks) if i not in matched_t],
                [j for j in range(n_dets) if j not in matched_d])

    @staticmethod
    def _gated(predicted: np.ndarray, boxes: np.ndarray, gate: float) -> list[tuple[int, int]]:
        """Motion-gated pairs of ``predicted (T, 4)`` and ``boxes (D, 4)`` (xywh), by index."""
        if len(predicted) == 0 or len(boxes) == 0:
            return []
        pc = predicted[:, :2] + predicted[:, 2:] / 2
        dc = boxes[:, :2] + boxes[:, 2:] / 2
        ph = np.maximum(predicted[:, 3:4], _MIN_SIZE)  # (T, 1)
        dist = np.linalg.norm(pc[:, None, :] - dc[None, :, :], axis=2) / ph  # (T, D)
        ratio = np.maximum(boxes[None, :, 3], _MIN_SIZE) / ph  # (T, D)
        ok = (dist < gate) & (ratio < 1 + gate) & (ratio > 1 / (1 + gate))
        cost = np.where(ok, dist, 1e6)
        rows, cols = linear_sum_assignment(cost)
        return [(int(r), int(c)) for r, c in zip(rows, cols) if ok[r, c]]

    @staticmethod
    def _public(track: _TrackState, detections: Detections, di: int, frame_seq: int,
                ts: float) -> Track:
        return Track(
            track_id=track.track_id,
            box=detections.boxes[di].copy(),
            smoothed_box=track.kf.box(),
            score=float(detections.scores[di]),
            det_index=int(di),
            frame_seq=frame_seq,
            ts=float(ts),
            start_seq=track.start_seq,
            start_ts=track.start_ts,
            hits=track.hits,
        )
