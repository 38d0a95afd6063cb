"""One camera's stage chain: detector -> tracker -> best crop per track window.

:class:`CameraPipeline` is plain Python (no Ray, no Kafka), so it runs in a bare loop, in a
benchmark and inside a consumer actor alike. Its state (tracker, open windows, counters) is
picklable and saved with each checkpoint; a detector with an internal model (background
subtraction) cannot be pickled, so after a restore it is re-warmed on the frames that preceded
the checkpoint (their partition offsets are kept in :attr:`recent_offsets`).

Freshness: a window's best crop is known only when the window closes (``tracking.window_s``),
so with ``early_emit`` the first crop of each (track, window) is emitted at once under the
same deterministic id and later overwritten by the window's best: a person is searchable
within the pipeline latency and stored once per window all the same.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable

from pedsearch.config import Settings, TrackingConfig
from pedsearch.envelope import DecodedFrame
from pedsearch.errors import ConfigError, PedsearchError

from workers.crops import BestCropSelector, CropCandidate
from workers.detectors import Detector, build_detector
from workers.tracking import Tracker

__all__ = ["CameraPipeline", "CropCandidate", "pipeline_factory"]

log = logging.getLogger("pedsearch.workers")

#: The most frames a gap in a camera's numbering counts for. Longer than any track survives
#: (``tracking.max_age_frames`` <= 1000), and small enough that the frame counter grows by less
#: than a frame a microsecond even if every frame of a 60 fps camera carried a full gap, which
#: keeps track ids unique and in int64 (:mod:`workers.tracking`).
MAX_SEQ_GAP = 10_000


class CameraPipeline:
    """Detector, tracker and crop selector of one camera.

    Args:
        camera_id: the camera.
        detector: a detector instance for this camera alone (it may hold state).
        tracking: tracker and window options.
        early_emit: emit the first crop of every window at once (see module docstring).
    """

    def __init__(self, *, camera_id: str, detector: Detector, tracking: TrackingConfig,
                 early_emit: bool = True) -> None:
        self.camera_id = camera_id
        self.detector = detector
        self.tracking = tracking
        self.early_emit = early_emit
        self.tracker = Tracker.from_config(tracking)
        self.selector = BestCropSelector.from_config(tracking, camera_id=camera_id)
        self.warmup_frames = int(getattr(detector, "warmup_frames", 0) or 0)
        self.to_warm = 0
        self.seq = -1  # monotonic frame counter of this camera, survives camera restarts
        self.last_env_seq: int | None = None
        self.previewed: set[tuple[int, int]] = set()
        self.recent_offsets: deque[int] = deque(maxlen=max(1, self.warmup_frames))

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "tracker": self.tracker, "selector": self.selector, "seq": self.seq,
            "last_env_seq": self.last_env_seq, "previewed": set(self.previewed),
            "recent_offsets": list(self.recent_offsets),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker = state["tracker"]
        self.selector = state["selector"]
        self._apply_tracking()
        self.seq = state["seq"]
        self.last_env_seq = state["last_env_seq"]
        self.previewed = set(state["previewed"])
        self.recent_offsets = deque(state["recent_offsets"], maxlen=max(1, self.warmup_frames))
        self.detector.reset()
        self.to_warm = (min(self.warmup_frames, len(self.recent_offsets))
                        if self.warmup_frames else 0)

    def _apply_tracking(self) -> None:
        """Give the restored tracker and selector the options configured now.

        They were pickled with the options of the run that saved them, and a restart is often
        how a change of ``tracking.*`` is rolled out: without this it would never apply to a
        camera with saved state. The tracks and open windows stay; see
        :meth:`BestCropSelector.configure` for how a new ``window_s`` takes over.
        """
        before = _tracking_options(self.tracker, self.selector)
        self.tracker.configure(self.tracking)
        self.selector.configure(self.tracking, alive=self.tracker.active_ids())
        after = _tracking_options(self.tracker, self.selector)
        changed = {k: (before[k], after[k]) for k in after if before[k] != after[k]}
        if changed:
            log.info("camera %s: the saved tracker state now runs with %s", self.camera_id,
                     ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()))

    @property
    def replay_from(self) -> int | None:
        """First partition offset the detector must see again after a restore, if any."""
        return self.recent_offsets[0] if self.to_warm and self.recent_offsets else None

    def warm(self, decoded: DecodedFrame) -> None:
        """Feed a frame from before the checkpoint to the detector only (re-learn its model)."""
        if self.to_warm > 0:
            self.detector([decoded.image])
            self.to_warm -= 1

    # -- processing -----------------------------------------------------------------------------
    def process(self, decoded: DecodedFrame, *, offset: int | None = None,
                metrics=None) -> list[CropCandidate]:
        """One frame in, the crops of windows that closed (and early crops) out."""
        import time

        env_seq = int(decoded.frame.seq)
        if self.last_env_seq is not None and env_seq > self.last_env_seq:
            # a gap counts as frames without people, up to MAX_SEQ_GAP: a jump of a camera's
            # numbering (a wrapped counter) must not carry the track ids past int64
            self.seq += min(env_seq - self.last_env_seq, MAX_SEQ_GAP)
        else:
            self.seq += 1  # first frame, or the camera restarted its numbering
        self.last_env_seq = env_seq
        if offset is not None:
            self.recent_offsets.append(offset)
        ts = decoded.frame.capture_ts_us / 1e6

        t0 = time.perf_counter()
        detections = self.detector([decoded.image])[0]
        t1 = time.perf_counter()
        tracks = self.tracker.update(detections, self.seq, ts)
        out = self.selector.update(decoded.image, tracks)
        out += self.selector.end(self.tracker.ended_ids)
        out += self.selector.flush(ts)
        # a window emitted for good needs no preview any more
        self.previewed -= {(c.track_id, c.window) for c in out}
        if self.early_emit:
            out += self._early(tracks)
        if metrics is not None:
            metrics.detections.inc(len(detections))
            metrics.stage.labels("detect").observe(t1 - t0)
            metrics.stage.labels("track").observe(time.perf_counter() - t1)
        return out

    def _early(self, tracks) -> list[CropCandidate]:
        out = []
        for track in tracks:
            key = (track.track_id, self.selector.window_of(track))
            if key in self.previewed:
                continue
            cand = self.selector.pending(track.track_id)
            if cand is not None and cand.window == key[1]:
                self.previewed.add(key)
                out.append(cand)
        # forget previews of tracks the tracker dropped
        alive = set(self.tracker.active_ids())
        self.previewed = {k for k in self.previewed if k[0] in alive}
        return out

    def close_windows(self) -> list[CropCandidate]:
        """The camera sent nothing for a while: emit its open windows now.

        Without this, a camera that goes silent keeps its last people's best crops until the
        consumer stops, because windows close on the stream time of the camera's next frame.
        The tracks stay, so a camera that resumes continues them (in a new window).
        """
        out = self.selector.close_all()
        self.previewed -= {(c.track_id, c.window) for c in out}
        return out

    def has_open_windows(self) -> bool:
        """Whether any track window holds a crop not yet emitted for good."""
        return self.selector.pending_count() > 0

    def finish(self) -> list[CropCandidate]:
        """End of stream: emit every open window."""
        self.previewed.clear()
        return self.selector.finish()


def _tracking_options(tracker: Tracker, selector: BestCropSelector) -> dict[str, float]:
    return {"iou_threshold": tracker.iou_threshold, "max_age_frames": tracker.max_age_frames,
            "min_hits": tracker.min_hits, "center_gate": getattr(tracker, "center_gate", 0.0),
            "window_s": selector.window_s, "min_box_height": selector.min_box_height}


def pipeline_factory(settings: Settings) -> Callable[[str], CameraPipeline]:
    """``camera_id -> CameraPipeline`` with the detector configured for that camera.

    Every configured detector is built once here, so a wrong type, option or model file stops
    the workers when they start, not at a camera's first frame (which would also stop every
    other camera's ingest).

    Raises:
        ConfigError / InvalidInput: a detector of ``workers.default_detector`` or ``cameras``
            cannot be built; the message names the camera.
    """
    models_root = settings.paths.resolved_models_root()
    specs = {"workers.default_detector": settings.workers.default_detector}
    specs.update({f"cameras.{cam}.detector": c.detector for cam, c in settings.cameras.items()})
    built: set[str] = set()
    for where, spec in specs.items():
        key = spec.model_dump_json()
        if key in built:  # cameras sharing a detector: one model load checks them all
            continue
        built.add(key)
        try:
            build_detector(spec, models_root=models_root)
        except PedsearchError as exc:
            raise type(exc)(f"{where}: {exc.message}") from None
        except Exception as exc:  # noqa: BLE001 -- a damaged model file: cv2.error, RuntimeError
            raise ConfigError(f"{where}: the detector cannot be built: "
                              f"{type(exc).__name__}: {exc}") from exc

    def make(camera_id: str) -> CameraPipeline:
        cam = settings.camera(camera_id)
        spec = cam.detector if cam is not None else settings.workers.default_detector
        return CameraPipeline(camera_id=camera_id,
                              detector=build_detector(spec, models_root=models_root),
                              tracking=settings.tracking,
                              early_emit=settings.tracking.early_emit)

    return make
