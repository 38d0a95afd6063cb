"""The caption grammar (describe / vocabulary) and the attribute parser, on generated and real
captions."""

from __future__ import annotations

import collections
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput
from pedsearch.config import load_settings
from pedsearch.synthetic.captions import (
    describe,
    describe_detailed,
    parse_attributes,
    vocabulary,
)

SCHEMA = AttributeSchema.default()


def _words(text: str) -> list[str]:
    return re.findall(r"[a-zA-Z']+", text)


def random_labels(rng: np.random.Generator, p_known: float = 0.85) -> dict:
    """A random canonical label set; each family known with probability ``p_known``."""
    out: dict = {}
    for fam in SCHEMA.families:
        if rng.random() >= p_known:
            continue
        if fam.kind == "multi":
            k = 1 if rng.random() < 0.8 else 2
            picked = {str(v) for v in rng.choice(fam.values, size=k, replace=False)}
            out[fam.name] = [v for v in fam.values if v in picked]  # schema order
        else:
            out[fam.name] = str(rng.choice(fam.values))
    return out


@pytest.fixture(scope="module")
def real_captions() -> list[dict]:
    root = load_settings().paths.resolved_data_root()
    path = root / "cuhk-pedes" / "caption_val_new.json" if root else None
    if path is None or not path.is_file():
        pytest.skip("../shared/data not found: set PEDSEARCH_PATHS__DATA_ROOT")
    return json.loads(path.read_text())


FULL = {"gender": "male", "age": "young", "hair": "short", "sleeve": "short",
        "lower_length": "long", "lower_type": "pants", "hat": "yes", "backpack": "yes",
        "bag": "no", "handbag": "no", "upper_color": ["gray"], "lower_color": ["blue"],
        "footwear": "sneakers"}


# -- describe ------------------------------------------------------------------------------------
def test_same_seed_same_caption_different_seed_different_caption():
    a = describe(FULL, np.random.default_rng(42))
    assert a == describe(FULL, np.random.default_rng(42))
    many = {describe(FULL, np.random.default_rng(s)) for s in range(40)}
    assert len(many) >= 38
    rng = np.random.default_rng(0)
    assert describe(FULL, rng) != describe(FULL, rng)  # one generator, successive calls


def test_rejects_bad_input():
    with pytest.raises(InvalidInput, match="unknown value 'crimson'"):
        describe({"upper_color": ["crimson"]}, np.random.default_rng(0))
    with pytest.raises(InvalidInput, match="takes one value"):
        describe({"gender": ["male", "female"]}, np.random.default_rng(0))
    with pytest.raises(InvalidInput, match="numpy.random.Generator"):
        describe(FULL, 0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        describe(["gender"], np.random.default_rng(0))  # type: ignore[arg-type]


def test_unknown_families_and_values_are_skipped():
    labels = {"gender": "female", "shoe_color": "red", "hat": None, "hair": "unknown",
              "upper_color": ["grey"]}  # a synonym is accepted
    for s in range(30):
        d = describe_detailed(labels, np.random.default_rng(s))
        assert set(d.mentioned) <= {"gender", "upper_color"}
        assert "hat" not in d.text.lower() and "hair" not in d.text.lower()
    assert describe({}, np.random.default_rng(0))  # nothing known: still a sentence


def test_unknown_families_are_never_stated():
    """The parser finds nothing that the labels do not hold (describe never invents)."""
    rng = np.random.default_rng(1)
    for s in range(300):
        labels = random_labels(rng, p_known=0.5)
        parsed = parse_attributes(describe(labels, np.random.default_rng(s)))
        assert set(parsed) <= set(labels), (labels, parsed)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), p_known=st.floats(0.0, 1.0))
def test_every_word_is_in_the_vocabulary(seed, p_known):
    rng = np.random.default_rng(seed)
    text = describe(random_labels(rng, p_known), rng)
    words = re.findall(r"[a-z]+", text.lower())
    assert words and set(words) <= vocabulary(), set(words) - vocabulary()
    assert text[0].isupper() and text.endswith(".")


