"""Paired comparison of two models on the same queries (``training.compare``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pedsearch.errors import InvalidInput
from training.compare import (
    Difference,
    against_baselines,
    bootstrap_statistic,
    cluster_bootstrap,
    compare_per_query,
    served_text,
    write_comparison,
)


def scores(ranks, aps, clusters):
    return {"rank": np.array(ranks), "ap": np.array(aps, float), "cluster": np.array(clusters)}


def test_a_constant_difference_has_a_zero_width_interval():
    low, high = cluster_bootstrap(np.full(30, 0.25), np.repeat(np.arange(10), 3))
    assert low == pytest.approx(0.25) and high == pytest.approx(0.25)


def test_the_interval_covers_the_mean_and_shrinks_with_more_persons():
    rng = np.random.default_rng(0)
    diff = rng.choice([-1.0, 0.0, 0.0, 1.0, 1.0], size=600)
    few = cluster_bootstrap(diff[:60], np.repeat(np.arange(20), 3))
    many = cluster_bootstrap(diff, np.repeat(np.arange(200), 3))
    assert few[0] < diff[:60].mean() < few[1]
    assert many[1] - many[0] < few[1] - few[0]


def test_queries_of_one_person_move_together():
    """Ten persons, each with 20 identical queries: as uncertain as ten queries, not 200."""
    per_person = np.array([1, 1, 1, 1, 0, 0, 0, -1, 1, 0], float)
    grouped = cluster_bootstrap(np.repeat(per_person, 20), np.repeat(np.arange(10), 20))
    independent = cluster_bootstrap(np.repeat(per_person, 20), np.arange(200))
    assert grouped[1] - grouped[0] > 2 * (independent[1] - independent[0])


def test_figures_are_the_hand_computed_means_and_verdicts_follow_the_interval():
    base = {"text": scores([1, 3, 2, 12], [1.0, 0.5, 0.5, 0.1], [0, 0, 1, 1])}
    cand = {"text": scores([1, 1, 1, 12], [1.0, 1.0, 1.0, 0.1], [0, 0, 1, 1])}
    by_name = {d.metric: d for d in compare_per_query(base, cand)}
    r1 = by_name["text_R@1"]
    assert (r1.baseline, r1.candidate, r1.delta) == (0.25, 0.75, 0.5)
    assert (r1.queries, r1.clusters) == (4, 2)
    assert by_name["text_R@10"].baseline == 0.75 and by_name["text_R@10"].delta == 0.0
    assert by_name["text_mAP"].baseline == pytest.approx(0.525)
    assert by_name["text_mAP"].candidate == pytest.approx(0.775)
    # every person gains: the interval lies above 0
    assert r1.low > 0 and r1.verdict == "better"
    assert by_name["text_R@10"].verdict == "not decided"


def test_verdicts():
    assert Difference("m", 0.5, 0.4, -0.2, -0.01, 10, 5).verdict == "worse"
    assert Difference("m", 0.5, 0.6, 0.01, 0.2, 10, 5).verdict == "better"
    assert Difference("m", 0.5, 0.5, -0.1, 0.1, 10, 5).verdict == "not decided"


def test_served_text_pairs_each_bundle_with_its_own_ranking():
    base = {"text": scores([1, 1], [1, 1], [0, 1]), "textla": scores([2, 2], [.5, .5], [0, 1])}
    cand = {"text": scores([2, 2], [.5, .5], [0, 1]), "textla": scores([1, 1], [1, 1], [0, 1])}
    assert served_text(base, 0.0) == "text" and served_text(base, 1.0) == "textla"
    served = next(d for d in compare_per_query(base, cand, metrics=("R@1",), weights=(0.0, 1.0))
                  if d.metric == "text_served_R@1")
    assert (served.baseline, served.candidate) == (1.0, 1.0)


def test_served_rankings_against_their_attribute_prediction_baselines():
    clusters = [0, 0, 1, 1]
    pq = {"text": scores([1, 2, 1, 1], [1, .5, 1, 1], clusters),
          "textla": scores([1, 1, 1, 1], [1, 1, 1, 1], clusters),
          "textpred": scores([3, 3, 1, 1], [.3, .3, 1, 1], clusters),
          "attrsoft": scores([1, 5], [1, .2], [7, 8]),
          "attrpred": scores([2, 5], [.5, .2], [7, 8])}
    by_name = {d.metric: d for d in against_baselines(pq, 1.0, metrics=("R@1", "mAP"))}
    assert set(by_name) == {"text_served vs textpred R@1", "text_served vs textpred mAP",
                            "attrsoft vs attrpred R@1", "attrsoft vs attrpred mAP"}
    text = by_name["text_served vs textpred R@1"]  # served by LA (weight 1): 4 of 4 first
    assert (text.baseline, text.candidate) == (0.5, 1.0)
    cosine = against_baselines(pq, 0.0, metrics=("R@1",))[0]  # weight 0: by the cosine
    assert cosine.candidate == 0.75
    assert by_name["attrsoft vs attrpred R@1"].delta == 0.5


def test_different_queries_are_refused():
    base = {"image": scores([1, 2], [1, .5], [0, 1])}
    cand = {"image": scores([1, 2], [1, .5], [0, 2])}
    with pytest.raises(InvalidInput, match="different image queries"):
        compare_per_query(base, cand)


def test_attribute_mA_is_paired_over_the_same_images():
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32)
    masks = np.ones_like(targets)
    rec = {"targets": targets, "masks": masks, "cluster": np.array([0, 0, 1, 1])}
    base = {"recognition": {**rec, "probs": np.array([[1, 0], [1, 0], [1, 0], [1, 0.]])}}
    cand = {"recognition": {**rec, "probs": targets.copy()}}
    (ma,) = compare_per_query(base, cand)
    # baseline: attribute 0 is always predicted on (TPR 1, TNR 0), attribute 1 always off
    assert ma.metric == "attr_mA" and ma.baseline == pytest.approx(0.5)
    assert ma.candidate == pytest.approx(1.0) and ma.verdict == "better"
    other = {"recognition": {**cand["recognition"], "masks": np.zeros_like(masks)}}
    with pytest.raises(InvalidInput, match="different images"):
        compare_per_query(base, other)


def test_attribute_mA_of_a_few_persons_leaves_out_resamples_where_it_is_undefined():
    """A resample of persons who all have the attribute (or all lack it) has no mA; the
    comparison of a small evaluation set raised after both bundles were evaluated."""
    targets = np.array([[1], [1], [0], [0], [1], [1]], np.float32)
    rec = {"targets": targets, "masks": np.ones_like(targets),
           "cluster": np.array([0, 0, 1, 1, 2, 2])}  # persons 0 and 2 have it, 1 does not
    base = {"recognition": {**rec, "probs": np.full_like(targets, 0.9)}}
    cand = {"recognition": {**rec, "probs": targets.copy()}}
    (ma,) = compare_per_query(base, cand)
    assert ma.baseline == pytest.approx(0.5) and ma.candidate == pytest.approx(1.0)
    assert np.isfinite(ma.low) and ma.low == pytest.approx(0.5)  # every defined resample
    # never defined (one person): no interval rather than one from a handful of resamples
    low, high = bootstrap_statistic(lambda idx: float("nan"), np.zeros(6, int))
    assert np.isnan(low) and np.isnan(high)


def test_evaluation_records_what_each_query_scored():
    """``per_query`` of ``evaluate_encoders`` averages back to its own figures."""
    from pedsearch.attributes import AttributeSchema
    from training.evaluate import EvalSet, evaluate_encoders

    schema = AttributeSchema.default()
    rng = np.random.default_rng(3)
    img = rng.standard_normal((8, 6)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt = img[[0, 2, 4, 6]] + 0.8 * rng.standard_normal((4, 6)).astype(np.float32)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)

    class Fixed:
        def encode_images(self, records):
            return img, rng.random((8, schema.dim))

        def encode_texts(self, captions):
            return txt, rng.random((4, schema.dim))

        def encode_attribute_vectors(self, vec):
            return None

    data = EvalSet(records=[], pids=np.repeat(np.arange(4), 2), captions=list("abcd"),
                   caption_owner=np.array([0, 2, 4, 6]), targets=np.zeros((8, schema.dim)),
                   masks=np.zeros((8, schema.dim)), cams=np.arange(8))
    per_query: dict = {}
    m = evaluate_encoders(Fixed(), data, schema, per_query=per_query)
    assert {"text", "textpred", "textla"} <= set(per_query)
    text = per_query["text"]
    assert np.mean(text["rank"] <= 1) == pytest.approx(m["text_R@1"])
    assert text["ap"].mean() == pytest.approx(m["text_mAP"])
    np.testing.assert_array_equal(text["cluster"], [0, 1, 2, 3])


def test_written_results(tmp_path):
    diffs = [Difference("text_R@1", 0.3, 0.4, 0.02, 0.18, 500, 160),
             Difference("image_R@1", 0.6, 0.55, -0.15, 0.05, 42, 42)]
    write_comparison(diffs, tmp_path, baseline="v_old", candidate="v_new")
    doc = json.loads((tmp_path / "compare.json").read_text())
    assert (doc["baseline"], doc["candidate"]) == ("v_old", "v_new")
    assert [r["verdict"] for r in doc["differences"]] == ["better", "not decided"]
    assert doc["differences"][0]["delta"] == pytest.approx(0.1)
    assert (tmp_path / "compare.png").stat().st_size > 1000
