"""The figure painter behind :mod:`pedsearch.synthetic.render` (private).

A figure is drawn in normalised body coordinates (head top y=0, soles y=1, body axis x=0, one
unit = the person's height) onto three canvases at once:

- ``col``: flat part colours, anti-aliased on black, so it is premultiplied by coverage;
- ``shade``: a multiplicative light factor (128 = 1.0): each part gets a dark rim, a lit core and
  a highlight toward the light, which a blur turns into a round, shaded look;
- ``mask``: coverage 0-255.

Later parts paint over earlier ones (painter's order per view). Garment patterns (stripes,
checks, colour blocks) are applied afterwards through a material map, so they follow every
visible pixel of the garment whatever covered it.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from pedsearch.synthetic.people import RGB, PersonSpec

_SHIFT = 4
_ONE = 1 << _SHIFT
DARK, MID, HIGH = 100, 128, 150
MAT_NONE, MAT_UPPER, MAT_LOWER = 0, 1, 2

Pt = tuple[float, float]


def bgr(rgb: Sequence[int], k: float = 1.0) -> tuple[int, int, int]:
    return (min(255, int(rgb[2] * k)), min(255, int(rgb[1] * k)), min(255, int(rgb[0] * k)))


def mix(a: Sequence[int], b: Sequence[int], t: float) -> RGB:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


_CIRCLE = np.linspace(0.0, 2 * math.pi, 20, endpoint=False)
_CIRCLE_CS = np.stack([np.cos(_CIRCLE), np.sin(_CIRCLE)], axis=1)
_ARC_N = 7
_ARC1 = np.linspace(-math.pi / 2, math.pi / 2, _ARC_N)
_ARC0 = np.linspace(math.pi / 2, 3 * math.pi / 2, _ARC_N)


def _ellipse_pts(c: Pt, ax: float, ay: float, a0: float = 0.0, a1: float = 360.0,
                 n: int = 20) -> np.ndarray:
    if a1 - a0 >= 360:
        cs = _CIRCLE_CS
    else:
        ts = np.radians(np.linspace(a0, a1, n))
        cs = np.stack([np.cos(ts), np.sin(ts)], axis=1)
    return np.asarray(c, np.float64) + cs * np.asarray([ax, ay])


def _capsule_unit(p0: Pt, p1: Pt) -> tuple[np.ndarray, np.ndarray]:
    """Unit offsets of the end caps of a capsule along p0 -> p1: ``(n, 2)`` at p1, at p0."""
    ang = math.atan2(p1[1] - p0[1], p1[0] - p0[0])
    a1 = ang + _ARC1
    a0 = ang + _ARC0
    return (np.stack([np.cos(a1), np.sin(a1)], axis=1),
            np.stack([np.cos(a0), np.sin(a0)], axis=1))


def _capsule_pts(p0: Pt, p1: Pt, r0: float, r1: float,
                 unit: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    u1, u0 = unit if unit is not None else _capsule_unit(p0, p1)
    return np.concatenate([np.asarray(p1) + r1 * u1, np.asarray(p0) + r0 * u0])


def chaikin(pts: Sequence[Pt], iters: int = 2) -> list[Pt]:
    """Corner-cutting smoothing of a closed polygon (rounder garments at no drawing cost)."""
    p = np.asarray(pts, np.float64)
    for _ in range(iters):
        q = np.concatenate([p[1:], p[:1]])
        p = np.stack([0.75 * p + 0.25 * q, 0.25 * p + 0.75 * q], axis=1).reshape(-1, 2)
    return p  # type: ignore[return-value]


class Painter:
    """Three canvases and the normalised -> pixel mapping of one figure.

    Args:
        height: canvas height in pixels.
        width: canvas width in pixels.
        body_px: the person's height in pixels.
        top_px: row of the head top.
        light_side: -1 when light comes from the image left, +1 from the right.
        materials: keep a material map (needed only for patterned garments).
    """

    def __init__(self, *, height: int, width: int, body_px: float, top_px: float,
                 light_side: int = -1, materials: bool = False) -> None:
        self.h, self.w = height, width
        self.col = np.zeros((height, width, 3), np.uint8)
        self.shade = np.full((height, width), MID, np.uint8)
        self.mask = np.zeros((height, width), np.uint8)
        self.mat = np.zeros((height, width), np.uint8) if materials else None
        self.k = body_px * _ONE
        self.ox = width / 2.0 * _ONE
        self.oy = top_px * _ONE
        self._o = np.asarray([self.ox, self.oy])
        self.body_px = body_px
        self.top_px = top_px
        self.light = light_side

    def _ipts(self, pts: Sequence[Pt]) -> np.ndarray:
        a = np.asarray(pts, np.float64)
        return np.rint(a * self.k + self._o).astype(np.int32)

    def poly(self, pts: Sequence[Pt], rgb: Sequence[int], *, k: float = 1.0, shade: bool = True,
             mat: int = MAT_NONE, soft: float = 1.0) -> None:
        """Fill a polygon in colour ``rgb`` (times ``k``), with rim/core/highlight shading.

        ``soft`` < 1 weakens the shading contrast (faces, flat patches).
        """
        if len(pts) < 3:
            return
        ip = self._ipts(pts)
        c = bgr(rgb, k)
        cv2.fillPoly(self.col, [ip], c, cv2.LINE_AA, _SHIFT)
        cv2.fillPoly(self.mask, [ip], 255, cv2.LINE_AA, _SHIFT)
        if self.mat is not None:
            cv2.fillPoly(self.mat, [ip], mat, cv2.LINE_8, _SHIFT)
        if not shade:
            cv2.fillPoly(self.shade, [ip], MID, cv2.LINE_AA, _SHIFT)
            return
        a = np.asarray(pts, np.float64)
        ctr = a.mean(axis=0)
        half = np.maximum((a.max(axis=0) - a.min(axis=0)) / 2.0, 1e-6)
        dark = int(MID - (MID - DARK) * soft)
        high = int(MID + (HIGH - MID) * soft)
        cv2.fillPoly(self.shade, [ip], dark, cv2.LINE_AA, _SHIFT)
        for scale, off, val in (((0.78, 0.9), 0.12, MID), ((0.32, 0.7), 0.38, high)):
            q = ctr + (a - ctr) * np.asarray(scale)
            q[:, 0] += self.light * off * half[0]
            q[:, 1] -= 0.25 * off * half[1]
            cv2.fillPoly(self.shade, [self._ipts(q)], val, cv2.LINE_AA, _SHIFT)

    def limb(self, p0: Pt, p1: Pt, r0: float, r1: float, rgb: Sequence[int], *, k: float = 1.0,
             mat: int = MAT_NONE) -> None:
        """A tapered capsule from ``p0`` (radius ``r0``) to ``p1`` (radius ``r1``), shaded as a
        cylinder lit from the side."""
        unit = _capsule_unit(p0, p1)
        ip = self._ipts(_capsule_pts(p0, p1, r0, r1, unit))
        c = bgr(rgb, k)
        cv2.fillPoly(self.col, [ip], c, cv2.LINE_AA, _SHIFT)
        cv2.fillPoly(self.mask, [ip], 255, cv2.LINE_AA, _SHIFT)
        if self.mat is not None:
            cv2.fillPoly(self.mat, [ip], mat, cv2.LINE_8, _SHIFT)
        cv2.fillPoly(self.shade, [ip], DARK, cv2.LINE_AA, _SHIFT)
        for rk, off, val in ((0.68, 0.18, MID), (0.26, 0.45, HIGH)):
            dx = self.light * off * (r0 + r1) / 2
            q0 = (p0[0] + dx, p0[1])
            q1 = (p1[0] + dx, p1[1])
            cv2.fillPoly(self.shade, [self._ipts(_capsule_pts(q0, q1, r0 * rk, r1 * rk, unit))],
                         val, cv2.LINE_AA, _SHIFT)

    def ellipse(self, c: Pt, ax: float, ay: float, rgb: Sequence[int], *, k: float = 1.0,
                shade: bool = True, a0: float = 0.0, a1: float = 360.0, mat: int = MAT_NONE,
                soft: float = 1.0) -> None:
        pts = _ellipse_pts(c, ax, ay, a0, a1)
        if a1 - a0 < 360:
            pts = np.vstack([pts, np.asarray(c)[None]])
        self.poly(pts, rgb, k=k, shade=shade, mat=mat, soft=soft)

    def line(self, p0: Pt, p1: Pt, width: float, rgb: Sequence[int], *, k: float = 1.0) -> None:
        """A flat band (straps, seams); width in body units."""
        self.limb(p0, p1, width / 2, width / 2, rgb, k=k)

    def dot(self, c: Pt, r: float, rgb: Sequence[int]) -> None:
        ip = self._ipts([c])[0]
        rad = max(int(round(r * self.k)), _ONE // 2)
        cv2.circle(self.col, (int(ip[0]), int(ip[1])), rad, bgr(rgb), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(self.shade, (int(ip[0]), int(ip[1])), rad, MID, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(self.mask, (int(ip[0]), int(ip[1])), rad, 255, -1, cv2.LINE_AA, _SHIFT)

    # -- patterns ------------------------------------------------------------------------------
    def pattern(self, mat: int, kind: str, alt_rgb: Sequence[int], *, y_split: float = 0.0) -> None:
        """Recolour every pixel of material ``mat`` that the pattern marks with ``alt_rgb``.

        kinds: ``stripes`` (horizontal bands), ``check`` (grid lines), ``block`` (all below
        ``y_split``).
        """
        if self.mat is None:
            return
        sel = self.mat == mat
        if not sel.any():
            return
        px = self.k / _ONE
        ys = (np.arange(self.h, dtype=np.float32) - self.oy / _ONE) / px
        xs = (np.arange(self.w, dtype=np.float32) - self.ox / _ONE) / px
        period = max(0.034, 4.5 / px)
        if kind == "stripes":
            on = ((ys / period) % 1.0 < 0.5)[:, None] & np.ones((1, self.w), bool)
        elif kind == "check":
            lw = max(0.25, 1.3 / (period * px))
            on = ((ys / period) % 1.0 < lw)[:, None] | ((xs / period + 0.5) % 1.0 < lw)[None, :]
        elif kind == "block":
            on = (ys >= y_split)[:, None] & np.ones((1, self.w), bool)
        else:
            return
        sel &= on
        a = self.mask[sel].astype(np.float32)[:, None] / 255.0
        self.col[sel] = (np.asarray(bgr(alt_rgb), np.float32)[None, :] * a).astype(np.uint8)

    # -- finish --------------------------------------------------------------------------------
    def finish(self, *, top_light: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Blend shading into colour -> (premultiplied BGR uint8, alpha uint8)."""
        sig = max(0.6, 0.011 * self.body_px)
        sh = cv2.GaussianBlur(self.shade, (0, 0), sig).astype(np.float32) * (1.0 / MID)
        rows = np.linspace(1.0 + top_light, 1.0 - top_light, self.h, dtype=np.float32)
        sh *= rows[:, None]
        out = self.col.astype(np.float32) * sh[:, :, None]
        np.clip(out, 0, 255, out=out)
        return out.astype(np.uint8), self.mask


