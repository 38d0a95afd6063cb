"""The evaluation's ``attrsoft`` protocol scores exactly what the gateway's soft re-ranking does."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.search import make_constraint, soft_bonus
from pedsearch.attributes import AttributeSchema
from training.evaluate import SOFT_WEIGHT, soft_attribute_scores


def test_soft_scores_equal_the_gateway_formula_hit_by_hit():
    schema = AttributeSchema.default()
    multi = next(f for f in schema.families if f.kind == "multi")
    queries = [{"gender": "female", multi.name: [multi.values[0], multi.values[2]]},
               {"gender": "male"}]
    targets, masks = map(np.stack, zip(*(schema.encode(q) for q in queries)))
    rng = np.random.default_rng(0)
    probs = rng.random((5, schema.dim))
    cosine = rng.uniform(-1, 1, (2, 5))
    scores = soft_attribute_scores(cosine, targets, masks, probs, schema)
    names = schema.field_names()
    for qi, q in enumerate(queries):
        constraints = [make_constraint(schema, fam, [v] if isinstance(v, str) else v)
                       for fam, v in q.items()]
        for g in range(5):
            bonus = soft_bonus(dict(zip(names, probs[g])), constraints)
            assert abs(scores[qi, g] - (cosine[qi, g] + SOFT_WEIGHT * bonus)) < 1e-12


def test_a_query_without_asked_values_keeps_the_cosine():
    schema = AttributeSchema.default()
    cosine = np.array([[0.3, -0.1]])
    zeros = np.zeros((1, schema.dim))
    out = soft_attribute_scores(cosine, zeros, zeros, np.ones((2, schema.dim)), schema)
    np.testing.assert_allclose(out, cosine)


def test_textla_scores_are_the_gateways_text_formula():
    """``textla`` ranks by (cosine + w S_a) / (1 + w), as the gateway ranks a text query."""
    from pedsearch.attributes import latent_attribute_score
    from training.evaluate import TEXT_ATTRIBUTE_WEIGHT, EvalSet, evaluate_encoders
    from training.metrics import retrieval_metrics

    schema = AttributeSchema.default()
    rng = np.random.default_rng(1)
    img = rng.standard_normal((6, 8)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt = img[[0, 2, 4]] + 0.6 * rng.standard_normal((3, 8)).astype(np.float32)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    img_p, txt_p = rng.random((6, schema.dim)), rng.random((3, schema.dim))

    class Fixed:
        def encode_images(self, records):
            return img, img_p

        def encode_texts(self, captions):
            return txt, txt_p

        def encode_attribute_vectors(self, vec):
            return None

    data = EvalSet(records=[], pids=np.array([0, 0, 1, 1, 2, 2]), captions=["a", "b", "c"],
                   caption_owner=np.array([0, 2, 4]), targets=np.zeros((6, schema.dim)),
                   masks=np.zeros((6, schema.dim)), cams=np.arange(6))
    m = evaluate_encoders(Fixed(), data, schema)
    sim = latent_attribute_score(txt @ img.T, schema.attribute_space(txt_p)
                                 @ schema.attribute_space(img_p).T, TEXT_ATTRIBUTE_WEIGHT)
    ref = retrieval_metrics(sim, np.array([0, 1, 2]), data.pids, ks=(1,))
    assert m["textla_R@1"] == pytest.approx(ref["R@1"])
    assert m["textla_mAP"] == pytest.approx(ref["mAP"]) and m["textla_queries"] == 3
    # the attributes moved the ranking: not the cosine's figures
    assert m["textla_mAP"] != pytest.approx(m["text_mAP"])
