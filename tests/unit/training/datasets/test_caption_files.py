"""CUHK-PEDES (real file), ICFG-PEDES and RSTPReid (fixtures) and the synthetic caption set."""

from __future__ import annotations

import collections
import json
import pathlib

import pytest

from pedsearch.errors import InvalidInput, NotFound
from training.datasets import default_data_root
from training.datasets.captions import (
    load_caption_file,
    load_cuhk_pedes,
    load_icfg_pedes,
    load_rstpreid,
    load_synthetic,
    read_attribute_file,
)

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "fixtures"


@pytest.fixture(scope="module")
def cuhk_file() -> pathlib.Path:
    root = default_data_root()
    if root is None or not (root / "cuhk-pedes" / "caption_val_new.json").is_file():
        pytest.skip("../shared/data not found: set PEDSEARCH_PATHS__DATA_ROOT")
    return root / "cuhk-pedes" / "caption_val_new.json"


def _write(path: pathlib.Path, data) -> pathlib.Path:
    path.write_text(json.dumps(data))
    return path


# -- CUHK-PEDES, real file -----------------------------------------------------------------------
@pytest.mark.needs_data
def test_cuhk_pedes_val_file(cuhk_file):
    raw = json.loads(cuhk_file.read_text())
    assert len(raw) == 2968
    recs = load_cuhk_pedes(cuhk_file)
    assert len(recs) == 2968  # one entry per image in this file
    ids = {int(r.pid.split("/")[1]) for r in recs}
    # The README says 1,000 identities: the val split's id range 11004..12003 has 1,000 slots,
    # of which 945 occur in this file.
    assert len(ids) == 945 and min(ids) == 11004 and max(ids) == 12003
    # each entry's string is one caption; the image's second one is only in processed_tokens
    assert collections.Counter(len(r.captions) for r in recs) == {2: 2967, 4: 1}
    assert all(r.split == "val" and all(r.captions) for r in recs)
    assert all(r.source == "cuhk-pedes" and r.pid.startswith("cuhk-pedes/") for r in recs)
    first = recs[0]
    assert first.path == cuhk_file.parent / "imgs" / "CUHK01" / "0107002.png"
    assert first.captions[0].startswith("The man has short, dark hair and wears khaki pants")
    assert first.captions[1] == ("a man wearing a gray hooded jacket a pair of wrinkled brown "
                                 "pants a gray backpack and a pair of dark colored shoes")
    folders = collections.Counter(r.path.relative_to(cuhk_file.parent / "imgs").parts[0]
                                  for r in recs)
    assert folders == {"train_query": 1134, "test_query": 632, "Market": 495, "CUHK03": 375,
                       "CUHK01": 332}
    assert load_cuhk_pedes(cuhk_file, split="train") == []
    other = load_cuhk_pedes(cuhk_file, image_root=pathlib.Path("/data/CUHK-PEDES/imgs"))
    assert other[0].path == pathlib.Path("/data/CUHK-PEDES/imgs/CUHK01/0107002.png")


