"""Multi-camera synthetic scenes with ground truth: people walk in, cross, occlude each other,
leave, and show up again in other cameras.

Each camera looks at a street or plaza (a building front, a pavement in perspective, props) from
a pinhole camera a few metres up. People walk along straight or bent paths on the ground plane at
their own speed, so they shrink with distance (about ``min_person_px`` tall at the far end of the
walkable zone) and change view (side when crossing, front when approaching, back when leaving).
A person who leaves one camera enters another a few seconds later with a new track id, so
re-identification across cameras has ground truth.

Frames are a pure function of ``(config, camera, seq)``: the same config gives the same pixels
and boxes, whatever order or thread cameras are read in.

Example:
    >>> scene = Scene(SceneConfig(num_cameras=2, num_people=4, duration_s=2, fps=5, seed=1))
    >>> scene.camera_ids
    ['cam00', 'cam01']
    >>> frame = next(scene.frames("cam00"))
    >>> frame.image.shape
    (360, 640, 3)
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import cv2
import numpy as np
import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pedsearch.errors import ConfigError, InvalidInput, NotFound
from pedsearch.synthetic import _backgrounds as bgs
from pedsearch.synthetic.people import PersonSpec, sample_person
from pedsearch.synthetic.render import (BODY_FRACTION, BOTTOM_MARGIN, Light, composite,
                                        render_sprite)

PERSON_M = 1.7  # height in metres of a person with height_scale 1
PHASE_BINS = 10
STRIDE_M = 1.4  # metres walked per full gait cycle (two steps)
ALPHA_ON = 128  # a sprite pixel belongs to the person at this coverage
NOISE_BANK = 6  # sensor-noise images shared by all cameras


class SceneConfig(BaseModel):
    """A synthetic multi-camera scene."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_cameras: int = Field(3, ge=1, le=64, description="cameras, ids cam00, cam01, ...")
    num_people: int = Field(12, ge=1, le=10_000, description="identities walking around")
    width: int = Field(640, ge=160, le=3840, description="frame width in pixels")
    height: int = Field(360, ge=120, le=2160, description="frame height in pixels")
    fps: float = Field(10.0, gt=0.0, le=60.0, description="frames per second of every camera")
    duration_s: float = Field(60.0, gt=0.0, le=86_400.0, description="scene length in seconds")
    seed: int = Field(0, ge=0, description="everything is a function of this seed")
    max_people_per_camera: int = Field(
        4, ge=1, le=64, description="most people in one camera's view at once")
    min_person_px: int = Field(
        60, ge=16, le=1000,
        description="height of a person at the far end of the walkable zone (at 640x360)")
    near_person_frac: float = Field(
        0.55, gt=0.1, le=0.95, description="height of an adult at the near end / frame height")
    walk_speed_mps: tuple[float, float] = Field(
        (1.1, 1.6), description="range of walking speeds in metres per second")
    transit_s: tuple[float, float] = Field(
        (2.0, 12.0), description="seconds between leaving one camera and entering the next")
    revisit_same_camera: float = Field(
        0.15, ge=0.0, le=1.0, description="probability that a next walk is in the same camera")
    first_person_id: int = Field(0, ge=0, description="person ids are first_person_id + i")
    noise_sigma: float = Field(2.0, ge=0.0, le=30.0, description="sensor noise (grey levels)")
    foreground_occluders: bool = Field(
        True, description="a pole or post in front of the walkers in some cameras")
    sprite_cache_mb: int = Field(
        64, ge=0, le=16_384, description="memory for rendered figures reused across frames")

    @model_validator(mode="after")
    def _check(self) -> "SceneConfig":
        lo, hi = self.walk_speed_mps
        if not 0.2 <= lo <= hi <= 5.0:
            raise ValueError(f"walk_speed_mps must satisfy 0.2 <= lo <= hi <= 5, got {lo, hi}")
        lo, hi = self.transit_s
        if not 0.0 <= lo <= hi:
            raise ValueError(f"transit_s must satisfy 0 <= lo <= hi, got {lo, hi}")
        if self.min_person_px >= self.near_person_frac * self.height:
            raise ValueError(
                f"min_person_px ({self.min_person_px}) must be below the near height "
                f"near_person_frac * height = {self.near_person_frac * self.height:.0f}")
        return self


