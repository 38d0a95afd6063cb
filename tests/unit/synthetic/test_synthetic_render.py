"""Rendering: sizes, determinism, and attributes that can be read back from the pixels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pedsearch.errors import InvalidInput
from pedsearch.synthetic._paint import Figure
from pedsearch.synthetic.people import PersonSpec, color_name_of, sample_person
from pedsearch.synthetic.render import (BODY_FRACTION, TOP_MARGIN, VIEWS, Light, render_crop,
                                        render_person, render_sprite)


def _people(n: int, seed: int = 0) -> list[PersonSpec]:
    rng = np.random.default_rng(seed)
    return [sample_person(i, rng) for i in range(n)]


def _with(p: PersonSpec, **changes: object) -> PersonSpec:
    attrs = dict(p.attributes)
    app = {}
    for k, v in changes.items():
        if k in attrs:
            attrs[k] = v  # type: ignore[assignment]
        else:
            app[k] = v
    return dataclasses.replace(p, attributes=attrs,
                               appearance=dataclasses.replace(p.appearance, **app))


@pytest.mark.parametrize("height", [64, 128, 256])
@pytest.mark.parametrize("view", VIEWS)
def test_render_person_size_and_content(height: int, view: str) -> None:
    for p in _people(4, seed=height):
        img, mask = render_person(p, rng=np.random.default_rng(0), height_px=height, view=view,
                                  pose_phase=0.3)
        assert img.shape == (height, height // 2, 3) and img.dtype == np.uint8
        assert mask.shape == (height, height // 2) and mask.dtype == np.uint8
        cover = (mask > 127).mean()
        assert 0.12 < cover < 0.6, cover
        ys, xs = np.nonzero(mask > 127)
        # head top near TOP_MARGIN, soles near the bottom margin: the figure fills the height
        assert ys.min() <= height * (TOP_MARGIN + 0.03) + 1
        assert ys.max() >= height * (TOP_MARGIN + BODY_FRACTION) - 3
        assert img[mask > 127].std() > 10


def test_render_is_deterministic() -> None:
    p = _people(1)[0]
    a = render_person(p, rng=np.random.default_rng(3), background="random", occlusion=0.3,
                      light=Light(0.9, (1.05, 1.0, 0.95)), blur=0.8, jpeg_quality=60)
    b = render_person(p, rng=np.random.default_rng(3), background="random", occlusion=0.3,
                      light=Light(0.9, (1.05, 1.0, 0.95)), blur=0.8, jpeg_quality=60)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c1 = render_crop(p, np.random.default_rng(11))
    c2 = render_crop(p, np.random.default_rng(11))
    c3 = render_crop(p, np.random.default_rng(12))
    assert np.array_equal(c1, c2) and not np.array_equal(c1, c3)


def test_render_crop_sizes_and_variation() -> None:
    people = _people(6, seed=4)
    rng = np.random.default_rng(0)
    crops = [render_crop(p, rng) for p in people]
    for c in crops:
        assert c.shape == (256, 128, 3) and c.std() > 15
    small = render_crop(people[0], rng, size=(96, 48), view="side", occlusion=0.3, blur=1.0,
                        jpeg_quality=40)
    assert small.shape == (96, 48, 3)


def test_occlusion_hides_part_of_the_person() -> None:
    p = _people(1, seed=9)[0]
    _, full = render_person(p, rng=np.random.default_rng(1))
    hidden = []
    for s in range(6):
        _, m = render_person(p, rng=np.random.default_rng(s), occlusion=0.4)
        hidden.append(1 - (m > 127).sum() / (full > 127).sum())
        assert (m <= full).all()
    assert max(hidden) > 0.05 and min(hidden) < 0.8


def _median_rgb(img: np.ndarray, mask: np.ndarray, rows: slice, cols: slice) -> tuple[int, ...]:
    sel = mask[rows, cols] > 250
    bgr = np.median(img[rows, cols][sel], axis=0)
    return tuple(int(v) for v in bgr[::-1])


def test_garment_colours_are_recoverable_from_pixels() -> None:
    """The torso and thigh pixels of a plain garment name the labelled colour."""
    h = 256
    checked = 0
    for p in _people(300, seed=1):
        a = p.appearance
        if a.upper_texture != "plain" or len(a.upper_rgb) != 1:
            continue
        p = _with(p, backpack="no", bag="no", hair="short", hair_length=0.0)
        img, mask = render_person(p, rng=np.random.default_rng(0), height_px=h, view="front")
        f = Figure(p, "front", 0.0)
        top = TOP_MARGIN * h
        body = BODY_FRACTION * h
        r0, r1 = int(top + (f.sh_y + 0.1) * body), int(top + f.waist_y * body)
        c = img.shape[1] // 2
        rgb = _median_rgb(img, mask, slice(r0, r1), slice(c - 6, c + 7))
        assert color_name_of(rgb) == p.attributes["upper_color"][0], (p.person_id, rgb)
        if (p.attributes["lower_type"], p.attributes["lower_length"]) == ("pants", "long") \
                and a.lower_texture == "plain":
            k0, k1 = int(top + (f.crotch_y + 0.05) * body), int(top + f.knee_y * body)
            lx = int(c - 0.047 * body)
            rgb = _median_rgb(img, mask, slice(k0, k1), slice(lx - 3, lx + 4))
            assert color_name_of(rgb) == p.attributes["lower_color"][0], (p.person_id, rgb)
        checked += 1
    assert checked > 100


@pytest.mark.parametrize(
    ("family", "a", "b", "views"),
    [
        ("hat", "no", "yes", VIEWS),
        ("backpack", "no", "yes", VIEWS),
        ("bag", "no", "yes", ("front", "back")),
        ("handbag", "no", "yes", ("front", "back")),
        ("sleeve", "long", "short", VIEWS),
        ("hair", "short", "long", VIEWS),
        ("lower_length", "long", "short", VIEWS),
        ("lower_type", "pants", "dress", VIEWS),
        ("footwear", "sneakers", "sandals", VIEWS),
        ("footwear", "shoes", "boots", VIEWS),
    ],
)
def test_each_attribute_changes_the_pixels(family: str, a: str, b: str,
                                           views: tuple[str, ...]) -> None:
    base = _with(_people(1, seed=21)[0], hat="no", backpack="no", bag="no", handbag="no",
                 hat_style="cap", hair_length=0.3)
    base = _with(base, upper_rgb=((200, 40, 40),), upper_color=["red"], upper_texture="plain",
                 lower_rgb=((40, 60, 160),), lower_color=["blue"], shoe_rgb=(30, 30, 30))
    for view in views:
        ia, ma = render_sprite(_with(base, **{family: a}), view=view, height_px=128)
        ib, mb = render_sprite(_with(base, **{family: b}), view=view, height_px=128)
        changed = (np.abs(ia.astype(int) - ib.astype(int)).max(axis=2) > 40).sum()
        assert changed > 20, (family, view, changed)


def test_side_view_mirror() -> None:
    p = _people(1, seed=2)[0]
    col, alpha = render_sprite(p, view="side", height_px=96)
    mcol, malpha = render_sprite(p, view="side", height_px=96, mirror=True)
    assert np.array_equal(alpha[:, ::-1], malpha)


def test_light_changes_brightness() -> None:
    img = np.full((4, 4, 3), 100, np.uint8)
    out = Light(1.2, (1.0, 1.0, 0.5)).apply(img)
    assert out[0, 0].tolist() == [60, 120, 120]  # BGR: blue halved


@pytest.mark.parametrize(
    "kwargs",
    [{"view": "top"}, {"height_px": 8}, {"occlusion": 0.9}, {"blur": -1.0},
     {"jpeg_quality": 0}, {"background": "sky"}, {"background": np.zeros((3, 3, 3), np.uint8)}],
)
def test_bad_arguments(kwargs: dict) -> None:
    p = _people(1)[0]
    with pytest.raises(InvalidInput):
        render_person(p, rng=np.random.default_rng(0), **kwargs)


def test_bad_crop_arguments() -> None:
    p = _people(1)[0]
    with pytest.raises(InvalidInput):
        render_crop(p, np.random.default_rng(0), size=(10, 10))
    with pytest.raises(InvalidInput):
        render_crop(p, np.random.default_rng(0), scale=2.0)
    with pytest.raises(InvalidInput):
        render_crop("not a person", np.random.default_rng(0))  # type: ignore[arg-type]
