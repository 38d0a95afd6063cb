"""Pictures of the synthetic world for people to judge: a contact sheet of crops with their
labels, and scene frames with their truth boxes.

Example:
    >>> import tempfile
    >>> paths = write_preview(tempfile.mkdtemp(), seed=0, num_crops=4, scene_seconds=1.0)
    >>> [p.name for p in paths]
    ['crops.png', 'scene.png']
"""

from __future__ import annotations

import os
import pathlib

import cv2
import numpy as np

from pedsearch.contact_sheet import contact_sheet
from pedsearch.errors import InvalidInput
from pedsearch.synthetic.people import PersonSpec, sample_person
from pedsearch.synthetic.render import render_crop
from pedsearch.synthetic.scene import Scene, SceneConfig, SceneFrame


def label_line(p: PersonSpec) -> tuple[str, str]:
    """A short title and subtitle naming a person's attributes."""
    a = p.attributes
    carried = [k for k in ("hat", "backpack", "bag", "handbag") if a[k] == "yes"]
    title = f"#{p.person_id} {a['gender']} {a['age']}"
    sub = (f"{'/'.join(a['upper_color'])} {a['sleeve']}-sleeve, {'/'.join(a['lower_color'])} "
           f"{a['lower_length']} {a['lower_type']}, {a['hair']} hair, {a['footwear']}"
           + (f", {', '.join(carried)}" if carried else ""))
    return title, sub


def draw_truth(frame: SceneFrame) -> np.ndarray:
    """The frame with its truth boxes, person/track ids and visibility drawn on a copy."""
    img = frame.image.copy()
    for t in frame.truth:
        x, y, w, h = t.box
        color = (40, 200, 40) if t.visibility >= 0.5 else (40, 160, 230)
        cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), color, 1, cv2.LINE_AA)
        cv2.putText(img, f"p{t.person_id} t{t.track_id} {t.visibility:.2f}", (x, max(9, y - 3)),
                    cv2.FONT_HERSHEY_PLAIN, 0.8, color, 1, cv2.LINE_AA)
    return img


def write_preview(out_dir: str | os.PathLike[str], *, seed: int = 0, num_crops: int = 32,
                  scene_seconds: float = 30.0) -> list[pathlib.Path]:
    """Write ``crops.png`` (``num_crops`` dataset crops with their labels) and ``scene.png``
    (the busiest frame of each of two cameras, raw and with truth boxes) to ``out_dir``.

    Raises:
        InvalidInput: ``num_crops`` or ``scene_seconds`` out of range.
    """
    if not 1 <= num_crops <= 512:
        raise InvalidInput(f"num_crops must be in 1..512, got {num_crops}")
    if not 0 < scene_seconds <= 3600:
        raise InvalidInput(f"scene_seconds must be in (0, 3600], got {scene_seconds}")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0x9E1])
    items = []
    for i in range(num_crops):
        p = sample_person(i, rng)
        title, sub = label_line(p)
        items.append({"image": render_crop(p, rng), "title": title, "subtitle": sub})
    crops = contact_sheet(items, out / "crops.png", cols=8, thumb=(256, 128),
                          title=f"synthetic pedestrians, seed {seed}")

    scene = Scene(SceneConfig(num_cameras=2, num_people=12, duration_s=scene_seconds, fps=5.0,
                              seed=seed, max_people_per_camera=6))
    rows = []
    for cam in scene.camera_ids:
        best = max(scene.frames(cam), key=lambda f: (sum(t.visibility > 0.3 for t in f.truth),
                                                     -f.seq))
        rows.append(np.hstack([best.image, draw_truth(best)]))
    path = out / "scene.png"
    if not cv2.imwrite(str(path), np.vstack(rows)):
        raise InvalidInput(f"could not write {path}; check that the folder is writable")
    return [crops, path]
