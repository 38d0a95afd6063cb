"""Contact sheets: grid size, hit/miss frames, captions, and the HTML page."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np
import pytest

from pedsearch import contact_sheet as cs
from pedsearch.contact_sheet import contact_sheet, contact_sheet_html, sheet_size
from pedsearch.errors import InvalidInput


def _crop(h: int, w: int, bgr: tuple[int, int, int]) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = bgr
    return img


def _items(n: int) -> list[dict]:
    oks = [True, False, None]
    return [
        {"image": _crop(100 + 10 * i, 50, (40 * i % 255, 80, 160)), "title": f"#{i + 1} 0.{90 - i}",
         "subtitle": f"cam-{i % 3} 12:0{i % 10}:00 a long subtitle that has to wrap",
         "ok": oks[i % 3], "score": 0.9 - i / 100, "camera": f"cam-{i % 3}", "time": 1.7e9 + i}
        for i in range(n)
    ]


def test_sheet_has_the_expected_size(tmp_path):
    # thumb (128, 64): cell_w = max(64, 112) + 2*6 = 124; cell_h = 128 + 2*6 + (3*13 + 4) = 183
    # 10 items in 4 columns -> 3 rows: 3 * 183 = 549 high, 4 * 124 = 496 wide
    out = contact_sheet(_items(10), tmp_path / "s.png", cols=4)
    img = cv2.imread(str(out))
    assert img.shape == (549, 496, 3)
    assert sheet_size(10, cols=4) == (549, 496)
    # a title adds a 28-pixel band; fewer items than cols shrinks the width: 2 * 124
    out = contact_sheet(_items(2), tmp_path / "t.png", cols=8, title="query: red coat")
    assert cv2.imread(str(out)).shape == (28 + 183, 248, 3)


def test_frames_are_green_for_hits_red_for_misses(tmp_path):
    img = cv2.imread(str(contact_sheet(_items(3), tmp_path / "s.png", cols=3)))
    # cell 0 thumbnail box starts at x = (124 - 64) // 2 = 30, y = 6; the 3-px frame lies just
    # outside it, so pixel (y=4, x=28) is frame in cell 0, (4, 124 + 28) in cell 1
    assert tuple(img[4, 28]) == cs.OK_COLOR
    assert tuple(img[4, 124 + 28]) == cs.MISS_COLOR
    assert tuple(img[4, 248 + 28]) == cs.BACKGROUND  # ok=None: no frame
    # crops are letterboxed, not stretched: a 100x50 crop in a 128x64 box is scaled by 1.28
    # to 128x64 exactly; item 1 (110x50) is scaled by min(128/110, 64/50) = 1.1636 -> 128x58,
    # leaving 3 grey columns on each side
    assert tuple(img[6 + 64, 124 + 30]) == cs.LETTERBOX
    assert tuple(img[6 + 64, 124 + 30 + 32]) != cs.LETTERBOX


def test_captions_are_drawn(tmp_path):
    items = _items(1)
    with_text = cv2.imread(str(contact_sheet(items, tmp_path / "a.png")))
    items[0].update(title="", subtitle="")
    without = cv2.imread(str(contact_sheet(items, tmp_path / "b.png")))
    caption = slice(6 + 128 + 6, None)
    assert (with_text[caption] != without[caption]).any()
    assert (without[caption] == cs.BACKGROUND).all()


def test_missing_image_and_grey_or_bgra_crops_are_accepted(tmp_path):
    items = [
        {"image": None, "title": "gone"},
        {"image": np.full((40, 20), 128, np.uint8), "title": "grey"},
        {"image": np.full((40, 20, 4), 200, np.uint8), "title": "bgra"},
    ]
    assert cv2.imread(str(contact_sheet(items, tmp_path / "s.png"))).shape == sheet_size(3) + (3,)


def test_html_embeds_every_crop_with_its_metadata(tmp_path):
    items = _items(4)
    items[0]["title"] = "<b>#1</b>"
    page = contact_sheet_html(items, tmp_path / "s.html", title="red coat", thumb=(128, 64))
    text = page.read_text()
    blobs = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", text)
    assert len(blobs) == 4
    thumb = cv2.imdecode(np.frombuffer(base64.b64decode(blobs[0]), np.uint8), cv2.IMREAD_COLOR)
    assert thumb.shape == (128, 64, 3)
    assert "&lt;b&gt;#1&lt;/b&gt;" in text and "<b>#1</b>" not in text
    assert "score: 0.900" in text and "camera: cam-1" in text
    assert "time: 2023-11-14 22:13:20 UTC" in text  # 1.7e9 seconds
    assert text.count("class='hit'") == 2 and text.count("class='miss'") == 1


@pytest.mark.parametrize(
    "items, kwargs, match",
    [
        ([], {}, "at least one"),
        ([{"image": np.zeros((4, 4, 3), np.float32)}], {}, "uint8"),
        ([{"image": np.zeros((4, 4, 2), np.uint8)}], {}, "image must be"),
        ([{"image": None, "ok": "yes"}], {}, "ok must be"),
        (["crop.jpg"], {}, "mapping"),
        ([{"image": None}], {"cols": 0}, "cols"),
        ([{"image": None}], {"thumb": (8, 8)}, "thumb"),
    ],
)
def test_bad_items_are_rejected(tmp_path, items, kwargs, match):
    with pytest.raises(InvalidInput, match=match):
        contact_sheet(items, tmp_path / "s.png", **kwargs)


def test_non_png_target_is_rejected(tmp_path):
    with pytest.raises(InvalidInput, match=".png"):
        contact_sheet(_items(1), tmp_path / "s.jpg")


@pytest.mark.parametrize("time", [float("nan"), float("inf"), 1e20])
def test_a_time_that_is_no_date_is_printed_as_it_is(tmp_path, time):
    """fromtimestamp raised ValueError / OverflowError out of the sheet."""
    items = [{**_items(1)[0], "time": time}]
    assert contact_sheet(items, tmp_path / "s.png").is_file()
    assert str(time) in (contact_sheet_html(items, tmp_path / "s.html")).read_text()


def test_a_thumb_size_given_as_floats_is_taken_as_whole_pixels(tmp_path):
    out = contact_sheet(_items(2), tmp_path / "s.png", thumb=(64.7, 32.2))
    assert cv2.imread(str(out)).shape[:2] == sheet_size(2, thumb=(64, 32))