def test_cuhk_reid_raw_form_and_grouping(tmp_path):
    raw = [
        {"split": "train", "captions": ["A man in a red shirt.", "The man wears red."],
         "file_path": "CUHK01/0001001.png", "processed_tokens": [["a"], ["the"]], "id": 1},
        {"split": "test", "captions": ["A woman in blue."], "file_path": "cam_a/001.bmp",
         "processed_tokens": [["a"]], "id": 2},
    ]
    recs = load_cuhk_pedes(_write(tmp_path / "reid_raw.json", raw))
    assert recs[0].captions == ("A man in a red shirt.", "The man wears red.")
    assert recs[0].pid == "cuhk-pedes/1" and recs[1].split == "test"
    # the "_new" form: one caption string per entry, entries of one image grouped
    new = [
        {"split": "val", "captions": "First caption. ", "file_path": "a.png", "id": 5,
         "processed_tokens": [["first"]]},
        {"split": "val", "captions": "Second caption.", "file_path": "a.png", "id": 5,
         "processed_tokens": [["second"]]},
    ]
    (rec,) = load_cuhk_pedes(_write(tmp_path / "caption_val_new.json", new))
    assert rec.captions == ("First caption.", "Second caption.")
    # the published _new form: the other caption only as tokens, which may repeat per entry
    both = [["first", "caption"], ["the", "other", "one"]]
    new = [
        {"split": "val", "captions": "First caption.", "file_path": "a.png", "id": 5,
         "processed_tokens": both},
        {"split": "val", "captions": "The other one!", "file_path": "a.png", "id": 5,
         "processed_tokens": both},
    ]
    (rec,) = load_cuhk_pedes(_write(tmp_path / "caption_val_new.json", new))
    assert rec.captions == ("First caption.", "the other one")
    # tokens without words are no caption; a tokenised contraction is the same caption
    both = [["a", "man"], ["he", "does", "n't", "wear", "a", "hat"], [".", ","]]
    new = [{"split": "val", "captions": "A man.", "file_path": "a.png", "id": 5,
            "processed_tokens": both},
           {"split": "val", "captions": "He doesn't wear a hat.", "file_path": "a.png", "id": 5,
            "processed_tokens": both}]
    (rec,) = load_cuhk_pedes(_write(tmp_path / "caption_val_new.json", new))
    assert rec.captions == ("A man.", "he does n't wear a hat")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"captions": ["x"], "file_path": "a.png", "split": "train"}, "missing key 'id'"),
        ({"id": 1, "captions": [], "file_path": "a.png", "split": "train"}, "'captions'"),
        ({"id": 1, "captions": [3], "file_path": "a.png", "split": "train"}, "'captions'"),
        ({"id": 1, "captions": ["ok", "穿红色外套的女人"], "file_path": "a.png", "split": "train"},
         "caption 1 ('穿红色外套的女人') has no words"),
        ({"id": 1, "captions": ["x"], "file_path": "../a.png", "split": "train"},
         "relative path"),
        ({"id": 1, "captions": ["x"], "file_path": "a.png", "split": "dev"}, "'split'"),
        ({"id": None, "captions": ["x"], "file_path": "a.png", "split": "train"}, "'id'"),
        ({"id": 1, "captions": ["x"], "file_path": "a.png", "split": "train",
          "processed_tokens": "x"}, "processed_tokens"),
        ("not an object", "expected an object"),
    ],
)
def test_malformed_entry_names_file_and_entry(tmp_path, entry, message):
    good = {"id": 0, "captions": ["ok"], "file_path": "b.png", "split": "train"}
    path = _write(tmp_path / "reid_raw.json", [good, entry])
    with pytest.raises(InvalidInput) as err:
        load_cuhk_pedes(path)
    assert str(path) in err.value.message and "entry 1" in err.value.message
    assert message in err.value.message


def test_malformed_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        load_cuhk_pedes(tmp_path / "bad.json")
    with pytest.raises(InvalidInput, match="expected a JSON list"):
        load_cuhk_pedes(_write(tmp_path / "obj.json", {"a": 1}))
    with pytest.raises(NotFound):
        load_cuhk_pedes(tmp_path / "missing.json")
    one = {"id": 1, "captions": ["x"], "file_path": "a.png", "split": "train"}
    two = {**one, "id": 2}
    with pytest.raises(InvalidInput, match="appears earlier with id '1'"):
        load_cuhk_pedes(_write(tmp_path / "dup.json", [one, two]))
    with pytest.raises(InvalidInput, match="unknown caption format"):
        load_caption_file(tmp_path / "dup.json", source="flickr")
    with pytest.raises(InvalidInput, match="unknown split"):
        load_caption_file(tmp_path / "dup.json", source="cuhk-pedes", split="dev")


# -- ICFG-PEDES and RSTPReid fixtures ------------------------------------------------------------
def test_icfg_pedes_fixture():
    recs = load_icfg_pedes(FIXTURES / "icfg-pedes" / "ICFG-PEDES.json")
    assert len(recs) == 5
    assert collections.Counter(r.split for r in recs) == {"test": 3, "train": 2}
    assert recs[0].pid == "icfg-pedes/0" and recs[3].pid == "icfg-pedes/3102"
    assert recs[0].path.parts[-3:] == ("test", "0000", "0000_000_01_0303morning_0008_0.jpg")
    assert all(len(r.captions) == 1 for r in recs)
    assert len(load_icfg_pedes(FIXTURES / "icfg-pedes" / "ICFG-PEDES.json", split="train")) == 2


