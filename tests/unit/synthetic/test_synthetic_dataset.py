"""Synthetic CUHK-PEDES-format data set: layout, splits, captions, determinism."""

from __future__ import annotations

import json
import pathlib

import cv2
import pytest

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput
from pedsearch.synthetic.dataset import SPLITS, generate_dataset, split_ids, tokenize
from pedsearch.synthetic.people import PersonSpec


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return generate_dataset(tmp_path_factory.mktemp("ds") / "synth", num_ids=12,
                            images_per_id=3, seed=5, splits=(0.5, 0.25, 0.25), height_px=96,
                            progress=False)


def test_round_trip_through_json(dataset: pathlib.Path) -> None:
    entries = json.loads((dataset / "reid_raw.json").read_text())
    attrs = json.loads((dataset / "attributes.json").read_text())
    people = {p["person_id"]: PersonSpec.from_dict(p)
              for p in json.loads((dataset / "people.json").read_text())}
    meta = json.loads((dataset / "meta.json").read_text())
    schema = AttributeSchema.default()
    assert len(entries) == 36 and len(attrs) == 36 and len(people) == 12
    assert meta["seed"] == 5 and meta["schema_version"] == schema.version
    assert meta["splits"] == {"train": {"ids": 6, "images": 18}, "val": {"ids": 3, "images": 9},
                              "test": {"ids": 3, "images": 9}}
    for e in entries:
        assert set(e) == {"split", "captions", "file_path", "processed_tokens", "id"}
        assert e["split"] in SPLITS and e["file_path"].startswith(f"{e['split']}/{e['id']}/")
        assert len(e["captions"]) == 2 and all(len(c.split()) >= 4 for c in e["captions"])
        assert e["processed_tokens"] == [tokenize(c) for c in e["captions"]]
        img = cv2.imread(str(dataset / "imgs" / e["file_path"]))
        assert img is not None and img.shape == (96, 48, 3)
        assert attrs[e["file_path"]] == {k: v for k, v in people[e["id"]].to_dict()
                                         ["attributes"].items()}
        schema.encode(attrs[e["file_path"]])  # canonical values only


def test_splits_are_identity_disjoint(dataset: pathlib.Path) -> None:
    entries = json.loads((dataset / "reid_raw.json").read_text())
    ids = {s: {e["id"] for e in entries if e["split"] == s} for s in SPLITS}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"])
    assert not (ids["val"] & ids["test"])
    assert set().union(*ids.values()) == set(range(1, 13))


def test_same_seed_same_dataset(dataset: pathlib.Path, tmp_path: pathlib.Path) -> None:
    again = generate_dataset(tmp_path / "again", num_ids=12, images_per_id=3, seed=5,
                             splits=(0.5, 0.25, 0.25), height_px=96, progress=False, workers=2)
    for name in ("reid_raw.json", "attributes.json", "people.json", "meta.json"):
        assert (dataset / name).read_bytes() == (again / name).read_bytes()
    first = json.loads((dataset / "reid_raw.json").read_text())[0]["file_path"]
    assert (dataset / "imgs" / first).read_bytes() == (again / "imgs" / first).read_bytes()


def test_views_vary_within_an_identity(dataset: pathlib.Path) -> None:
    entries = json.loads((dataset / "reid_raw.json").read_text())
    e = entries[0]
    imgs = [cv2.imread(str(dataset / "imgs" / f"{e['split']}/{e['id']}/{n}.jpg")) for n in range(3)]
    assert all(imgs[0].shape == im.shape for im in imgs)
    assert (imgs[0] != imgs[1]).any() and (imgs[1] != imgs[2]).any()


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101])
def test_split_ids_partition(n: int) -> None:
    s = split_ids(n, (0.8, 0.1, 0.1), seed=1)
    all_ids = s["train"] + s["val"] + s["test"]
    assert sorted(all_ids) == list(range(1, n + 1))
    if n >= 3:
        assert all(s[k] for k in SPLITS)
    assert split_ids(n, (0.8, 0.1, 0.1), seed=1) == s


def test_refuses_bad_arguments(tmp_path: pathlib.Path, dataset: pathlib.Path) -> None:
    with pytest.raises(InvalidInput, match="summing to 1"):
        generate_dataset(tmp_path / "a", num_ids=3, images_per_id=1, seed=0,
                         splits=(0.5, 0.5, 0.5), progress=False)
    with pytest.raises(InvalidInput, match="num_ids"):
        generate_dataset(tmp_path / "b", num_ids=0, images_per_id=1, seed=0, progress=False)
    with pytest.raises(InvalidInput, match="height_px"):
        generate_dataset(tmp_path / "c", num_ids=1, images_per_id=1, seed=0, height_px=8,
                         progress=False)
    with pytest.raises(InvalidInput, match="not empty"):
        generate_dataset(dataset, num_ids=1, images_per_id=1, seed=0, progress=False)