# ---------------------------------------------------------------------------------------------
# the figure


class Figure:
    """Skeleton of one person for one view and walking phase, in body units."""

    def __init__(self, spec: PersonSpec, view: str, phase: float) -> None:
        a = spec.appearance
        at = spec.attributes
        self.spec, self.app, self.view = spec, a, view
        self.female = at["gender"] == "female"
        self.child = at["age"] == "child"
        hh = 0.13 * a.head_scale
        self.hh = hh
        self.hw = hh * (0.4 if view != "side" else 0.44)
        self.sh_y = hh + 0.035
        self.crotch_y = 1.0 - a.leg_ratio
        self.ankle_y = 0.962
        self.knee_y = self.crotch_y + 0.5 * (self.ankle_y - self.crotch_y)
        self.waist_y = self.sh_y + 0.56 * (self.crotch_y - self.sh_y)
        self.hem_y = self.crotch_y - 0.03
        self.sw = 0.108 * a.shoulder_width * (1.0 if not self.child else 0.95)
        self.waist_hw = (0.064 if self.female else 0.072) * a.girth
        self.hip_hw = (0.09 if self.female else 0.084) * a.girth
        self.thigh_r = 0.04 * a.girth
        self.phase = phase
        s = math.sin(2 * math.pi * phase)
        self.swing = s
        self.dy = 0.0
        if view == "side":
            self._side_legs(phase)
        else:
            self._front_legs(s)

    def _front_legs(self, s: float) -> None:
        hx = 0.047 * self.app.girth
        self.hip = [(-hx, self.crotch_y - 0.035), (hx, self.crotch_y - 0.035)]
        # leg 0 (image left) forward when s > 0: foot lower; the other lifts its heel
        legs = []
        for i, sign in ((0, 1.0), (1, -1.0)):
            fwd = sign * s
            lift = max(0.0, -fwd) * 0.022 * self.app.stride
            drop = max(0.0, fwd) * 0.006
            x = self.hip[i][0] * 0.95
            knee = (x + (0.004 if i == 0 else -0.004) * max(0.0, -fwd), self.knee_y - lift * 0.4)
            ankle = (x * 0.92, self.ankle_y - lift + drop)
            legs.append((self.hip[i], knee, ankle))
        self.legs = legs  # (hip, knee, ankle) per leg, image left first
        self.foot_dir = [0.0, 0.0]

    def _side_legs(self, phase: float) -> None:
        amp = math.radians(23) * self.app.stride
        hip = (0.0, self.crotch_y - 0.03)
        lt = self.knee_y - hip[1] + 0.01
        ls = self.ankle_y - self.knee_y
        legs = []
        for psi in (phase + 0.5, phase):  # far leg first, then near
            th = amp * math.sin(2 * math.pi * psi)
            flex = math.radians(38) * max(0.0, math.cos(2 * math.pi * psi)) ** 1.5 + math.radians(4)
            knee = (hip[0] + lt * math.sin(th), hip[1] + lt * math.cos(th))
            sh = th - flex
            ankle = (knee[0] + ls * math.sin(sh), knee[1] + ls * math.cos(sh))
            legs.append([hip, knee, ankle])
        low = max(legs[0][2][1], legs[1][2][1])
        self.dy = self.ankle_y - low  # the stance foot touches the ground
        self.legs = [tuple((p[0], p[1] + self.dy) for p in leg) for leg in legs]
        self.hip = [legs[0][0], legs[1][0]]
        self.foot_dir = [1.0, 1.0]

    def arms(self) -> list[tuple[Pt, Pt, Pt]]:
        """(shoulder, elbow, wrist) per arm; front/back: image left first; side: far first."""
        ua, fa = 0.16, 0.14
        if self.child:
            ua, fa = 0.15, 0.13
        s = self.swing
        if self.view == "side":
            amp = math.radians(20) * self.app.stride
            out = []
            sh = (0.004, self.sh_y + 0.022 + self.dy * 0.5)
            for sign in (1.0, -1.0):  # far arm swings with the near leg
                b = amp * sign * s
                flex = math.radians(12) + math.radians(18) * max(0.0, sign * s)
                el = (sh[0] + ua * math.sin(b), sh[1] + ua * math.cos(b))
                wr = (el[0] + fa * math.sin(b + flex), el[1] + fa * math.cos(b + flex))
                out.append((sh, el, wr))
            return out
        out = []
        for sign in (-1.0, 1.0):
            sh = (sign * (self.sw - 0.022), self.sh_y + 0.024)
            fwd = -sign * s  # arms swing opposite to the legs
            out_ang = math.radians(7) + 0.03 * max(0.0, fwd)
            shorten = 1.0 - 0.1 * abs(fwd)
            el = (sh[0] + sign * ua * math.sin(out_ang), sh[1] + ua * math.cos(out_ang) * shorten)
            wr = (el[0] + sign * fa * math.sin(out_ang * 0.6) - sign * 0.012 * max(0.0, fwd),
                  el[1] + fa * shorten * (1 - 0.15 * max(0.0, fwd)))
            out.append((sh, el, wr))
        return out


