"""DukeMTMC-attribute loader on a small fixture written in the published duke_attribute.mat
layout (struct duke_attribute.train / .test, 23 coded 1 x N fields plus image_index)."""

from __future__ import annotations

import numpy as np
import pytest

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput
from training.datasets import encode_record
from training.datasets.market import MarketTable, load_duke_attributes

scipy_io = pytest.importorskip("scipy.io")

UP = ["upblack", "upwhite", "upred", "uppurple", "upgray", "upblue", "upgreen", "upbrown"]
DOWN = ["downblack", "downwhite", "downred", "downgray", "downblue", "downgreen", "downbrown"]
OTHER = ["backpack", "bag", "handbag", "boots", "gender", "hat", "shoes", "top"]


def _part(ids, rows):
    """rows: per identity a dict of the codes that are not 1 (= no / male / short / dark)."""
    part = {name: np.ones((1, len(ids)), np.uint8) for name in OTHER + UP + DOWN}
    for i, codes in enumerate(rows):
        for name, code in codes.items():
            part[name][0, i] = code
    index = np.empty((1, len(ids)), dtype=object)
    for i, pid in enumerate(ids):
        index[0, i] = np.array([pid])
    part["image_index"] = index
    return part


@pytest.fixture()
def duke_mat(tmp_path):
    train = _part(["0001", "0005"], [
        {"gender": 2, "boots": 2, "backpack": 2, "upred": 2, "downblue": 2, "top": 2},
        {"hat": 2, "shoes": 2, "upbrown": 2, "downbrown": 2},
    ])
    test = _part(["0019"], [{"handbag": 2, "bag": 2}])  # no colour yes: outside Duke's list
    path = tmp_path / "duke_attribute.mat"
    scipy_io.savemat(str(path), {"duke_attribute": {"train": train, "test": test}})
    return path


def test_duke_fixture_decodes_to_canonical_labels(duke_mat):
    attrs = load_duke_attributes(duke_mat)
    assert sorted(attrs.train) == ["0001", "0005"] and sorted(attrs.test) == ["0019"]
    a = attrs.labels(1)
    assert a["gender"] == "female" and a["footwear"] == "boots" and a["backpack"] == "yes"
    assert a["upper_color"] == ["red"] and a["lower_color"] == ["blue"]
    assert "sleeve" not in a  # Duke's `top` is the clothing's length, not the sleeves'
    b = attrs.labels("0005")
    assert b["gender"] == "male" and b["hat"] == "yes"
    assert "footwear" not in b  # boots = no says nothing about the other footwear
    assert b["upper_color"] == ["brown"] and b["lower_color"] == ["brown"]
    c = attrs.labels(19)
    assert c["handbag"] == "yes" and c["bag"] == "yes" and c["upper_color"] == []
    assert attrs.unannotated["lower_color"] == ("purple", "yellow", "pink", "orange")


def test_duke_unannotated_colours_and_families_are_masked(duke_mat):
    from training.datasets import ImageRecord

    schema = AttributeSchema.default()
    attrs = load_duke_attributes(duke_mat)
    rec = ImageRecord(path="0005_c2_f0046182.jpg", pid="0005", source="dukemtmc",
                      labels=attrs.labels(5), unannotated=attrs.unannotated)
    target, mask = encode_record(rec, schema)
    assert mask[schema.index("upper_color", "brown")] == 1.0  # Duke offers brown tops
    assert mask[schema.index("upper_color", "yellow")] == 0.0  # but no yellow ones
    assert mask[schema.index("lower_color", "purple")] == 0.0
    assert mask[schema.index("age", "young")] == 0.0  # Duke has no age
    assert target[schema.index("upper_color", "brown")] == 1.0


def test_duke_table_reads_23_fields_minus_the_two_without_a_family():
    table = MarketTable.default(dataset="dukemtmc")
    assert len(table.mat_fields) == 23 - 2  # top and shoes have no canonical family
    assert table.pred_columns == []


def test_bad_duke_code_is_invalid_input(tmp_path):
    train = _part(["0001"], [{"boots": 3}])
    path = tmp_path / "bad.mat"
    scipy_io.savemat(str(path), {"duke_attribute": {"train": train, "test": _part(["0002"],
                                                                                  [{}])}})
    with pytest.raises(InvalidInput, match="boots"):
        load_duke_attributes(path)
