"""Market-1501 attributes (Lin et al., Pattern Recognition 2019) and Market/Duke image folders.

* :func:`load_market_attributes` reads ``market_attribute.mat`` (``train``: 751 identities,
  ``test``: 750; 27 attributes coded 1/2, age 1-4) into canonical labels per identity,
  translated by ``training/mappings/market1501.yaml``.
* :func:`read_market_predictions` / :func:`write_market_predictions` speak the N x 12
  evaluation format of ``gallery_market.mat``.
* :func:`load_reid_folder` turns a Market-1501 or DukeMTMC-reID folder
  (``bounding_box_train/``, ``bounding_box_test/``, ``query/``) into records with identity,
  camera and, given the attribute file, labels. File names are ``0002_c1s1_000451_03.jpg``
  (Market: identity, camera 1, sequence 1, frame, box) or ``0001_c2_f0046182.jpg`` (Duke);
  identity ``0000`` (junk boxes) and ``-1`` (distractors) are left out unless asked for.

Example:
    >>> mat = root / "market1501-attribute/market_attribute.mat"  # doctest: +SKIP
    >>> load_market_attributes(mat).labels("0002")["gender"]     # doctest: +SKIP
    'male'
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import ConfigError, InvalidInput, NotFound

from training.datasets import ImageRecord, check_family, check_value, load_mapping

Labels = dict[str, "str | list[str]"]

#: split name -> folder of the Market-1501 / DukeMTMC-reID release
REID_FOLDERS = {"train": "bounding_box_train", "gallery": "bounding_box_test", "query": "query"}
_REID_NAME = re.compile(r"^(-?\d+)_c(\d+)(?:s\d+)?_[^/]*\.(?:jpe?g|png)$", re.I)
JUNK_ID, DISTRACTOR_ID = 0, -1


class MarketTable:
    """Market-1501 / DukeMTMC-attribute codes -> canonical labels, as
    ``training/mappings/market1501.yaml`` (or ``dukemtmc.yaml``) says.

    A code mapped to ``null`` claims nothing: the family stays unknown for it (Duke's
    ``boots = no``). The ``predictions`` section (Market's evaluation file format) is optional.

    Raises:
        ConfigError: the table names a family or value the schema lacks, or is malformed.
    """

    def __init__(self, *, table: Mapping[str, Any], schema: AttributeSchema,
                 name: str = "market1501") -> None:
        where = f"training/mappings/{name}.yaml"
        self.schema = schema
        try:
            self.fields: dict[str, tuple[str, dict[int, str | None]]] = {
                name: (str(spec["family"]),
                       {int(k): None if v is None else str(v) for k, v in spec["codes"].items()})
                for name, spec in table["fields"].items()
            }
            self.present_code = int(table["present_code"])
            self.absent_code = int(table["absent_code"])
            self.colours: dict[str, dict[str, str]] = {
                fam: {str(k): str(v) for k, v in cols.items()}
                for fam, cols in table["colours"].items()
            }
            self.unannotated: dict[str, tuple[str, ...]] = {
                fam: tuple(str(v) for v in vals)
                for fam, vals in (table.get("unannotated") or {}).items()
            }
            pred = table.get("predictions")
            self.pred_columns: list[str] = [str(c) for c in pred["columns"]] if pred else []
            self.pred_upper: list[str] = [str(c) for c in pred["upper_color"]] if pred else []
            self.pred_lower: list[str] = [str(c) for c in pred["lower_color"]] if pred else []
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{where} is malformed: {exc!r}") from None
        for name, (fam, codes) in self.fields.items():
            check_family(schema, fam, f"{where}: fields.{name}")
            for v in codes.values():
                if v is not None:
                    check_value(schema, fam, v, f"{where}: fields.{name}")
        for fam, cols in self.colours.items():
            for v in cols.values():
                check_value(schema, fam, v, f"{where}: colours.{fam}")
        for fam, vals in self.unannotated.items():
            check_family(schema, fam, f"{where}: unannotated")
            for v in vals:
                check_value(schema, fam, v, f"{where}: unannotated.{fam}")
                if v in self.colours.get(fam, {}).values():
                    raise ConfigError(f"{where}: {fam}={v} is both annotated and unannotated")
        for c in self.pred_columns:
            if c not in self.fields:
                raise ConfigError(f"{where}: prediction column {c!r} is not a field")
        for fam, order in (("upper_color", self.pred_upper), ("lower_color", self.pred_lower)):
            if pred and sorted(order) != sorted(self.colours.get(fam, {}).values()):
                raise ConfigError(f"{where}: predictions.{fam} must list the colours of {fam}")

    @classmethod
    def default(cls, schema: AttributeSchema | None = None, dataset: str = "market1501"
                ) -> "MarketTable":
        """The packaged table of ``dataset`` (``market1501`` or ``dukemtmc``)."""
        return cls(table=load_mapping(dataset), schema=schema or AttributeSchema.default(),
                   name=dataset)

    @property
    def mat_fields(self) -> list[str]:
        """Every ``.mat`` field the table reads (27 for Market-1501)."""
        return [*self.fields, *(f for cols in self.colours.values() for f in cols)]

    def decode(self, codes: Mapping[str, int], *, where: str = "") -> Labels:
        """One identity's coded fields -> canonical labels.

        Raises:
            InvalidInput: a field is missing or holds a code the table does not know.
        """
        out: Labels = {}
        for name, (fam, table) in self.fields.items():
            code = self._code(codes, name, where)
            if code not in table:
                raise InvalidInput(
                    f"{where}: field {name!r} = {code}, expected one of {sorted(table)}"
                )
            if table[code] is not None:
                out[fam] = table[code]
        for fam, cols in self.colours.items():
            present = []
            for name, colour in cols.items():
                code = self._code(codes, name, where)
                if code not in (self.present_code, self.absent_code):
                    raise InvalidInput(
                        f"{where}: field {name!r} = {code}, expected "
                        f"{self.absent_code} (no) or {self.present_code} (yes)"
                    )
                if code == self.present_code:
                    present.append(colour)
            fam_values = self.schema.family(fam).values
            out[fam] = [v for v in fam_values if v in present]
        return out

    @staticmethod
    def _code(codes: Mapping[str, int], name: str, where: str) -> int:
        try:
            return int(codes[name])
        except KeyError:
            raise InvalidInput(f"{where}: field {name!r} is missing") from None
        except (TypeError, ValueError):
            raise InvalidInput(f"{where}: field {name!r} is not an integer code") from None


@dataclass(frozen=True)
class MarketAttributes:
    """Canonical labels per identity from ``market_attribute.mat``.

    Attributes:
        train: identity (4-digit string, ``"0002"``) -> labels, 751 for Market-1501.
        test: the same for the 750 test identities.
        unannotated: per family, canonical values Market never offers (masked in losses).
    """

    train: dict[str, Labels]
    test: dict[str, Labels]
    unannotated: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def labels(self, pid: str | int) -> Labels:
        """Labels of one identity (``"0002"``, ``"2"`` or ``2``).

        Raises:
            NotFound: the identity is in neither part.
        """
        key = _pid4(pid)
        hit = self.train.get(key) or self.test.get(key)
        if hit is None:
            raise NotFound(f"identity {pid!r} has no Market-1501 attribute annotation")
        return hit

    def __contains__(self, pid: object) -> bool:
        try:
            key = _pid4(pid)  # type: ignore[arg-type]
        except InvalidInput:
            return False
        return key in self.train or key in self.test


def _pid4(pid: str | int) -> str:
    try:
        return f"{int(pid):04d}"
    except (TypeError, ValueError):
        raise InvalidInput(f"identity {pid!r} is not a number") from None


def _mat_struct_fields(obj: Any, where: str) -> dict[str, np.ndarray]:
    """A MATLAB struct loaded by scipy (nested 1x1 object arrays) -> ``{field: array}``."""
    while isinstance(obj, np.ndarray) and obj.dtype == object and obj.size == 1:
        obj = obj.reshape(-1)[0]
    if isinstance(obj, np.ndarray) and obj.dtype.names and obj.size == 1:
        obj = obj.reshape(-1)[0]
    names = getattr(getattr(obj, "dtype", None), "names", None)
    if not names:
        raise InvalidInput(f"{where} is not a MATLAB struct")
    return {n: np.asarray(obj[n]) for n in names}


def _loadmat(path: pathlib.Path) -> dict[str, Any]:
    import scipy.io

    path = pathlib.Path(path)
    if not path.is_file():
        raise NotFound(f"MATLAB file {path} does not exist")
    try:
        return scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for a corrupt file
        raise InvalidInput(f"{path} is not a readable MATLAB v5 file: {exc}") from exc


def load_market_attributes(
    path: pathlib.Path,
    *,
    schema: AttributeSchema | None = None,
    table: MarketTable | None = None,
    variable: str = "market_attribute",
) -> MarketAttributes:
    """Read ``market_attribute.mat`` (or a file of the same layout) into canonical labels.

    Args:
        path: the ``.mat`` file.
        schema: canonical schema (default: :meth:`AttributeSchema.default`).
        table: code table (default: ``training/mappings/market1501.yaml``).
        variable: name of the top-level struct.

    Raises:
        NotFound: the file does not exist.
        InvalidInput: the struct, a part, a field or a code is missing or malformed.
    """
    table = table or MarketTable.default(schema)
    data = _loadmat(path)
    if variable not in data:
        found = ", ".join(k for k in data if not k.startswith("__"))
        raise InvalidInput(f"{path}: no variable {variable!r} (found: {found or 'none'})")
    top = _mat_struct_fields(data[variable], f"{path}:{variable}")
    parts: dict[str, dict[str, Labels]] = {}
    for part in ("train", "test"):
        if part not in top:
            raise InvalidInput(f"{path}:{variable} has no {part!r} part")
        where = f"{path}:{variable}.{part}"
        fields = _mat_struct_fields(top[part], where)
        if "image_index" not in fields:
            raise InvalidInput(f"{where} has no 'image_index' field")
        ids = [_cell_str(c) for c in fields["image_index"].reshape(-1)]
        n = len(ids)
        columns: dict[str, np.ndarray] = {}
        for name in table.mat_fields:
            if name not in fields:
                raise InvalidInput(f"{where} has no field {name!r}")
            col = fields[name].reshape(-1)
            if col.size != n:
                raise InvalidInput(f"{where}.{name} has {col.size} values for {n} identities")
            columns[name] = col
        out: dict[str, Labels] = {}
        for i, raw in enumerate(ids):
            pid = _pid4(raw)
            if pid in out:
                raise InvalidInput(f"{where}: identity {raw!r} is listed twice")
            codes = {name: columns[name][i] for name in columns}
            out[pid] = table.decode(codes, where=f"{where} identity {raw}")
        parts[part] = out
    overlap = set(parts["train"]) & set(parts["test"])
    if overlap:
        raise InvalidInput(f"{path}: identities in both train and test: {sorted(overlap)[:5]}")
    return MarketAttributes(parts["train"], parts["test"], dict(table.unannotated))


def load_duke_attributes(
    path: pathlib.Path, *, schema: AttributeSchema | None = None
) -> MarketAttributes:
    """Read DukeMTMC-attribute's ``duke_attribute.mat`` (702 train / 1,110 test identities)
    through ``training/mappings/dukemtmc.yaml``; see :func:`load_market_attributes`."""
    return load_market_attributes(path, table=MarketTable.default(schema, "dukemtmc"),
                                  variable="duke_attribute")


def _cell_str(cell: Any) -> str:
    a = np.asarray(cell).reshape(-1)
    return str(a[0]) if a.size else ""


# -- the gallery_market.mat prediction format -------------------------------------------------
def read_market_predictions(
    path: pathlib.Path, *, table: MarketTable | None = None, variable: str | None = None
) -> list[Labels]:
    """Rows of a Market-1501 attribute prediction file (``gallery_market.mat``) as labels.

    Each row is one gallery image (see ``training/mappings/market1501.yaml``); the result has
    the same order. Colour columns become one-element colour lists.

    Raises:
        NotFound: the file does not exist.
        InvalidInput: no N x 12 integer matrix, or a code out of range (row and column named).
    """
    table = table or MarketTable.default()
    data = _loadmat(path)
    keys = [k for k in data if not k.startswith("__")]
    if variable is None:
        if len(keys) != 1:
            raise InvalidInput(f"{path}: expected one variable, found {keys}; pass variable=")
        variable = keys[0]
    if variable not in data:
        raise InvalidInput(f"{path}: no variable {variable!r} (found: {keys})")
    return decode_market_predictions(np.asarray(data[variable]), table=table, where=str(path))


def decode_market_predictions(
    rows: np.ndarray, *, table: MarketTable | None = None, where: str = "predictions"
) -> list[Labels]:
    """An N x 12 prediction matrix -> labels per row (see :func:`read_market_predictions`)."""
    table = table or MarketTable.default()
    n_cols = len(table.pred_columns) + 2
    if rows.ndim != 2 or rows.shape[1] != n_cols or not np.issubdtype(rows.dtype, np.number):
        raise InvalidInput(f"{where}: expected an N x {n_cols} matrix, got {rows.shape}")
    out: list[Labels] = []
    for r, row in enumerate(rows.astype(np.int64)):
        lab: Labels = {}
        for c, name in enumerate(table.pred_columns):
            fam, codes = table.fields[name]
            if int(row[c]) not in codes:
                raise InvalidInput(
                    f"{where}: row {r + 1}, column {c + 1} ({name}) = {row[c]}, "
                    f"expected one of {sorted(codes)}"
                )
            lab[fam] = codes[int(row[c])]
        for c, (fam, order) in enumerate(
            (("upper_color", table.pred_upper), ("lower_color", table.pred_lower)),
            start=len(table.pred_columns),
        ):
            k = int(row[c])
            if not 1 <= k <= len(order):
                raise InvalidInput(
                    f"{where}: row {r + 1}, column {c + 1} ({fam}) = {k}, "
                    f"expected 1..{len(order)}"
                )
            lab[fam] = [order[k - 1]]
        out.append(lab)
    return out


def encode_market_predictions(
    labels: Sequence[Mapping[str, str | list[str]]], *, table: MarketTable | None = None
) -> np.ndarray:
    """Labels per gallery image -> the N x 12 ``uint8`` matrix of ``gallery_market.mat``.

    A colour family must hold one of Market's colours (the first listed one is written).

    Raises:
        InvalidInput: a family is missing or its value has no Market code.
    """
    table = table or MarketTable.default()
    out = np.zeros((len(labels), len(table.pred_columns) + 2), np.uint8)
    for r, lab in enumerate(labels):
        for c, name in enumerate(table.pred_columns):
            fam, codes = table.fields[name]
            inverse = {v: k for k, v in codes.items()}
            value = lab.get(fam)
            if not isinstance(value, str) or value not in inverse:
                raise InvalidInput(f"row {r + 1}: {fam}={value!r} has no Market-1501 code")
            out[r, c] = inverse[value]
        for c, (fam, order) in enumerate(
            (("upper_color", table.pred_upper), ("lower_color", table.pred_lower)),
            start=len(table.pred_columns),
        ):
            value = lab.get(fam)
            values = [value] if isinstance(value, str) else list(value or [])
            hits = [v for v in values if v in order]
            if not hits:
                raise InvalidInput(f"row {r + 1}: {fam}={value!r} is none of {order}")
            out[r, c] = order.index(hits[0]) + 1
    return out


def write_market_predictions(
    path: pathlib.Path,
    labels: Sequence[Mapping[str, str | list[str]]],
    *,
    table: MarketTable | None = None,
) -> None:
    """Write labels per gallery image as ``gallery_market.mat`` (variable ``gallery``)."""
    import scipy.io

    scipy.io.savemat(str(path), {"gallery": encode_market_predictions(labels, table=table)})


# -- Market-1501 / DukeMTMC-reID image folders -----------------------------------------------
def parse_reid_filename(name: str) -> tuple[int, str]:
    """Identity and camera of a Market-1501 / DukeMTMC-reID image name.

    ``0002_c1s1_000451_03.jpg`` -> ``(2, "c1")``; ``0001_c2_f0046182.jpg`` -> ``(1, "c2")``;
    ``-1_c3s2_...`` -> ``(-1, "c3")`` (distractor); ``0000_...`` -> ``(0, ...)`` (junk).

    Raises:
        InvalidInput: the name does not follow the convention.
    """
    m = _REID_NAME.match(name)
    if m is None:
        raise InvalidInput(
            f"image name {name!r} is not <id>_c<camera>[s<seq>]_<...>.jpg "
            "(Market-1501 / DukeMTMC-reID convention)"
        )
    return int(m.group(1)), f"c{int(m.group(2))}"


def load_reid_folder(
    root: pathlib.Path,
    *,
    split: str = "train",
    source: str = "market1501",
    attributes: MarketAttributes | None = None,
    keep_junk: bool = False,
) -> list[ImageRecord]:
    """The images of one split of a Market-1501 / DukeMTMC-reID folder as records.

    Args:
        root: the data set folder holding ``bounding_box_train/``, ``bounding_box_test/`` and
            ``query/``.
        split: ``train``, ``query`` or ``gallery``.
        source: namespace of the identities (``market1501``, ``dukemtmc``).
        attributes: per-identity labels (Market-1501's ``market_attribute.mat``); ``None`` for
            images without attribute labels.
        keep_junk: keep identity 0 (junk) and -1 (distractors) with pids ``<source>/0000`` /
            ``<source>/-1``; evaluators must never use them as queries.

    Returns:
        Records in file-name order. For ``split="gallery"`` without junk this is the row order
        of the ``gallery_market.mat`` prediction format.

    Raises:
        NotFound: the folder is missing.
        InvalidInput: ``split`` is unknown or a file name breaks the convention.
    """
    if split not in REID_FOLDERS:
        raise InvalidInput(f"unknown split {split!r}; known: {', '.join(REID_FOLDERS)}")
    folder = pathlib.Path(root).expanduser() / REID_FOLDERS[split]
    if not folder.is_dir():
        raise NotFound(
            f"{folder} is not a folder: point at the Market-1501 / DukeMTMC-reID folder that "
            f"holds {', '.join(REID_FOLDERS.values())}"
        )
    records: list[ImageRecord] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png") or not path.is_file():
            continue
        pid, camera = parse_reid_filename(path.name)
        if pid in (JUNK_ID, DISTRACTOR_ID) and not keep_junk:
            continue
        key = "-1" if pid == DISTRACTOR_ID else f"{pid:04d}"
        labels: Labels = {}
        unannotated: Mapping[str, tuple[str, ...]] = {}
        if attributes is not None and pid > 0 and key in attributes:
            labels = attributes.labels(key)
            unannotated = attributes.unannotated
        records.append(
            ImageRecord(
                path=path, pid=f"{source}/{key}", source=source, subset=REID_FOLDERS[split],
                camera=camera, labels=labels, unannotated=unannotated,
                split="train" if split == "train" else "test",
            )
        )
    return records


__all__ = [
    "MarketAttributes",
    "MarketTable",
    "REID_FOLDERS",
    "decode_market_predictions",
    "load_duke_attributes",
    "encode_market_predictions",
    "load_market_attributes",
    "load_reid_folder",
    "parse_reid_filename",
    "read_market_predictions",
    "write_market_predictions",
]
