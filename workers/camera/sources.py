"""Frame sources: video files and image folders, RTSP/HTTP streams, webcams, synthetic scenes.

A source yields :class:`SourceFrame` at (at most) the requested rate, time-stamped at capture.
Stream sources read on their own thread, because ``cv2.VideoCapture`` on RTSP stalls or dies
silently: a watchdog notices when no frame arrived for ``stall_timeout_s`` and the reader
reconnects with exponential backoff.
"""

from __future__ import annotations

import logging
import math
import pathlib
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import cv2
import numpy as np

from pedsearch.errors import ConfigError, InvalidInput
from pedsearch.v1 import frame_pb2

log = logging.getLogger("pedsearch.camera")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
# frame period assumed for an image folder without --fps, or a video reporting no rate
DEFAULT_PERIOD_S = 0.2


@dataclass
class SourceFrame:
    camera_id: str
    image: np.ndarray  # (H, W, 3) uint8 BGR
    capture_ts_us: int
    truth: frame_pb2.SceneTruth | None = None
    source: str = ""


class Pacer:
    """Sleeps so that successive ``wait()`` calls are ``1 / fps`` apart (no drift)."""

    def __init__(self, fps: float | None) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self.next_t = time.monotonic()

    def wait(self, stop: threading.Event | None = None) -> None:
        if not self.period:
            return
        self.next_t += self.period
        delay = self.next_t - time.monotonic()
        if delay > 0:
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
        else:  # we are late: do not try to catch up with a burst
            self.next_t = time.monotonic()


class FileSource:
    """A video file, a folder of images (played in name order) or one image.

    Args:
        path: video file, image folder, or image file.
        camera_id: id put on every frame.
        fps: publishing rate; video frames are skipped to approximate it (None = native rate,
            or as fast as possible for images).
        loop: start again at the end.
        realtime: pace frames at ``fps`` and stamp them with the wall clock when sent; False
            publishes as fast as the consumer side allows and stamps each frame with the
            start instant plus its place in the media (the video's own timestamps, or the
            frame index over ``fps`` for images; loops follow on), so that an hour of video
            still spans an hour of capture time: track windows, idle closing and time
            filters count stream time.
        max_frames: stop after this many frames (None = until the end).
    """

    def __init__(
        self, *, path: str | pathlib.Path, camera_id: str, fps: float | None = None,
        loop: bool = False, realtime: bool = True, max_frames: int | None = None,
    ) -> None:
        self.path = pathlib.Path(path)
        if not self.path.exists():
            raise InvalidInput(f"camera source {self.path} does not exist")
        self.camera_id = camera_id
        self.fps = fps
        self.loop = loop
        self.realtime = realtime
        self.max_frames = max_frames

    def _images(self) -> list[pathlib.Path]:
        if self.path.is_dir():
            files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InvalidInput(f"folder {self.path} holds no images ({sorted(IMAGE_SUFFIXES)})")
            return files
        if self.path.suffix.lower() in IMAGE_SUFFIXES:
            return [self.path]
        return []

    def frames(self, stop: threading.Event) -> Iterator[SourceFrame]:
        images = self._images()
        pacer = Pacer(self.fps if self.realtime else None)
        count = 0
        start_us = int(time.time() * 1e6)
        pass_start_s = 0.0  # media time at which this pass (of a loop) begins
        while not stop.is_set():
            it = self._read_images(images) if images else self._read_video()
            produced = False
            next_s = pass_start_s
            for image, pos_s, period_s in it:
                if stop.is_set() or (self.max_frames is not None and count >= self.max_frames):
                    return
                pacer.wait(stop)
                produced = True
                count += 1
                media_s = pass_start_s + pos_s
                next_s = media_s + period_s
                ts = (int(time.time() * 1e6) if self.realtime
                      else start_us + int(round(media_s * 1e6)))
                yield SourceFrame(self.camera_id, image, ts, source=f"file:{self.path}")
            if not self.loop or not produced:
                return
            pass_start_s = next_s

    def _read_images(self, files: list[pathlib.Path]
                     ) -> Iterator[tuple[np.ndarray, float, float]]:
        """``(image, seconds from the first file, time to the next)``, ``fps`` images a second."""
        period = 1.0 / self.fps if self.fps else DEFAULT_PERIOD_S
        for i, f in enumerate(files):
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("skipping unreadable image %s", f)
                continue
            yield image, i * period, period

    def _read_video(self) -> Iterator[tuple[np.ndarray, float, float]]:
        """``(frame, its position in the video in seconds, time to the next one handed out)``."""
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise InvalidInput(f"OpenCV cannot open video {self.path}")
        native = cap.get(cv2.CAP_PROP_FPS) or 0.0
        step = max(1, round(native / self.fps)) if (self.fps and native > self.fps) else 1
        period = 1.0 / native if native > 0 else DEFAULT_PERIOD_S
        try:
            i = 0
            last = -math.inf
            while True:
                ok, image = cap.read()
                if not ok:
                    return
                pos = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0  # of the frame just read
                if not (math.isfinite(pos) and pos > last):
                    # a backend without timestamps reports 0 (or repeats one): count frames
                    pos = max(i * period, last + period)
                last = pos
                if i % step == 0:
                    yield image, pos, period * step
                i += 1
        finally:
            cap.release()


