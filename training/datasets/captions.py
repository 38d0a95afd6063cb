"""Caption files of the text-based person search benchmarks -> unified records.

- CUHK-PEDES (Li et al., CVPR 2017): ``reid_raw.json``, a list of ``{"split", "captions":
  [c1, c2], "file_path", "processed_tokens", "id"}``; the ``caption_<split>_new.json`` form has
  one caption string per entry and the image's other caption only in ``processed_tokens``
  (read from there, as its words). Images under ``imgs/``.
- ICFG-PEDES (Ding et al., 2021): ``ICFG-PEDES.json``, ``{"id", "file_path", "captions",
  "processed_tokens", "split"}``, ``file_path`` like ``test/0027/0027_010_05_...jpg``.
- RSTPReid (Zhu et al., ACM MM 2021): ``data_captions.json``, ``{"id", "img_path",
  "captions": [c1, c2], "split"}``, ``img_path`` like ``0000_c14_0031.jpg``.
- the synthetic set: ``reid_raw.json`` in the CUHK-PEDES form plus ``attributes.json``
  (canonical labels per image ``file_path`` or per identity), as
  :func:`pedsearch.synthetic.generate_dataset` writes them.

Every loader groups entries by image (captions of one image together, in file order) and
returns :class:`~training.datasets.ImageRecord` s with ``captions`` and ``split`` set and
``pid="<source>/<id>"``. Images are looked for under ``image_root`` (default: ``imgs/`` beside
the JSON file); a missing image folder is fine for caption-only use. A malformed file raises
:class:`~pedsearch.errors.InvalidInput` naming the file and the entry.

Example:
    >>> recs = load_cuhk_pedes(root / "cuhk-pedes/caption_val_new.json")  # doctest: +SKIP
    >>> len(recs), len(recs[0].captions), recs[0].captions[0][:40]        # doctest: +SKIP
    (2968, 2, 'The man has short, dark hair and wears k')
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput, NotFound
from pedsearch.words import tokens

from training.datasets import ImageRecord

SPLITS = ("train", "val", "test")

#: data set -> the entry key holding the image path (relative to the image folder)
FORMATS: dict[str, str] = {
    "cuhk-pedes": "file_path",
    "icfg-pedes": "file_path",
    "rstpreid": "img_path",
    "synthetic": "file_path",
}


def _read_json(path: pathlib.Path) -> Any:
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise NotFound(f"caption file {path} does not exist")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not valid JSON: {exc}") from None


def _words(caption: str) -> str:
    """The words the tokenizer reads in ``caption``, space-joined ("" when none)."""
    return " ".join(tokens(caption))


def _entry_error(path: pathlib.Path, i: int, entry: Any, what: str) -> InvalidInput:
    ident = ""
    if isinstance(entry, dict):
        for key in ("id", "file_path", "img_path"):
            if key in entry:
                ident += f" {key}={entry[key]!r}"
    return InvalidInput(f"{path}: entry {i}{ident}: {what}")


def _parse_entries(
    path: pathlib.Path, data: Any, *, source: str, image_root: pathlib.Path
) -> list[ImageRecord]:
    path_key = FORMATS[source]
    if not isinstance(data, list):
        raise InvalidInput(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    by_image: dict[str, dict[str, Any]] = {}
    for i, e in enumerate(data):
        if not isinstance(e, dict):
            raise _entry_error(path, i, e, f"expected an object, got {type(e).__name__}")
        for key in ("id", path_key, "captions", "split"):
            if key not in e:
                raise _entry_error(path, i, e, f"missing key {key!r}")
        pid = e["id"]
        if isinstance(pid, bool) or not isinstance(pid, (int, str)) or str(pid).strip() == "":
            raise _entry_error(path, i, e, f"'id' must be an integer or a string, got {pid!r}")
        rel = e[path_key]
        if not isinstance(rel, str) or not rel.strip() or rel.startswith(("/", "\\")) or ".." in (
            pathlib.PurePosixPath(rel).parts
        ):
            raise _entry_error(path, i, e, f"{path_key!r} must be a relative path, got {rel!r}")
        caps = e["captions"]
        caps = [caps] if isinstance(caps, str) else caps
        if not isinstance(caps, list) or not caps or not all(
            isinstance(c, str) and c.strip() for c in caps
        ):
            raise _entry_error(
                path, i, e, "'captions' must be a non-empty string or list of non-empty strings"
            )
        split = e["split"]
        if split not in SPLITS:
            raise _entry_error(path, i, e, f"'split' must be one of {SPLITS}, got {split!r}")
        tokens = e.get("processed_tokens")
        if tokens is not None and not (
            isinstance(tokens, list)
            and all(isinstance(t, list) and all(isinstance(w, str) for w in t) for t in tokens)
        ):
            raise _entry_error(path, i, e, "'processed_tokens' must be a list of token lists")
        caps = [c.strip() for c in caps]
        wordless = [k for k, c in enumerate(caps) if not _words(c)]
        if wordless:  # the tokenizer would refuse it mid-training, far from this file
            raise _entry_error(path, i, e, f"caption {wordless[0]} ({caps[wordless[0]][:40]!r}) "
                               "has no words: the text encoders read letters a-z and digits")
        # the _new form keeps an image's second caption only as tokens (processed_tokens[i]
        # belongs to captions[i]); it is read as its words
        caps += [" ".join(t) for t in (tokens or [])[len(caps):] if _words(" ".join(t))]
        slot = by_image.get(rel)
        if slot is None:
            slot = by_image[rel] = {"pid": str(pid), "split": split, "captions": [], "seen": set()}
        elif slot["pid"] != str(pid) or slot["split"] != split:
            raise _entry_error(
                path, i, e,
                f"image {rel!r} appears earlier with id {slot['pid']!r} / split "
                f"{slot['split']!r}",
            )
        for c in caps:  # an entry per caption may repeat the image's tokens: keep each once
            words = _words(c).replace(" ", "")  # tokens split "doesn't" as "does n't"
            if words not in slot["seen"]:
                slot["seen"].add(words)
                slot["captions"].append(c)
    return [
        ImageRecord(
            path=image_root / rel, pid=f"{source}/{s['pid']}", source=source, subset="",
            captions=tuple(s["captions"]), split=s["split"],
        )
        for rel, s in by_image.items()
    ]


def load_caption_file(
    path: pathlib.Path,
    *,
    source: str,
    image_root: pathlib.Path | None = None,
    split: str | None = None,
) -> list[ImageRecord]:
    """Read one caption file of a known format.

    Args:
        path: the JSON file.
        source: ``cuhk-pedes``, ``icfg-pedes``, ``rstpreid`` or ``synthetic``.
        image_root: folder the entries' image paths are relative to (default:
            ``imgs/`` beside the file).
        split: keep only this split.

    Raises:
        NotFound: the file does not exist.
        InvalidInput: the file or an entry is malformed (the entry is named), or an
            unknown ``source`` / ``split``.
    """
    if source not in FORMATS:
        raise InvalidInput(f"unknown caption format {source!r}; known: {', '.join(FORMATS)}")
    if split is not None and split not in SPLITS:
        raise InvalidInput(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    path = pathlib.Path(path).expanduser()
    root = pathlib.Path(image_root) if image_root is not None else path.parent / "imgs"
    records = _parse_entries(path, _read_json(path), source=source, image_root=root)
    return [r for r in records if split is None or r.split == split]


def load_cuhk_pedes(
    path: pathlib.Path, *, image_root: pathlib.Path | None = None, split: str | None = None
) -> list[ImageRecord]:
    """CUHK-PEDES ``reid_raw.json`` or ``caption_<split>_new.json`` (see the module table)."""
    return load_caption_file(path, source="cuhk-pedes", image_root=image_root, split=split)


def load_icfg_pedes(
    path: pathlib.Path, *, image_root: pathlib.Path | None = None, split: str | None = None
) -> list[ImageRecord]:
    """ICFG-PEDES ``ICFG-PEDES.json`` (``file_path`` like ``test/0027/0027_010_05_...jpg``)."""
    return load_caption_file(path, source="icfg-pedes", image_root=image_root, split=split)


def load_rstpreid(
    path: pathlib.Path, *, image_root: pathlib.Path | None = None, split: str | None = None
) -> list[ImageRecord]:
    """RSTPReid ``data_captions.json`` (``img_path`` like ``0000_c14_0031.jpg``)."""
    return load_caption_file(path, source="rstpreid", image_root=image_root, split=split)


def read_attribute_file(
    path: pathlib.Path, *, schema: AttributeSchema | None = None
) -> dict[str, dict[str, str | list[str]]]:
    """Canonical labels from the synthetic generator's ``attributes.json``.

    Accepted forms: an object keyed by image ``file_path`` (what
    :func:`pedsearch.synthetic.generate_dataset` writes) or by identity id,
    ``{"<key>": {family: value}}``; or a list of objects with ``"id"`` (or ``"person_id"``)
    and ``"attributes"`` (the form of ``PersonSpec.to_dict``; other keys are ignored). Values
    are checked against the schema.

    Returns:
        key (file path or identity, as a string) -> labels.

    Raises:
        NotFound: the file does not exist.
        InvalidInput: the file or an entry is malformed (the entry is named).
    """
    schema = schema or AttributeSchema.default()
    path = pathlib.Path(path).expanduser()
    data = _read_json(path)
    items: list[tuple[str, Any, str]] = []
    if isinstance(data, dict):
        items = [(str(k), v, f"key {k!r}") for k, v in data.items()]
    elif isinstance(data, list):
        for i, e in enumerate(data):
            if not isinstance(e, dict) or "attributes" not in e or not (
                "id" in e or "person_id" in e
            ):
                raise InvalidInput(
                    f"{path}: entry {i}: expected an object with 'id' (or 'person_id') and "
                    "'attributes'"
                )
            pid = e.get("id", e.get("person_id"))
            items.append((str(pid), e["attributes"], f"entry {i} id={pid!r}"))
    else:
        raise InvalidInput(f"{path}: expected a JSON object or list, got {type(data).__name__}")
    out: dict[str, dict[str, str | list[str]]] = {}
    for key, labels, where in items:
        if not isinstance(labels, dict):
            raise InvalidInput(f"{path}: {where}: attributes must be an object")
        if key in out:
            raise InvalidInput(f"{path}: {where}: listed twice")
        try:
            schema.encode(labels)  # validates families and values
        except InvalidInput as exc:
            raise InvalidInput(f"{path}: {where}: {exc.message}") from None
        out[key] = {k: (v if isinstance(v, str) else list(v)) for k, v in labels.items()}
    return out


def load_synthetic(
    root: pathlib.Path,
    *,
    image_root: pathlib.Path | None = None,
    split: str | None = None,
    schema: AttributeSchema | None = None,
) -> list[ImageRecord]:
    """The synthetic data set: ``<root>/reid_raw.json`` (CUHK-PEDES form) + ``attributes.json``.

    Records carry the stored captions and canonical labels, looked up by the image's
    ``file_path`` first, then by identity; ``pid="synthetic/<id>"``. Images default to
    ``<root>/imgs/``.

    Raises:
        NotFound: a file is missing.
        InvalidInput: a file is malformed, or an image has no labels.
    """
    root = pathlib.Path(root).expanduser()
    images = pathlib.Path(image_root) if image_root is not None else root / "imgs"
    records = load_caption_file(
        root / "reid_raw.json", source="synthetic", image_root=images, split=split
    )
    labels = read_attribute_file(root / "attributes.json", schema=schema)
    out = []
    for r in records:
        rel = r.path.relative_to(images).as_posix()
        raw = r.pid.split("/", 1)[1]
        found = labels.get(rel, labels.get(raw))
        if found is None:
            raise InvalidInput(
                f"{root / 'attributes.json'}: no labels for image {rel!r} (identity {raw!r})"
            )
        out.append(dataclasses.replace(r, labels=dict(found)))
    return out


__all__ = [
    "FORMATS",
    "SPLITS",
    "load_caption_file",
    "load_cuhk_pedes",
    "load_icfg_pedes",
    "load_rstpreid",
    "load_synthetic",
    "read_attribute_file",
]
