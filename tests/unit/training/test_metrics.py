"""Retrieval and attribute-recognition metrics on tiny hand-worked inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput
from training import metrics
from training.metrics import (
    attribute_metrics,
    attribute_query_protocol,
    one_hot_single_families,
    retrieval_metrics,
    semantic_ids,
)

# -- retrieval ---------------------------------------------------------------------------------
# Gallery labels g0..g3 = [1, 2, 1, 3]; queries q0..q2 have labels [1, 2, 3].
GALLERY = np.array([1, 2, 1, 3])
QUERIES = np.array([1, 2, 3])
SIM = np.array(
    [
        # q0 (label 1): ranking g1(.9, l2) g2(.8, l1) g0(.2, l1) g3(.1, l3) -> hits at ranks 2, 3
        #   first hit 2; AP = (1/2 + 2/3) / 2 = 7/12
        [0.2, 0.9, 0.8, 0.1],
        # q1 (label 2): ranking g3(.6) g0(.5) g1(.4, l2) g2(.3) -> hit at rank 3; AP = 1/3
        [0.5, 0.4, 0.3, 0.6],
        # q2 (label 3): ranking g3(.7, l3) first -> hit at rank 1; AP = 1
        [0.1, 0.2, 0.3, 0.7],
    ]
)


def test_hand_worked_ranks_recall_and_ap():
    m = retrieval_metrics(SIM, QUERIES, GALLERY, ks=(1, 2, 5))
    # first-hit ranks {2, 3, 1}: CMC = [1/3, 2/3, 3/3, 3/3]
    np.testing.assert_allclose(m["cmc"], [1 / 3, 2 / 3, 1.0, 1.0])
    assert m["R@1"] == pytest.approx(1 / 3)
    assert m["R@2"] == pytest.approx(2 / 3)
    assert m["R@5"] == pytest.approx(1.0)  # K > G reads the last rank
    np.testing.assert_allclose(m["ap"], [7 / 12, 1 / 3, 1.0])
    # mAP = (7/12 + 4/12 + 12/12) / 3 = 23/36
    assert m["mAP"] == pytest.approx(23 / 36)
    assert m["first_hit_rank"].tolist() == [2, 3, 1]
    assert (m["num_queries"], m["num_valid_queries"], m["num_skipped_queries"]) == (3, 3, 0)


def test_query_without_positive_is_skipped_and_counted():
    # q3 has label 9, absent from the gallery: skipped, so every figure stays as above.
    sim = np.vstack([SIM, [0.4, 0.3, 0.2, 0.1]])
    m = retrieval_metrics(sim, np.array([1, 2, 3, 9]), GALLERY)
    assert (m["num_queries"], m["num_valid_queries"], m["num_skipped_queries"]) == (4, 3, 1)
    assert m["mAP"] == pytest.approx(23 / 36)
    assert m["R@1"] == pytest.approx(1 / 3)
    assert math.isnan(m["ap"][3]) and m["first_hit_rank"][3] == -1


def test_same_camera_exclusion_follows_market_protocol():
    # One query: label 1, camera A. Gallery (label, cam): g0 (1,A) g1 (1,B) g2 (2,A) g3 (1,A).
    sim = np.array([[0.9, 0.5, 0.8, 0.7]])
    q, qc = np.array([1]), np.array(["A"])
    g, gc = np.array([1, 1, 2, 1]), np.array(["A", "B", "A", "A"])
    # Without exclusion: ranking g0 g2 g3 g1 -> hits at 1, 3, 4; AP = (1 + 2/3 + 3/4) / 3 = 29/36
    plain = retrieval_metrics(sim, q, g, query_cams=qc, gallery_cams=gc)
    assert plain["R@1"] == 1.0
    assert plain["mAP"] == pytest.approx(29 / 36)
    # With exclusion g0 and g3 (same id, same cam) leave the ranking; g2 (other id, same cam)
    # stays: ranking g2 g1 -> the one hit is at rank 2; AP = 1/2, CMC = [0, 1, 1, 1].
    m = retrieval_metrics(sim, q, g, query_cams=qc, gallery_cams=gc, exclude_same_cam=True)
    assert m["R@1"] == 0.0
    assert m["mAP"] == pytest.approx(0.5)
    np.testing.assert_allclose(m["cmc"], [0, 1, 1, 1])


def test_same_camera_only_positives_make_query_invalid():
    sim = np.array([[0.9, 0.1], [0.1, 0.9]])
    # q0 (label 1, cam A) has its only positive on cam A -> skipped; q1 (label 2, cam A) finds
    # g1 (label 2, cam B) at rank 1.
    m = retrieval_metrics(
        sim, np.array([1, 2]), np.array([1, 2]),
        query_cams=np.array([0, 0]), gallery_cams=np.array([0, 1]), exclude_same_cam=True,
    )
    assert (m["num_valid_queries"], m["num_skipped_queries"]) == (1, 1)
    assert m["R@1"] == 1.0 and m["mAP"] == 1.0


def test_ties_keep_gallery_order():
    # All similarities equal: gallery order decides, so q (label 0) finds g1 at rank 2.
    m = retrieval_metrics(np.zeros((1, 3)), np.array([0]), np.array([1, 0, 2]))
    assert m["first_hit_rank"].tolist() == [2]
    assert m["mAP"] == pytest.approx(0.5)


def _reference(sim, ql, gl, qc=None, gc=None, exclude=False):
    """Plain loops, one query at a time: AP = mean over hits of (hits so far / rank)."""
    aps, firsts = [], []
    for i in range(sim.shape[0]):
        order = sorted(range(sim.shape[1]), key=lambda j: (-sim[i, j], j))
        if exclude:
            order = [j for j in order if not (gl[j] == ql[i] and gc[j] == qc[i])]
        hits = [gl[j] == ql[i] for j in order]
        if not any(hits):
            continue
        found, precs = 0, []
        for r, h in enumerate(hits, start=1):
            if h:
                found += 1
                precs.append(found / r)
        aps.append(sum(precs) / len(precs))
        firsts.append(hits.index(True) + 1)
    return float(np.mean(aps)), firsts


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_matches_plain_loop_reference_across_chunks(monkeypatch, seed, exclude):
    monkeypatch.setattr(metrics, "_QUERY_CHUNK", 7)  # several chunks, one partial
    rng = np.random.default_rng(seed)
    q, g = 23, 31
    sim = rng.integers(0, 6, size=(q, g)).astype(float)  # many ties on purpose
    ql, gl = rng.integers(0, 8, q), rng.integers(0, 8, g)
    qc, gc = rng.integers(0, 3, q), rng.integers(0, 3, g)
    m = retrieval_metrics(sim, ql, gl, query_cams=qc, gallery_cams=gc, exclude_same_cam=exclude)
    ref_map, ref_first = _reference(sim, ql, gl, qc, gc, exclude)
    assert m["mAP"] == pytest.approx(ref_map)
    assert m["first_hit_rank"][m["first_hit_rank"] > 0].tolist() == ref_first
    for k in (1, 5, 10):
        assert m[f"R@{k}"] == pytest.approx(np.mean(np.array(ref_first) <= k))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sim=np.array([[np.nan, 1.0]])), "finite"),
        (dict(sim=np.zeros((2, 2))), "query_labels"),
        (dict(ks=(0,)), "ks"),
        (dict(exclude_same_cam=True), "query_cams"),
        (dict(query_labels=np.array([7])), "no query has a positive"),
    ],
)
def test_retrieval_rejects_bad_input(kwargs, match):
    args = dict(sim=np.array([[0.3, 0.2]]), query_labels=np.array([1]),
                gallery_labels=np.array([1, 2]))
    args.update(kwargs)
    with pytest.raises(InvalidInput, match=match):
        retrieval_metrics(args.pop("sim"), args.pop("query_labels"), args.pop("gallery_labels"),
                          **args)


# -- AAIPR semantic IDs ------------------------------------------------------------------------
def test_semantic_ids_group_identical_attribute_sets():
    t = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1], [1, 0, 0]])
    # rows 0 and 2 share a set; IDs are numbered by first appearance
    assert semantic_ids(t).tolist() == [0, 1, 0, 2]


def test_semantic_ids_treat_unknown_as_its_own_value():
    t = np.array([[1, 0, 1], [1, 0, 1], [1, 0, 0]])
    m = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 0]])
    # keys: [1,0,1], [1,0,?], [1,0,?] -> row 1 differs from row 0 (unknown last entry) but
    # equals row 2, whose masked target 0 is ignored.
    assert semantic_ids(t, m).tolist() == [0, 1, 1]


def test_attribute_query_protocol_builds_one_query_per_set():
    t = np.array([[1, 0], [0, 1], [1, 0], [1, 1], [0, 1]], np.float32)
    q = attribute_query_protocol(t)
    assert q.gallery_labels.tolist() == [0, 1, 0, 2, 1]
    assert q.query_labels.tolist() == [0, 1, 2]
    assert q.counts.tolist() == [2, 2, 1]
    np.testing.assert_array_equal(q.targets, [[1, 0], [0, 1], [1, 1]])
    np.testing.assert_array_equal(q.masks, np.ones((3, 2)))
    # a perfect scorer (negative Hamming distance on the targets) retrieves every set at rank 1
    sim = -np.abs(q.targets[:, None, :] - t[None, :, :]).sum(-1)
    m = retrieval_metrics(sim, q.query_labels, q.gallery_labels)
    assert m["R@1"] == 1.0 and m["mAP"] == 1.0
    # min_images=2 drops the singleton set {1,1}; its image stays in the gallery as a distractor
    q2 = attribute_query_protocol(t, min_images=2)
    assert q2.query_labels.tolist() == [0, 1] and q2.gallery_labels.shape == (5,)


def test_semantic_ids_reject_non_binary_targets():
    with pytest.raises(InvalidInput, match="0 or 1"):
        semantic_ids(np.array([[0.5, 1.0]]))
    with pytest.raises(InvalidInput, match="min_images"):
        attribute_query_protocol(np.array([[0, 1]]), min_images=0)


# -- attribute recognition ---------------------------------------------------------------------
TARGETS = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
PROBS = np.array([[0.9, 0.2], [0.4, 0.7], [0.2, 0.6], [0.6, 0.1]])
# predictions at 0.5:  [[1, 0], [0, 1], [0, 1], [1, 0]]


def test_mA_and_instance_metrics_on_4x2_example():
    m = attribute_metrics(PROBS, TARGETS, names=["a", "b"])
    # a: P = rows 0,1; N = rows 2,3. TP = row 0, TN = row 2 (row 3 is a false positive).
    #    TPR = 1/2, TNR = 1/2 -> mA_a = 0.5; accuracy_a = 2/4
    # b: P = rows 1,2 both found; N = rows 0,3 both rejected -> mA_b = 1.0; accuracy_b = 1
    assert m["per_attribute"]["a"]["mA"] == pytest.approx(0.5)
    assert m["per_attribute"]["b"]["mA"] == pytest.approx(1.0)
    assert m["mA"] == pytest.approx(0.75)
    assert m["mean_accuracy"] == pytest.approx(0.75)
    # instance: row0 Y={a} P={a} -> acc 1, prec 1, rec 1
    #           row1 Y={a,b} P={b} -> acc 1/2, prec 1, rec 1/2
    #           row2 Y={b} P={b} -> 1, 1, 1
    #           row3 Y={} P={a} -> acc 0/1 = 0, prec 0/1 = 0, rec 0/0 with disagreement = 0
    assert m["instance_accuracy"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)  # 0.625
    assert m["instance_precision"] == pytest.approx(3 / 4)
    assert m["instance_recall"] == pytest.approx(0.625)
    # F1 = 2 * 0.75 * 0.625 / (0.75 + 0.625) = 0.9375 / 1.375
    assert m["instance_f1"] == pytest.approx(0.9375 / 1.375)
    assert m["undefined_attributes"] == [] and m["num_defined_attributes"] == 2


def test_masked_entries_are_ignored():
    mask = np.ones_like(TARGETS)
    mask[3, 0] = 0  # row 3's "a" (a false positive above) becomes unknown
    m = attribute_metrics(PROBS, TARGETS, mask, names=["a", "b"])
    # a: P = rows 0,1 (TP row 0), N = row 2 only (TN) -> TPR 1/2, TNR 1 -> mA_a = 0.75
    assert m["per_attribute"]["a"]["mA"] == pytest.approx(0.75)
    assert m["per_attribute"]["a"]["negatives"] == 1
    assert m["mA"] == pytest.approx((0.75 + 1.0) / 2)
    # row 3 now has only "b" known: Y={} P={} -> counts as 1, 1, 1
    assert m["instance_accuracy"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert m["instance_precision"] == pytest.approx(1.0)
    # what the model says at a masked entry cannot change anything
    probs2 = PROBS.copy()
    probs2[3, 0] = 0.0
    m2 = attribute_metrics(probs2, TARGETS, mask, names=["a", "b"])
    assert {k: v for k, v in m2.items() if k != "per_attribute"} == {
        k: v for k, v in m.items() if k != "per_attribute"
    }


def test_attribute_without_negatives_is_undefined_and_excluded():
    t = np.column_stack([TARGETS, np.ones(4)])  # "c" is positive everywhere
    p = np.column_stack([PROBS, np.full(4, 0.9)])
    m = attribute_metrics(p, t, names=["a", "b", "c"])
    assert m["undefined_attributes"] == ["c"]
    assert math.isnan(m["per_attribute"]["c"]["mA"])
    assert m["per_attribute"]["c"]["accuracy"] == 1.0
    assert m["mA"] == pytest.approx(0.75)  # still the mean of a and b
    assert "undefined" in m["note"]


@pytest.mark.parametrize(
    "probs, targets, kwargs, match",
    [
        (PROBS * 3, TARGETS, {}, "logits"),
        (PROBS, TARGETS[:3], {}, "shape"),
        (PROBS, TARGETS, {"threshold": 1.0}, "threshold"),
        (PROBS, TARGETS, {"names": ["a"]}, "names"),
        (PROBS, np.ones_like(TARGETS), {}, "no attribute"),
    ],
)
def test_attribute_metrics_reject_bad_input(probs, targets, kwargs, match):
    with pytest.raises(InvalidInput, match=match):
        attribute_metrics(probs, targets, **kwargs)


def test_one_hot_single_families_scores_the_argmax():
    schema = AttributeSchema.from_dict(
        {"families": {"gender": {"kind": "single", "values": ["male", "female"]},
                      "upper_color": {"kind": "single", "values": ["red", "blue", "black"]},
                      "carry": {"kind": "multi", "values": ["bag", "backpack"]}}}
    )
    p = np.array([[0.45, 0.55, 0.3, 0.3, 0.4, 0.7, 0.2]])
    hard = one_hot_single_families(p, schema)
    np.testing.assert_allclose(hard, [[0, 1, 0, 0, 1, 0.7, 0.2]])
    with pytest.raises(InvalidInput):
        one_hot_single_families(p[:, :3], schema)


def test_attribute_likelihood_baseline_by_hand():
    from training.evaluate import attribute_likelihood

    # one query: value 0 present, value 1 absent, value 2 unknown
    t = np.array([[1.0, 0.0, 1.0]])
    m = np.array([[1.0, 1.0, 0.0]])
    p = np.array([[0.5, 0.5, 0.9], [0.8, 0.1, 0.1]])
    s = attribute_likelihood(t, m, p)
    np.testing.assert_allclose(s, [[2 * math.log(0.5), math.log(0.8) + math.log(0.9)]])
    assert s[0, 1] > s[0, 0]  # the second image fits the query better


def test_text_attribute_agreement_baseline_by_hand():
    from training.evaluate import attribute_agreement

    schema = AttributeSchema({"gender": {"kind": "single", "values": ["male", "female"]},
                              "bag": {"kind": "multi", "values": ["backpack", "handbag"]}})
    # flat layout: male, female, backpack, handbag
    q = np.array([[0.9, 0.1, 0.8, 0.5]])
    g = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    s = attribute_agreement(q, g, schema, eps=0.0)
    # image 0: gender agrees 0.9, backpack 0.8, handbag 0.5 (the caption is unsure)
    # image 1: gender 0.1, backpack 0.2, handbag 0.5
    np.testing.assert_allclose(s, [[math.log(0.9 * 0.8 * 0.5), math.log(0.1 * 0.2 * 0.5)]])
    assert s[0, 0] > s[0, 1]
    with pytest.raises(InvalidInput):
        attribute_agreement(q[:, :3], g, schema)


def test_concept_geometry_by_hand():
    from training.evaluate import concept_geometry

    images = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    concepts = np.array([[1.0, 0.0], [0.6, 0.8]])  # on its images; between both groups
    g = concept_geometry(concepts, images, np.array([0, 1]), np.array([0, 0, 1]))
    assert g["attr_cos_own"] == pytest.approx((1 + 1 + 0.8) / 3)
    assert g["attr_cos_other"] == pytest.approx((0.0 + 0.6 + 0.6) / 3)
    assert g["attr_concept_spread"] == pytest.approx(0.6)
    assert g["attr_centroid_spread"] == pytest.approx(0.0)


def test_concept_geometry_of_one_query_has_no_spread():
    from training.evaluate import concept_geometry

    g = concept_geometry(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]]),
                         np.array([0]), np.array([0, 1]))
    assert g["attr_cos_own"] == pytest.approx(1.0) and g["attr_cos_other"] == pytest.approx(0.0)
    assert np.isnan(g["attr_concept_spread"]) and np.isnan(g["attr_centroid_spread"])
