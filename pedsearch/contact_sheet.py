"""Contact sheets: a grid of pedestrian crops with captions, for people to look at.

Search results, evaluation failures and training samples are checked by eye. Two renderings:

- :func:`contact_sheet` draws a PNG with OpenCV: each crop letterboxed into a fixed thumbnail
  box (aspect ratio kept), a green / red frame when the item is a hit / a miss, and a title and
  a subtitle (wrapped to two lines) under it.
- :func:`contact_sheet_html` writes one self-contained HTML page with the crops embedded as
  base64 JPEGs and their score, camera and time, for an operator's browser.

An item is a mapping::

    {"image": bgr_uint8_array_or_None, "title": "#1 0.83", "subtitle": "cam-3 12:04:07",
     "ok": True, "score": 0.83, "camera": "cam-3", "time": 1718000000.0}

``image`` is an ``(H, W, 3)`` BGR (or ``(H, W)`` grey, ``(H, W, 4)`` BGRA) uint8 array, or
``None`` for a crop that is missing (drawn as a placeholder). Every other key is optional;
``score``, ``camera`` and ``time`` are shown only on the HTML page.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> crop = np.full((160, 70, 3), 90, np.uint8)
    >>> out = contact_sheet([{"image": crop, "title": "#1", "ok": True}] * 3,
    ...                     pathlib.Path(tempfile.mkdtemp()) / "s.png", cols=2)
    >>> sheet_size(3, cols=2) == cv2.imread(str(out)).shape[:2]
    True
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import pathlib
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from pedsearch.errors import InvalidInput

# Layout of the PNG sheet, in pixels. A cell is the thumbnail box plus the caption under it.
PAD = 6  # margin around the thumbnail box inside its cell; also room for the frame
FRAME = 3  # width of the green / red frame drawn just outside the thumbnail box
MIN_CAPTION_W = 112  # cells are at least this wide so captions stay readable
LINE_H = 13  # caption line height
CAPTION_LINES = 3  # title + two lines of subtitle
CAPTION_H = CAPTION_LINES * LINE_H + 4
HEADER_H = 28  # band for the sheet title, when one is given
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.38
HEADER_SCALE = 0.55

BACKGROUND = (245, 245, 245)
LETTERBOX = (205, 205, 205)
TEXT = (30, 30, 30)
SUBTEXT = (90, 90, 90)
OK_COLOR = (40, 170, 40)  # BGR green
MISS_COLOR = (40, 40, 220)  # BGR red


def sheet_size(
    n_items: int, *, cols: int = 8, thumb: tuple[int, int] = (128, 64), title: str | None = None
) -> tuple[int, int]:
    """``(height, width)`` in pixels of the sheet :func:`contact_sheet` draws.

    ``cell_w = max(thumb_w, MIN_CAPTION_W) + 2 * PAD`` and
    ``cell_h = thumb_h + 2 * PAD + CAPTION_H``; the grid has ``min(cols, n)`` columns and
    ``ceil(n / cols)`` rows, plus a ``HEADER_H`` band when a title is given.
    """
    th, tw = _check_layout(n_items, cols, thumb)
    used_cols = min(cols, n_items)
    rows = math.ceil(n_items / cols)
    cell_w = max(tw, MIN_CAPTION_W) + 2 * PAD
    cell_h = th + 2 * PAD + CAPTION_H
    return (HEADER_H if title else 0) + rows * cell_h, used_cols * cell_w


def contact_sheet(
    items: Sequence[Mapping[str, Any]],
    out_png: str | pathlib.Path,
    *,
    cols: int = 8,
    thumb: tuple[int, int] = (128, 64),
    title: str | None = None,
) -> pathlib.Path:
    """Draw crops in a grid with captions and hit/miss frames, and write a PNG.

    Args:
        items: the crops, in reading order (see the module docstring for the keys).
        out_png: output file; parent folders are created.
        cols: thumbnails per row.
        thumb: ``(height, width)`` of the thumbnail box; each crop is scaled to fit it with its
            aspect ratio kept.
        title: optional line drawn across the top (e.g. the query).

    Returns:
        The path written; the image is :func:`sheet_size` pixels.

    Raises:
        InvalidInput: no items, a malformed item, bad ``cols``/``thumb``, or the file cannot be
            written.
    """
    checked = [_check_item(i, it) for i, it in enumerate(items)]
    height, width = sheet_size(len(checked), cols=cols, thumb=thumb, title=title)
    th, tw = _check_layout(len(checked), cols, thumb)  # as ints: (16.7, 20) is (16, 20)
    cell_w = max(tw, MIN_CAPTION_W) + 2 * PAD
    cell_h = th + 2 * PAD + CAPTION_H
    sheet = np.empty((height, width, 3), np.uint8)
    sheet[:] = BACKGROUND
    y0 = 0
    if title:
        _put(sheet, _fit(_ascii(title), width - 2 * PAD, HEADER_SCALE, 1), (PAD, 19), HEADER_SCALE,
             TEXT, 1)
        y0 = HEADER_H
    for i, it in enumerate(checked):
        cx = (i % cols) * cell_w
        cy = y0 + (i // cols) * cell_h
        bx = cx + (cell_w - tw) // 2  # thumbnail box, centred in the cell
        by = cy + PAD
        if it["ok"] is not None:
            color = OK_COLOR if it["ok"] else MISS_COLOR
            sheet[by - FRAME : by + th + FRAME, bx - FRAME : bx + tw + FRAME] = color
        sheet[by : by + th, bx : bx + tw] = _thumbnail(it["image"], (th, tw))
        text_w = cell_w - 2 * PAD
        ty = by + th + PAD + LINE_H - 2
        _put(sheet, _fit(_ascii(it["title"]), text_w, FONT_SCALE, 1), (cx + PAD, ty), FONT_SCALE,
             TEXT, 1)
        for k, line in enumerate(_wrap(_ascii(it["subtitle"]), text_w, CAPTION_LINES - 1)):
            _put(sheet, line, (cx + PAD, ty + (k + 1) * LINE_H), FONT_SCALE, SUBTEXT, 1)
    path = pathlib.Path(out_png)
    if path.suffix.lower() != ".png":
        raise InvalidInput(f"contact sheet must be written to a .png file, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise InvalidInput(f"could not write {path}; check that the folder is writable")
    return path


def contact_sheet_html(
    items: Sequence[Mapping[str, Any]],
    out_html: str | pathlib.Path,
    *,
    title: str | None = None,
    thumb: tuple[int, int] = (256, 128),
    jpeg_quality: int = 90,
) -> pathlib.Path:
    """Write a self-contained HTML page of crop cards (base64 JPEG thumbnails and captions).

    Each card shows the crop (framed green / red when ``ok`` is True / False), its title and
    subtitle, and when present its ``score`` (3 decimals), ``camera`` and ``time`` (UNIX seconds
    are shown as UTC; ``datetime`` and strings as given).

    Args:
        items: the crops, in reading order (see the module docstring for the keys).
        out_html: output file; parent folders are created.
        title: page heading (e.g. the query).
        thumb: ``(height, width)`` of the embedded thumbnails (aspect ratio kept).
        jpeg_quality: JPEG quality of the thumbnails, 1..100.

    Returns:
        The path written.

    Raises:
        InvalidInput: no items, a malformed item, or bad ``thumb``/``jpeg_quality``.
    """
    checked = [_check_item(i, it) for i, it in enumerate(items)]
    th, tw = _check_layout(len(checked), 1, thumb)
    if not 1 <= int(jpeg_quality) <= 100:
        raise InvalidInput(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    cards = []
    for it in checked:
        ok, jpg = cv2.imencode(
            ".jpg", _thumbnail(it["image"], (th, tw)), [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
        )
        if not ok:  # pragma: no cover - OpenCV always encodes a uint8 BGR array
            raise InvalidInput("could not encode a thumbnail as JPEG")
        b64 = base64.b64encode(jpg.tobytes()).decode("ascii")
        cls = {True: "hit", False: "miss", None: ""}[it["ok"]]
        lines = [f"<div class='t'>{html.escape(it['title'])}</div>"]
        if it["subtitle"]:
            lines.append(f"<div>{html.escape(it['subtitle'])}</div>")
        for label, key in (("score", "score"), ("camera", "camera"), ("time", "time")):
            if key in it and it[key] is not None:
                lines.append(f"<div class='m'>{label}: {html.escape(_fmt(key, it[key]))}</div>")
        status = {True: "hit", False: "miss", None: ""}[it["ok"]]
        alt = html.escape(f"{it['title']} {status}".strip())
        cards.append(
            f"<figure class='{cls}'><img src='data:image/jpeg;base64,{b64}' width='{tw}' "
            f"height='{th}' alt='{alt}'><figcaption>{''.join(lines)}</figcaption></figure>"
        )
    heading = f"<h2>{html.escape(title)}</h2>" if title else ""
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title or 'contact sheet')}</title><style>"
        "body{font-family:sans-serif;margin:1em;background:#f5f5f5}"
        ".grid{display:flex;flex-wrap:wrap;gap:10px}"
        f"figure{{margin:0;padding:6px;background:#fff;width:{max(tw, 120)}px;"
        "border:1px solid #ddd;font-size:12px}"
        "figure img{display:block;margin:auto;border:3px solid transparent;background:#ccc}"
        "figure.hit img{border-color:#28aa28}figure.miss img{border-color:#dc2828}"
        "figcaption{margin-top:4px;overflow-wrap:anywhere}.t{font-weight:bold}.m{color:#555}"
        f"</style></head><body>{heading}<div class='grid'>{''.join(cards)}</div></body></html>"
    )
    path = pathlib.Path(out_html)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
def _check_layout(n_items: int, cols: int, thumb: Any) -> tuple[int, int]:
    if n_items < 1:
        raise InvalidInput("a contact sheet needs at least one item")
    if not isinstance(cols, (int, np.integer)) or cols < 1:
        raise InvalidInput(f"cols must be a positive integer, got {cols!r}")
    try:
        th, tw = (int(v) for v in thumb)
    except (TypeError, ValueError):
        raise InvalidInput(f"thumb must be (height, width), got {thumb!r}") from None
    if not (16 <= th <= 2048 and 16 <= tw <= 2048):
        raise InvalidInput(f"thumb sides must be 16..2048 pixels, got {thumb!r}")
    return th, tw


def _check_item(i: int, item: Any) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise InvalidInput(f"item {i} must be a mapping with an 'image' key, got {type(item)}")
    img = item.get("image")
    if img is not None:
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise InvalidInput(f"item {i}: image must be a uint8 numpy array (BGR), or None")
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
            raise InvalidInput(f"item {i}: image must be (H, W), (H, W, 3) or (H, W, 4), "
                               f"got {img.shape}")
        if img.shape[0] == 0 or img.shape[1] == 0:
            raise InvalidInput(f"item {i}: image is empty {img.shape}")
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    ok = item.get("ok")
    if ok is not None and not isinstance(ok, (bool, np.bool_)):
        raise InvalidInput(f"item {i}: ok must be True, False or None, got {ok!r}")
    out = dict(item)
    out.update(
        image=img,
        title=str(item.get("title") or ""),
        subtitle=str(item.get("subtitle") or ""),
        ok=None if ok is None else bool(ok),
    )
    return out


def _thumbnail(img: np.ndarray | None, box: tuple[int, int]) -> np.ndarray:
    """``(h, w, 3)`` uint8: ``img`` scaled to fit ``box`` (aspect kept), centred on grey."""
    th, tw = box
    out = np.empty((th, tw, 3), np.uint8)
    out[:] = LETTERBOX
    if img is None:
        cv2.line(out, (0, 0), (tw - 1, th - 1), (170, 170, 170), 1)
        cv2.line(out, (0, th - 1), (tw - 1, 0), (170, 170, 170), 1)
        _put(out, "no image", (max(2, tw // 2 - 24), th // 2 + 4), FONT_SCALE, TEXT, 1)
        return out
    ih, iw = img.shape[:2]
    s = min(th / ih, tw / iw)
    nh, nw = max(1, round(ih * s)), max(1, round(iw * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    small = cv2.resize(img, (nw, nh), interpolation=interp)
    y, x = (th - nh) // 2, (tw - nw) // 2
    out[y : y + nh, x : x + nw] = small
    return out


def _ascii(text: str) -> str:
    # Hershey fonts draw ASCII only; show anything else as '?' rather than garbage.
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text.replace("\n", " "))


def _width(text: str, scale: float, thick: int = 1) -> int:
    return cv2.getTextSize(text, FONT, scale, thick)[0][0]


def _fit(text: str, max_w: int, scale: float, thick: int = 1) -> str:
    if _width(text, scale, thick) <= max_w:
        return text
    while text and _width(text + "..", scale, thick) > max_w:
        text = text[:-1]
    return text + ".."


def _wrap(text: str, max_w: int, max_lines: int) -> list[str]:
    lines: list[str] = []
    words = text.split()
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while words and _width(line + " " + words[0], FONT_SCALE) <= max_w:
            line += " " + words.pop(0)
        lines.append(line)
    if words:  # text left over: mark the cut on the last line
        lines[-1] = _fit(lines[-1] + " " + " ".join(words), max_w, FONT_SCALE)
    return [_fit(line, max_w, FONT_SCALE) for line in lines]


def _put(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color, thick: int) -> None:
    cv2.putText(img, text, org, FONT, scale, color, thick, cv2.LINE_AA)


def _fmt(key: str, value: Any) -> str:
    if key == "score" and isinstance(value, (int, float, np.integer, np.floating)):
        return f"{float(value):.3f}"
    if key == "time":
        if isinstance(value, _dt.datetime):
            return value.isoformat(sep=" ", timespec="seconds")
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            try:
                t = _dt.datetime.fromtimestamp(float(value), tz=_dt.timezone.utc)
            except (OverflowError, ValueError, OSError):  # NaN, inf, beyond year 9999
                return str(value)
            return t.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)