def paint_figure(p: Painter, spec: PersonSpec, view: str, phase: float) -> None:
    """Paint ``spec`` seen from ``view`` ("front", "back", "side" facing +x) at ``phase``."""
    f = Figure(spec, view, phase)
    if view == "side":
        _paint_side(p, f)
    else:
        _paint_front_back(p, f, back=(view == "back"))
    a = spec.appearance
    n_up = len(a.upper_rgb)
    if a.upper_texture in ("stripes", "check", "block"):
        alt = a.upper_rgb[1] if n_up > 1 else mix(a.upper_rgb[0], (0, 0, 0) if sum(
            a.upper_rgb[0]) > 200 else (255, 255, 255), 0.2)
        p.pattern(MAT_UPPER, a.upper_texture, alt, y_split=f.sh_y + 0.55 * (f.hem_y - f.sh_y))
    if a.lower_texture in ("stripes", "check"):
        alt = a.lower_rgb[1] if len(a.lower_rgb) > 1 else mix(a.lower_rgb[0], (0, 0, 0) if sum(
            a.lower_rgb[0]) > 200 else (255, 255, 255), 0.2)
        p.pattern(MAT_LOWER, a.lower_texture, alt)


# -- pieces ---------------------------------------------------------------------------------------


def _upper(f: Figure) -> RGB:
    return f.app.upper_rgb[0]


