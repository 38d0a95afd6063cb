"""The query core's pure parts: filter expressions, constraint filters and the re-rank bonus."""

from __future__ import annotations

import pytest

from gateway.search import (
    Constraint,
    filter_expression,
    hard_expression,
    make_constraint,
    passes_hard,
    query_attribute_sets,
    soft_bonus,
)
from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput

SCHEMA = AttributeSchema.default()


def test_make_constraint_canonicalises_and_checks():
    c = make_constraint(SCHEMA, "upper_color", ["Grey", "red", "gray"], mode="hard",
                        min_probability=0.7)
    assert c == Constraint("upper_color", ("gray", "red"), "hard", 0.7)
    assert c.fields() == ["attr_upper_color_gray", "attr_upper_color_red"]
    with pytest.raises(InvalidInput, match="unknown attribute 'wings'"):
        make_constraint(SCHEMA, "wings", ["yes"])
    with pytest.raises(InvalidInput, match="unknown value 'plaid'"):
        make_constraint(SCHEMA, "upper_color", ["plaid"])
    with pytest.raises(InvalidInput, match="lists no values"):
        make_constraint(SCHEMA, "upper_color", [])
    for bad in (0.0, -0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(InvalidInput, match="min_probability"):
            make_constraint(SCHEMA, "hat", ["yes"], min_probability=bad)


def test_hard_expression_ands_constraints_and_ors_values():
    cs = [Constraint("upper_color", ("red", "pink"), "hard", 0.5),
          Constraint("backpack", ("yes",), "hard", 0.8),
          Constraint("hat", ("yes",), "soft")]
    assert hard_expression(cs) == (
        "(attr_upper_color_red >= 0.5 or attr_upper_color_pink >= 0.5) and "
        "(attr_backpack_yes >= 0.8)")
    assert hard_expression(cs[2:]) == ""


def test_passes_hard_evaluates_what_the_expression_filters():
    cs = [Constraint("upper_color", ("red", "pink"), "hard", 0.5),
          Constraint("backpack", ("yes",), "hard", 0.8)]
    assert passes_hard({"attr_upper_color_pink": 0.6, "attr_backpack_yes": 0.8}, cs)
    assert not passes_hard({"attr_upper_color_pink": 0.4, "attr_backpack_yes": 0.9}, cs)
    assert not passes_hard({"attr_upper_color_red": 0.9, "attr_backpack_yes": 0.79}, cs)
    assert passes_hard({}, [Constraint("hat", ("yes",), "soft")])


def test_soft_bonus_is_the_geometric_mean_of_each_constraints_best_value():
    cs = [Constraint("upper_color", ("red", "pink"), "soft"),
          Constraint("hat", ("yes",), "soft"),
          Constraint("backpack", ("yes",), "hard")]
    probs = {"attr_upper_color_red": 0.2, "attr_upper_color_pink": 0.6, "attr_hat_yes": 0.1,
             "attr_backpack_yes": 1.0}
    assert soft_bonus(probs, cs) == pytest.approx((0.6 * 0.1) ** 0.5)
    assert soft_bonus(probs, cs[2:]) == 0.0
    # one clear miss outweighs a perfect fit elsewhere: 1.0 and 0.0 score the floor's root
    assert soft_bonus({"attr_upper_color_red": 1.0}, cs[:2]) == pytest.approx(1e-3)
    assert soft_bonus({"attr_upper_color_red": 0.5, "attr_hat_yes": 0.5}, cs) == \
        pytest.approx(0.5)


def test_query_attribute_sets_merge_families_and_spell_out_alternatives():
    cs = [Constraint("upper_color", ("red",), "query"),
          Constraint("upper_color", ("blue",), "hard"), Constraint("gender", ("female",), "soft")]
    assert query_attribute_sets(SCHEMA, cs) == [
        {"upper_color": ["red", "blue"], "gender": "female"}]
    # any of a single-valued family's values: one concept per value
    assert query_attribute_sets(SCHEMA, [Constraint("footwear", ("boots", "sneakers")),
                                         Constraint("hat", ("yes",))]) == [
        {"footwear": "boots", "hat": "yes"}, {"footwear": "sneakers", "hat": "yes"}]
    # any of a colour: red, or blue (not both)
    assert query_attribute_sets(SCHEMA, [Constraint("upper_color", ("red", "blue"))]) == [
        {"upper_color": ["red"]}, {"upper_color": ["blue"]}]
    # two constraints on one single-valued family: what both accept
    assert query_attribute_sets(SCHEMA, [Constraint("gender", ("female", "male")),
                                         Constraint("gender", ("male",))]) == [{"gender": "male"}]
    with pytest.raises(InvalidInput, match="contradict"):
        query_attribute_sets(SCHEMA, [Constraint("gender", ("female",)),
                                      Constraint("gender", ("male",))])
    # repeated constraints on one single-valued family are merged before counting
    every_shoe = SCHEMA.family("footwear").values
    assert len(query_attribute_sets(SCHEMA, [Constraint("footwear", every_shoe)] * 5)) == 4
    every_colour = SCHEMA.family("upper_color").values
    with pytest.raises(InvalidInput, match="more than 16 combinations"):
        query_attribute_sets(SCHEMA, [Constraint("upper_color", every_colour),
                                      Constraint("lower_color", every_colour)])


def test_filter_expression():
    assert filter_expression() == ""
    assert filter_expression(["cam-1", "cam_2"], 5, 9) == (
        'camera_id in ["cam-1", "cam_2"] and ts_us >= 5 and ts_us <= 9')
    # bounds beyond any capture time are open (Milvus cannot parse int64 extremes)
    assert filter_expression((), -(2**63), 2**63 - 1) == ""
    # ... and those on the other side match nothing, in numbers the parser reads
    assert filter_expression((), None, -(2**63)) == f"ts_us <= {-(2**62)}"
    assert filter_expression((), 2**63 - 1, None) == f"ts_us >= {2**62}"
    with pytest.raises(InvalidInput, match="inverted"):
        filter_expression((), 10, 9)
    for bad in ('a" or 1==1', "", "-x", "a" * 65, "gate-3\n"):
        with pytest.raises(InvalidInput, match="camera id"):
            filter_expression([bad])