@dataclass
class StreamStats:
    """What a :class:`StreamSource` went through; read it while it runs (progress, status).

    Attributes:
        connects: captures opened successfully.
        open_failures: attempts to open the capture that failed.
        read_failures: captures given up because a read failed (stream ended, connection
            closed, the backend's own read timeout).
        stalls: captures abandoned by the watchdog (no frame for ``stall_timeout_s``).
        frames_read: frames decoded by the reader thread.
        frames_out: frames handed to the consumer of :meth:`StreamSource.frames`.
        last_frame_at: ``time.monotonic()`` of the newest decoded frame (None before the first).
        backoff_s: the wait before the next reconnect attempt.
        last_error: why the last capture was given up (empty while none was).
    """

    connects: int = 0
    open_failures: int = 0
    read_failures: int = 0
    stalls: int = 0
    frames_read: int = 0
    frames_out: int = 0
    last_frame_at: float | None = None
    backoff_s: float = 0.0
    last_error: str = ""

    @property
    def reconnects(self) -> int:
        """Captures started again after the first (for whatever reason)."""
        return max(0, self.connects - 1) + self.open_failures

    def summary(self) -> str:
        return (f"{self.frames_read} read, {self.connects} connect(s), {self.stalls} stall(s), "
                f"{self.read_failures} read failure(s), {self.open_failures} open failure(s)")