def _sleeve(f: Figure) -> RGB:
    a = f.app
    raglan = a.upper_texture == "raglan" and len(a.upper_rgb) > 1
    return a.upper_rgb[1] if raglan else a.upper_rgb[0]


def _lower(f: Figure) -> RGB:
    return f.app.lower_rgb[0]


def _paint_leg(p: Painter, f: Figure, leg: Sequence[Pt], *, k: float = 1.0) -> None:
    at = f.spec.attributes
    skin = f.app.skin_rgb
    hip, knee, ankle = leg
    tr = f.thigh_r
    if at["lower_type"] == "pants" and at["lower_length"] == "long":
        p.limb(hip, knee, tr + 0.007, 0.034, _lower(f), k=k, mat=MAT_LOWER)
        p.limb(knee, ankle, 0.034, 0.03, _lower(f), k=k, mat=MAT_LOWER)
        return
    p.limb(hip, knee, tr, 0.028, skin, k=k)
    p.limb(knee, ankle, 0.028, 0.019, skin, k=k)
    if at["lower_type"] == "pants":  # shorts: to just above the knee
        end = (hip[0] + (knee[0] - hip[0]) * 0.82, hip[1] + (knee[1] - hip[1]) * 0.82)
        p.limb(hip, end, tr + 0.01, tr + 0.004, _lower(f), k=k, mat=MAT_LOWER)


def _paint_foot(p: Painter, f: Figure, ankle: Pt, direction: float, *, k: float = 1.0) -> None:
    a = f.app
    fw = f.spec.attributes["footwear"]
    x, y = ankle
    skin = a.skin_rgb
    if direction:  # side view: the foot points along +x
        heel, toe = x - 0.022, x + 0.058
        top, bot = y - 0.012, y + 0.038
        if fw == "boots":
            p.limb((x - 0.002, y - 0.085), (x, y), 0.026, 0.026, a.shoe_rgb, k=k)
        if fw == "sandals":
            p.poly(chaikin([(heel, top), (x + 0.01, top - 0.004), (toe, bot - 0.016),
                            (toe, bot - 0.006), (heel, bot - 0.006)], 1), skin, k=k)
            p.poly([(heel - 0.003, bot - 0.008), (toe + 0.004, bot - 0.008), (toe + 0.004, bot),
                    (heel - 0.003, bot)], a.sole_rgb, k=k * 0.8, shade=False)
            p.line((x + 0.016, top + 0.003), (x + 0.03, bot - 0.008), 0.008, a.shoe_rgb, k=k)
            p.line((x - 0.012, top + 0.004), (x - 0.004, bot - 0.008), 0.007, a.shoe_rgb, k=k)
            return
        body = a.shoe_rgb
        pts = chaikin([(heel, top - (0.01 if fw == "sneakers" else 0.0)), (x + 0.012, top),
                       (toe - 0.006, bot - 0.018), (toe + (0.004 if fw == "sneakers" else 0.0),
                                                     bot - 0.004), (heel, bot)], 1)
        p.poly(pts, body, k=k)
        sole_h = 0.012 if fw == "sneakers" else 0.006
        p.poly([(heel - 0.002, bot - sole_h), (toe + 0.006, bot - sole_h), (toe + 0.005, bot),
                (heel - 0.002, bot)], a.sole_rgb, k=k, shade=False)
        if fw == "sneakers":
            p.line((x - 0.004, bot - 0.02), (x + 0.03, bot - 0.024), 0.006,
                   a.sole_rgb if sum(body) < 500 else (90, 90, 100), k=k)
        return
    # front/back view: an oval toe seen end-on
    hw = 0.026 if fw != "boots" else 0.028
    bot = y + 0.038
    if fw == "boots":
        p.limb((x, y - 0.085), (x, y), 0.027, 0.027, a.shoe_rgb, k=k)
    if fw == "sandals":
        p.ellipse((x, bot - 0.015), hw * 0.85, 0.016, skin, k=k)
        p.poly([(x - hw, bot - 0.006), (x + hw, bot - 0.006), (x + hw, bot), (x - hw, bot)],
               a.sole_rgb, k=k * 0.8, shade=False)
        p.line((x - hw * 0.8, bot - 0.017), (x + hw * 0.8, bot - 0.017), 0.008, a.shoe_rgb, k=k)
        return
    p.ellipse((x, bot - 0.016), hw, 0.02, a.shoe_rgb, k=k)
    sole_h = 0.01 if fw == "sneakers" else 0.005
    p.poly([(x - hw * 1.02, bot - sole_h), (x + hw * 1.02, bot - sole_h), (x + hw, bot),
            (x - hw, bot)], a.sole_rgb, k=k, shade=False)


def _paint_hand(p: Painter, f: Figure, wrist: Pt, elbow: Pt, *, k: float = 1.0) -> None:
    dx, dy = wrist[0] - elbow[0], wrist[1] - elbow[1]
    n = math.hypot(dx, dy) or 1.0
    c = (wrist[0] + dx / n * 0.018, wrist[1] + dy / n * 0.02)
    p.ellipse(c, 0.018, 0.024, f.app.skin_rgb, k=k, soft=0.6)


def _paint_arm(p: Painter, f: Figure, arm: Sequence[Pt], *, k: float = 1.0) -> None:
    sh, el, wr = arm
    sleeve = f.spec.attributes["sleeve"]
    skin = f.app.skin_rgb
    r_up, r_el, r_wr = 0.03, 0.024, 0.019
    if sleeve == "long":
        p.limb(sh, el, r_up + 0.004, r_el + 0.004, _sleeve(f), k=k, mat=MAT_UPPER)
        p.limb(el, wr, r_el + 0.004, r_wr + 0.005, _sleeve(f), k=k, mat=MAT_UPPER)
    else:
        p.limb(sh, el, r_up - 0.004, r_el, skin, k=k)
        p.limb(el, wr, r_el, r_wr, skin, k=k)
        end = (sh[0] + (el[0] - sh[0]) * 0.5, sh[1] + (el[1] - sh[1]) * 0.5)
        p.limb(sh, end, r_up + 0.006, r_up + 0.008, _sleeve(f), k=k, mat=MAT_UPPER)
    _paint_hand(p, f, wr, el, k=k)


