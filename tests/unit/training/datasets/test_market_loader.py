"""Market-1501 attribute .mat, the gallery_market.mat prediction format, Market/Duke folders."""

from __future__ import annotations

import collections
import pathlib

import numpy as np
import pytest
import scipy.io

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput, NotFound
from training.datasets import encode_record, default_data_root
from training.datasets.market import (
    MarketAttributes,
    MarketTable,
    decode_market_predictions,
    encode_market_predictions,
    load_market_attributes,
    load_reid_folder,
    parse_reid_filename,
    read_market_predictions,
    write_market_predictions,
)

SCHEMA = AttributeSchema.default()


@pytest.fixture(scope="module")
def market_dir() -> pathlib.Path:
    root = default_data_root()
    if root is None or not (root / "market1501-attribute").is_dir():
        pytest.skip("../shared/data not found: set PEDSEARCH_PATHS__DATA_ROOT")
    return root / "market1501-attribute"


@pytest.fixture(scope="module")
def attrs(market_dir) -> MarketAttributes:
    return load_market_attributes(market_dir / "market_attribute.mat")


@pytest.fixture(scope="module")
def table() -> MarketTable:
    return MarketTable.default()


def _codes(**over: int) -> dict[str, int]:
    base = {n: 1 for n in MarketTable.default().mat_fields}
    base.update(upblack=2, downblue=2)
    base.update(over)
    return base


# -- decoding on hand-made codes -------------------------------------------------------------------
def test_decode_codes(table):
    lab = table.decode(_codes(gender=2, hair=2, up=2, down=2, clothes=1, hat=2, age=3))
    assert lab == {
        "gender": "female", "hair": "long", "sleeve": "short", "lower_length": "short",
        "lower_type": "dress", "hat": "yes", "backpack": "no", "bag": "no", "handbag": "no",
        "age": "adult", "upper_color": ["black"], "lower_color": ["blue"],
    }
    assert [table.decode(_codes(age=a))["age"] for a in (1, 2, 3, 4)] == [
        "child", "young", "adult", "senior"]


def test_decode_rejects_bad_codes(table):
    with pytest.raises(InvalidInput, match="'age' = 5"):
        table.decode(_codes(age=5), where="x")
    with pytest.raises(InvalidInput, match="'upred' = 0"):
        table.decode(_codes(upred=0))
    codes = _codes()
    del codes["handbag"]
    with pytest.raises(InvalidInput, match="'handbag' is missing"):
        table.decode(codes)


def test_no_colour_yes_is_an_empty_list_and_unoffered_colours_are_masked(table):
    from training.datasets import ImageRecord

    lab = table.decode(_codes(upblack=1))
    assert lab["upper_color"] == []
    rec = ImageRecord(path=pathlib.Path("x.jpg"), pid="market1501/0002", source="market1501",
                      labels=lab, unannotated=table.unannotated)
    target, mask = encode_record(rec, SCHEMA)
    up = SCHEMA.family("upper_color")
    masked = {v for v, m in zip(up.values, mask[up.slice]) if m == 0}
    assert masked == {"brown", "pink", "orange"}
    assert target[up.slice].sum() == 0
    assert mask[SCHEMA.family("footwear").slice].sum() == 0  # never annotated by Market


# -- the real attribute file ---------------------------------------------------------------------
@pytest.mark.needs_data
def test_identity_counts(attrs):
    assert len(attrs.train) == 751 and len(attrs.test) == 750
    assert not set(attrs.train) & set(attrs.test)
    assert len(set(attrs.train) | set(attrs.test)) == 1501
    assert list(attrs.train)[:3] == ["0002", "0007", "0010"]
    assert list(attrs.test)[:3] == ["0001", "0003", "0004"]
    assert "0002" in attrs and 2 in attrs and "9999" not in attrs
    with pytest.raises(NotFound):
        attrs.labels("9999")


@pytest.mark.needs_data
def test_decoded_labels_match_the_raw_codes(attrs, market_dir, table):
    """Every field of every identity maps back to its code through the table."""
    raw = scipy.io.loadmat(str(market_dir / "market_attribute.mat"))["market_attribute"][0, 0]
    for part, decoded in (("train", attrs.train), ("test", attrs.test)):
        s = raw[part][0, 0]
        ids = [str(np.asarray(c).reshape(-1)[0]) for c in s["image_index"].reshape(-1)]
        for i, pid in enumerate(ids):
            lab = decoded[pid]
            for name, (fam, codes) in table.fields.items():
                assert codes[int(s[name].reshape(-1)[i])] == lab[fam], (part, pid, name)
            for fam, cols in table.colours.items():
                yes = {c for f, c in cols.items() if int(s[f].reshape(-1)[i]) == 2}
                assert set(lab[fam]) == yes, (part, pid, fam)


@pytest.mark.needs_data
def test_value_distributions(attrs):
    ages = collections.Counter(v["age"] for v in attrs.train.values())
    assert ages == {"young": 569, "adult": 160, "child": 14, "senior": 8}
    genders = collections.Counter(v["gender"] for v in attrs.train.values())
    assert genders == {"male": 431, "female": 320}
    n_up = collections.Counter(len(v["upper_color"]) for v in attrs.train.values())
    assert n_up == {1: 673, 0: 78}  # at most one colour per body part
    assert attrs.labels("0001")["lower_type"] == "dress"
    assert attrs.labels(2) == attrs.labels("0002")


