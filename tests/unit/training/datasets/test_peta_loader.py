"""PETA loader and mapping table: judgement calls on hand-made lines, then the real files."""

from __future__ import annotations

import collections
import pathlib

import numpy as np
import pytest

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import ConfigError, InvalidInput, NotFound
from training.datasets import default_data_root, encode_record, load_mapping
from training.datasets.peta import (
    PETA_SUBSETS,
    PetaTable,
    load_peta,
    parse_peta_filename,
    read_label_file,
)

SCHEMA = AttributeSchema.default()


@pytest.fixture(scope="module")
def table() -> PetaTable:
    return PetaTable.default()


@pytest.fixture(scope="module")
def data_root() -> pathlib.Path:
    root = default_data_root()
    if root is None or not (root / "peta").is_dir():
        pytest.skip("../shared/data not found: set PEDSEARCH_PATHS__DATA_ROOT")
    return root


@pytest.fixture(scope="module")
def peta(data_root):
    return load_peta(data_root)


# -- the mapping table on hand-made lines --------------------------------------------------------
def test_examples_of_the_brief(table):
    lab = table.labels(["upperBodyRed", "personalLess30", "lowerBodyShortSkirt",
                        "carryingMessengerBag", "accessoryHat"])
    assert lab["upper_color"] == ["red"]
    assert lab["age"] == "young"
    assert lab["lower_length"] == "short" and lab["lower_type"] == "dress"
    assert lab["bag"] == "yes" and lab["backpack"] == "no"  # carrying group annotated
    assert lab["hat"] == "yes"
    assert "handbag" not in lab  # PETA has no handbag class: unknown


def test_absent_means_no_only_where_the_group_was_annotated(table):
    assert table.labels(["accessoryNothing", "carryingNothing"]) == {
        "hat": "no", "backpack": "no", "bag": "no"}
    assert table.labels(["personalMale"]) == {"gender": "male"}  # no accessory/carrying names


def test_conflicts_and_weak_claims(table):
    # jeans is a fabric: a denim skirt, jean shorts
    assert table.labels(["lowerBodyJeans", "lowerBodyShortSkirt"]) == {
        "lower_length": "short", "lower_type": "dress"}
    assert table.labels(["lowerBodyJeans", "lowerBodyShorts"]) == {
        "lower_length": "short", "lower_type": "pants"}
    # a generic "shoes" gives way to a specific kind
    assert table.labels(["footwearShoes", "footwearSneakers"])["footwear"] == "sneakers"
    # disagreeing strong claims: unknown, not a label
    lab = table.labels(["lowerBodyShortSkirt", "lowerBodyTrousers"])
    assert "lower_type" not in lab and "lower_length" not in lab
    lab = table.labels(["lowerBodyLongSkirt", "lowerBodyTrousers"])
    assert lab == {"lower_length": "long"}
    assert table.labels(["hairBald", "hairShort"]) == {"hair": "short"}
    assert table.labels(["upperBodyLongSleeve", "upperBodyNoSleeve"]) == {}


def test_unknown_markers_cancel_only_the_absent_default(table):
    assert "hat" not in table.labels(["accessoryKerchief"])
    assert table.labels(["accessoryKerchief", "accessoryHat"])["hat"] == "yes"
    lab = table.labels(["carryingPlasticBags"])
    assert "bag" not in lab and lab["backpack"] == "no"
    assert table.labels(["carryingPlasticBags", "carryingMessengerBag"])["bag"] == "yes"


def test_colours_are_multi_and_ordered_by_schema(table):
    lab = table.labels(["upperBodyWhite", "upperBodyBlack", "upperBodyGrey", "lowerBodyBrown"])
    assert lab["upper_color"] == ["black", "white", "gray"]
    assert lab["lower_color"] == ["brown"]
    target, mask = SCHEMA.encode(lab)
    fam = SCHEMA.family("upper_color")
    assert mask[fam.slice].all() and target[fam.slice].sum() == 3


def test_alias_and_capri(table):
    assert table.labels(["footwearSneaker"])["footwear"] == "sneakers"
    assert table.labels(["lowerBodyCapri"]) == {"lower_type": "pants"}


def test_unknown_name_is_an_error_naming_where(table):
    with pytest.raises(InvalidInput, match=r"Label.txt \(id 7\).*upperBodyTuxedo"):
        table.labels(["upperBodyTuxedo"], where="Label.txt (id 7)")


def test_table_is_checked_against_the_schema():
    bad = dict(load_mapping("peta"))
    bad["attributes"] = {**bad["attributes"], "upperBodyRed": {"upper_color": "crimson"}}
    with pytest.raises(ConfigError, match="crimson"):
        PetaTable(table=bad, schema=SCHEMA)
    bad = dict(load_mapping("peta"))
    bad["attributes"] = {**bad["attributes"], "carryingOther": {"handbag": "yes"}}
    with pytest.raises(ConfigError):
        PetaTable(table=bad, schema=SCHEMA)


def test_every_mapped_family_value_exists():
    table = load_mapping("peta")
    for name, claims in table["attributes"].items():
        for fam, value in claims.items():
            if value != "unknown":
                assert value in SCHEMA.family(fam).values, name


# -- file names ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "subset, name, expected",
    [
        ("TownCentre", "100_1726.jpg", ("100", None)),
        ("PRID", "0001_a.png", ("0001", "a")),
        ("PRID", "0001_b.png", ("0001", "b")),
        ("GRID", "0001_2_25023_116_134_128_330.jpeg", ("0001", "2")),
        ("MIT", "00924_female_back.jpg", ("00924", None)),
        ("i-LID", "0119_003.jpg", ("0119", None)),
        ("VIPeR", "0042_cam1.bmp", ("0042", None)),  # a subset not shipped here: generic rule
    ],
)
def test_parse_peta_filename(subset, name, expected):
    assert parse_peta_filename(subset, name) == expected


