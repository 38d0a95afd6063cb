"""A synthetic pedestrian world with ground truth.

One generator feeds both sides of pedsearch:

- training data: identities with attributes (:func:`sample_person`), rendered as crops
  (:func:`render_crop`) and written as a CUHK-PEDES-format data set with two captions per image
  (:func:`generate_dataset`);
- the ingest path: multi-camera scenes (:class:`Scene`) in which these people walk, occlude each
  other, leave and reappear in other cameras, with a truth box per person per frame and a
  per-camera track timeline.

Everything is deterministic by seed and drawn with OpenCV + numpy on the CPU.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> person = sample_person(1, rng)
    >>> render_crop(person, rng).shape
    (256, 128, 3)
"""

from pedsearch.synthetic.dataset import generate_dataset, split_ids, tokenize
from pedsearch.synthetic.people import (COLOR_TABLE, Appearance, PersonSpec, color_name_of,
                                        sample_person, shade_of)
from pedsearch.synthetic.render import (VIEWS, Light, render_crop, render_person,
                                        render_sprite)
from pedsearch.synthetic.scene import Scene, SceneConfig, SceneFrame, TrackSpan, TruthBox

__all__ = [
    "COLOR_TABLE", "Appearance", "Light", "PersonSpec", "Scene", "SceneConfig", "SceneFrame",
    "TrackSpan", "TruthBox", "VIEWS", "color_name_of", "generate_dataset", "render_crop",
    "render_person", "render_sprite", "sample_person", "shade_of", "split_ids", "tokenize",
]