def _paint_handbag(p: Painter, f: Figure, wrist: Pt, *, k: float = 1.0) -> None:
    c = f.app.handbag_rgb
    x, y = wrist
    top = y + 0.035
    w, h = 0.055, 0.07
    handle = mix(c, (0, 0, 0), 0.3)
    p.line((x - w * 0.5, top + 0.004), (x, y + 0.004), 0.008, handle, k=k)
    p.line((x + w * 0.5, top + 0.004), (x, y + 0.004), 0.008, handle, k=k)
    p.poly(chaikin([(x - w * 0.82, top), (x + w * 0.82, top), (x + w, top + h),
                    (x - w, top + h)], 1), c, k=k)
    p.line((x - w * 0.75, top + 0.014), (x + w * 0.75, top + 0.014), 0.006, mix(c, (0, 0, 0), 0.35),
           k=k)


def _paint_bag(p: Painter, f: Figure, cx: float, strap_from: Pt, *, k: float = 1.0,
               strap: bool = True, body: bool = True) -> None:
    """Shoulder (messenger) bag hanging at the hip at x=cx, strap from ``strap_from``."""
    c = f.app.bag_rgb
    top = f.hem_y - 0.045
    if strap:
        p.line(strap_from, (cx, top + 0.01), 0.013, mix(c, (0, 0, 0), 0.25), k=k)
    if body:
        w, h = 0.048, 0.075
        p.poly(chaikin([(cx - w, top), (cx + w, top), (cx + w, top + h), (cx - w, top + h)], 1),
               c, k=k)
        p.poly([(cx - w, top), (cx + w, top), (cx + w * 0.95, top + h * 0.42),
                (cx - w * 0.95, top + h * 0.42)], mix(c, (0, 0, 0), 0.18), k=k, soft=0.5)


def _paint_head(p: Painter, f: Figure, *, back: bool) -> None:
    a = f.app
    at = f.spec.attributes
    hh, hw = f.hh, f.hw
    c = (0.0 if f.view != "side" else 0.008, hh * 0.52)
    skin, hair = a.skin_rgb, a.hair_rgb
    long_hair = at["hair"] == "long"
    detail = p.body_px >= 90
    if f.view == "side":
        # hair cap toward the back, face toward the front
        p.ellipse((c[0] - 0.006, c[1] - 0.004), hw * 1.06, hh * 0.53, hair)
        p.ellipse((c[0] + 0.008, c[1] + 0.01), hw * 0.9, hh * 0.46, skin, soft=0.7)
        p.poly([(c[0] + hw * 0.85, c[1]), (c[0] + hw * 1.08, c[1] + hh * 0.12),
                (c[0] + hw * 0.85, c[1] + hh * 0.16)], skin, soft=0.5)  # nose
        ear = mix(skin, (0, 0, 0), 0.12)
        p.ellipse((c[0] - hw * 0.18, c[1] + hh * 0.04), hw * 0.16, hh * 0.12, ear, soft=0.4)
        # the hair line over the top and back of the head
        p.poly(chaikin([(c[0] - hw * 1.06, c[1]), (c[0] - hw, c[1] - hh * 0.3),
                        (c[0] - hw * 0.2, c[1] - hh * 0.53), (c[0] + hw * 0.6, c[1] - hh * 0.45),
                        (c[0] + hw * 0.95, c[1] - hh * 0.18), (c[0] + hw * 0.4, c[1] - hh * 0.2),
                        (c[0] - hw * 0.35, c[1] - hh * 0.05), (c[0] - hw * 0.55, c[1] + hh * 0.3),
                        (c[0] - hw * 1.0, c[1] + hh * 0.32)], 1), hair)
        if detail:
            p.dot((c[0] + hw * 0.55, c[1] - hh * 0.02), 0.0045, (40, 30, 30))
        if long_hair:
            tail = a.hair_length
            p.poly(chaikin([(c[0] - hw * 0.3, c[1] - hh * 0.35), (c[0] - hw * 1.1, c[1]),
                            (c[0] - hw * 1.25, tail - 0.05), (c[0] - hw * 0.95, tail),
                            (c[0] - hw * 0.45, tail - 0.02), (c[0] - hw * 0.45, c[1] + hh * 0.4)],
                           2), hair)
        elif a.hair_length > 0:
            p.poly(chaikin([(c[0] - hw * 0.5, c[1] - hh * 0.2), (c[0] - hw * 1.1, c[1]),
                            (c[0] - hw * 1.05, c[1] + hh * 0.55),
                            (c[0] - hw * 0.4, c[1] + hh * 0.5)],
                           2), hair)
        if a.ponytail:
            p.limb((c[0] - hw * 0.9, c[1] - hh * 0.1), (c[0] - hw * 1.3, c[1] + hh * 0.9),
                   0.018, 0.01, hair)
    elif back:
        p.ellipse(c, hw * 1.05, hh * 0.53, hair)
        p.ellipse((c[0] - hw * 1.0, c[1] + hh * 0.06), hw * 0.14, hh * 0.12, skin, soft=0.4)
        p.ellipse((c[0] + hw * 1.0, c[1] + hh * 0.06), hw * 0.14, hh * 0.12, skin, soft=0.4)
        if long_hair:
            tail = a.hair_length
            p.poly(chaikin([(-hw * 0.95, c[1] - hh * 0.2), (hw * 0.95, c[1] - hh * 0.2),
                            (hw * 1.2, f.sh_y + 0.01), (hw * 1.05, tail - 0.02), (0, tail + 0.01),
                            (-hw * 1.05, tail - 0.02), (-hw * 1.2, f.sh_y + 0.01)], 2), hair)
        elif a.hair_length > 0:
            p.poly(chaikin([(-hw * 1.05, c[1]), (hw * 1.05, c[1]), (hw * 1.08, c[1] + hh * 0.55),
                            (-hw * 1.08, c[1] + hh * 0.55)], 2), hair)
        if a.ponytail:
            p.limb((0, c[1] + hh * 0.1), (0.004, c[1] + hh * 1.1), 0.02, 0.012, hair)
    else:
        p.ellipse((0, c[1] - 0.004), hw * 1.07, hh * 0.535, hair)
        if a.hair_length > 0 and not long_hair:  # bob: hair frames the face down to the jaw
            p.poly(chaikin([(-hw * 1.1, c[1]), (hw * 1.1, c[1]), (hw * 1.12, c[1] + hh * 0.5),
                            (-hw * 1.12, c[1] + hh * 0.5)], 2), hair)
        p.ellipse((0, c[1] + 0.012), hw * 0.92, hh * 0.455, skin, soft=0.6)
        if detail:
            ey = c[1] + hh * 0.05
            for sx in (-1, 1):
                p.dot((sx * hw * 0.38, ey), 0.0045, (40, 30, 30))
            p.line((-hw * 0.2, c[1] + hh * 0.3), (hw * 0.2, c[1] + hh * 0.3), 0.004,
                   mix(skin, (120, 40, 40), 0.4))
        # fringe / hairline
        if f.female or long_hair:
            p.poly(chaikin([(-hw * 1.02, c[1] + hh * 0.08), (-hw * 0.9, c[1] - hh * 0.3),
                            (0, c[1] - hh * 0.48), (hw * 0.9, c[1] - hh * 0.3),
                            (hw * 1.02, c[1] + hh * 0.08), (hw * 0.55, c[1] - hh * 0.2),
                            (-hw * 0.2, c[1] - hh * 0.12)], 1), hair)
        else:
            p.poly(chaikin([(-hw * 1.0, c[1] - hh * 0.05), (-hw * 0.85, c[1] - hh * 0.35),
                            (0, c[1] - hh * 0.5), (hw * 0.85, c[1] - hh * 0.35),
                            (hw * 1.0, c[1] - hh * 0.05), (hw * 0.6, c[1] - hh * 0.25),
                            (0, c[1] - hh * 0.28), (-hw * 0.6, c[1] - hh * 0.25)], 1), hair)
    if at["hat"] == "yes":
        _paint_hat(p, f, c)