def test_parse_peta_filename_rejects_foreign_names():
    with pytest.raises(InvalidInput, match="PRID"):
        parse_peta_filename("PRID", "0001_c.png")
    with pytest.raises(InvalidInput):
        parse_peta_filename("GRID", "0001.jpeg")


def test_loader_on_a_tiny_tree(tmp_path):
    arch = tmp_path / "peta" / "PRID" / "archive"
    arch.mkdir(parents=True)
    (arch / "Label.txt").write_text("0001 personalMale accessoryNothing carryingBackpack\n\n"
                                    "0002 personalFemale upperBodyPink\n")
    for n in ("0001_a.png", "0001_b.png", "0002_a.png"):
        (arch / n).write_bytes(b"")
    (arch / "Thumbs.db").write_bytes(b"")
    recs = load_peta(tmp_path)
    assert [(r.pid, r.camera) for r in recs] == [
        ("peta/PRID/0001", "a"), ("peta/PRID/0001", "b"), ("peta/PRID/0002", "a")]
    assert recs[0].labels == {"gender": "male", "hat": "no", "backpack": "yes", "bag": "no"}
    # the peta folder itself works as root too
    assert len(load_peta(tmp_path / "peta")) == 3

    (arch / "0003_a.png").write_bytes(b"")
    with pytest.raises(InvalidInput, match="0003"):
        load_peta(tmp_path)


def test_label_file_errors(tmp_path):
    with pytest.raises(NotFound):
        read_label_file(tmp_path / "Label.txt")
    (tmp_path / "Label.txt").write_text("0001 personalMale\n0001 personalFemale\n")
    with pytest.raises(InvalidInput, match=":2: identity '0001' is listed twice"):
        read_label_file(tmp_path / "Label.txt")
    with pytest.raises(NotFound, match="PEDSEARCH_PATHS__DATA_ROOT"):
        load_peta(tmp_path / "nowhere")


# -- the real files ------------------------------------------------------------------------------
@pytest.mark.needs_data
def test_counts_per_subset(peta):
    counts = collections.Counter(r.subset for r in peta)
    # The data README's table; its "10,742 images" total is one more than the table's sum.
    assert counts == {"TownCentre": 6967, "PRID": 1134, "GRID": 1275, "MIT": 888, "i-LID": 477}
    assert len(peta) == 10_741
    ids = {s: len({r.pid for r in peta if r.subset == s}) for s in PETA_SUBSETS}
    # TownCentre's Label.txt has 228 lines, 6 of them without images
    assert ids == {"TownCentre": 222, "PRID": 934, "GRID": 1025, "MIT": 888, "i-LID": 120}


@pytest.mark.needs_data
def test_identities_are_namespaced_and_cameras_parsed(peta):
    by_pid = collections.defaultdict(list)
    for r in peta:
        by_pid[r.pid].append(r)
    assert by_pid["peta/PRID/0001"][0].labels != by_pid["peta/i-LID/0001"][0].labels
    prid_pairs = [v for k, v in by_pid.items() if k.startswith("peta/PRID/") and len(v) == 2]
    assert len(prid_pairs) == 200
    assert all({r.camera for r in v} == {"a", "b"} for v in prid_pairs)
    grid_pairs = [v for k, v in by_pid.items() if k.startswith("peta/GRID/") and len(v) == 2]
    assert len(grid_pairs) == 250 and all(v[0].camera != v[1].camera for v in grid_pairs)
    assert max(len(v) for k, v in by_pid.items() if k.startswith("peta/i-LID/")) == 8
    assert all(r.camera is None for r in peta if r.subset in ("TownCentre", "MIT", "i-LID"))


@pytest.mark.needs_data
def test_a_real_line_decodes(peta):
    # PRID 0057: upperBodyWhite lowerBodyBlue hairGrey footwearBlack lowerBodyCasual
    # lowerBodyTrousers personalFemale personalLess60 upperBodyCasual upperBodyShortSleeve
    # upperBodyTshirt hairShort footwearLeatherShoes carryingBackpack accessorySunglasses
    rec = next(r for r in peta if r.pid == "peta/PRID/0057")
    assert rec.labels == {
        "gender": "female", "age": "adult", "hair": "short", "sleeve": "short",
        "lower_length": "long", "lower_type": "pants", "hat": "no", "backpack": "yes",
        "bag": "no", "upper_color": ["white"], "lower_color": ["blue"], "footwear": "shoes",
    }


@pytest.mark.needs_data
def test_mit_gender_comes_from_the_labels_not_the_file_name(peta):
    mit = [r for r in peta if r.subset == "MIT"]
    disagree = [r for r in mit if r.labels["gender"] != r.path.name.split("_")[1]]
    assert len(disagree) == 49  # the file names are wrong for these (or the labels): we trust
    # the labels, which every other subset also relies on


@pytest.mark.needs_data
def test_label_coverage(peta):
    masks = np.stack([encode_record(r, SCHEMA)[1] for r in peta])
    known = {f.name: float(masks[:, f.slice].max(1).mean()) for f in SCHEMA.families}
    assert known["gender"] > 0.999 and known["upper_color"] > 0.999  # 1 PRID line lacks each
    assert known["handbag"] == 0.0
    assert all(v > 0.9 for k, v in known.items() if k != "handbag"), known