def test_vocabulary_is_exact():
    """Every word of vocabulary() shows up in a few thousand captions of random labels."""
    rng = np.random.default_rng(0)
    seen: set[str] = set()
    for _ in range(4000):
        seen.update(re.findall(r"[a-z]+", describe(random_labels(rng, 0.7), rng).lower()))
    assert seen == vocabulary()
    assert {"grey", "gray", "jeans", "trousers", "sneakers", "walking"} <= vocabulary()


def test_variety_partial_descriptions_and_distractors():
    rng = np.random.default_rng(7)
    texts, mentions = [], collections.Counter()
    for s in range(400):
        d = describe_detailed(FULL, np.random.default_rng(s))
        texts.append(d.text)
        mentions.update(d.mentioned.keys())
    openings = collections.Counter(" ".join(_words(t)[:2]).lower() for t in texts)
    assert len(openings) >= 20
    lower = " ".join(texts).lower()
    for word in ("grey", "gray", "t-shirt", "jeans", "trousers", "pants", "sneakers",
                 "tennis shoes", "backpack", "walking", "looking", "phone"):
        assert word in lower, word
    # partial: no family but gender is stated every time, and every family sometimes
    assert all(0.25 < mentions[f] / 400 < 0.99 for f in ("hair", "footwear", "age", "sleeve"))
    assert mentions["gender"] / 400 > 0.9
    with_distractor = sum(bool(re.search(r"walking|looking|phone|camera|pockets|street|hurry|"
                                         r"behind|sides|still", t.lower())) for t in texts)
    assert 0.3 < with_distractor / 400 < 0.8
    assert rng  # the module-level generator is untouched by describe


def test_length_is_that_of_real_captions_without_data():
    rng = np.random.default_rng(3)
    lengths = [len(_words(describe(random_labels(rng), rng))) for _ in range(500)]
    assert 17 < np.mean(lengths) < 30
    assert min(lengths) >= 4 and max(lengths) < 80


@pytest.mark.needs_data
def test_length_matches_real_captions(real_captions):
    real = np.mean([len(_words(e["captions"])) for e in real_captions])
    rng = np.random.default_rng(3)
    gen = np.mean([len(_words(describe(random_labels(rng), rng))) for _ in range(1000)])
    assert abs(real - 23.7) < 0.1  # CUHK-PEDES val: mean 23.7 words, median 21
    assert abs(gen - real) < 3.0, (gen, real)


# -- parse_attributes: generated captions ---------------------------------------------------------
def test_parser_recovers_generated_attributes():
    rng = np.random.default_rng(11)
    agree = total = found = stated = 0
    for s in range(500):
        labels = random_labels(rng)
        d = describe_detailed(labels, np.random.default_rng(s))
        parsed = parse_attributes(d.text)
        for fam, value in parsed.items():
            total += 1
            agree += value == labels.get(fam)
        stated += len(d.mentioned)
        found += sum(parsed.get(f) == v for f, v in d.mentioned.items())
    assert agree / total > 0.99  # precision against the labels
    assert found / stated > 0.97  # recall of what the caption states


# -- parse_attributes: hand-written phrases ------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("A woman in a red long-sleeved shirt and blue jeans.",
         {"gender": "female", "sleeve": "long", "lower_length": "long", "lower_type": "pants",
          "upper_color": ["red"], "lower_color": ["blue"]}),
        ("The man is wearing a black jacket over a white t-shirt.",
         {"gender": "male", "sleeve": "long", "upper_color": ["black", "white"]}),
        ("His pants are black and his shirt is light blue.",
         {"gender": "male", "lower_length": "long", "lower_type": "pants",
          "upper_color": ["blue"], "lower_color": ["black"]}),
        ("A girl in a pink dress and white sneakers.",
         {"gender": "female", "lower_type": "dress", "upper_color": ["pink"],
          "lower_color": ["pink"], "footwear": "sneakers"}),
        ("She wears a grey skirt that ends above her knees and dress shoes.",
         {"gender": "female", "lower_length": "short", "lower_type": "dress",
          "lower_color": ["gray"], "footwear": "shoes"}),
        ("A man in capri pants and flip-flops, not wearing a hat.",
         {"gender": "male", "lower_type": "pants", "hat": "no", "footwear": "sandals"}),
        ("An elderly man with a baseball cap and a backpack.",
         {"gender": "male", "age": "senior", "hat": "yes", "backpack": "yes"}),
        ("The young lady has long hair in a ponytail and carries a purse.",
         {"gender": "female", "age": "young", "hair": "long", "handbag": "yes"}),
        ("A little boy with a buzz cut is carrying nothing.",
         {"gender": "male", "age": "child", "hair": "short", "backpack": "no", "bag": "no",
          "handbag": "no"}),
        ("A person in a sleeveless black and white striped top and khaki shorts.",
         {"sleeve": "short", "lower_length": "short", "lower_type": "pants",
          "upper_color": ["black", "white"], "lower_color": ["brown"]}),
        ("Man with short black hair wearing a grey hoodie, a shoulder bag over his shoulder.",
         {"gender": "male", "hair": "short", "sleeve": "long", "bag": "yes",
          "upper_color": ["gray"]}),
        ("white shoes, a black bag and a red hat", {"bag": "yes", "hat": "yes"}),
        ("", {}),
    ],
)
def test_parser_phrases(text, expected):
    assert parse_attributes(text) == expected


