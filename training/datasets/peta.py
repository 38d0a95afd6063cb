"""PETA (Deng et al., ACM MM 2014): ``<root>/peta/<subset>/archive/Label.txt`` + images.

Each subset's ``Label.txt`` has one line per identity, ``<id> attr attr ...``, naming the
attributes that are present; the id is the prefix of that identity's image file names. The
identity and, where the name says it, the camera are parsed per subset:

- ``TownCentre``: ``<id>_<frame>.jpg``; one camera, recorded as ``None``.
- ``PRID``: ``<id>_a.png`` / ``<id>_b.png``; camera ``a`` or ``b`` (PRID's two cameras).
- ``GRID``: ``<id>_<cam>_<frame>_<x>_<y>_<w>_<h>.jpeg``; camera ``<cam>`` (GRID's camera number).
- ``MIT``: ``<id>_<gender>_<view>.jpg``; camera ``None``. Gender comes from ``Label.txt``: the
  file name disagrees with it for 49 images.
- ``i-LID``: ``<id>_<n>.jpg``; camera ``None`` (not in the name).
- any other subset: ``<id>_<anything>.<ext>``; camera ``None``.

Identities are namespaced by subset (``peta/PRID/0001`` and ``peta/i-LID/0001`` are different
people). Labels are translated by ``training/mappings/peta.yaml``.

Example:
    >>> records = load_peta(default_data_root())          # doctest: +SKIP
    >>> len(records), records[0].pid                      # doctest: +SKIP
    (10741, 'peta/GRID/0001')
"""

from __future__ import annotations

import pathlib
import re
from typing import Any, Iterable, Mapping, Sequence

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import ConfigError, InvalidInput, NotFound

from training.datasets import ImageRecord, check_family, check_value, load_mapping

#: The five subsets shipped in ``../shared/data/peta`` (PETA has ten).
PETA_SUBSETS = ("TownCentre", "PRID", "GRID", "MIT", "i-LID")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
UNKNOWN = "unknown"

# subset -> (file-name pattern, camera group or None)
_NAME_RULES: dict[str, tuple[re.Pattern[str], int | None]] = {
    "TownCentre": (re.compile(r"^(\d+)_(\d+)\.jpe?g$", re.I), None),
    "PRID": (re.compile(r"^(\d+)_([ab])\.png$", re.I), 2),
    "GRID": (re.compile(r"^(\d+)_(\d+)_\d+_\d+_\d+_\d+_\d+\.jpe?g$", re.I), 2),
    "MIT": (re.compile(r"^(\d+)_(?:male|female)_(?:fore|back)\.jpe?g$", re.I), None),
    "i-LID": (re.compile(r"^(\d+)_(\d+)\.jpe?g$", re.I), None),
}
_GENERIC = re.compile(r"^([^_]+)_.+\.(?:jpe?g|png|bmp)$", re.I)


def parse_peta_filename(subset: str, name: str) -> tuple[str, str | None]:
    """The identity (as written in ``Label.txt``) and camera of a PETA image file name.

    Args:
        subset: PETA subset folder name (``PRID``, ``GRID``, ...).
        name: the image file name, without folders.

    Returns:
        ``(raw_id, camera)``; ``camera`` is ``None`` when the name does not say it.

    Raises:
        InvalidInput: the name does not follow the subset's convention.
    """
    pattern, cam_group = _NAME_RULES.get(subset, (_GENERIC, None))
    m = pattern.match(name)
    if m is None:
        raise InvalidInput(
            f"PETA {subset}: image file name {name!r} does not match {pattern.pattern!r}; "
            "is this file in the right subset folder?"
        )
    camera = m.group(cam_group).lower() if cam_group is not None else None
    return m.group(1), camera


