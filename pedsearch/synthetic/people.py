"""Synthetic identities: canonical attributes plus the appearance that makes one person unique.

A :class:`PersonSpec` holds two things: the labels every model learns (``attributes``, in the
values of :meth:`pedsearch.attributes.AttributeSchema.default`) and an :class:`Appearance` that
only identity cares about (body proportions, skin and hair colour, the exact RGB shade of each
garment, its texture, the shape of the hat, the colour of the bags). :func:`sample_person` draws
both with the correlations one sees on a street (dresses mostly on women, grey hair mostly on
seniors, sandals mostly with shorts and skirts) from a colour table that gives each named colour
a plausible range of shades, so "red" means many reds but never a pink or an orange.

Example:
    >>> import numpy as np
    >>> p = sample_person(7, np.random.default_rng(0))
    >>> p.person_id, sorted(p.attributes)[:3]
    (7, ['age', 'backpack', 'bag'])
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput

RGB = tuple[int, int, int]

#: Named colour -> ranges of (hue in degrees, saturation, value). Hue ranges may wrap past 360.
#: The ranges do not overlap in HSV, so a shade drawn for one name is never another name's.
COLOR_TABLE: dict[str, dict[str, tuple[float, float]]] = {
    "black": {"h": (0, 360), "s": (0.0, 0.25), "v": (0.07, 0.17)},
    "white": {"h": (0, 360), "s": (0.0, 0.05), "v": (0.88, 0.98)},
    "gray": {"h": (0, 360), "s": (0.0, 0.06), "v": (0.42, 0.64)},
    "red": {"h": (353, 367), "s": (0.72, 0.95), "v": (0.55, 0.88)},
    "pink": {"h": (328, 348), "s": (0.28, 0.55), "v": (0.86, 1.0)},
    "orange": {"h": (20, 30), "s": (0.85, 1.0), "v": (0.9, 1.0)},
    "brown": {"h": (18, 32), "s": (0.5, 0.72), "v": (0.28, 0.45)},
    "yellow": {"h": (48, 58), "s": (0.7, 0.95), "v": (0.88, 1.0)},
    "green": {"h": (95, 150), "s": (0.5, 0.85), "v": (0.35, 0.65)},
    "blue": {"h": (208, 228), "s": (0.55, 0.88), "v": (0.4, 0.8)},
    "purple": {"h": (268, 292), "s": (0.42, 0.7), "v": (0.38, 0.62)},
}

# Prior weights of garment colours (street clothing is mostly dark and neutral).
_UPPER_COLOR_W = {
    "black": 0.16, "white": 0.14, "gray": 0.12, "blue": 0.11, "red": 0.08, "green": 0.07,
    "brown": 0.06, "pink": 0.06, "purple": 0.05, "yellow": 0.07, "orange": 0.05,
}
_LOWER_COLOR_W = {
    "black": 0.28, "blue": 0.21, "gray": 0.14, "brown": 0.08, "white": 0.07, "green": 0.045,
    "red": 0.04, "pink": 0.035, "purple": 0.035, "yellow": 0.03, "orange": 0.03,
}
_ACCESSORY_COLORS = {"black": 0.35, "gray": 0.18, "brown": 0.17, "blue": 0.12, "red": 0.08,
                     "green": 0.06, "purple": 0.04}

TEXTURES = ("plain", "stripes", "check", "logo", "block", "raglan")
HAT_STYLES = ("cap", "beanie", "brim")


def shade_of(name: str, rng: np.random.Generator) -> RGB:
    """One RGB shade (0-255) of a named colour, drawn uniformly from its range in HSV.

    Raises:
        InvalidInput: ``name`` is not a colour of :data:`COLOR_TABLE`.
    """
    try:
        rg = COLOR_TABLE[name]
    except KeyError:
        raise InvalidInput(f"unknown colour {name!r}; known: {', '.join(COLOR_TABLE)}") from None
    h = (rng.uniform(*rg["h"]) % 360.0) / 360.0
    s = rng.uniform(*rg["s"])
    v = rng.uniform(*rg["v"])
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def color_name_of(rgb: Sequence[int]) -> str:
    """The named colour whose HSV range is nearest to ``rgb`` (exact inside a range)."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))
    h *= 360.0
    best, best_d = "", float("inf")
    for name, rg in COLOR_TABLE.items():
        lo, hi = rg["h"]
        # circular distance from the hue to the range's arc, in units of 60 degrees
        off = abs(((h - (lo + hi) / 2.0 + 180.0) % 360.0) - 180.0)
        dh = max(0.0, off - (hi - lo) / 2.0) / 60.0
        if rg["s"][1] <= 0.3:  # achromatic colours: hue is meaningless
            dh = 0.0
        ds = max(rg["s"][0] - s, 0.0, s - rg["s"][1])
        dv = max(rg["v"][0] - v, 0.0, v - rg["v"][1])
        d = dh + 2 * ds + 2 * dv
        if d < best_d:
            best, best_d = name, d
    return best


