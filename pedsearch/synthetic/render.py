"""Render synthetic pedestrians: whole-figure sprites, single renders and dataset crops.

The figure is built from shaded, anti-aliased primitives (capsule limbs, smoothed garment
polygons, ellipse heads) so that every attribute of the schema can be read off the pixels: hair
length, hat, sleeve length (bare or clothed arms), long/short trousers or a skirt, shoes by
type, a backpack (its body from behind and from the side, its straps from the front), a
shoulder bag on a diagonal strap, a handbag held at the hand, and the garment colours.

Example:
    >>> import numpy as np
    >>> from pedsearch.synthetic.people import sample_person
    >>> rng = np.random.default_rng(0)
    >>> img, mask = render_person(sample_person(1, rng), rng=rng, height_px=128, view="side")
    >>> img.shape, mask.shape
    ((128, 64, 3), (128, 64))
    >>> render_crop(sample_person(2, rng), rng).shape
    (256, 128, 3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pedsearch.errors import InvalidInput
from pedsearch.synthetic import _backgrounds as bgs
from pedsearch.synthetic._paint import Painter, paint_figure
from pedsearch.synthetic.people import PersonSpec

VIEWS = ("front", "back", "side")
#: Canvas rows above the head top and below the soles, as fractions of the canvas height.
TOP_MARGIN = 0.04
BOTTOM_MARGIN = 0.02
BODY_FRACTION = 1.0 - TOP_MARGIN - BOTTOM_MARGIN
#: Canvas width / height of a sprite.
ASPECT = 0.5


@dataclass(frozen=True)
class Light:
    """Scene light applied to a render.

    Attributes:
        brightness: overall gain (1 = as painted).
        cast: per-channel gains (R, G, B), e.g. (1.08, 1.0, 0.9) for warm light.
        side: -1 when the key light comes from the image left, +1 from the right.
    """

    brightness: float = 1.0
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    side: int = -1

    @classmethod
    def random(cls, rng: np.random.Generator, strength: float = 1.0) -> "Light":
        """Mild random light: brightness 1 +- 0.25*strength, casts within +-8%*strength."""
        b = float(rng.uniform(1 - 0.25 * strength, 1 + 0.22 * strength))
        cast = tuple(float(rng.uniform(1 - 0.08 * strength, 1 + 0.08 * strength)) for _ in range(3))
        return cls(b, cast, int(rng.choice([-1, 1])))  # type: ignore[arg-type]

    def apply(self, img: np.ndarray) -> np.ndarray:
        """``img`` (BGR uint8) under this light -> new BGR uint8 array."""
        if self.brightness == 1.0 and self.cast == (1.0, 1.0, 1.0):
            return img
        g = np.asarray(self.cast[::-1], np.float32) * self.brightness
        return np.clip(img.astype(np.float32) * g, 0, 255).astype(np.uint8)


def _check_spec(spec: Any) -> None:
    # duck-typed: a PersonSpec from a reloaded module is still a person
    if not (hasattr(spec, "attributes") and hasattr(spec, "appearance")):
        raise InvalidInput(f"expected a PersonSpec (see sample_person), got {type(spec).__name__}")


def _check_view(view: str) -> None:
    if view not in VIEWS:
        raise InvalidInput(f"unknown view {view!r}; known: {', '.join(VIEWS)}")


def sprite_size(height_px: int) -> tuple[int, int]:
    """(height, width) of the sprite canvas for ``height_px``."""
    return int(height_px), max(8, int(round(height_px * ASPECT)))


def render_sprite(spec: PersonSpec, *, view: str = "front", pose_phase: float = 0.0,
                  height_px: int = 256, light_side: int = -1,
                  mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The bare figure: premultiplied BGR and alpha on a ``height_px x height_px/2`` canvas.

    The head top sits at ``TOP_MARGIN * height_px`` and the soles at
    ``(1 - BOTTOM_MARGIN) * height_px``, centred horizontally. Deterministic: no randomness.

    Args:
        spec: the person.
        view: "front", "back" or "side" (facing image right; ``mirror`` for facing left).
        pose_phase: walking cycle position in [0, 1).
        height_px: canvas height (16..2048).
        light_side: -1 key light from the image left, +1 from the right.
        mirror: flip horizontally.

    Returns:
        ``(color, alpha)``: ``(H, W, 3)`` uint8 premultiplied BGR and ``(H, W)`` uint8 alpha.
    """
    _check_spec(spec)
    _check_view(view)
    if not 16 <= int(height_px) <= 2048:
        raise InvalidInput(f"height_px must be in 16..2048, got {height_px}")
    h, w = sprite_size(height_px)
    app = spec.appearance
    patterned = app.upper_texture in ("stripes", "check", "block") or app.lower_texture in (
        "stripes", "check")
    p = Painter(height=h, width=w, body_px=h * BODY_FRACTION, top_px=h * TOP_MARGIN,
                light_side=-light_side if mirror else light_side, materials=patterned)
    paint_figure(p, spec, view, float(pose_phase) % 1.0)
    col, alpha = p.finish()
    if mirror:
        col, alpha = col[:, ::-1].copy(), alpha[:, ::-1].copy()
    return col, alpha


