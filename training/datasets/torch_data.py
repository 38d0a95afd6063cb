"""The torch ``Dataset`` and ``collate`` the training job feeds its models with.

:class:`PedestrianDataset` turns :class:`~training.datasets.ImageRecord` s of any source into
samples ``{image, pid, attr_target, attr_mask, caption, index}``:

* the image resized to ``image_size``, ImageNet-normalised, with train-time augmentation that
  preserves colours (horizontal flip, pad-and-crop, mild brightness / contrast that scale all
  channels alike). There is never hue or saturation jitter: colours are labels;
* the identity as a contiguous class index (``pid_index``);
* the attribute target and mask of the canonical schema (unknown families masked);
* one caption: a stored one (CUHK-PEDES-form data, the synthetic set) or, for records with
  labels but no captions (PETA, Market), one of ``captions_per_image`` captions written by
  :func:`pedsearch.synthetic.captions.describe` from the labels. When an image is flipped,
  "left" and "right" in its caption are swapped.

Randomness comes from ``numpy.random.default_rng([seed, epoch, index])``, so a sample is the
same in any DataLoader worker and for any worker count; call :meth:`set_epoch` once per epoch
(like ``DistributedSampler.set_epoch``) to draw new augmentations. Tokenisation is left to the
caller: :func:`collate` returns the caption strings.

Example:
    >>> ds = PedestrianDataset(records, schema=schema, train=True)         # doctest: +SKIP
    >>> loader = DataLoader(ds, batch_size=32, collate_fn=collate)       # doctest: +SKIP
"""

from __future__ import annotations

import pathlib
import re
import zlib
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput, NotFound
from pedsearch.synthetic.captions import describe

from training.datasets import ImageRecord, encode_record

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LEFT_RIGHT = re.compile(r"\b(left|right|Left|Right)\b")
_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}


