"""The evaluation's ``attrsoft`` protocol scores exactly what the gateway's soft re-ranking does."""

from __future__ import annotations

import numpy as np

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