def test_rstpreid_fixture():
    path = FIXTURES / "rstpreid" / "data_captions.json"
    recs = load_rstpreid(path)
    assert [r.split for r in recs] == ["train", "train", "val", "test"]
    assert all(len(r.captions) == 2 for r in recs)
    assert recs[0].path == path.parent / "imgs" / "0000_c14_0031.jpg"
    assert {r.pid for r in recs} == {"rstpreid/0", "rstpreid/3701", "rstpreid/3901"}
    # the RSTPReid key is img_path: reading it as CUHK-PEDES names the missing key
    with pytest.raises(InvalidInput, match="missing key 'file_path'"):
        load_cuhk_pedes(path)


# -- the synthetic set: CUHK-PEDES form + attributes.json ----------------------------------------
def _synthetic_tree(tmp_path: pathlib.Path, attributes) -> pathlib.Path:
    _write(tmp_path / "reid_raw.json", [
        {"split": "train", "captions": ["A man in a red t-shirt.", "The man wears red."],
         "file_path": "train/0000_c0_000.jpg", "processed_tokens": [], "id": 0},
        {"split": "test", "captions": ["A woman with a backpack."],
         "file_path": "test/0001_c1_000.jpg", "processed_tokens": [], "id": 1},
    ])
    _write(tmp_path / "attributes.json", attributes)
    return tmp_path


def test_load_synthetic_both_attribute_forms(tmp_path):
    labels = {"0": {"gender": "male", "upper_color": ["red"], "sleeve": "short"},
              "1": {"gender": "female", "backpack": "yes"}}
    recs = load_synthetic(_synthetic_tree(tmp_path, labels))
    assert recs[0].labels == labels["0"] and recs[0].captions[1] == "The man wears red."
    assert recs[1].pid == "synthetic/1" and recs[1].source == "synthetic"
    as_list = [{"person_id": 0, "attributes": labels["0"], "appearance": {}},
               {"person_id": 1, "attributes": labels["1"]}]
    recs2 = load_synthetic(_synthetic_tree(tmp_path, as_list), split="test")
    assert len(recs2) == 1 and recs2[0].labels == labels["1"]
    by_path = {"train/0000_c0_000.jpg": labels["0"], "test/0001_c1_000.jpg": labels["1"]}
    assert load_synthetic(_synthetic_tree(tmp_path, by_path))[1].labels == labels["1"]


def test_reads_what_the_synthetic_generator_writes(tmp_path):
    from pedsearch.synthetic import generate_dataset

    root = generate_dataset(tmp_path / "syn", num_ids=4, images_per_id=2, seed=0,
                            height_px=64, progress=False)
    recs = load_synthetic(root)
    assert len(recs) == 8 and all(len(r.captions) == 2 and r.path.is_file() for r in recs)
    assert {r.split for r in recs} <= {"train", "val", "test"}
    assert all(r.labels and r.labels.keys() >= {"gender", "upper_color"} for r in recs)


def test_load_synthetic_errors(tmp_path):
    with pytest.raises(InvalidInput, match="no labels for image 'test/0001_c1_000.jpg'"):
        load_synthetic(_synthetic_tree(tmp_path, {"0": {"gender": "male"}}))
    with pytest.raises(InvalidInput, match="key '0'.*unknown value 'blond'"):
        read_attribute_file(_write(tmp_path / "a.json", {"0": {"hair": "blond"}}))
    with pytest.raises(InvalidInput, match="entry 0"):
        read_attribute_file(_write(tmp_path / "b.json", [{"attributes": {}}]))
    with pytest.raises(InvalidInput, match="listed twice"):
        read_attribute_file(_write(tmp_path / "c.json", [{"id": 1, "attributes": {}},
                                                         {"id": "1", "attributes": {}}]))


@pytest.mark.parametrize("value", [None, 1, ["male", 2]])
def test_an_attribute_value_that_is_no_string_names_the_file_and_key(tmp_path, value):
    """A null (an "unknown" written as JSON null) or a number raised a bare TypeError."""
    path = _write(tmp_path / "attributes.json", {"0001/a.jpg": {"gender": value}})
    with pytest.raises(InvalidInput, match=r"attributes.json: key '0001/a.jpg': attribute "
                                           r"'gender': a value is a string"):
        read_attribute_file(path)