def read_rgb(path: str | pathlib.Path) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB.

    Raises:
        NotFound: the file does not exist.
        InvalidInput: the file is not an image OpenCV can decode.
    """
    p = pathlib.Path(path)
    if not p.is_file():
        raise NotFound(f"image {p} does not exist")
    img = cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise InvalidInput(f"image {p} cannot be decoded (not a JPEG/PNG/BMP file?)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def swap_left_right(text: str) -> str:
    """"left" <-> "right" (what a horizontal flip does to a description)."""
    return _LEFT_RIGHT.sub(lambda m: _SWAP[m.group(1)], text)


class PedestrianDataset(torch.utils.data.Dataset):
    """Person crops with identity, attribute target/mask and a caption.

    Args:
        records: the images (any loader of ``training.datasets``).
        schema: canonical attribute schema; ``attr_target`` / ``attr_mask`` have its ``dim``.
        image_size: ``(height, width)`` of the output images.
        train: draw augmentations and a random caption of the pool; otherwise the plain
            resized image and the first caption.
        captions_per_image: captions written from the labels of a record without stored
            captions (its fixed pool, like the two human captions per CUHK-PEDES image).
        seed: seed of every random draw (caption pools, augmentation, caption choice).
        pid_index: identity -> class index; default: the sorted identities of ``records``.
        pad: pixels padded on each side before the random crop back to ``image_size``.
        flip_p: probability of a horizontal flip.
        brightness: brightness factor drawn in ``[1 - b, 1 + b]`` (all channels alike).
        contrast: contrast factor drawn in ``[1 - c, 1 + c]`` (about the image's mean grey).

    Raises:
        InvalidInput: no records, a bad size or factor, or a record's pid missing from
            ``pid_index``.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        *,
        schema: AttributeSchema,
        image_size: tuple[int, int] = (256, 128),
        train: bool,
        captions_per_image: int = 2,
        seed: int = 0,
        pid_index: Mapping[str, int] | None = None,
        pad: int = 10,
        flip_p: float = 0.5,
        brightness: float = 0.2,
        contrast: float = 0.2,
    ) -> None:
        if not records:
            raise InvalidInput("PedestrianDataset needs at least one record")
        h, w = (int(v) for v in image_size)
        if h < 8 or w < 8:
            raise InvalidInput(f"image_size must be at least 8 x 8, got {image_size}")
        if captions_per_image < 1:
            raise InvalidInput(f"captions_per_image must be >= 1, got {captions_per_image}")
        if pad < 0 or not 0 <= flip_p <= 1 or not 0 <= brightness < 1 or not 0 <= contrast < 1:
            raise InvalidInput(
                "augmentation out of range: need pad >= 0, 0 <= flip_p <= 1, "
                f"0 <= brightness, contrast < 1 (got {pad}, {flip_p}, {brightness}, {contrast})"
            )
        self.records = list(records)
        self.schema = schema
        self.image_size = (h, w)
        self.train = bool(train)
        self.captions_per_image = int(captions_per_image)
        self.seed = int(seed)
        self.pad, self.flip_p = int(pad), float(flip_p)
        self.brightness, self.contrast = float(brightness), float(contrast)
        if pid_index is None:
            pid_index = {p: i for i, p in enumerate(sorted({r.pid for r in self.records}))}
        missing = sorted({r.pid for r in self.records} - set(pid_index))
        if missing:
            raise InvalidInput(f"pids missing from pid_index: {missing[:5]} ({len(missing)})")
        self.pid_index = dict(pid_index)
        self.epoch = 0
        self._mean = np.asarray(IMAGENET_MEAN, np.float32) * 255.0
        self._std = np.asarray(IMAGENET_STD, np.float32) * 255.0
        self._targets = [encode_record(r, schema) for r in self.records]
        self._pools: dict[int, tuple[str, ...]] = {}

    @property
    def num_pids(self) -> int:
        return len(self.pid_index)

    def set_epoch(self, epoch: int) -> None:
        """New augmentations and caption choices for ``epoch`` (same epoch, same samples)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def captions(self, index: int) -> tuple[str, ...]:
        """The caption pool of record ``index``: stored captions, else generated from labels.

        A record with neither captions nor labels has the pool ``("",)``.
        """
        pool = self._pools.get(index)
        if pool is None:
            r = self.records[index]
            if r.captions:
                pool = tuple(r.captions)
            elif r.labels:
                key = zlib.crc32(f"{r.pid}|{r.path}".encode())
                rng = np.random.default_rng([self.seed, key])
                pool = tuple(
                    describe(r.labels, rng, schema=self.schema)
                    for _ in range(self.captions_per_image)
                )
            else:
                pool = ("",)
            self._pools[index] = pool
        return pool

    def caption_pairs(self) -> list[tuple[int, str]]:
        """Every (record index, caption) pair, for text -> image evaluation."""
        return [(i, c) for i in range(len(self)) for c in self.captions(i) if c]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.records):
            raise IndexError(index)
        r = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        img = read_rgb(r.path)
        img = cv2.resize(img, (self.image_size[1], self.image_size[0]),
                         interpolation=cv2.INTER_LINEAR)
        pool = self.captions(index)
        caption = pool[int(rng.integers(len(pool)))] if self.train else pool[0]
        if self.train:
            img, flipped = self._augment(img, rng)
            if flipped:
                caption = swap_left_right(caption)
        x = (img.astype(np.float32) - self._mean) / self._std
        target, mask = self._targets[index]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))),
            "pid": self.pid_index[r.pid],
            "attr_target": torch.from_numpy(target),
            "attr_mask": torch.from_numpy(mask),
            "caption": caption,
            "index": index,
        }

    def _augment(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """Flip, pad-and-crop, brightness / contrast; ``(H, W, 3)`` uint8 in and out."""
        h, w = self.image_size
        flipped = bool(rng.random() < self.flip_p)
        if flipped:
            img = img[:, ::-1]
        if self.pad:
            p = self.pad
            fill = [float(v) for v in self._mean]  # ImageNet mean: zero after normalising
            img = cv2.copyMakeBorder(np.ascontiguousarray(img), p, p, p, p,
                                     cv2.BORDER_CONSTANT, value=fill)
            y0, x0 = int(rng.integers(0, 2 * p + 1)), int(rng.integers(0, 2 * p + 1))
            img = img[y0:y0 + h, x0:x0 + w]
        b = rng.uniform(1 - self.brightness, 1 + self.brightness)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        if b != 1.0 or c != 1.0:
            f = img.astype(np.float32)
            grey = float(f.mean())
            f = (f - grey) * c + grey  # the same factor on every channel keeps the hue
            img = np.clip(f * b, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(img), flipped


def collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Samples -> batch: ``image (B, 3, H, W)``, ``pid (B,)`` int64, ``attr_target (B, A)``,
    ``attr_mask (B, A)``, ``index (B,)`` int64 and ``caption``: a list of B strings (the
    caller tokenises them with the text encoder of its choice)."""
    if not batch:
        raise InvalidInput("collate needs at least one sample")
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "pid": torch.tensor([int(b["pid"]) for b in batch], dtype=torch.int64),
        "attr_target": torch.stack([b["attr_target"] for b in batch]),
        "attr_mask": torch.stack([b["attr_mask"] for b in batch]),
        "caption": [str(b["caption"]) for b in batch],
        "index": torch.tensor([int(b["index"]) for b in batch], dtype=torch.int64),
    }


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PedestrianDataset",
    "collate",
    "read_rgb",
    "swap_left_right",
]