@dataclass(frozen=True)
class TruthBox:
    """One person's ground truth in one frame.

    Attributes:
        person_id: identity (the same in every camera).
        track_id: one walk through one camera (unique in the scene).
        box: ``(x, y, w, h)`` pixels, the tight box of the whole figure clipped to the frame.
        visibility: fraction of the figure's pixels that can be seen (not hidden by nearer
            people, foreground objects or the frame edge), 0..1.
        attributes: the person's canonical attribute labels.
        view: "front", "back" or "side".
    """

    person_id: int
    track_id: int
    box: tuple[int, int, int, int]
    visibility: float
    attributes: Mapping[str, str | list[str]] = field(repr=False)
    view: str = "front"


@dataclass
class SceneFrame:
    """One frame of one camera.

    Attributes:
        camera_id: camera name.
        seq: frame number from 0.
        ts_s: seconds since the scene started (``seq / fps``).
        image: ``(height, width, 3)`` uint8 BGR.
        truth: the people in view, far to near.
        instance_mask: ``(height, width)`` int32 (only when asked for): 0 background, ``i + 1``
            where the pixel shows ``truth[i]``.
    """

    camera_id: str
    seq: int
    ts_s: float
    image: np.ndarray
    truth: list[TruthBox]
    instance_mask: np.ndarray | None = None


@dataclass(frozen=True)
class TrackSpan:
    """A ground-truth track: one person's walk through one camera."""

    camera_id: str
    person_id: int
    track_id: int
    first_seq: int
    last_seq: int
    first_ts_s: float
    last_ts_s: float
    frames: int  # frames with a truth box


# ---------------------------------------------------------------------------------------------


@dataclass
class _Camera:
    index: int
    camera_id: str
    f: float  # focal length in pixels
    cam_h: float  # camera height in metres
    horizon: float  # image row of the horizon
    z_near: float
    z_far: float
    light: Light
    background: np.ndarray = field(repr=False)
    fg_col: np.ndarray | None = field(default=None, repr=False)  # premultiplied
    fg_alpha: np.ndarray | None = field(default=None, repr=False)


@dataclass
class _Walk:
    track_id: int
    person_index: int
    camera_index: int
    t0: float
    t1: float
    speed: float
    points: np.ndarray  # (K, 2) world (X, Z) metres
    cum: np.ndarray  # (K,) cumulative length


@dataclass
class _Sprite:
    col: np.ndarray
    alpha: np.ndarray
    bbox: tuple[int, int, int, int] | None  # of `on`, sprite coords (x0, y0, x1, y1) exclusive
    npix: int


@dataclass
class _Placement:
    walk: _Walk
    view: str
    mirror: bool
    phase_bin: int
    height_px: int  # quantised figure height
    x: int  # sprite top-left in the frame
    y: int
    foot: tuple[float, float]
    canvas: tuple[int, int]  # sprite (h, w)


