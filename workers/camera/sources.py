"""Frame sources: video files and image folders, RTSP/HTTP streams, webcams, synthetic scenes.

A source yields :class:`SourceFrame` at (at most) the requested rate, time-stamped at capture.
Stream sources read on their own thread, because ``cv2.VideoCapture`` on RTSP stalls or dies
silently: a watchdog notices when no frame arrived for ``stall_timeout_s`` and the reader
reconnects with exponential backoff.
"""

from __future__ import annotations

import logging
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
        realtime: pace frames at ``fps``; False publishes as fast as the consumer side allows.
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
        while not stop.is_set():
            it = self._read_images(images) if images else self._read_video()
            produced = False
            for image in it:
                if stop.is_set() or (self.max_frames is not None and count >= self.max_frames):
                    return
                pacer.wait(stop)
                produced = True
                count += 1
                yield SourceFrame(
                    self.camera_id, image, int(time.time() * 1e6), source=f"file:{self.path}"
                )
            if not self.loop or not produced:
                return

    def _read_images(self, files: list[pathlib.Path]) -> Iterator[np.ndarray]:
        for f in files:
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("skipping unreadable image %s", f)
                continue
            yield image

    def _read_video(self) -> Iterator[np.ndarray]:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise InvalidInput(f"OpenCV cannot open video {self.path}")
        native = cap.get(cv2.CAP_PROP_FPS) or 0.0
        step = max(1, round(native / self.fps)) if (self.fps and native > self.fps) else 1
        try:
            i = 0
            while True:
                ok, image = cap.read()
                if not ok:
                    return
                if i % step == 0:
                    yield image
                i += 1
        finally:
            cap.release()


class StreamSource:
    """An RTSP/HTTP stream or a webcam index, read on its own thread.

    The reader keeps only the newest frame (a live camera must not queue seconds of video);
    the consumer side samples it at ``fps``. When no frame arrives for ``stall_timeout_s`` the
    watchdog drops the capture and reconnects with exponential backoff up to ``max_backoff_s``.
    """

    def __init__(
        self, *, url: str | int, camera_id: str, fps: float = 5.0, stall_timeout_s: float = 5.0,
        max_backoff_s: float = 30.0, max_frames: int | None = None,
    ) -> None:
        self.url = url
        self.camera_id = camera_id
        self.fps = fps
        self.stall_timeout_s = stall_timeout_s
        self.max_backoff_s = max_backoff_s
        self.max_frames = max_frames
        self._latest: tuple[np.ndarray, int] | None = None
        self._lock = threading.Lock()
        self._fresh = threading.Event()
        self.reconnects = 0

    def _reader(self, stop: threading.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            cap = cv2.VideoCapture(self.url)
            if not cap.isOpened():
                log.warning("camera %s: cannot open %s; retrying in %.1f s",
                            self.camera_id, self.url, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                self.reconnects += 1
                continue
            last_ok = time.monotonic()
            try:
                while not stop.is_set():
                    ok, image = cap.read()
                    if ok and image is not None:
                        backoff = 0.5
                        last_ok = time.monotonic()
                        with self._lock:
                            self._latest = (image, int(time.time() * 1e6))
                        self._fresh.set()
                    elif time.monotonic() - last_ok > self.stall_timeout_s:
                        log.warning("camera %s: no frame for %.0f s; reconnecting",
                                    self.camera_id, self.stall_timeout_s)
                        break
                    else:
                        time.sleep(0.01)
            finally:
                cap.release()
            self.reconnects += 1
            stop.wait(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    def frames(self, stop: threading.Event) -> Iterator[SourceFrame]:
        thread = threading.Thread(target=self._reader, args=(stop,), daemon=True,
                                  name=f"capture-{self.camera_id}")
        thread.start()
        pacer = Pacer(self.fps)
        count = 0
        while not stop.is_set() and (self.max_frames is None or count < self.max_frames):
            if not self._fresh.wait(timeout=0.5):
                continue
            with self._lock:
                latest, self._latest = self._latest, None
                self._fresh.clear()
            if latest is None:
                continue
            image, ts = latest
            count += 1
            yield SourceFrame(self.camera_id, image, ts, source=str(self.url))
            pacer.wait(stop)


@dataclass
class SyntheticSource:
    """Every camera of one synthetic multi-camera scene, interleaved by scene time.

    Frames carry the scene's ground truth (``SceneTruth``), used only to score the pipeline.
    ``camera_ids`` are ``<camera_id>-<i>``.
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
        start_us = int(time.time() * 1e6)
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