@dataclass(frozen=True)
class Appearance:
    """What makes one identity look like itself beyond its attribute labels.

    Lengths are fractions of the person's height (head top to soles = 1); colours are RGB.
    """

    height_scale: float  # metres / 1.7: children ~0.6, adults ~1
    shoulder_width: float  # x nominal shoulder half-width
    girth: float  # x nominal waist/hip width
    leg_ratio: float  # crotch to soles, fraction of height
    head_scale: float  # x nominal head height (children have big heads)
    skin_rgb: RGB
    hair_rgb: RGB
    hair_length: float  # how far long hair falls, fraction of height from the head top
    ponytail: bool
    upper_rgb: tuple[RGB, ...]  # one shade per upper_color value, same order
    lower_rgb: tuple[RGB, ...]
    upper_texture: str  # one of TEXTURES
    lower_texture: str
    shoe_rgb: RGB
    sole_rgb: RGB
    hat_style: str  # one of HAT_STYLES ("" when no hat)
    hat_rgb: RGB
    backpack_rgb: RGB
    bag_rgb: RGB
    handbag_rgb: RGB
    bag_side: int  # +1: bag hangs on the person's left hip (image right in front view)
    handbag_side: int
    stride: float  # x nominal leg swing
    phase0: float  # walking phase offset


@dataclass(frozen=True)
class PersonSpec:
    """One synthetic identity.

    Attributes:
        person_id: identity number, unique within a data set or scene.
        attributes: canonical labels, one entry per family of the default schema; ``single``
            families map to a value, ``multi`` families (colours) to a list of values.
        appearance: the identity-only look (see :class:`Appearance`).
    """

    person_id: int
    attributes: Mapping[str, str | list[str]]
    appearance: Appearance = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "person_id": self.person_id,
            "attributes": {k: (list(v) if not isinstance(v, str) else v)
                           for k, v in self.attributes.items()},
            "appearance": asdict(self.appearance),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PersonSpec":
        try:
            app = dict(data["appearance"])
            for k, v in app.items():
                if isinstance(v, list):
                    app[k] = (tuple(tuple(c) for c in v) if v and isinstance(v[0], list)
                              else tuple(v))
            return cls(int(data["person_id"]), dict(data["attributes"]), Appearance(**app))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed person record: {exc}") from None


def _pick(rng: np.random.Generator, weights: Mapping[str, float]) -> str:
    names = list(weights)
    p = np.asarray([weights[n] for n in names], np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _pick_colors(rng: np.random.Generator, weights: Mapping[str, float], n: int) -> list[str]:
    names = list(weights)
    p = np.asarray([weights[k] for k in names], np.float64)
    idx = rng.choice(len(names), size=n, replace=False, p=p / p.sum())
    return [names[int(i)] for i in idx]


def _yes(rng: np.random.Generator, p: float) -> str:
    return "yes" if rng.random() < p else "no"


def _skin(rng: np.random.Generator) -> RGB:
    # light to dark skin along a warm ramp
    light = np.array([250, 220, 196], np.float64)
    mid = np.array([204, 150, 110], np.float64)
    dark = np.array([105, 68, 48], np.float64)
    t = rng.uniform(0, 1)
    c = light + (mid - light) * (t / 0.55) if t < 0.55 else mid + (dark - mid) * ((t - 0.55) / 0.45)
    c = c * rng.uniform(0.95, 1.04)
    return tuple(int(x) for x in np.clip(c, 0, 255))  # type: ignore[return-value]


def _hair(rng: np.random.Generator, age: str) -> RGB:
    if age == "senior" and rng.random() < 0.75:
        v = rng.uniform(0.55, 0.9)
        r, g, b = colorsys.hsv_to_rgb(0.08, rng.uniform(0, 0.08), v)
        return (int(255 * r), int(255 * g), int(255 * b))
    kind = _pick(rng, {"black": 0.42, "dark": 0.3, "brown": 0.14, "blonde": 0.1, "auburn": 0.04})
    h, s, v = {
        "black": (0.07, (0.1, 0.35), (0.06, 0.14)),
        "dark": (0.07, (0.4, 0.6), (0.16, 0.26)),
        "brown": (0.07, (0.45, 0.65), (0.3, 0.45)),
        "blonde": (0.11, (0.35, 0.55), (0.7, 0.88)),
        "auburn": (0.03, (0.6, 0.8), (0.35, 0.5)),
    }[kind]
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(*s), rng.uniform(*v))
    return (int(r * 255), int(g * 255), int(b * 255))


