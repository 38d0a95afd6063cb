"""The canonical attribute schema's flat layout, synonyms and encode/decode."""

import numpy as np
import pytest

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput


def test_layout_covers_market_families():
    s = AttributeSchema.default()
    for fam in ("gender", "age", "hair", "sleeve", "lower_length", "lower_type", "hat",
                "backpack", "bag", "handbag", "upper_color", "lower_color"):
        s.family(fam)
    assert len(s.family("upper_color").values) >= 8
    assert len(s.family("lower_color").values) >= 9
    assert s.dim == len(s.names()) == len(s.field_names())


def test_synonyms_and_errors():
    s = AttributeSchema.default()
    assert s.canonical_value("upper_color", "Grey") == "gray"
    assert s.canonical_value("gender", "woman") == "female"
    with pytest.raises(InvalidInput, match="unknown attribute 'colour'"):
        s.family("colour")
    with pytest.raises(InvalidInput, match="known: black"):
        s.index("upper_color", "plaid")


def test_encode_decode_round_trip():
    s = AttributeSchema.default()
    target, mask = s.encode({"gender": "female", "upper_color": ["red", "white"]})
    assert target.sum() == 3
    assert mask[s.family("gender").slice].all() and not mask[s.family("hat").slice].any()
    probs = np.full(s.dim, 0.1, np.float32)
    probs[s.index("gender", "female")] = 0.9
    probs[s.index("upper_color", "red")] = 0.8
    out = s.decode(probs)
    assert out["gender"] == "female" and out["upper_color"] == ["red"]
    with pytest.raises(InvalidInput, match="one value"):
        s.encode({"gender": ["male", "female"]})


def test_dict_round_trip():
    s = AttributeSchema.default()
    assert AttributeSchema.from_dict(s.to_dict()) == s