class Scene:
    """A deterministic multi-camera world built from a :class:`SceneConfig`.

    Args:
        config: the scene (a ``SceneConfig`` or a mapping of its fields).

    Raises:
        ConfigError: the mapping does not validate.
    """

    def __init__(self, config: SceneConfig | Mapping[str, Any]) -> None:
        if not isinstance(config, SceneConfig):
            try:
                config = SceneConfig.model_validate(dict(config))
            except pydantic.ValidationError as exc:
                raise ConfigError(f"invalid scene config: {exc}") from None
        self.config = config
        rng = np.random.default_rng([config.seed, 0x5CE7E])
        self.people: list[PersonSpec] = [
            sample_person(config.first_person_id + i, rng) for i in range(config.num_people)]
        self._cams = [self._make_camera(i) for i in range(config.num_cameras)]
        self._noise_pos = self._noise_neg = None
        if config.noise_sigma > 0:  # one bank of sensor noise; frames pick a slice at random
            n = np.random.default_rng([config.seed, 0x401]).normal(
                0.0, config.noise_sigma, (NOISE_BANK, config.height + 16, config.width + 16, 3))
            self._noise_pos = np.clip(n, 0, 255).astype(np.uint8)
            self._noise_neg = np.clip(-n, 0, 255).astype(np.uint8)
        self._by_id = {c.camera_id: c for c in self._cams}
        self._walks = self._plan()
        self._walks_by_cam: list[list[_Walk]] = [[] for _ in self._cams]
        for w in self._walks:
            self._walks_by_cam[w.camera_index].append(w)
        self._t0s = [[w.t0 for w in ws] for ws in self._walks_by_cam]
        self._max_walk = max((w.t1 - w.t0 for w in self._walks), default=0.0)
        self._cache: OrderedDict[tuple, _Sprite] = OrderedDict()
        self._cache_bytes = 0
        self._lock = threading.Lock()

    # -- public --------------------------------------------------------------------------------
    @property
    def camera_ids(self) -> list[str]:
        return [c.camera_id for c in self._cams]

    @property
    def num_frames(self) -> int:
        """Frames per camera."""
        return max(1, int(round(self.config.duration_s * self.config.fps)))

    def person(self, person_id: int) -> PersonSpec:
        i = person_id - self.config.first_person_id
        if not 0 <= i < len(self.people):
            raise NotFound(f"no person {person_id} in this scene")
        return self.people[i]

    def background(self, camera_id: str) -> np.ndarray:
        """The camera's empty view (no people, no foreground post, no sensor noise): a copy of
        the ``(height, width, 3)`` BGR image, e.g. to score background subtraction."""
        return self._camera(camera_id).background.copy()

    def frames(self, camera_id: str, *, start: int = 0, stop: int | None = None,
               with_masks: bool = False) -> Iterator[SceneFrame]:
        """The frames of one camera, ``seq`` from ``start`` up to ``stop`` (exclusive; default
        the end of the scene).

        Args:
            camera_id: one of :attr:`camera_ids`.
            start: first frame number.
            stop: frame number to stop before.
            with_masks: also build each frame's ``instance_mask``.

        Raises:
            NotFound: unknown camera.
            InvalidInput: ``start``/``stop`` out of range.
        """
        cam = self._camera(camera_id)
        n = self.num_frames
        stop = n if stop is None else stop
        if not 0 <= start <= stop <= n:
            raise InvalidInput(f"frame range must satisfy 0 <= start <= stop <= {n}, "
                               f"got {start}..{stop}")
        for seq in range(start, stop):
            yield self._frame(cam, seq, with_masks)

    def timeline(self) -> dict[str, list[TrackSpan]]:
        """Per camera, every ground-truth track (first/last frame with a truth box), ordered by
        first frame. Agrees exactly with the truth of :meth:`frames`."""
        fps = self.config.fps
        out: dict[str, list[TrackSpan]] = {c.camera_id: [] for c in self._cams}
        for cam, walks in zip(self._cams, self._walks_by_cam):
            for w in walks:
                s0 = max(0, math.floor(w.t0 * fps) - 1)
                s1 = min(self.num_frames - 1, math.ceil(w.t1 * fps) + 1)
                seen = [seq for seq in range(s0, s1 + 1)
                        if w.t0 <= seq / fps < w.t1
                        and self._present(cam, self._place(cam, w, seq / fps))]
                if seen:
                    p = self.people[w.person_index]
                    out[cam.camera_id].append(TrackSpan(
                        cam.camera_id, p.person_id, w.track_id, seen[0], seen[-1],
                        seen[0] / fps, seen[-1] / fps, len(seen)))
            out[cam.camera_id].sort(key=lambda s: (s.first_seq, s.track_id))
        return out

    # -- cameras -------------------------------------------------------------------------------
    def _camera(self, camera_id: str) -> _Camera:
        try:
            return self._by_id[camera_id]
        except KeyError:
            known = ", ".join(self._by_id)
            raise NotFound(f"unknown camera {camera_id!r}; known: {known}") from None

    def _make_camera(self, i: int) -> _Camera:
        cfg = self.config
        W, H = cfg.width, cfg.height
        rng = np.random.default_rng([cfg.seed, 0xCA3, i])
        f = W * float(rng.uniform(0.95, 1.35))
        r = float(rng.uniform(1.05, 1.6))  # camera height in person heights
        h_near = cfg.near_person_frac * H * float(rng.uniform(0.88, 1.0))
        y_near = H * 0.985
        horizon = y_near - h_near * r
        z_near = f * PERSON_M / h_near
        z_far = f * PERSON_M * 0.9 / cfg.min_person_px
        cam = _Camera(i, f"cam{i:02d}", f, PERSON_M * r, horizon, z_near, z_far,
                      Light.random(rng, 0.6), np.zeros((H, W, 3), np.uint8))
        cam.background = self._draw_background(cam, rng)
        if cfg.foreground_occluders and rng.random() < 0.5:
            self._draw_foreground(cam, rng)
        return cam

    def _row(self, cam: _Camera, z: float) -> float:
        return cam.horizon + cam.f * cam.cam_h / z

    def _draw_background(self, cam: _Camera, rng: np.random.Generator) -> np.ndarray:
        W, H = self.config.width, self.config.height
        img = np.zeros((H, W, 3), np.uint8)
        z_base = cam.z_far * float(rng.uniform(1.15, 1.6))
        base_y = int(np.clip(self._row(cam, z_base), 4, H * 0.75))
        # sky strip above the buildings (only where the facade does not reach the top)
        sky = np.asarray(bgs.hsv_bgr(rng.uniform(0.55, 0.62), rng.uniform(0.15, 0.4),
                                      rng.uniform(0.7, 0.95)), np.float32)
        img[:] = sky.astype(np.uint8)
        unit = cam.f * 1.2 / z_base  # ~1.2 m in pixels at the facade
        x = int(-rng.uniform(0, W * 0.3))
        while x < W:
            bw = int(W * rng.uniform(0.25, 0.6))
            top = int(max(0, base_y - unit * rng.uniform(6, 14)))
            if rng.random() < 0.85:
                bgs.draw_facade(img, rng, x, min(W, x + bw), top, base_y, unit)
            x += bw
        vy = cam.horizon
        rows = [int(self._row(cam, z)) for z in np.arange(cam.z_near * 0.6, z_base, 1.5)]
        bgs.draw_ground(img, rng, base_y, vx=W * float(rng.uniform(0.2, 0.8)), vy=vy, rows=rows)
        # props along the facade: lamp posts, planters, bins
        for _ in range(int(rng.integers(1, 4))):
            z = z_base * float(rng.uniform(0.92, 1.0))
            px = int(rng.uniform(0, W))
            py = int(self._row(cam, z))
            s = cam.f / z
            kind = rng.choice(["lamp", "planter", "bin"])
            if kind == "lamp":
                hgt = int(s * 4.0)
                c = bgs.muted(rng, (0.15, 0.4), (0.0, 0.2))
                cv2.line(img, (px, py), (px, py - hgt), c, max(1, int(s * 0.12)), cv2.LINE_AA)
                cv2.ellipse(img, (px, py - hgt), (max(2, int(s * 0.3)), max(1, int(s * 0.12))), 0,
                            0, 360, (200, 230, 240), -1, cv2.LINE_AA)
            elif kind == "planter":
                w2, h2 = int(s * 0.6), int(s * 0.6)
                box = bgs.muted(rng, (0.3, 0.6))
                cv2.rectangle(img, (px - w2, py - h2), (px + w2, py), box, -1)
                for _ in range(6):
                    leaf = bgs.hsv_bgr(rng.uniform(0.22, 0.36), 0.6, rng.uniform(0.25, 0.5))
                    centre = (px + int(rng.uniform(-w2, w2)), py - h2 - int(rng.uniform(0, h2)))
                    cv2.circle(img, centre, max(2, int(s * rng.uniform(0.25, 0.5))), leaf, -1,
                               cv2.LINE_AA)
            else:
                w2, h2 = int(s * 0.25), int(s * 0.9)
                box = bgs.muted(rng, (0.2, 0.5))
                cv2.rectangle(img, (px - w2, py - h2), (px + w2, py), box, -1)
        img = bgs.add_texture(img, rng, low=9.0, fine=2.5, cells=10)
        # vignetting + camera light
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        d = ((xx - W / 2) / W) ** 2 + ((yy - H / 2) / H) ** 2
        vig = 1.0 - 0.25 * d
        img = np.clip(img.astype(np.float32) * vig[:, :, None], 0, 255).astype(np.uint8)
        return cam.light.apply(img)

    def _draw_foreground(self, cam: _Camera, rng: np.random.Generator) -> None:
        """A post standing between the camera and the walkers, near one side."""
        W, H = self.config.width, self.config.height
        col = np.zeros((H, W, 3), np.uint8)
        alpha = np.zeros((H, W), np.uint8)
        z = cam.z_near * float(rng.uniform(0.75, 0.95))
        s = cam.f / z
        x = int(W * (rng.uniform(0.05, 0.25) if rng.random() < 0.5 else rng.uniform(0.75, 0.95)))
        y = int(self._row(cam, z))
        pw = max(3, int(s * 0.12))
        c = bgs.muted(rng, (0.2, 0.55), (0.0, 0.3))
        cv2.rectangle(col, (x - pw, 0), (x + pw, y), c, -1)
        cv2.rectangle(col, (x - pw // 3, 0), (x, y), bgs.scale_color(c, 1.35), -1)
        cv2.rectangle(alpha, (x - pw, 0), (x + pw, y), 255, -1)
        if rng.random() < 0.5:  # a sign on the post
            sw, sh = int(s * 0.3), int(s * 0.25)
            sy = int(max(0, y - s * 2.9))
            sc = bgs.hsv_bgr(rng.choice([0.0, 0.6, 0.33]), 0.7, 0.7)
            cv2.rectangle(col, (x - sw, sy), (x + sw, sy + sh), sc, -1)
            cv2.rectangle(col, (x - sw, sy), (x + sw, sy + sh), (240, 240, 240), max(1, sh // 10))
            cv2.rectangle(alpha, (x - sw, sy), (x + sw, sy + sh), 255, -1)
        col = cam.light.apply(col)
        cam.fg_col, cam.fg_alpha = col, alpha

    # -- planning ------------------------------------------------------------------------------
    def _depth_range(self, cam: _Camera, person: PersonSpec) -> tuple[float, float]:
        zmax = cam.f * PERSON_M * person.appearance.height_scale / self.config.min_person_px
        zmax = min(cam.z_far, zmax)
        return cam.z_near, max(zmax, cam.z_near * 1.1)

    def _edge_x(self, cam: _Camera, z: float, person: PersonSpec) -> float:
        """World X just outside the view at depth z (figure fully out of frame)."""
        half = self.config.width / 2.0
        return half * z / cam.f + 0.45 * PERSON_M * person.appearance.height_scale

    def _path(self, cam: _Camera, person: PersonSpec, rng: np.random.Generator) -> np.ndarray:
        zn, zf = self._depth_range(cam, person)

        def depth(u: float) -> float:  # uniform in image rows, not in metres
            return 1.0 / (1.0 / zn + u * (1.0 / zf - 1.0 / zn))

        sign = 1.0 if rng.random() < 0.5 else -1.0
        if rng.random() < 0.6:
            za = depth(float(rng.uniform(0, 1)))
            zb = depth(float(np.clip(rng.uniform(0, 1), 0, 1)))
            pts = [(-sign * self._edge_x(cam, za, person), za),
                   (sign * self._edge_x(cam, zb, person), zb)]
        else:
            far_first = rng.random() < 0.5
            za = depth(float(rng.uniform(0.7, 1.0)) if far_first else float(rng.uniform(0, 0.3)))
            zb = depth(float(rng.uniform(0, 0.3)) if far_first else float(rng.uniform(0.7, 1.0)))
            zw = depth(float(rng.uniform(0.3, 0.7)))
            xw = float(rng.uniform(-0.5, 0.5)) * self.config.width / 2 * zw / cam.f
            exit_sign = sign if rng.random() < 0.6 else -sign
            pts = [(-sign * self._edge_x(cam, za, person), za), (xw, zw),
                   (exit_sign * self._edge_x(cam, zb, person), zb)]
        return np.asarray(pts, np.float64)

    def _plan(self) -> list[_Walk]:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 0x9A7])
        n_cam = len(self._cams)
        busy: list[list[tuple[float, float]]] = [[] for _ in range(n_cam)]
        walks: list[_Walk] = []
        speeds = rng.uniform(*cfg.walk_speed_mps, size=len(self.people))
        # (time, person index, last camera)
        spread = min(cfg.duration_s, 4.0 + cfg.duration_s * 0.3)
        queue = sorted((float(rng.uniform(0, spread)), i, -1) for i in range(len(self.people)))
        next_track = 1
        while queue:
            t, i, last = queue.pop(0)
            if t >= cfg.duration_s:
                continue
            person = self.people[i]
            order = list(rng.permutation(n_cam))
            if last >= 0 and n_cam > 1 and rng.random() >= cfg.revisit_same_camera:
                order = [c for c in order if c != last] + [last]
            placed = False
            for c in order:
                cam = self._cams[c]
                busy[c] = [span for span in busy[c] if span[1] > t]  # t never decreases
                pts = self._path(cam, person, rng)
                seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
                cum = np.concatenate([[0.0], np.cumsum(seg)])
                dur = float(cum[-1] / speeds[i])
                if self._concurrency(busy[c], t, t + dur) < cfg.max_people_per_camera:
                    busy[c].append((t, t + dur))
                    walks.append(_Walk(next_track, i, int(c), t, t + dur, float(speeds[i]), pts,
                                       cum))
                    next_track += 1
                    gap = float(rng.uniform(*cfg.transit_s))
                    bisect.insort(queue, (t + dur + gap, i, int(c)))
                    placed = True
                    break
            if not placed:
                bisect.insort(queue, (t + float(rng.uniform(0.5, 2.0)), i, last))
        walks.sort(key=lambda w: (w.camera_index, w.t0, w.track_id))
        return walks

    @staticmethod
    def _concurrency(spans: Sequence[tuple[float, float]], a: float, b: float) -> int:
        """Most spans overlapping one instant within [a, b)."""
        ev = []
        for s0, s1 in spans:
            if s0 < b and s1 > a:
                ev.append((max(s0, a), 1))
                ev.append((min(s1, b), -1))
        ev.sort(key=lambda e: (e[0], e[1]))
        best = cur = 0
        for _, d in ev:
            cur += d
            best = max(best, cur)
        return best

    # -- per frame -----------------------------------------------------------------------------
    def _active(self, cam: _Camera, t: float) -> list[_Walk]:
        ws = self._walks_by_cam[cam.index]
        t0s = self._t0s[cam.index]
        lo = bisect.bisect_left(t0s, t - self._max_walk - 1e-9)
        hi = bisect.bisect_right(t0s, t)
        return [w for w in ws[lo:hi] if w.t0 <= t < w.t1]

    def _place(self, cam: _Camera, w: _Walk, t: float) -> _Placement:
        person = self.people[w.person_index]
        d = (t - w.t0) * w.speed
        k = int(np.clip(np.searchsorted(w.cum, d, side="right") - 1, 0, len(w.points) - 2))
        p0, p1 = w.points[k], w.points[k + 1]
        seg = max(w.cum[k + 1] - w.cum[k], 1e-9)
        u = min(max((d - w.cum[k]) / seg, 0.0), 1.0)
        X, Z = p0 + (p1 - p0) * u
        dX, dZ = p1 - p0
        if abs(dZ) > 1.2 * abs(dX):
            view, mirror = ("front" if dZ < 0 else "back"), False
        else:
            view, mirror = "side", bool(dX < 0)
        phase = (person.appearance.phase0 + d / STRIDE_M) % 1.0
        phase_bin = int(phase * PHASE_BINS) % PHASE_BINS
        h = cam.f * PERSON_M * person.appearance.height_scale / Z
        step = max(2.0, round(h * 0.03))
        hq = int(max(8, round(h / step) * step))
        sh = max(16, int(round(hq / BODY_FRACTION)))
        sw = max(8, int(round(sh * 0.5)))
        fx = self.config.width / 2.0 + cam.f * X / Z
        fy = self._row(cam, Z)
        x = int(round(fx - sw / 2.0))
        y = int(round(fy - sh * (1 - BOTTOM_MARGIN)))
        return _Placement(w, view, mirror, phase_bin, hq, x, y, (fx, fy), (sh, sw))

    def _sprite(self, cam: _Camera, pl: _Placement) -> _Sprite:
        key = (cam.index, pl.walk.person_index, pl.view, pl.mirror, pl.phase_bin, pl.height_px)
        with self._lock:
            sp = self._cache.get(key)
            if sp is not None:
                self._cache.move_to_end(key)
                return sp
        person = self.people[pl.walk.person_index]
        col, alpha = render_sprite(person, view=pl.view, pose_phase=pl.phase_bin / PHASE_BINS,
                                   height_px=pl.canvas[0], light_side=cam.light.side,
                                   mirror=pl.mirror)
        col = cam.light.apply(col)
        on = alpha >= ALPHA_ON
        ys, xs = np.nonzero(on)
        bbox = ((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                if len(xs) else None)
        sp = _Sprite(col, alpha, bbox, int(len(xs)))
        budget = self.config.sprite_cache_mb * 1024 * 1024
        if budget > 0:
            with self._lock:
                if key not in self._cache:
                    self._cache[key] = sp
                    self._cache_bytes += col.nbytes + alpha.nbytes
                while self._cache_bytes > budget and self._cache:
                    _, old = self._cache.popitem(last=False)
                    self._cache_bytes -= old.col.nbytes + old.alpha.nbytes
        return sp

    def _clipped_box(self, pl: _Placement, sp: _Sprite) -> tuple[int, int, int, int] | None:
        if sp.bbox is None:
            return None
        W, H = self.config.width, self.config.height
        x0 = max(0, pl.x + sp.bbox[0])
        y0 = max(0, pl.y + sp.bbox[1])
        x1 = min(W, pl.x + sp.bbox[2])
        y1 = min(H, pl.y + sp.bbox[3])
        if x1 <= x0 or y1 <= y0:
            return None
        return (x0, y0, x1 - x0, y1 - y0)

    def _present(self, cam: _Camera, pl: _Placement) -> bool:
        W, H = self.config.width, self.config.height
        sh, sw = pl.canvas
        if pl.x >= W or pl.y >= H or pl.x + sw <= 0 or pl.y + sh <= 0:
            return False
        if pl.x >= 0 and pl.y >= 0 and pl.x + sw <= W and pl.y + sh <= H:
            return True  # wholly inside: no need to render
        return self._clipped_box(pl, self._sprite(cam, pl)) is not None

    def _frame(self, cam: _Camera, seq: int, with_masks: bool) -> SceneFrame:
        cfg = self.config
        W, H = cfg.width, cfg.height
        t = seq / cfg.fps
        placed: list[tuple[_Placement, _Sprite, tuple[int, int, int, int]]] = []
        for w in self._active(cam, t):
            pl = self._place(cam, w, t)
            sh, sw = pl.canvas
            if pl.x >= W or pl.y >= H or pl.x + sw <= 0 or pl.y + sh <= 0:
                continue
            sp = self._sprite(cam, pl)
            box = self._clipped_box(pl, sp)
            if box is not None:
                placed.append((pl, sp, box))
        placed.sort(key=lambda e: (e[0].foot[1], e[0].walk.track_id))  # far to near

        img = cam.background.copy()
        for pl, sp, _ in placed:
            h = pl.height_px
            bgs.shadow(img, pl.foot[0], pl.foot[1], h * 0.17, h * 0.03, 0.3)
        for pl, sp, _ in placed:
            composite(img, sp.col, sp.alpha, pl.x, pl.y)
        if cam.fg_alpha is not None:
            composite(img, cam.fg_col, cam.fg_alpha, 0, 0)

        # visibility, nearest first
        occupied = (cam.fg_alpha >= ALPHA_ON) if cam.fg_alpha is not None \
            else np.zeros((H, W), bool)
        occupied = occupied.copy()
        inst = np.zeros((H, W), np.int32) if with_masks else None
        vis: list[float] = [0.0] * len(placed)
        for idx in range(len(placed) - 1, -1, -1):
            pl, sp, _ = placed[idx]
            sh, sw = pl.canvas
            x0, y0 = max(pl.x, 0), max(pl.y, 0)
            x1, y1 = min(pl.x + sw, W), min(pl.y + sh, H)
            on = sp.alpha[y0 - pl.y:y1 - pl.y, x0 - pl.x:x1 - pl.x] >= ALPHA_ON
            occ = occupied[y0:y1, x0:x1]
            seen = on & ~occ
            vis[idx] = float(seen.sum()) / max(sp.npix, 1)
            occ |= on
            if inst is not None:
                inst[y0:y1, x0:x1][seen] = idx + 1
        truth = []
        for (pl, sp, box), v in zip(placed, vis):
            person = self.people[pl.walk.person_index]
            truth.append(TruthBox(person.person_id, pl.walk.track_id, box, round(v, 4),
                                  person.attributes, pl.view))

        if self._noise_pos is not None and self._noise_neg is not None:
            rng = np.random.default_rng([cfg.seed, 0x401CE, cam.index, seq])
            k1, k2 = (int(v) for v in rng.integers(0, NOISE_BANK, size=2))
            dy, dx, ey, ex = (int(v) for v in rng.integers(0, 16, size=4))
            cv2.add(img, self._noise_pos[k1, dy:dy + H, dx:dx + W], dst=img)
            cv2.subtract(img, self._noise_neg[k2, ey:ey + H, ex:ex + W], dst=img)
        return SceneFrame(cam.camera_id, seq, t, img, truth, inst)
