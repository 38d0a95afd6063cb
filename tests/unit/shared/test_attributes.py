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


def test_attribute_space_recovers_the_logits_by_hand():
    from pedsearch.attributes import latent_attribute_score

    schema = AttributeSchema({"gender": {"kind": "single", "values": ["male", "female"]},
                              "bag": {"kind": "multi", "values": ["backpack", "handbag"]}})
    # softmax of logits (1, -1) and sigmoids of logits (ln 3, 0)
    p = np.array([[np.e / (np.e + 1 / np.e), (1 / np.e) / (np.e + 1 / np.e), 0.75, 0.5]])
    v = schema.attribute_space(p)
    # centred log-softmax = the logits (1, -1); log(p / (1 - p)) = ln 3, 0; then unit length
    raw = np.array([1.0, -1.0, np.log(3.0), 0.0])
    np.testing.assert_allclose(v[0], raw / np.linalg.norm(raw), atol=1e-6)
    # a shift of a single family's logits gives the same probabilities, hence the same vector
    assert v.dtype == np.float32
    # S_a of a description with itself is 1; with its opposite it is negative
    q = np.array([[0.1, 0.9, 0.2, 0.5]])
    s = schema.attribute_space(np.concatenate([p, q])) @ v[0]
    assert s[0] == pytest.approx(1.0, abs=1e-6) and s[1] < 0
    # certain values stay finite (clipped), an all-uncertain row stays zero
    assert np.isfinite(schema.attribute_space(np.array([[1.0, 0.0, 1.0, 0.0]]))).all()
    np.testing.assert_array_equal(schema.attribute_space(np.full((1, 4), 0.5)), 0.0)
    with pytest.raises(InvalidInput, match=r"\(N, 4\)"):
        schema.attribute_space(p[:, :3])
    # Eq. 19, scaled into [-1, 1]: ranks as latent + attribute does
    assert latent_attribute_score(0.5, 0.9, 1.0) == pytest.approx(0.7)
    assert latent_attribute_score(0.5, 0.9, 0.0) == 0.5
    np.testing.assert_allclose(latent_attribute_score(np.array([1.0, -1.0]),
                                                      np.array([1.0, -1.0]), 3.0), [1.0, -1.0])