class StreamSource:
    """An RTSP/HTTP stream or a webcam index, read on its own thread.

    The reader keeps only the newest frame (a live camera must not queue seconds of video);
    the consumer side samples it at ``fps``. Two things end a capture, after which the reader
    opens a new one with exponential backoff (``backoff_s`` doubling up to ``max_backoff_s``,
    back to ``backoff_s`` once a frame arrives):

    - a failed read: the stream ended or the connection closed; for URLs the FFmpeg backend
      also gives up a read after ``2 * stall_timeout_s`` of silence;
    - the watchdog: ``cv2.VideoCapture.read`` can block indefinitely on a stalled RTSP stream or
      webcam, so a separate thread checks that a frame arrived within ``stall_timeout_s`` of
      the last one (or of the connect). If not, it abandons that reader -- a blocked read
      cannot be interrupted safely; the reader exits and releases its capture when the read
      returns -- and starts a fresh reader at once.

    :attr:`stats` counts connects, stalls, failures and frames; every reconnect is logged.

    Args:
        url: ``rtsp://``, ``http(s)://`` ... URL, or a webcam index.
        camera_id: id put on every frame.
        fps: rate at which frames are handed out.
        stall_timeout_s: silence after which the watchdog reconnects.
        backoff_s: first wait before a reconnect.
        max_backoff_s: longest wait between reconnect attempts.
        max_frames: stop after this many frames (None = until stopped).
    """

    def __init__(
        self, *, url: str | int, camera_id: str, fps: float = 5.0, stall_timeout_s: float = 5.0,
        backoff_s: float = 0.5, max_backoff_s: float = 30.0, max_frames: int | None = None,
    ) -> None:
        if stall_timeout_s <= 0 or backoff_s <= 0 or max_backoff_s < backoff_s:
            raise ConfigError(
                f"stream source needs stall_timeout_s > 0 and 0 < backoff_s <= max_backoff_s "
                f"(got {stall_timeout_s}, {backoff_s}, {max_backoff_s})"
            )
        self.url = url
        self.camera_id = camera_id
        self.fps = fps
        self.stall_timeout_s = stall_timeout_s
        self.initial_backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_frames = max_frames
        self.stats = StreamStats(backoff_s=backoff_s)
        self._latest: tuple[np.ndarray, int] | None = None
        self._lock = threading.Lock()
        self._fresh = threading.Event()
        self._generation = 0  # the reader whose number this is is the live one
        self._progress_at: float | None = None  # last connect or frame of the live reader

    @property
    def reconnects(self) -> int:
        return self.stats.reconnects

    def _open(self) -> cv2.VideoCapture:
        if isinstance(self.url, int):
            return cv2.VideoCapture(self.url)
        # FFmpeg's own timeouts are the backstop of the watchdog: an abandoned reader blocked
        # in read() returns (and releases its connection) after twice the stall timeout
        ms = int(self.stall_timeout_s * 2000)
        return cv2.VideoCapture(self.url, cv2.CAP_FFMPEG,
                                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms,
                                 cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])

    def _wait_backoff(self, stop: threading.Event, generation: int) -> None:
        with self._lock:
            delay = self.stats.backoff_s
            self.stats.backoff_s = min(delay * 2, self.max_backoff_s)
        log.info("camera %s: reconnecting to %s in %.1f s", self.camera_id, self.url, delay)
        stop.wait(delay)

    def _live(self, generation: int) -> bool:
        return generation == self._generation

    def _reader(self, stop: threading.Event, generation: int, delay_first: bool) -> None:
        if delay_first:
            self._wait_backoff(stop, generation)
        while not stop.is_set() and self._live(generation):
            cap = self._open()
            if not cap.isOpened():
                cap.release()
                with self._lock:
                    self.stats.open_failures += 1
                    self.stats.last_error = "open failed"
                log.warning("camera %s: cannot open %s", self.camera_id, self.url)
                self._wait_backoff(stop, generation)
                continue
            with self._lock:
                if not self._live(generation):  # the watchdog gave up on us while opening
                    cap.release()
                    return
                self.stats.connects += 1
                self._progress_at = time.monotonic()
            log.info("camera %s: connected to %s", self.camera_id, self.url)
            try:
                while not stop.is_set():
                    ok, image = cap.read()
                    if not self._live(generation):
                        return  # abandoned by the watchdog; a new reader has taken over
                    if not ok or image is None:
                        with self._lock:
                            self.stats.read_failures += 1
                            self.stats.last_error = "read failed (stream ended or timed out)"
                            self._progress_at = None  # reconnecting: not a stall
                        log.warning("camera %s: read from %s failed", self.camera_id, self.url)
                        break
                    now = time.monotonic()
                    with self._lock:
                        self._latest = (image, int(time.time() * 1e6))
                        self._progress_at = now
                        self.stats.frames_read += 1
                        self.stats.last_frame_at = now
                        self.stats.backoff_s = self.initial_backoff_s
                    self._fresh.set()
            finally:
                cap.release()
            if not stop.is_set() and self._live(generation):
                self._wait_backoff(stop, generation)

    def _start_reader(self, stop: threading.Event, *, delay_first: bool = False) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._progress_at = None  # the watchdog times a reader from its connect on
        threading.Thread(target=self._reader, args=(stop, generation, delay_first), daemon=True,
                         name=f"capture-{self.camera_id}-{generation}").start()

    def _watchdog(self, stop: threading.Event) -> None:
        period = min(0.25, self.stall_timeout_s / 4)
        while not stop.wait(period):
            with self._lock:
                since = self._progress_at
            if since is None or time.monotonic() - since <= self.stall_timeout_s:
                continue
            with self._lock:
                self.stats.stalls += 1
                self.stats.last_error = f"no frame for {self.stall_timeout_s:.1f} s"
            log.warning("camera %s: no frame from %s for %.1f s; abandoning the capture and "
                        "reconnecting", self.camera_id, self.url, self.stall_timeout_s)
            self._start_reader(stop, delay_first=True)

    def frames(self, stop: threading.Event) -> Iterator[SourceFrame]:
        # the reader and watchdog stop when this generator ends (``stop`` set, max_frames
        # reached, or the caller closed it)
        halt = threading.Event()
        self._start_reader(halt)
        threading.Thread(target=self._watchdog, args=(halt,), daemon=True,
                         name=f"watchdog-{self.camera_id}").start()
        pacer = Pacer(self.fps)
        try:
            while not stop.is_set() and (self.max_frames is None
                                         or self.stats.frames_out < self.max_frames):
                if not self._fresh.wait(timeout=0.5):
                    continue
                with self._lock:
                    latest, self._latest = self._latest, None
                    self._fresh.clear()
                if latest is None:
                    continue
                image, ts = latest
                self.stats.frames_out += 1
                yield SourceFrame(self.camera_id, image, ts, source=str(self.url))
                pacer.wait(stop)
        finally:
            halt.set()