def _paint_long_hair_front(p: Painter, f: Figure, *, behind: bool) -> None:
    a = f.app
    hh, hw = f.hh, f.hw
    cy = hh * 0.52
    tail = a.hair_length
    if behind:
        p.poly(chaikin([(-hw * 1.05, cy - hh * 0.2), (hw * 1.05, cy - hh * 0.2),
                        (hw * 1.3, f.sh_y + 0.01), (hw * 1.2, tail), (-hw * 1.2, tail),
                        (-hw * 1.3, f.sh_y + 0.01)], 2), a.hair_rgb, k=0.8)
    else:  # strands falling over the shoulders
        for s in (-1, 1):
            p.poly(chaikin([(s * hw * 0.85, cy), (s * hw * 1.12, cy - hh * 0.05),
                            (s * hw * 1.45, f.sh_y + 0.02),
                            (s * hw * 1.35, min(tail, f.sh_y + 0.09)),
                            (s * hw * 1.0, min(tail, f.sh_y + 0.1) - 0.01),
                            (s * hw * 0.8, cy + hh * 0.45)], 2), a.hair_rgb)


def _paint_hat(p: Painter, f: Figure, c: Pt) -> None:
    a = f.app
    hh, hw = f.hh, f.hw
    col = a.hat_rgb
    dark = mix(col, (0, 0, 0), 0.3)
    top = c[1] - hh * 0.53
    if a.hat_style == "beanie":
        p.ellipse((c[0], c[1] - hh * 0.12), hw * 1.1, hh * 0.46, col, a0=180, a1=360)
        p.poly([(c[0] - hw * 1.12, c[1] - hh * 0.14), (c[0] + hw * 1.12, c[1] - hh * 0.14),
                (c[0] + hw * 1.1, c[1] - hh * 0.02), (c[0] - hw * 1.1, c[1] - hh * 0.02)], dark)
        return
    if a.hat_style == "brim":
        crown_b = c[1] - hh * 0.22
        p.poly(chaikin([(c[0] - hw * 0.85, crown_b), (c[0] - hw * 0.8, top - hh * 0.12),
                        (c[0] + hw * 0.8, top - hh * 0.12), (c[0] + hw * 0.85, crown_b)], 1), col)
        p.poly([(c[0] - hw * 0.86, crown_b - hh * 0.1), (c[0] + hw * 0.86, crown_b - hh * 0.1),
                (c[0] + hw * 0.86, crown_b), (c[0] - hw * 0.86, crown_b)], dark, shade=False)
        p.ellipse((c[0], crown_b), hw * 1.75, hh * 0.075, col)
        return
    # baseball cap
    p.ellipse((c[0], c[1] - hh * 0.1), hw * 1.08, hh * 0.45, col, a0=180, a1=360)
    if f.view == "side":
        p.poly(chaikin([(c[0] + hw * 0.5, c[1] - hh * 0.16), (c[0] + hw * 1.8, c[1] - hh * 0.1),
                        (c[0] + hw * 1.75, c[1] - hh * 0.04),
                        (c[0] + hw * 0.6, c[1] - hh * 0.07)], 1),
               dark)
    elif f.view == "front":
        p.ellipse((c[0], c[1] - hh * 0.12), hw * 1.2, hh * 0.16, dark, a0=0, a1=180)
    else:
        band_y = c[1] - hh * 0.12
        p.line((c[0] - hw * 0.9, band_y), (c[0] + hw * 0.9, band_y), 0.006, dark)


