"""Loaders for the published formats of the pedestrian datasets, mapped onto the canonical schema.

Every loader returns :class:`ImageRecord` s: one image, its namespaced identity, its camera where
the file name says it, its canonical attribute labels (``family -> value``, the form
:meth:`pedsearch.attributes.AttributeSchema.encode` takes) and its captions. The dataset's own
label names are translated by the tables in ``training/mappings/*.yaml`` (data, not code; each
judgement call is commented there).

Modules:
    ``peta``: PETA ``<subset>/archive/Label.txt`` + images
        (:func:`~training.datasets.peta.load_peta`).
    ``market``: Market-1501 attribute ``.mat``, the ``gallery_market.mat`` prediction format and
        Market-1501 / DukeMTMC-reID image folders.
    ``captions``: CUHK-PEDES, ICFG-PEDES and RSTPReid caption JSON, and the synthetic data set
        written in the CUHK-PEDES form.
    ``splits``: identity-disjoint train/val/test splits and re-id query/gallery splits.
    ``torch_data``: :class:`~training.datasets.torch_data.PedestrianDataset` and ``collate``.

Example:
    >>> from pedsearch.attributes import AttributeSchema
    >>> r = ImageRecord(path=pathlib.Path("x.jpg"), pid="peta/PRID/0001", source="peta",
    ...                 labels={"hat": "no", "upper_color": ["red"]},
    ...                 unannotated={"upper_color": ("brown",)})
    >>> target, mask = encode_record(r, AttributeSchema.default())
    >>> int(mask.sum())  # hat (2 values) + upper_color (11 values, brown masked)
    12
"""

from __future__ import annotations

import functools
import pathlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import yaml

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import ConfigError, InvalidInput

MAPPINGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "mappings"

@dataclass(frozen=True)
class ImageRecord:
    """One image of one person, in any source data set.

    Attributes:
        path: the image file; it may not exist for caption-only use of a caption file.
        pid: identity namespaced by source (``peta/PRID/0001``, ``market1501/0002``,
            ``cuhk-pedes/11004``), so identities of different sources never collide.
        source: data set name (``peta``, ``market1501``, ``dukemtmc``, ``cuhk-pedes``,
            ``icfg-pedes``, ``rstpreid``, ``synthetic``).
        subset: PETA subset, or the image folder of a re-id data set; ``""`` when none.
        camera: camera id when the file name says it (``a``/``b`` in PRID, ``c3`` in Market);
            ``None`` when unknown.
        labels: canonical attribute labels; a family absent here is unknown.
        unannotated: per family, values the source never annotates (Market has no brown upper
            clothing): their mask is 0 even though the family is known.
        captions: free-text descriptions stored with the image (may be empty).
        split: the split the source file assigns (``train``/``val``/``test``), or ``None``.
    """

    path: pathlib.Path
    pid: str
    source: str
    subset: str = ""
    camera: str | None = None
    labels: Mapping[str, str | list[str]] = field(default_factory=dict)
    unannotated: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    captions: tuple[str, ...] = ()
    split: str | None = None

    def __hash__(self) -> int:  # labels are a dict: hash what identifies the image
        return hash((self.path, self.pid))


def encode_record(
    record: ImageRecord, schema: AttributeSchema
) -> tuple[np.ndarray, np.ndarray]:
    """A record's labels as ``(target, mask)``, both ``(schema.dim,)`` float32.

    :meth:`AttributeSchema.encode` does the work; values in ``record.unannotated`` are then
    masked out, because "not one of the colours this data set offers" says nothing about them.
    """
    target, mask = schema.encode(record.labels)
    for fam_name, values in record.unannotated.items():
        if fam_name not in record.labels:
            continue
        for v in values:
            i = schema.index(fam_name, v)
            mask[i] = 0.0
            target[i] = 0.0
    return target, mask


@functools.cache
def load_mapping(name: str) -> dict[str, Any]:
    """The mapping table ``training/mappings/<name>.yaml`` as a dict.

    Raises:
        ConfigError: the file is missing or not a YAML mapping.
    """
    path = MAPPINGS_DIR / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"mapping table {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"mapping table {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"mapping table {path} must hold a mapping")
    return data


def check_family(schema: AttributeSchema, family: str, where: str) -> None:
    """``ConfigError`` unless ``family`` is a family of ``schema``."""
    try:
        schema.family(family)
    except InvalidInput:
        known = ", ".join(f.name for f in schema.families)
        raise ConfigError(f"{where}: unknown attribute family {family!r}; known: {known}") from None


def check_value(schema: AttributeSchema, family: str, value: str, where: str) -> str:
    """``value`` if it is a canonical value of ``family`` in ``schema``, else ``ConfigError``."""
    check_family(schema, family, where)
    fam = schema.family(family)
    if value not in fam.values:
        raise ConfigError(
            f"{where}: {value!r} is not a value of {family!r} (values: {', '.join(fam.values)})"
        )
    return value


def default_data_root() -> pathlib.Path | None:
    """The configured data root (``PEDSEARCH_PATHS__DATA_ROOT``, else ``../shared/data``)."""
    from pedsearch.config import load_settings

    return load_settings().paths.resolved_data_root()


__all__ = [
    "ImageRecord",
    "MAPPINGS_DIR",
    "check_family",
    "check_value",
    "default_data_root",
    "encode_record",
    "load_mapping",
]