@dataclass
class SyntheticSource:
    """Every camera of one synthetic multi-camera scene, interleaved by scene time.

    Frames carry the scene's ground truth (``SceneTruth``), used only to score the pipeline.
    ``camera_ids`` are ``<camera_id>-<i>``. Unless ``realtime``, frames are stamped with
    ``start_us`` (default: now) plus their scene time, so a scene published twice with the
    same ``start_us`` is the very same stream (track and crop ids depend on capture times).
    """

    camera_id: str
    cameras: int = 4
    people: int = 12
    seed: int = 0
    fps: float = 5.0
    duration_s: float = 60.0
    width: int = 640
    height: int = 360
    realtime: bool = True
    scene_kwargs: dict = field(default_factory=dict)
    start_us: int | None = None

    def build_scene(self):
        from pedsearch.synthetic.scene import Scene, SceneConfig

        cfg = SceneConfig(
            num_cameras=self.cameras, num_people=self.people, seed=self.seed, fps=self.fps,
            duration_s=self.duration_s, width=self.width, height=self.height, **self.scene_kwargs,
        )
        return Scene(cfg)

    def frames(self, stop: threading.Event) -> Iterator[SourceFrame]:
        scene = self.build_scene()
        names = {cam: f"{self.camera_id}-{i}" for i, cam in enumerate(scene.camera_ids)}
        iters = {cam: scene.frames(cam) for cam in scene.camera_ids}
        start_us = int(time.time() * 1e6) if self.start_us is None else int(self.start_us)
        pacer = Pacer(self.fps if self.realtime else None)
        while iters and not stop.is_set():
            pacer.wait(stop)
            for cam in list(iters):
                sf = next(iters[cam], None)
                if sf is None:
                    del iters[cam]
                    continue
                truth = frame_pb2.SceneTruth(scene_id=f"seed{self.seed}")
                for t in sf.truth:
                    x, y, w, h = t.box
                    truth.people.add(
                        person_id=int(t.person_id), track_id=int(t.track_id),
                        box=frame_pb2.Box(x=x, y=y, w=w, h=h), visibility=float(t.visibility),
                        attributes={k: ",".join(v) if isinstance(v, (list, tuple)) else str(v)
                                    for k, v in t.attributes.items()},
                    )
                # realtime: stamped at capture; otherwise scene time from the start instant
                ts = int(time.time() * 1e6) if self.realtime else start_us + int(sf.ts_s * 1e6)
                yield SourceFrame(names[cam], sf.image, ts, truth, f"synthetic:seed{self.seed}")


def open_source(spec: str, *, camera_id: str, fps: float, **kwargs) -> FileSource | StreamSource:
    """Pick a source from the ``--source`` argument.

    ``synthetic`` -> :class:`SyntheticSource`; a number -> webcam index; ``rtsp://``,
    ``rtsps://``, ``http(s)://`` -> :class:`StreamSource`; anything else is a path.
    """
    if spec == "synthetic":
        return SyntheticSource(camera_id=camera_id, fps=fps, **kwargs)
    if spec.isdigit():
        return StreamSource(url=int(spec), camera_id=camera_id, fps=fps,
                            max_frames=kwargs.get("max_frames"))
    if spec.split("://", 1)[0].lower() in {"rtsp", "rtsps", "http", "https", "rtmp"}:
        return StreamSource(url=spec, camera_id=camera_id, fps=fps,
                            max_frames=kwargs.get("max_frames"))
    if "://" in spec:
        raise ConfigError(f"unsupported camera URL scheme in {spec!r} (rtsp, http, https, rtmp)")
    allowed = {k: v for k, v in kwargs.items() if k in {"loop", "realtime", "max_frames"}}
    return FileSource(path=spec, camera_id=camera_id, fps=fps, **allowed)