def _torso_front(f: Figure) -> list[Pt]:
    sw, sy = f.sw, f.sh_y
    wh, hy = f.waist_hw, f.hem_y
    hem = max(f.hip_hw, wh) * 1.05
    half = [(0.0, sy + 0.025), (0.036, sy - 0.008), (sw * 0.78, sy - 0.002), (sw, sy + 0.03),
            (sw * 0.99, sy + 0.08), (sw * 0.86, sy + 0.11), (wh, f.waist_y), (hem, hy),
            (0.0, hy + 0.006)]
    left = [(-x, y) for x, y in reversed(half[1:-1])]
    return chaikin(half[:-1] + [half[-1]] + left, 2)


def _torso_side(f: Figure) -> list[Pt]:
    sy, hy = f.sh_y, f.hem_y
    g = f.app.girth
    bust = 0.012 if (f.female and not f.child) else 0.0
    lean = 0.008
    pts = [(-0.028 + lean, sy - 0.012), (-0.054 * g + lean, sy + 0.025), (-0.056 * g, sy + 0.11),
           (-0.048 * g, f.waist_y), (-0.056 * g, hy), (0.056 * g, hy + 0.004),
           (0.05 * g, f.waist_y), ((0.058 + bust) * g, sy + 0.085), (0.05 * g + lean, sy + 0.02),
           (0.024 + lean, sy - 0.012)]
    return chaikin(pts, 2)


def _paint_pelvis_or_skirt(p: Painter, f: Figure, *, side: bool) -> None:
    at = f.spec.attributes
    lower = _lower(f)
    if at["lower_type"] == "dress":
        long = at["lower_length"] == "long"
        hem_y = (f.ankle_y - 0.045) if long else (f.knee_y - 0.035)
        if side:
            xs = []
            for hip, knee, ankle in f.legs:
                t = (hem_y - hip[1]) / max(knee[1] - hip[1], 1e-6)
                if t <= 1:
                    xs.append(hip[0] + (knee[0] - hip[0]) * t)
                else:
                    t2 = (hem_y - knee[1]) / max(ankle[1] - knee[1], 1e-6)
                    xs.append(knee[0] + (ankle[0] - knee[0]) * min(t2, 1.0))
            x0, x1 = min(xs) - 0.045, max(xs) + 0.05
            pts = [(-0.048 * f.app.girth, f.waist_y), (0.05 * f.app.girth, f.waist_y),
                   (0.07 * f.app.girth, f.crotch_y - 0.04), (x1, hem_y),
                   ((x0 + x1) / 2, hem_y + 0.008),
                   (x0, hem_y), (-0.07 * f.app.girth, f.crotch_y - 0.04)]
        else:
            hw = f.hip_hw * (1.3 if not long else 1.38)
            pts = [(-f.waist_hw, f.waist_y), (f.waist_hw, f.waist_y),
                   (f.hip_hw * 1.02, f.crotch_y - 0.04), (hw, hem_y), (hw * 0.5, hem_y + 0.008),
                   (0, hem_y + 0.004), (-hw * 0.5, hem_y + 0.008),
                   (-hw, hem_y), (-f.hip_hw * 1.02, f.crotch_y - 0.04)]
        p.poly(chaikin(pts, 1), lower, mat=MAT_LOWER)
        return
    if side:
        g = f.app.girth
        pts = [(-0.05 * g, f.waist_y), (0.05 * g, f.waist_y), (0.058 * g, f.crotch_y - 0.02),
               (0.03, f.crotch_y + 0.02 + f.dy), (-0.04, f.crotch_y + 0.02 + f.dy),
               (-0.062 * g, f.crotch_y - 0.03)]
    else:
        hx = abs(f.hip[0][0]) + f.thigh_r
        pts = [(-f.waist_hw, f.waist_y), (f.waist_hw, f.waist_y), (f.hip_hw, f.crotch_y - 0.05),
               (hx, f.crotch_y - 0.01), (0.0, f.crotch_y + 0.01), (-hx, f.crotch_y - 0.01),
               (-f.hip_hw, f.crotch_y - 0.05)]
    p.poly(chaikin(pts, 1), lower, mat=MAT_LOWER)


def _paint_torso(p: Painter, f: Figure, *, back: bool, side: bool) -> None:
    a = f.app
    skin = a.skin_rgb
    neck_top = (0.0 if not side else 0.004, f.hh * 0.8)
    p.limb(neck_top, (neck_top[0], f.sh_y + 0.01), f.hw * 0.42, f.hw * 0.46, skin)
    pts = _torso_side(f) if side else _torso_front(f)
    p.poly(pts, _upper(f), mat=MAT_UPPER)
    if not side and not back:
        # neckline: a little skin (short sleeves) or a collar seam
        if f.spec.attributes["sleeve"] == "short":
            p.ellipse((0, f.sh_y - 0.002), 0.03, 0.022, skin, a0=0, a1=180, soft=0.4)
        else:
            seam = mix(_upper(f), (0, 0, 0), 0.3)
            p.line((-0.03, f.sh_y - 0.004), (0, f.sh_y + 0.018), 0.006, seam)
            p.line((0.03, f.sh_y - 0.004), (0, f.sh_y + 0.018), 0.006, seam)
        if a.upper_texture == "logo":
            base = _upper(f)
            logo = mix(base, (255, 255, 255) if sum(base) < 380 else (0, 0, 0), 0.45)
            lx = 0.035 * (1 if a.phase0 > 0.5 else -1) * (0 if a.phase0 < 0.25 else 1)
            p.poly(chaikin([(lx - 0.025, f.sh_y + 0.05), (lx + 0.025, f.sh_y + 0.05),
                            (lx + 0.025, f.sh_y + 0.09), (lx - 0.025, f.sh_y + 0.09)], 1), logo,
                   soft=0.3)


