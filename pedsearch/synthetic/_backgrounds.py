"""Backgrounds for crops and camera views, and random occluders (private).

Everything is drawn with OpenCV primitives plus smooth noise, so a 640x360 view costs a few
milliseconds once per camera and a 256x128 crop background well under a millisecond or two.
"""

from __future__ import annotations

import colorsys
from typing import Sequence

import cv2
import numpy as np


def hsv_bgr(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (int(b * 255), int(g * 255), int(r * 255))


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, amp: float) -> np.ndarray:
    """Low-frequency noise ``(h, w)`` float32 in about [-amp, amp]."""
    ch = max(2, int(round(cells * h / max(h, w))) + 1)
    cw = max(2, int(round(cells * w / max(h, w))) + 1)
    small = rng.uniform(-amp, amp, (ch, cw)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def add_texture(img: np.ndarray, rng: np.random.Generator, *, low: float = 12.0,
                fine: float = 4.0, cells: int = 6) -> np.ndarray:
    h, w = img.shape[:2]
    n = smooth_noise(rng, h, w, cells, low)
    n += smooth_noise(rng, h, w, cells * 6, low * 0.4)
    if fine > 0:
        n += rng.normal(0.0, fine, (h, w)).astype(np.float32)
    out = img.astype(np.float32) + n[:, :, None]
    return np.clip(out, 0, 255).astype(np.uint8)


def muted(rng: np.random.Generator, v: tuple[float, float] = (0.35, 0.8),
           s: tuple[float, float] = (0.03, 0.28)) -> tuple[int, int, int]:
    return hsv_bgr(rng.uniform(0, 1), rng.uniform(*s), rng.uniform(*v))


def scale_color(c: Sequence[int], k: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(x * k, 0, 255)) for x in c)  # type: ignore[return-value]


