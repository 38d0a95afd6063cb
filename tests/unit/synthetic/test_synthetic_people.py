"""Identities: determinism, schema coverage, colour table and correlations."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput
from pedsearch.synthetic.people import (COLOR_TABLE, PersonSpec, color_name_of, sample_person,
                                        shade_of, validate_attributes)


@pytest.fixture(scope="module")
def population() -> list[PersonSpec]:
    rng = np.random.default_rng(2024)
    return [sample_person(i, rng) for i in range(3000)]


def test_same_seed_same_person() -> None:
    a = [sample_person(i, np.random.default_rng(5)) for i in range(3)]
    b = [sample_person(i, np.random.default_rng(5)) for i in range(3)]
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    c = sample_person(0, np.random.default_rng(6))
    assert c.to_dict() != a[0].to_dict()


def test_every_schema_value_is_reachable(population: list[PersonSpec]) -> None:
    schema = AttributeSchema.default()
    seen: dict[str, set[str]] = collections.defaultdict(set)
    for p in population:
        validate_attributes(p.attributes, schema)
        for fam, val in p.attributes.items():
            seen[fam].update([val] if isinstance(val, str) else val)
    for fam in schema.families:
        assert seen[fam.name] == set(fam.values), fam.name


def test_attributes_encode_in_the_schema(population: list[PersonSpec]) -> None:
    schema = AttributeSchema.default()
    target, mask = schema.encode(population[0].attributes)
    assert mask.sum() == schema.dim and target.sum() >= len(schema.families)


def test_realistic_correlations(population: list[PersonSpec]) -> None:
    dresses = [p for p in population if p.attributes["lower_type"] == "dress"]
    female_share = np.mean([p.attributes["gender"] == "female" for p in dresses])
    assert female_share > 0.9
    long_hair_f = np.mean([p.attributes["hair"] == "long" for p in population
                           if p.attributes["gender"] == "female"])
    long_hair_m = np.mean([p.attributes["hair"] == "long" for p in population
                           if p.attributes["gender"] == "male"])
    assert long_hair_f > 3 * long_hair_m
    kids = [p.appearance.height_scale for p in population if p.attributes["age"] == "child"]
    adults = [p.appearance.height_scale for p in population if p.attributes["age"] == "adult"]
    assert max(kids) < min(adults)


def test_garment_shades_follow_their_names(population: list[PersonSpec]) -> None:
    for p in population[:300]:
        a = p.appearance
        assert len(a.upper_rgb) == len(p.attributes["upper_color"]) in (1, 2)
        assert len(a.lower_rgb) == len(p.attributes["lower_color"]) in (1, 2)
        for name, rgb in zip(p.attributes["upper_color"], a.upper_rgb):
            assert color_name_of(rgb) == name


@pytest.mark.parametrize("name", sorted(COLOR_TABLE))
def test_colour_table_ranges_do_not_overlap(name: str) -> None:
    rng = np.random.default_rng(sorted(COLOR_TABLE).index(name))
    for _ in range(2000):
        assert color_name_of(shade_of(name, rng)) == name


def test_round_trip_through_dict(population: list[PersonSpec]) -> None:
    for p in population[:20]:
        q = PersonSpec.from_dict(p.to_dict())
        assert q == p


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_bad_person_id(bad: object) -> None:
    with pytest.raises(InvalidInput):
        sample_person(bad, np.random.default_rng(0))  # type: ignore[arg-type]


def test_unknown_colour_and_bad_record() -> None:
    with pytest.raises(InvalidInput, match="known"):
        shade_of("teal", np.random.default_rng(0))
    with pytest.raises(InvalidInput):
        PersonSpec.from_dict({"person_id": 1})
    with pytest.raises(InvalidInput, match="missing"):
        validate_attributes({"gender": "male"})