def _contrasting(rng: np.random.Generator, against: Sequence[RGB], names: Mapping[str, float],
                 min_dist: float = 90.0) -> RGB:
    """A shade of a random named colour at least ``min_dist`` (RGB) from every colour given."""
    best, best_d = (128, 128, 128), -1.0
    for _ in range(12):
        c = shade_of(_pick(rng, names), rng)
        d = min(float(np.linalg.norm(np.subtract(c, a))) for a in against)
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def sample_person(person_id: int, rng: np.random.Generator) -> PersonSpec:
    """Draw one identity with realistic correlations between attributes.

    Args:
        person_id: identity number (``>= 0``).
        rng: the source of randomness; the same generator state gives the same person.

    Returns:
        A :class:`PersonSpec` whose ``attributes`` cover every family of the default schema.

    Raises:
        InvalidInput: ``person_id`` is negative or not an integer.
    """
    if isinstance(person_id, bool) or not isinstance(person_id, (int, np.integer)) or person_id < 0:
        raise InvalidInput(f"person_id must be a non-negative integer, got {person_id!r}")
    if not isinstance(rng, np.random.Generator):
        raise InvalidInput("rng must be a numpy.random.Generator (numpy.random.default_rng(seed))")

    female = rng.random() < 0.5
    gender = "female" if female else "male"
    age = _pick(rng, {"child": 0.08, "young": 0.42, "adult": 0.35, "senior": 0.15})
    p_long_hair = (0.4 if age == "senior" else 0.75) if female else 0.08
    hair = "long" if rng.random() < p_long_hair else "short"
    p_dress = {"child": 0.4, "senior": 0.3}.get(age, 0.35) if female else 0.015
    lower_type = "dress" if rng.random() < p_dress else "pants"
    if lower_type == "dress":
        lower_length = "short" if rng.random() < (0.25 if age == "senior" else 0.55) else "long"
    else:
        p_shorts = {"child": 0.35, "senior": 0.08}.get(age, 0.22)
        lower_length = "short" if rng.random() < p_shorts else "long"
    p_short_sleeve = 0.3 if age == "senior" else (0.7 if lower_length == "short" else 0.38)
    sleeve = "short" if rng.random() < p_short_sleeve else "long"
    hat = _yes(rng, 0.3 if age == "senior" else 0.15)
    backpack = _yes(rng, {"child": 0.4, "young": 0.35, "adult": 0.2, "senior": 0.1}[age])
    bag = _yes(rng, 0.28 if age == "adult" else 0.18)
    handbag = _yes(rng, (0.35 if age == "senior" else 0.25) if female else 0.05)
    if lower_length == "short":
        fw = {"sandals": 0.32, "sneakers": 0.36, "shoes": 0.22, "boots": 0.1}
    else:
        fw = {"sneakers": 0.42, "shoes": 0.33, "boots": 0.17, "sandals": 0.08}
    if age == "senior":
        fw["shoes"] *= 2.0
    if female and lower_type == "dress":
        fw["boots"] *= 1.6
    footwear = _pick(rng, fw)

    up_w = dict(_UPPER_COLOR_W)
    lo_w = dict(_LOWER_COLOR_W)
    if female:
        for c, k in (("pink", 2.2), ("purple", 1.6), ("red", 1.3), ("white", 1.2)):
            up_w[c] *= k
        for c, k in (("pink", 1.8), ("purple", 1.5), ("red", 1.5), ("white", 1.4)):
            lo_w[c] *= k
    upper_color = _pick_colors(rng, up_w, 2 if rng.random() < 0.2 else 1)
    lower_color = _pick_colors(rng, lo_w, 2 if rng.random() < 0.06 else 1)

    attributes: dict[str, str | list[str]] = {
        "gender": gender, "age": age, "hair": hair, "sleeve": sleeve,
        "lower_length": lower_length, "lower_type": lower_type, "hat": hat,
        "backpack": backpack, "bag": bag, "handbag": handbag,
        "upper_color": upper_color, "lower_color": lower_color, "footwear": footwear,
    }

    # -- identity-only appearance --------------------------------------------------------------
    if age == "child":
        height_scale = rng.uniform(0.58, 0.8)
        head_scale = rng.uniform(1.3, 1.45)
        leg_ratio = rng.uniform(0.41, 0.44)
        shoulder = rng.uniform(0.95, 1.05)
    else:
        height_scale = float(np.clip(rng.normal(0.95 if female else 1.0, 0.04), 0.84, 1.12))
        height_scale *= 0.98 if age == "senior" else 1.0
        head_scale = float(np.clip(rng.normal(1.0, 0.04), 0.9, 1.1))
        leg_ratio = float(np.clip(rng.normal(0.475, 0.012), 0.445, 0.505))
        shoulder = float(np.clip(rng.normal(0.9 if female else 1.0, 0.05), 0.78, 1.15))
    girth = float(np.clip(rng.normal({"adult": 1.05, "senior": 1.08}.get(age, 1.0), 0.07),
                          0.85, 1.3))
    hair_rgb = _hair(rng, age)
    if hair == "long":
        hair_length = rng.uniform(0.24, 0.36)
        ponytail = bool(rng.random() < 0.2)
    else:
        hair_length = rng.uniform(0.085, 0.1) if female and rng.random() < 0.5 else 0.0
        ponytail = False

    n_up = len(upper_color)
    upper_texture = (str(rng.choice(["stripes", "check", "block", "raglan"])) if n_up == 2
                     else _pick(rng, {"plain": 0.6, "stripes": 0.13, "check": 0.1, "logo": 0.17}))
    lower_texture = (str(rng.choice(["stripes", "check"])) if len(lower_color) == 2
                     else _pick(rng, {"plain": 0.88, "check": 0.08, "stripes": 0.04}))
    if lower_type == "pants" and len(lower_color) == 1:
        lower_texture = "plain" if rng.random() < 0.7 else lower_texture

    if footwear == "sneakers":
        shoe_rgb = (shade_of("white", rng) if rng.random() < 0.45
                    else shade_of(_pick(rng, {"black": 0.3, "gray": 0.2, "blue": 0.2, "red": 0.15,
                                              "green": 0.15}), rng))
        sole_rgb = shade_of("white", rng)
    elif footwear == "boots":
        shoe_rgb = shade_of(_pick(rng, {"black": 0.55, "brown": 0.45}), rng)
        sole_rgb = tuple(int(c * 0.6) for c in shoe_rgb)  # type: ignore[assignment]
    elif footwear == "sandals":
        shoe_rgb = shade_of(_pick(rng, {"brown": 0.6, "black": 0.4}), rng)
        sole_rgb = shoe_rgb
    else:
        shoe_rgb = shade_of(_pick(rng, {"black": 0.65, "brown": 0.35}), rng)
        sole_rgb = tuple(int(c * 0.5) for c in shoe_rgb)  # type: ignore[assignment]

    hat_style = str(rng.choice(HAT_STYLES)) if hat == "yes" else ""
    hat_rgb = _contrasting(rng, [hair_rgb], {**_ACCESSORY_COLORS, "white": 0.1, "yellow": 0.04})
    upper_rgb = tuple(shade_of(c, rng) for c in upper_color)
    lower_rgb = tuple(shade_of(c, rng) for c in lower_color)
    backpack_rgb = _contrasting(rng, upper_rgb, _ACCESSORY_COLORS, 70.0)
    bag_rgb = _contrasting(rng, upper_rgb, _ACCESSORY_COLORS, 70.0)
    handbag_rgb = _contrasting(rng, lower_rgb, {**_ACCESSORY_COLORS, "white": 0.08,
                                                  "pink": 0.05}, 70.0)

    appearance = Appearance(
        height_scale=float(height_scale), shoulder_width=float(shoulder), girth=girth,
        leg_ratio=float(leg_ratio), head_scale=float(head_scale), skin_rgb=_skin(rng),
        hair_rgb=hair_rgb, hair_length=float(hair_length), ponytail=ponytail,
        upper_rgb=upper_rgb, lower_rgb=lower_rgb, upper_texture=upper_texture,
        lower_texture=lower_texture, shoe_rgb=shoe_rgb, sole_rgb=sole_rgb,  # type: ignore[arg-type]
        hat_style=hat_style, hat_rgb=hat_rgb, backpack_rgb=backpack_rgb, bag_rgb=bag_rgb,
        handbag_rgb=handbag_rgb, bag_side=int(rng.choice([-1, 1])),
        handbag_side=int(rng.choice([-1, 1])), stride=float(rng.uniform(0.85, 1.15)),
        phase0=float(rng.uniform(0, 1)),
    )
    return PersonSpec(int(person_id), attributes, appearance)


def validate_attributes(attributes: Mapping[str, Any],
                        schema: AttributeSchema | None = None) -> None:
    """Check that ``attributes`` name every family of ``schema`` with canonical values.

    Raises:
        InvalidInput: a family is missing or a value is not canonical.
    """
    schema = schema or AttributeSchema.default()
    for fam in schema.families:
        if fam.name not in attributes:
            raise InvalidInput(f"attribute family {fam.name!r} missing")
        val = attributes[fam.name]
        vals = [val] if isinstance(val, str) else list(val)
        if (fam.kind == "single" and len(vals) != 1) or not vals:
            raise InvalidInput(f"attribute {fam.name!r} has {len(vals)} values")
        for v in vals:
            if v not in fam.values:
                raise InvalidInput(f"attribute {fam.name!r}: {v!r} is not one of {fam.values}")
