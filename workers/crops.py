"""One best crop per track and time window, with a deterministic id.

A person walking past a camera is seen in many frames; storing each would flood the index with
near-copies. Each track's life is cut into windows of ``window_s`` seconds aligned to the
track's first frame (``start_ts``), so replaying the same frames cuts the same windows. Within a
window the crop with the highest quality is kept:

    quality = det * size * edge * sharp, each term in [0, 1]

- ``det``: the detection score clipped to [0, 1];
- ``size``: ``min(1, box_height / ref_height)`` -- bigger crops carry more detail;
- ``edge``: ``0.5 + 0.5 * min(1, gap / (edge_fraction * frame_height))`` where ``gap`` is the
  box's distance to the nearest frame border -- boxes at the border are often cut off;
- ``sharp``: ``v / (v + sharpness_ref)`` with ``v`` the variance of the Laplacian of the
  grey crop resized to 128 pixels high -- motion blur and defocus lower it.

Ties keep the earlier frame. A window's crop is emitted as a :class:`CropCandidate` when the
track is seen in a later window, when the track ends (:meth:`BestCropSelector.end`), when the
stream time passes the window's end (:meth:`BestCropSelector.flush`), or at the end of the
stream (:meth:`BestCropSelector.finish`). Boxes shorter than ``min_box_height`` are never kept.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pedsearch.errors import InvalidInput
from workers.detectors.base import check_frame
from workers.tracking import Track

_SHARPNESS_HEIGHT = 128
_ID_MASK = (1 << 63) - 1


def deterministic_id(camera_id: str, track_id: int, window: int) -> int:
    """The stable primary key of the crop of ``track_id``'s ``window`` on ``camera_id``.

    The first 8 bytes of BLAKE2b (digest size 8) of the UTF-8 text
    ``"<camera_id>\\x1f<track_id>\\x1f<window>"``, read big-endian, with the top bit cleared: an
    int in ``[0, 2**63)``, so it fits a signed 64-bit primary key (Milvus INT64). It depends on
    nothing but its arguments (no process salt, unlike ``hash()``), so a replayed frame yields
    the same id and an upsert overwrites instead of duplicating.

    Raises:
        InvalidInput: ``camera_id`` is empty or not a string, or an int argument is negative.
    """
    if not isinstance(camera_id, str) or not camera_id:
        raise InvalidInput(f"camera_id must be a non-empty string, got {camera_id!r}")
    if int(track_id) < 0 or int(window) < 0:
        raise InvalidInput(f"track_id ({track_id}) and window ({window}) must be >= 0")
    key = f"{camera_id}\x1f{int(track_id)}\x1f{int(window)}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") & _ID_MASK


@dataclass(frozen=True)
class CropCandidate:
    """The best crop of one track in one window.

    Attributes:
        id: :func:`deterministic_id` of ``(camera_id, track_id, window)``.
        camera_id: the camera.
        track_id: the track (see :mod:`workers.tracking`).
        window: window index, counted from the track's first frame.
        frame_seq: frame the crop was cut from.
        ts: that frame's timestamp (seconds).
        box: ``(4,)`` float32 ``x, y, w, h`` of the person in the frame.
        det_score: the detection's score.
        quality: the selection score (module docstring), in ``[0, 1]``.
        crop: ``(h, w, 3)`` uint8 BGR, the box grown by the margin and clipped to the frame.
        crop_box: ``(4,)`` int ``x, y, w, h`` of ``crop`` in the frame.
    """

    id: int
    camera_id: str
    track_id: int
    window: int
    frame_seq: int
    ts: float
    box: np.ndarray
    det_score: float
    quality: float
    crop: np.ndarray
    crop_box: np.ndarray


@dataclass
class _Pending:
    window: int
    window_end: float
    candidate: CropCandidate


class BestCropSelector:
    """Keeps the best crop per (track, window) of one camera and emits it when the window closes.

    Args:
        camera_id: the camera (part of every crop id).
        window_s: window length in seconds.
        min_box_height: boxes shorter than this (pixels) are never kept.
        margin: the crop is the box grown by this fraction of its width / height on each side.
        ref_height: box height at which the size term saturates.
        edge_fraction: border distance, as a fraction of the frame height, at which the edge
            term saturates.
        sharpness_ref: Laplacian variance at which the sharpness term is 0.5.

    Example:
        >>> selector = BestCropSelector.from_config(settings.tracking, camera_id="cam-1")
        >>> done = selector.update(frame, tracker.update(dets, seq, ts))
        >>> done += selector.end(tracker.ended_ids) + selector.flush(ts)
        >>> done += selector.finish()                      # end of stream
    """

    def __init__(
        self,
        *,
        camera_id: str,
        window_s: float = 4.0,
        min_box_height: float = 48,
        margin: float = 0.1,
        ref_height: float = 256.0,
        edge_fraction: float = 0.02,
        sharpness_ref: float = 100.0,
    ) -> None:
        if not isinstance(camera_id, str) or not camera_id:
            raise InvalidInput(f"camera_id must be a non-empty string, got {camera_id!r}")
        if not window_s > 0 or not 0 <= margin <= 2 or ref_height <= 0 or sharpness_ref <= 0:
            raise InvalidInput(
                f"bad crop selector options: window_s={window_s} (> 0), margin={margin} "
                f"(0..2), ref_height={ref_height} (> 0), sharpness_ref={sharpness_ref} (> 0)"
            )
        self.camera_id = camera_id
        self.window_s = float(window_s)
        self.min_box_height = float(min_box_height)
        self.margin = float(margin)
        self.ref_height = float(ref_height)
        self.edge_fraction = float(edge_fraction)
        self.sharpness_ref = float(sharpness_ref)
        self._pending: dict[int, _Pending] = {}
        self._emitted: dict[int, tuple[int, float]] = {}  # track -> (last window, its end)
        # track -> window length it was cut with, for tracks older than a change of window_s
        self._kept_window_s: dict[int, float] = {}

    @classmethod
    def from_config(cls, cfg: object, *, camera_id: str, **options: float) -> BestCropSelector:
        """Build from a :class:`pedsearch.config.TrackingConfig` (``window_s``,
        ``min_box_height``); ``options`` set the quality knobs."""
        return cls(camera_id=camera_id, window_s=cfg.window_s,  # type: ignore[attr-defined]
                   min_box_height=cfg.min_box_height, **options)  # type: ignore[attr-defined]

    def configure(self, cfg: object, *, alive: Iterable[int] = ()) -> None:
        """Take ``window_s`` and ``min_box_height`` of ``cfg`` (a
        :class:`pedsearch.config.TrackingConfig`), keeping the open windows.

        Window indices are part of the crop ids, and a track's windows are cut from its first
        frame: re-cut with another length, a track's next window could get the index (so the
        id) of one already stored, or its frames be skipped as late ones. So the tracks cut
        already -- ``alive`` (the tracker's confirmed tracks) and those with a window open or
        just emitted -- keep the length they started with until they end; the others (born
        from now on, or still tentative: nothing of theirs is stored yet) get the new one.

        Raises:
            InvalidInput: an option out of bounds.
        """
        checked = BestCropSelector.from_config(cfg, camera_id=self.camera_id)
        if checked.window_s != self.window_s:
            kept = dict(getattr(self, "_kept_window_s", None) or {})  # absent: older pickles
            for track_id in {*alive, *self._pending, *self._emitted}:
                kept.setdefault(track_id, self.window_s)
            self._kept_window_s = kept
            self.window_s = checked.window_s
        self.min_box_height = checked.min_box_height

    def window_s_of(self, track_id: int) -> float:
        """Window length of ``track_id`` (see :meth:`configure`)."""
        kept = getattr(self, "_kept_window_s", None)  # absent from selectors pickled before
        return kept.get(track_id, self.window_s) if kept else self.window_s

    def window_of(self, track: Track) -> int:
        """Index of the window ``track``'s current frame falls in."""
        window_s = self.window_s_of(track.track_id)
        return max(0, math.floor((track.ts - track.start_ts) / window_s + 1e-9))

    def update(self, frame: np.ndarray, tracks: Sequence[Track]) -> list[CropCandidate]:
        """Consider this frame's tracks; returns the crops of windows that closed.

        Args:
            frame: the BGR uint8 ``(H, W, 3)`` frame the tracks' boxes refer to.
            tracks: the confirmed tracks of this frame (``Tracker.update``'s result).

        Returns:
            Crops of windows that a track has just left, by ``(track_id, window)``.
        """
        check_frame(frame)
        out: list[CropCandidate] = []
        for track in tracks:
            window = self.window_of(track)
            last = self._emitted.get(track.track_id)
            if last is not None and window <= last[0]:
                continue  # a late frame of a window already emitted
            pending = self._pending.get(track.track_id)
            if pending is not None and pending.window != window:
                out.append(self._emit(track.track_id))
                pending = None
            if float(track.box[3]) < self.min_box_height:
                continue
            quality = self.quality(frame, track.box, track.score)
            if pending is None or quality > pending.candidate.quality:
                window_end = track.start_ts + (window + 1) * self.window_s_of(track.track_id)
                self._pending[track.track_id] = _Pending(
                    window, window_end, self._candidate(frame, track, window, quality))
        return sorted(out, key=lambda c: (c.track_id, c.window))

    def end(self, track_ids: Iterable[int]) -> list[CropCandidate]:
        """The tracks ended (``Tracker.ended_ids``): emit their open windows."""
        ids = sorted(set(track_ids))
        out = [self._emit(t) for t in ids if t in self._pending]
        kept = getattr(self, "_kept_window_s", None) or {}
        for t in ids:
            self._emitted.pop(t, None)
            kept.pop(t, None)
        return out

    def flush(self, now_ts: float) -> list[CropCandidate]:
        """Emit every window that ends at or before ``now_ts`` (stream time, seconds).

        Pass the timestamp of the newest frame processed, not the wall clock, so that a
        replay closes the same windows with the same crops.
        """
        out = [self._emit(t) for t, p in sorted(self._pending.items())
               if p.window_end <= now_ts + 1e-9]
        # the late-frame guard of a window long past is no longer needed
        for t, (_, end) in list(self._emitted.items()):
            if end + self.window_s_of(t) < now_ts and t not in self._pending:
                del self._emitted[t]
        return out

    def close_all(self) -> list[CropCandidate]:
        """The camera went quiet: emit every open window now, with its best crop so far.

        Unlike :meth:`finish` the late-frame guard is kept, so if the camera resumes, the rest
        of a window emitted here is skipped instead of storing a second crop under its id.
        """
        return [self._emit(t) for t in sorted(self._pending)]

    def finish(self) -> list[CropCandidate]:
        """End of stream: emit every open window and forget all state."""
        out = self.close_all()
        self._emitted.clear()
        self._kept_window_s = {}
        return out

    def pending_count(self) -> int:
        """Open (track, window) pairs holding a crop."""
        return len(self._pending)

    def pending(self, track_id: int) -> CropCandidate | None:
        """The best crop so far of ``track_id``'s open window, or ``None``.

        It carries the same id the window's final crop will have, so a caller that wants
        freshness can store it now and let the final one overwrite it.
        """
        entry = self._pending.get(track_id)
        return None if entry is None else entry.candidate

    def quality(self, frame: np.ndarray, box: np.ndarray, score: float) -> float:
        """Selection score of ``box`` (``x, y, w, h``) in ``frame``; see the module docstring."""
        height, width = frame.shape[:2]
        x, y, w, h = (float(v) for v in box)
        det = min(max(float(score), 0.0), 1.0)
        size = min(1.0, h / self.ref_height)
        gap = max(0.0, min(x, y, width - (x + w), height - (y + h)))
        edge_px = max(1.0, self.edge_fraction * height)
        edge = 0.5 + 0.5 * min(1.0, gap / edge_px)
        return det * size * edge * self.sharpness_term(frame, box)

    def sharpness_term(self, frame: np.ndarray, box: np.ndarray) -> float:
        """``v / (v + sharpness_ref)``, ``v`` = Laplacian variance of the grey box region
        resized to 128 pixels high."""
        x0, y0, x1, y1 = _clip_box(box, frame.shape, 0.0)
        region = frame[y0:y1, x0:x1]
        if region.size == 0:
            return 0.0
        grey = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
        new_w = max(1, round(grey.shape[1] * _SHARPNESS_HEIGHT / grey.shape[0]))
        grey = cv2.resize(grey, (new_w, _SHARPNESS_HEIGHT), interpolation=cv2.INTER_AREA)
        v = float(cv2.Laplacian(grey, cv2.CV_64F).var())
        return v / (v + self.sharpness_ref)

    def _candidate(self, frame: np.ndarray, track: Track, window: int,
                   quality: float) -> CropCandidate:
        x0, y0, x1, y1 = _clip_box(track.box, frame.shape, self.margin)
        return CropCandidate(
            id=deterministic_id(self.camera_id, track.track_id, window),
            camera_id=self.camera_id,
            track_id=track.track_id,
            window=window,
            frame_seq=track.frame_seq,
            ts=track.ts,
            box=np.asarray(track.box, np.float32).copy(),
            det_score=float(track.score),
            quality=float(quality),
            crop=frame[y0:y1, x0:x1].copy(),
            crop_box=np.array([x0, y0, x1 - x0, y1 - y0], np.int64),
        )

    def _emit(self, track_id: int) -> CropCandidate:
        pending = self._pending.pop(track_id)
        self._emitted[track_id] = (pending.window, pending.window_end)
        return pending.candidate


def _clip_box(box: np.ndarray, shape: tuple[int, ...], margin: float) -> tuple[int, int, int, int]:
    """``x0, y0, x1, y1`` ints of ``box`` grown by ``margin`` and clipped to the frame."""
    height, width = shape[:2]
    x, y, w, h = (float(v) for v in box)
    x0 = math.floor(max(0.0, x - margin * w))
    y0 = math.floor(max(0.0, y - margin * h))
    x1 = math.ceil(min(float(width), x + w + margin * w))
    y1 = math.ceil(min(float(height), y + h + margin * h))
    return x0, y0, max(x0, x1), max(y0, y1)