def _paint_front_back(p: Painter, f: Figure, *, back: bool) -> None:
    at = f.spec.attributes
    a = f.app
    arms = f.arms()
    # person's left is image right in the front view, image left in the back view
    side_x = (lambda s: float(s)) if not back else (lambda s: -float(s))
    if at["hair"] == "long" and not back:
        _paint_long_hair_front(p, f, behind=True)
    if at["backpack"] == "yes" and not back:  # the pack's top shows behind the shoulders
        p.poly(chaikin([(-0.075, f.sh_y + 0.04), (-0.07, f.sh_y - 0.022), (0.07, f.sh_y - 0.022),
                        (0.075, f.sh_y + 0.04)], 1), a.backpack_rgb, k=0.85)
    for leg in f.legs:
        _paint_leg(p, f, leg)
    for leg in f.legs:
        _paint_foot(p, f, leg[2], 0.0)
    _paint_pelvis_or_skirt(p, f, side=False)
    bag_x = side_x(a.bag_side) * (f.hip_hw + 0.045)
    _paint_torso(p, f, back=back, side=False)
    for i, arm in enumerate(arms):
        _paint_arm(p, f, arm)
    if back:  # long hair falls down the back; the backpack sits on top of it
        _paint_head(p, f, back=True)
    if at["backpack"] == "yes":
        strap = mix(a.backpack_rgb, (0, 0, 0), 0.2)
        if back:
            top, h, w = f.sh_y + 0.005, 0.22 if not f.child else 0.18, 0.086
            p.line((-0.05, f.sh_y - 0.006), (-0.062, top + 0.03), 0.016, strap)
            p.line((0.05, f.sh_y - 0.006), (0.062, top + 0.03), 0.016, strap)
            p.poly(chaikin([(-w, top), (w, top), (w * 1.05, top + h), (-w * 1.05, top + h)], 2),
                   a.backpack_rgb)
            p.poly(chaikin([(-w * 0.75, top + h * 0.5), (w * 0.75, top + h * 0.5),
                            (w * 0.8, top + h * 0.93), (-w * 0.8, top + h * 0.93)], 2),
                   mix(a.backpack_rgb, (0, 0, 0), 0.15))
            p.line((-w * 0.7, top + h * 0.52), (w * 0.7, top + h * 0.52), 0.005,
                   mix(a.backpack_rgb, (255, 255, 255), 0.3))
        else:
            for s in (-1, 1):
                p.line((s * 0.052, f.sh_y - 0.008), (s * 0.066, f.sh_y + 0.13), 0.018, strap)
    if not back:
        _paint_head(p, f, back=False)
        if at["hair"] == "long":
            _paint_long_hair_front(p, f, behind=False)
    if at["bag"] == "yes":
        _paint_bag(p, f, bag_x, (-bag_x * 0.45, f.sh_y - 0.004))
    if at["handbag"] == "yes":
        i = 1 if side_x(a.handbag_side) > 0 else 0
        _paint_handbag(p, f, arms[i][2])


def _paint_side(p: Painter, f: Figure) -> None:
    at = f.spec.attributes
    a = f.app
    arms = f.arms()
    far_k = 0.78
    # seen facing +x: the person's right side is toward the camera
    near_bag = a.bag_side < 0
    near_handbag = a.handbag_side < 0
    _paint_arm(p, f, arms[0], k=far_k)
    if at["handbag"] == "yes" and not near_handbag:
        _paint_handbag(p, f, arms[0][2], k=far_k)
    if at["bag"] == "yes" and not near_bag:
        _paint_bag(p, f, -0.02, (0.02, f.sh_y), k=far_k, strap=False)
    _paint_leg(p, f, f.legs[0], k=0.85)
    _paint_foot(p, f, f.legs[0][2], 1.0, k=0.85)
    if at["backpack"] == "yes":
        top, h = f.sh_y + 0.0, 0.2 if not f.child else 0.17
        x1 = -0.045 * a.girth
        x0 = x1 - 0.085
        p.poly(chaikin([(x0 + 0.01, top), (x1 + 0.01, top - 0.005), (x1 + 0.01, top + h),
                        (x0, top + h)], 2), a.backpack_rgb)
        p.poly(chaikin([(x0 - 0.012, top + h * 0.45), (x0 + 0.02, top + h * 0.42),
                        (x0 + 0.02, top + h * 0.92), (x0 - 0.01, top + h * 0.9)], 1),
               mix(a.backpack_rgb, (0, 0, 0), 0.15))
    _paint_leg(p, f, f.legs[1])
    _paint_foot(p, f, f.legs[1][2], 1.0)
    _paint_pelvis_or_skirt(p, f, side=True)
    _paint_torso(p, f, back=False, side=True)
    if at["backpack"] == "yes":
        strap = mix(a.backpack_rgb, (0, 0, 0), 0.2)
        p.line((0.02, f.sh_y - 0.008), (0.035, f.sh_y + 0.07), 0.016, strap)
        p.line((0.035, f.sh_y + 0.07), (-0.03, f.sh_y + 0.14), 0.014, strap)
    if at["bag"] == "yes":
        if near_bag:
            _paint_bag(p, f, -0.01, (0.03, f.sh_y - 0.004))
        else:
            p.line((0.03, f.sh_y - 0.004), (0.045, f.sh_y + 0.1), 0.013,
                   mix(a.bag_rgb, (0, 0, 0), 0.25))
    _paint_head(p, f, back=False)
    _paint_arm(p, f, arms[1])
    if at["handbag"] == "yes" and near_handbag:
        _paint_handbag(p, f, arms[1][2])