def draw_facade(img: np.ndarray, rng: np.random.Generator, x0: int, x1: int, y0: int, y1: int,
                unit: float) -> None:
    """A building front between rows y0..y1: wall colour, windows or a shop window, a door."""
    wall = muted(rng, (0.35, 0.85))
    cv2.rectangle(img, (x0, y0), (x1, y1), wall, -1)
    kind = rng.choice(["windows", "shop", "bricks"], p=[0.5, 0.25, 0.25])
    u = max(unit, 4.0)
    if kind == "bricks":
        bh = max(3, int(u * 0.35))
        dark = scale_color(wall, 0.82)
        for i, y in enumerate(range(y0, y1, bh)):
            cv2.line(img, (x0, y), (x1, y), dark, 1)
            off = (i % 2) * bh
            for x in range(x0 + off, x1, 2 * bh):
                cv2.line(img, (x, y), (x, min(y + bh, y1)), dark, 1)
    if kind in ("windows", "bricks"):
        ww, wh = int(u * rng.uniform(1.0, 1.8)), int(u * rng.uniform(1.2, 2.2))
        gx, gy = int(ww * rng.uniform(1.6, 2.6)), int(wh * rng.uniform(1.5, 2.2))
        glass = hsv_bgr(rng.uniform(0.5, 0.65), rng.uniform(0.1, 0.35), rng.uniform(0.2, 0.5))
        frame = scale_color(wall, rng.uniform(0.6, 1.25))
        ox = x0 + int(rng.uniform(0, gx))
        for y in range(y0 + gy // 3, y1 - wh, gy):
            for x in range(ox, x1 - ww, gx):
                cv2.rectangle(img, (x - 2, y - 2), (x + ww + 2, y + wh + 2), frame, -1)
                cv2.rectangle(img, (x, y), (x + ww, y + wh), glass, -1)
                glint = scale_color(glass, 1.5)
                cv2.line(img, (x, y + wh // 3), (x + ww, y), glint, 1, cv2.LINE_AA)
    else:
        top = y0 + int((y1 - y0) * rng.uniform(0.15, 0.45))
        glass = hsv_bgr(rng.uniform(0.5, 0.62), rng.uniform(0.1, 0.3), rng.uniform(0.25, 0.45))
        cv2.rectangle(img, (x0, top), (x1, y1), glass, -1)
        for x in range(x0, x1, max(8, int(u * rng.uniform(3, 6)))):
            cv2.line(img, (x, top), (x, y1), scale_color(wall, 0.7), max(1, int(u * 0.12)))
        cv2.rectangle(img, (x0, top - max(2, int(u * 0.5))), (x1, top),
                      muted(rng, (0.3, 0.7), (0.3, 0.7)), -1)
        for _ in range(3):  # reflections
            x = int(rng.uniform(x0, x1))
            cv2.line(img, (x, y1), (x + int(u * 2), top), scale_color(glass, 1.35),
                     max(1, int(u * 0.3)), cv2.LINE_AA)
    if rng.random() < 0.6:
        dw = int(u * 1.6)
        dx = int(rng.uniform(x0, max(x0 + 1, x1 - dw)))
        dh = int(min(u * 4.0, (y1 - y0) * 0.8))
        cv2.rectangle(img, (dx, y1 - dh), (dx + dw, y1), scale_color(wall, 0.45), -1)


def draw_ground(img: np.ndarray, rng: np.random.Generator, y0: int, *, vx: float, vy: float,
                rows: Sequence[int] = ()) -> None:
    """Pavement from row y0 down: base colour with a vertical gradient, tile seams converging to
    the vanishing point (vx, vy)."""
    h, w = img.shape[:2]
    if y0 >= h:
        return
    base = np.asarray(hsv_bgr(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.15),
                               rng.uniform(0.38, 0.68)), np.float32)
    grad = np.linspace(0.92, 1.08, h - y0, dtype=np.float32)[:, None, None]
    img[y0:] = np.clip(base[None, None, :] * grad, 0, 255).astype(np.uint8)
    seam = tuple(int(c) for c in base * 0.8)
    if rng.random() < 0.8:
        for y in rows:
            if y0 < y < h:
                cv2.line(img, (0, int(y)), (w, int(y)), seam, 1, cv2.LINE_AA)
        n = int(rng.integers(8, 16))
        for i in range(-n, 2 * n):
            xb = i * w / n + rng.uniform(-3, 3)
            # line from the vanishing point through (xb, h), clipped to the ground
            t0 = (y0 - vy) / max(h - vy, 1e-3)
            xa = vx + (xb - vx) * t0
            cv2.line(img, (int(xa), y0), (int(xb), h), seam, 1, cv2.LINE_AA)
    # a kerb / band between facade and pavement
    cv2.rectangle(img, (0, y0), (w, y0 + max(2, (h - y0) // 40)), scale_color(base, 0.7), -1)


def crop_background(h: int, w: int, rng: np.random.Generator, floor_y: int) -> np.ndarray:
    """A random street / indoor / foliage background of ``(h, w, 3)`` BGR with its floor line at
    row ``floor_y`` (the person's feet stand below it)."""
    img = np.zeros((h, w, 3), np.uint8)
    kind = rng.choice(["street", "indoor", "foliage", "plain"], p=[0.55, 0.2, 0.15, 0.1])
    unit = h / 14.0
    floor_y = int(np.clip(floor_y, h * 0.3, h - 4))
    if kind == "street":
        x0 = int(rng.uniform(-w, 0))
        draw_facade(img, rng, x0, w, 0, floor_y, unit * rng.uniform(0.7, 1.4))
        draw_ground(img, rng, floor_y, vx=rng.uniform(-w, 2 * w), vy=floor_y - h * 0.4,
                    rows=[floor_y + int((h - floor_y) * t) for t in (0.2, 0.45, 0.75)])
    elif kind == "indoor":
        wall = muted(rng, (0.5, 0.9), (0.0, 0.15))
        img[:floor_y] = wall
        step = max(6, int(w * rng.uniform(0.2, 0.5)))
        for x in range(int(rng.uniform(0, step)), w, step):
            cv2.line(img, (x, 0), (x, floor_y), scale_color(wall, 0.8), max(1, int(unit * 0.15)))
        for _ in range(2):
            x = int(rng.uniform(0, w))
            cv2.ellipse(img, (x, int(unit)), (int(unit * 1.5), int(unit * 0.4)), 0, 0, 360,
                        scale_color(wall, 1.3), -1, cv2.LINE_AA)
        floor = muted(rng, (0.4, 0.8), (0.0, 0.2))
        img[floor_y:] = floor
        for y in range(floor_y, h, max(4, int(unit * 1.2))):
            cv2.line(img, (0, y), (w, y), scale_color(floor, 0.88), 1)
    elif kind == "foliage":
        img[:] = hsv_bgr(rng.uniform(0.55, 0.62), rng.uniform(0.1, 0.3), rng.uniform(0.6, 0.9))
        for _ in range(int(rng.integers(12, 30))):
            c = hsv_bgr(rng.uniform(0.2, 0.35), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.5))
            cx, cy = int(rng.uniform(0, w)), int(rng.uniform(-h * 0.1, floor_y))
            r = int(unit * rng.uniform(1.0, 3.5))
            cv2.circle(img, (cx, cy), r, c, -1, cv2.LINE_AA)
        img[:floor_y] = cv2.GaussianBlur(img[:floor_y], (0, 0), max(1.0, unit * 0.3))
        draw_ground(img, rng, floor_y, vx=w / 2, vy=floor_y - h * 0.5)
    else:
        top = np.asarray(muted(rng, (0.3, 0.9)), np.float32)
        bot = np.asarray(muted(rng, (0.2, 0.7)), np.float32)
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        img[:] = (top * (1 - t) + bot * t).astype(np.uint8)
    img = add_texture(img, rng, low=10.0, fine=3.0)
    sigma = rng.uniform(0.4, 1.3)
    return cv2.GaussianBlur(img, (0, 0), sigma)


def shadow(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, strength: float) -> None:
    """Darken a soft ellipse in place (a person's contact shadow)."""
    h, w = img.shape[:2]
    x0, x1 = int(max(0, cx - 2 * rx)), int(min(w, cx + 2 * rx + 1))
    y0, y1 = int(max(0, cy - 2 * ry)), int(min(h, cy + 2 * ry + 1))
    if x1 <= x0 or y1 <= y0:
        return
    xs = (np.arange(x0, x1, dtype=np.float32) - cx) / max(rx, 1e-3)
    ys = (np.arange(y0, y1, dtype=np.float32) - cy) / max(ry, 1e-3)
    d = ys[:, None] ** 2 + xs[None, :] ** 2
    k = 1.0 - strength * np.exp(-1.6 * d)
    roi = img[y0:y1, x0:x1]
    roi[:] = (roi.astype(np.float32) * k[:, :, None]).astype(np.uint8)


def occlude(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, frac: float,
            box: tuple[int, int, int, int] | None = None) -> None:
    """Draw random occluders over ``img`` covering roughly ``frac`` of the person's box
    ``(x, y, w, h)`` and clear the covered pixels from ``mask`` (both in place)."""
    if frac <= 0:
        return
    H, W = img.shape[:2]
    bx, by, bw, bh = box if box is not None else (0, 0, W, H)
    occ = np.zeros((H, W), np.uint8)
    kind = rng.choice(["pole", "bottom", "side", "bush"], p=[0.3, 0.3, 0.2, 0.2])
    col = muted(rng, (0.15, 0.75), (0.0, 0.5))
    layer = img.copy()
    if kind == "pole":
        pw = max(3, int(bw * min(0.5, frac * 1.2)))
        px = int(bx + rng.uniform(0.0, 1.0) * max(1, bw - pw))
        cv2.rectangle(layer, (px, 0), (px + pw, H), col, -1)
        cv2.rectangle(occ, (px, 0), (px + pw, H), 255, -1)
        hl = max(1, pw // 4)
        cv2.rectangle(layer, (px + hl, 0), (px + 2 * hl, H), scale_color(col, 1.3), -1)
    elif kind == "bottom":  # a bench, bin or car bonnet hiding the legs
        oh = int(bh * min(0.55, frac * 1.3))
        y = by + bh - oh
        x0 = int(bx - bw * rng.uniform(0, 0.5))
        x1 = int(bx + bw * rng.uniform(0.6, 1.5))
        pts = np.array([[x0, H], [x0, y + oh // 5], [x0 + oh // 4, y], [x1 - oh // 4, y],
                        [x1, y + oh // 5], [x1, H]], np.int32)
        cv2.fillPoly(layer, [pts], col, cv2.LINE_AA)
        cv2.fillPoly(occ, [pts], 255, cv2.LINE_AA)
        cv2.line(layer, (x0 + oh // 4, y + 2), (x1 - oh // 4, y + 2), scale_color(col, 1.4), 2)
    elif kind == "side":
        ow = int(bw * min(0.6, frac * 1.5))
        left = rng.random() < 0.5
        x0, x1 = (bx - bw, bx + ow) if left else (bx + bw - ow, bx + 2 * bw)
        y0 = int(by + bh * rng.uniform(0.1, 0.5))
        cv2.rectangle(layer, (x0, y0), (x1, H), col, -1)
        cv2.rectangle(occ, (x0, y0), (x1, H), 255, -1)
        cv2.rectangle(layer, (x0, y0), (x1, y0 + max(2, bh // 40)), scale_color(col, 1.4), -1)
    else:
        green = [hsv_bgr(rng.uniform(0.22, 0.36), rng.uniform(0.4, 0.8), rng.uniform(0.2, 0.5))
                 for _ in range(3)]
        top = int(by + bh * (1 - min(0.5, frac * 1.3)))
        for _ in range(int(rng.integers(5, 10))):
            cx = int(bx + rng.uniform(-0.2, 1.2) * bw)
            cy = int(rng.uniform(top, by + bh))
            r = int(bw * rng.uniform(0.15, 0.3))
            c = green[int(rng.integers(0, 3))]
            cv2.circle(layer, (cx, cy + r // 2), r, c, -1, cv2.LINE_AA)
            cv2.circle(occ, (cx, cy + r // 2), r, 255, -1, cv2.LINE_AA)
    a = occ.astype(np.float32)[:, :, None] / 255.0
    img[:] = (img.astype(np.float32) * (1 - a) + layer.astype(np.float32) * a).astype(np.uint8)
    mask[:] = (mask.astype(np.float32) * (1 - a[:, :, 0])).astype(np.uint8)