@pytest.mark.needs_data
def test_predictions_file(market_dir):
    rows = read_market_predictions(market_dir / "gallery_market.mat")
    assert len(rows) == 13_115  # gallery images of identities > 0
    raw = scipy.io.loadmat(str(market_dir / "gallery_market.mat"))["gallery"]
    assert (encode_market_predictions(rows) == raw).all()
    assert set(rows[0]) == {"gender", "hair", "age", "sleeve", "lower_length", "lower_type",
                            "hat", "backpack", "bag", "handbag", "upper_color", "lower_color"}
    ages = collections.Counter(r["age"] for r in rows)
    assert set(ages) <= {"child", "young", "adult", "senior"}


def test_prediction_format_roundtrip_and_errors(tmp_path, table):
    rows = [table.decode(_codes()), table.decode(_codes(gender=2, downblue=1, downbrown=2))]
    path = tmp_path / "pred.mat"
    write_market_predictions(path, rows)
    back = read_market_predictions(path)
    assert back[0]["lower_color"] == ["blue"] and back[1]["lower_color"] == ["brown"]
    assert back[1]["gender"] == "female"
    m = encode_market_predictions(rows)
    assert m.shape == (2, 12) and m.dtype == np.uint8
    assert m[1, 11] == 7  # brown is the 7th lower colour of the evaluation order
    with pytest.raises(InvalidInput, match=r"N x 12"):
        decode_market_predictions(np.ones((3, 11)))
    bad = m.copy()
    bad[1, 10] = 9
    with pytest.raises(InvalidInput, match=r"row 2, column 11 \(upper_color\)"):
        decode_market_predictions(bad)
    with pytest.raises(InvalidInput, match="no Market-1501 code"):
        encode_market_predictions([{"gender": "male"}])
    with pytest.raises(NotFound):
        read_market_predictions(tmp_path / "missing.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file")
    with pytest.raises(InvalidInput):
        read_market_predictions(tmp_path / "junk.mat")


# -- image folders -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, expected",
    [
        ("0002_c1s1_000451_03.jpg", (2, "c1")),
        ("1501_c6s4_001902_01.jpg", (1501, "c6")),
        ("-1_c3s2_017203_01.jpg", (-1, "c3")),
        ("0000_c5s3_001357_04.jpg", (0, "c5")),
        ("0001_c2_f0046182.jpg", (1, "c2")),  # DukeMTMC-reID
    ],
)
def test_parse_reid_filename(name, expected):
    assert parse_reid_filename(name) == expected


def test_parse_reid_filename_rejects_other_names():
    with pytest.raises(InvalidInput, match="convention"):
        parse_reid_filename("person_12.jpg")


def _touch(folder: pathlib.Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def test_load_reid_folder_with_attributes(tmp_path, table):
    root = tmp_path / "Market-1501-v15.09.15"
    _touch(root / "bounding_box_train", ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg",
                                         "0007_c3s3_077419_03.jpg", "Thumbs.db"])
    _touch(root / "bounding_box_test", ["0000_c1s1_000151_01.jpg", "-1_c1s1_000401_03.jpg",
                                        "0001_c1s1_001051_03.jpg", "0003_c3s1_000401_02.jpg"])
    _touch(root / "query", ["0001_c1s1_001051_00.jpg"])
    attrs = MarketAttributes(
        train={"0002": table.decode(_codes()), "0007": table.decode(_codes(gender=2))},
        test={"0001": table.decode(_codes(clothes=1))},
        unannotated=table.unannotated,
    )
    train = load_reid_folder(root, split="train", attributes=attrs)
    assert [(r.pid, r.camera) for r in train] == [
        ("market1501/0002", "c1"), ("market1501/0002", "c2"), ("market1501/0007", "c3")]
    assert train[2].labels["gender"] == "female" and train[0].unannotated
    gallery = load_reid_folder(root, split="gallery", attributes=attrs)
    assert [r.pid for r in gallery] == ["market1501/0001", "market1501/0003"]  # junk dropped
    assert gallery[0].labels["lower_type"] == "dress" and gallery[1].labels == {}
    assert len(load_reid_folder(root, split="gallery", keep_junk=True)) == 4
    query = load_reid_folder(root, split="query")
    assert query[0].subset == "query" and query[0].split == "test"

    with pytest.raises(InvalidInput, match="unknown split"):
        load_reid_folder(root, split="val")
    with pytest.raises(NotFound, match="bounding_box_train"):
        load_reid_folder(tmp_path / "nowhere")
    (root / "query" / "bad-name.jpg").write_bytes(b"")
    with pytest.raises(InvalidInput, match="bad-name.jpg"):
        load_reid_folder(root, split="query")


def test_load_duke_folder(tmp_path):
    root = tmp_path / "DukeMTMC-reID"
    _touch(root / "bounding_box_train", ["0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg"])
    recs = load_reid_folder(root, split="train", source="dukemtmc")
    assert [(r.pid, r.camera, r.source) for r in recs] == [
        ("dukemtmc/0001", "c2", "dukemtmc"), ("dukemtmc/0001", "c5", "dukemtmc")]


@pytest.mark.needs_data
def test_real_labels_attach_to_synthetic_file_names(tmp_path, attrs):
    root = tmp_path / "market"
    _touch(root / "bounding_box_train", ["0002_c1s1_000451_03.jpg"])
    _touch(root / "bounding_box_test", ["0001_c1s1_001051_03.jpg"])
    (rec,) = load_reid_folder(root, split="train", attributes=attrs)
    assert rec.labels == attrs.train["0002"]
    (rec,) = load_reid_folder(root, split="gallery", attributes=attrs)
    assert rec.labels == attrs.test["0001"]
    target, mask = encode_record(rec, SCHEMA)
    assert mask.sum() == SCHEMA.dim - 4 - 5  # footwear (4) unknown; 3 + 2 colours not offered