def read_label_file(path: pathlib.Path) -> dict[str, list[str]]:
    """``Label.txt`` as ``{raw_id: [attribute names]}``.

    Raises:
        NotFound: the file does not exist.
        InvalidInput: an identity is listed twice or a line has no identity.
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError:
        raise NotFound(f"PETA label file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"PETA label file {path} is not text: {exc}") from None
    out: dict[str, list[str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        raw_id, names = parts[0], parts[1:]
        if raw_id in out:
            raise InvalidInput(f"{path}:{n}: identity {raw_id!r} is listed twice")
        out[raw_id] = names
    return out


class PetaTable:
    """PETA attribute names -> canonical labels, as ``training/mappings/peta.yaml`` says.

    Args:
        table: the parsed mapping table (see the YAML file for its fields).
        schema: the canonical schema the table is checked against.

    Raises:
        ConfigError: the table names a family or value the schema lacks, or is malformed.
    """

    def __init__(self, *, table: Mapping[str, Any], schema: AttributeSchema) -> None:
        self.schema = schema
        where = "training/mappings/peta.yaml"
        try:
            attrs = dict(table["attributes"])
            self.aliases: dict[str, str] = dict(table.get("aliases") or {})
            self.ignored: frozenset[str] = frozenset(table.get("ignored") or ())
            weak = {k: frozenset(v) for k, v in (table.get("weak") or {}).items()}
            absent = dict(table.get("absent") or {})
            self.never: frozenset[str] = frozenset(table.get("never") or ())
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where} is malformed: {exc}") from None
        # name -> list of (family, value, weak)
        self.claims: dict[str, list[tuple[str, str, bool]]] = {}
        for name, fams in attrs.items():
            if name in self.ignored:
                raise ConfigError(f"{where}: {name!r} is both mapped and ignored")
            claims = []
            for fam, value in dict(fams).items():
                if value != UNKNOWN:
                    check_value(schema, fam, str(value), f"{where}: {name}")
                else:
                    check_family(schema, fam, f"{where}: {name}")
                if fam in self.never:
                    raise ConfigError(f"{where}: {name} maps to {fam!r}, listed under `never`")
                claims.append((fam, str(value), fam in weak.get(name, ())))
            self.claims[name] = claims
        for name in weak:
            if name not in self.claims:
                raise ConfigError(f"{where}: weak entry {name!r} is not a mapped attribute")
        self.absent: dict[str, tuple[str, tuple[str, ...]]] = {}
        for fam, rule in absent.items():
            value = check_value(schema, fam, str(rule["value"]), f"{where}: absent.{fam}")
            self.absent[fam] = (value, tuple(rule.get("when_any_prefix") or ()))

    @classmethod
    def default(cls, schema: AttributeSchema | None = None) -> "PetaTable":
        return cls(table=load_mapping("peta"), schema=schema or AttributeSchema.default())

    def labels(self, names: Iterable[str], *, where: str = "") -> dict[str, str | list[str]]:
        """Canonical labels of one ``Label.txt`` line (its attribute names).

        Raises:
            InvalidInput: a name is neither mapped nor ignored by the table.
        """
        names = [self.aliases.get(n, n) for n in names]
        strong: dict[str, set[str]] = {}
        weak: dict[str, set[str]] = {}
        unknown: set[str] = set()
        for n in names:
            if n in self.ignored:
                continue
            claims = self.claims.get(n)
            if claims is None:
                raise InvalidInput(
                    f"{where}: PETA attribute {n!r} is not in training/mappings/peta.yaml; "
                    "add it under `attributes` or `ignored`"
                )
            for fam, value, is_weak in claims:
                if value == UNKNOWN:
                    unknown.add(fam)
                else:
                    (weak if is_weak else strong).setdefault(fam, set()).add(value)
        out: dict[str, str | list[str]] = {}
        for fam in self.schema.families:
            vals = strong.get(fam.name) or weak.get(fam.name)
            if fam.kind == "multi":
                if vals:
                    out[fam.name] = [v for v in fam.values if v in vals]
            elif vals:
                if len(vals) == 1:  # disagreeing claims: an annotation conflict, not a label
                    out[fam.name] = next(iter(vals))
            elif fam.name in self.absent and fam.name not in unknown:
                value, prefixes = self.absent[fam.name]
                if not prefixes or any(n.startswith(prefixes) for n in names):
                    out[fam.name] = value
        return out


def _peta_dir(root: pathlib.Path) -> pathlib.Path:
    root = pathlib.Path(root).expanduser()
    if (root / "peta").is_dir():
        return root / "peta"
    if any((root / s / "archive").is_dir() for s in PETA_SUBSETS) or root.name.lower() == "peta":
        return root
    raise NotFound(
        f"no PETA data under {root}: expected {root}/peta/<subset>/archive/Label.txt "
        "(set PEDSEARCH_PATHS__DATA_ROOT to the folder holding peta/)"
    )


def peta_subsets(root: pathlib.Path) -> list[str]:
    """Subsets present under ``root`` (the data root or the ``peta`` folder itself)."""
    peta = _peta_dir(root)
    return sorted(p.parent.parent.name for p in peta.glob("*/archive/Label.txt"))


def load_peta(
    root: pathlib.Path,
    *,
    subsets: Sequence[str] | None = None,
    schema: AttributeSchema | None = None,
    table: PetaTable | None = None,
) -> list[ImageRecord]:
    """Every image of the PETA subsets as records with canonical labels.

    Args:
        root: the data root holding ``peta/`` (or the ``peta`` folder itself).
        subsets: subset folder names; ``None`` takes every subset found.
        schema: canonical schema (default: :meth:`AttributeSchema.default`).
        table: mapping table (default: ``training/mappings/peta.yaml``).

    Returns:
        Records ordered by subset, then file name; ``source="peta"``, ``subset`` set,
        ``pid="peta/<subset>/<id>"``.

    Raises:
        NotFound: the folder, a subset or a label file is missing.
        InvalidInput: an image has no label line, or a name breaks the subset's convention.
    """
    peta = _peta_dir(root)
    table = table or PetaTable.default(schema)
    names = list(subsets) if subsets is not None else peta_subsets(peta)
    if not names:
        raise NotFound(f"no PETA subset (<subset>/archive/Label.txt) under {peta}")
    records: list[ImageRecord] = []
    for subset in names:
        archive = peta / subset / "archive"
        if not archive.is_dir():
            raise NotFound(f"PETA subset {subset!r} not found: {archive} is not a folder")
        label_file = archive / "Label.txt"
        lines = read_label_file(label_file)
        labels = {
            raw: table.labels(attrs, where=f"{label_file} (id {raw})")
            for raw, attrs in lines.items()
        }
        for path in sorted(archive.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            raw_id, camera = parse_peta_filename(subset, path.name)
            if raw_id not in labels:
                raise InvalidInput(
                    f"PETA {subset}: image {path.name} has identity {raw_id!r}, "
                    f"which has no line in {label_file}"
                )
            records.append(
                ImageRecord(
                    path=path, pid=f"peta/{subset}/{raw_id}", source="peta", subset=subset,
                    camera=camera, labels=labels[raw_id],
                )
            )
    return records


__all__ = [
    "PETA_SUBSETS",
    "PetaTable",
    "load_peta",
    "parse_peta_filename",
    "peta_subsets",
    "read_label_file",
]