def test_parser_rejects_non_text():
    with pytest.raises(InvalidInput):
        parse_attributes(None)  # type: ignore[arg-type]


# -- parse_attributes: real captions -------------------------------------------------------------
@pytest.mark.needs_data
def test_parser_on_a_real_caption(real_captions):
    first = real_captions[0]["captions"]
    assert first.startswith("The man has short, dark hair and wears khaki pants")
    assert parse_attributes(first) == {
        "gender": "male", "hair": "short", "sleeve": "long", "lower_length": "long",
        "lower_type": "pants", "backpack": "yes", "upper_color": ["gray"],
        "lower_color": ["brown"],
    }


@pytest.mark.needs_data
def test_parser_finds_obvious_attributes_in_real_captions(real_captions):
    caps = [e["captions"] for e in real_captions]
    parsed = [parse_attributes(c) for c in caps]

    def rate(select, check):
        hits = [check(p) for c, p in zip(caps, parsed) if select(c.lower())]
        assert len(hits) > 30
        return sum(hits) / len(hits)

    only_female = lambda c: re.search(r"\b(woman|lady|she)\b", c) and not re.search(  # noqa
        r"\b(man|men|he|his|him|boy|male|guy)\b", c)
    only_male = lambda c: re.search(r"\b(man|he|his)\b", c) and not re.search(  # noqa
        r"\b(woman|women|she|her|lady|girl|female)\b", c)
    assert rate(only_female, lambda p: p.get("gender") == "female") > 0.98
    assert rate(only_male, lambda p: p.get("gender") == "male") > 0.98
    assert rate(lambda c: "backpack" in c and " no " not in c,
                lambda p: p.get("backpack") == "yes") > 0.95
    assert rate(lambda c: "blue jeans" in c, lambda p: "blue" in p.get("lower_color", [])
                and p.get("lower_type") == "pants") > 0.95
    assert rate(lambda c: re.search(r"\bshorts\b", c) and "skirt" not in c
                and "dress" not in c, lambda p: p.get("lower_length") == "short") > 0.9
    assert rate(lambda c: re.search(r"\b(t-shirt|t shirt|tee shirt)\b", c) and "jacket" not in c
                and "long" not in c, lambda p: p.get("sleeve") == "short") > 0.9
    # coverage: what fraction of real captions state each family
    cover = collections.Counter(f for p in parsed for f in p)
    assert cover["gender"] / len(caps) > 0.9 and cover["lower_type"] / len(caps) > 0.8


@pytest.mark.needs_data
def test_parser_agrees_across_the_two_annotators(real_captions):
    """Each image has a second caption by another annotator (``processed_tokens``): where
    both captions state a family, the parses should mostly agree."""
    agree, total = collections.Counter(), collections.Counter()
    for e in real_captions:
        own = " ".join(re.findall(r"[a-z]+", e["captions"].lower()))
        others = [" ".join(t) for t in e["processed_tokens"] if " ".join(t) != own]
        if not others:
            continue
        a, b = parse_attributes(e["captions"]), parse_attributes(others[0])
        for fam in set(a) & set(b) & {"gender", "lower_type", "sleeve", "backpack"}:
            total[fam] += 1
            agree[fam] += a[fam] == b[fam]
    for fam in total:
        assert agree[fam] / total[fam] > 0.93, (fam, agree[fam], total[fam])