def composite(dst: np.ndarray, col: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend a premultiplied sprite onto ``dst`` (in place) with its top-left at (x, y);
    parts outside ``dst`` are clipped."""
    H, W = dst.shape[:2]
    h, w = alpha.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return
    sc = col[y0 - y:y1 - y, x0 - x:x1 - x]
    sa = alpha[y0 - y:y1 - y, x0 - x:x1 - x]
    roi = dst[y0:y1, x0:x1]
    inv = cv2.merge([255 - sa] * 3) if roi.ndim == 3 else 255 - sa
    blended = cv2.add(cv2.multiply(roi, inv, scale=1.0 / 255.0), sc)
    roi[:] = blended


def _finish(img: np.ndarray, light: Light | None, blur: float,
            jpeg_quality: int | None) -> np.ndarray:
    if light is not None:
        img = light.apply(img)
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), float(blur))
    if jpeg_quality is not None:
        if not 1 <= int(jpeg_quality) <= 100:
            raise InvalidInput(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return img


def render_person(spec: PersonSpec, *, rng: np.random.Generator, height_px: int = 256,
                  view: str = "front", pose_phase: float = 0.0, light: Light | None = None,
                  background: np.ndarray | tuple[int, int, int] | str | None = None,
                  occlusion: float = 0.0, blur: float = 0.0, jpeg_quality: int | None = None,
                  mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Render one person filling a ``height_px x height_px/2`` image.

    Args:
        spec: the person.
        rng: randomness for the background ("random") and occluders.
        height_px: image height; the figure spans 94% of it.
        view: "front", "back" or "side".
        pose_phase: walking phase in [0, 1).
        light: scene light (default: none).
        background: ``None`` (black), a BGR colour, an image of the output size, or
            ``"random"`` for a textured street/indoor/foliage background.
        occlusion: rough fraction of the figure to hide behind random occluders (0..0.6).
        blur: Gaussian blur sigma in pixels (0 = sharp).
        jpeg_quality: JPEG round trip at this quality (1..100), or ``None``.
        mirror: flip horizontally (a side view then faces left).

    Returns:
        ``(image, mask)``: ``(H, W, 3)`` uint8 BGR and ``(H, W)`` uint8 coverage of the visible
        person (0-255; occluded pixels are 0).

    Raises:
        InvalidInput: a bad view, size, occlusion, background shape or JPEG quality.
    """
    if not 0.0 <= occlusion <= 0.6:
        raise InvalidInput(f"occlusion must be in [0, 0.6], got {occlusion}")
    if blur < 0:
        raise InvalidInput(f"blur must be >= 0, got {blur}")
    side = light.side if light is not None else -1
    col, alpha = render_sprite(spec, view=view, pose_phase=pose_phase, height_px=height_px,
                               light_side=side, mirror=mirror)
    h, w = alpha.shape
    if background is None:
        img = np.zeros((h, w, 3), np.uint8)
    elif isinstance(background, str):
        if background != "random":
            raise InvalidInput("background must be None, a BGR colour, an image or 'random', "
                               f"got {background!r}")
        img = bgs.crop_background(h, w, rng, int(h * (1 - BOTTOM_MARGIN) - h * 0.12))
    elif isinstance(background, np.ndarray):
        if background.shape != (h, w, 3) or background.dtype != np.uint8:
            raise InvalidInput(f"background must be a ({h}, {w}, 3) uint8 image, got "
                               f"{background.shape} {background.dtype}")
        img = background.copy()
    else:
        img = np.empty((h, w, 3), np.uint8)
        img[:] = tuple(int(c) for c in background)
    composite(img, col, alpha, 0, 0)
    mask = alpha.copy()
    if occlusion > 0:
        bgs.occlude(img, mask, rng, occlusion, _bbox(alpha))
    img = _finish(img, light, blur, jpeg_quality)
    return img, mask


def _bbox(alpha: np.ndarray, thresh: int = 64) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(alpha >= thresh)
    if len(xs) == 0:
        return (0, 0, alpha.shape[1], alpha.shape[0])
    x0, y0 = int(xs.min()), int(ys.min())
    return (x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1)


def render_crop(spec: PersonSpec, rng: np.random.Generator, *, size: tuple[int, int] = (256, 128),
                view: str | None = None, pose_phase: float | None = None,
                scale: float | None = None, offset: tuple[float, float] | None = None,
                light: Light | None = None, occlusion: float | None = None,
                blur: float | None = None, jpeg_quality: int | None = -1,
                mirror: bool | None = None) -> np.ndarray:
    """A detector-style pedestrian crop: the person on a random textured background, with
    view, pose, scale, offset, light, occlusion, blur and JPEG quality varied.

    Every argument left as ``None`` is drawn from ``rng`` (``jpeg_quality=-1`` draws one,
    ``None`` skips JPEG).

    Args:
        spec: the person.
        rng: the only source of randomness (same state -> same crop).
        size: ``(height, width)`` of the crop.
        view: "front", "back" or "side".
        pose_phase: walking phase in [0, 1).
        scale: person height / crop height (0.5..1.0; default 0.8..0.97).
        offset: (dx, dy) shift of the person as fractions of the crop size.
        light: scene light.
        occlusion: fraction of the person to hide (default: 0 with p=0.75, else 0.1..0.35).
        blur: Gaussian sigma in pixels.
        jpeg_quality: 1..100, ``None`` for none, -1 to draw 35..95.
        mirror: flip horizontally.

    Returns:
        ``(height, width, 3)`` uint8 BGR.
    """
    _check_spec(spec)
    H, W = int(size[0]), int(size[1])
    if not (32 <= H <= 2048 and 16 <= W <= 2048):
        raise InvalidInput(f"crop size must be within (32..2048, 16..2048), got {size}")
    view = view if view is not None else str(rng.choice(VIEWS, p=[0.38, 0.34, 0.28]))
    _check_view(view)
    pose_phase = float(rng.uniform(0, 1)) if pose_phase is None else pose_phase
    scale = float(rng.uniform(0.8, 0.97)) if scale is None else float(scale)
    if not 0.5 <= scale <= 1.0:
        raise InvalidInput(f"scale must be in [0.5, 1.0], got {scale}")
    dx, dy = offset if offset is not None else (float(rng.normal(0, 0.05)),
                                                float(rng.uniform(-0.02, 0.03)))
    light = light if light is not None else Light.random(rng)
    occlusion = (0.0 if rng.random() < 0.75 else float(rng.uniform(0.1, 0.35))) \
        if occlusion is None else occlusion
    blur = (float(rng.uniform(0.3, 1.4)) if rng.random() < 0.45 else 0.0) if blur is None else blur
    if jpeg_quality == -1:
        jpeg_quality = int(rng.integers(35, 96))
    mirror = bool(rng.random() < 0.5) if mirror is None else mirror

    sh = max(16, int(round(H * scale / BODY_FRACTION)))
    col, alpha = render_sprite(spec, view=view, pose_phase=pose_phase, height_px=sh,
                               light_side=light.side, mirror=mirror)
    sh_, sw_ = alpha.shape
    feet_y = int(round(H * (1 - 0.03) + dy * H))
    y = feet_y - int(round(sh_ * (1 - BOTTOM_MARGIN)))
    x = int(round((W - sw_) / 2 + dx * W))
    floor = feet_y - int(sh_ * rng.uniform(0.08, 0.35))
    img = bgs.crop_background(H, W, rng, floor)
    bgs.shadow(img, x + sw_ / 2, feet_y, sw_ * 0.32, sh_ * 0.025, 0.35)
    composite(img, col, alpha, x, y)
    if occlusion > 0:
        mask = np.zeros((H, W), np.uint8)
        bx, by, bw, bh = _bbox(alpha)
        bgs.occlude(img, mask, rng, occlusion, (x + bx, y + by, bw, bh))
    return _finish(img, light, blur, jpeg_quality)
