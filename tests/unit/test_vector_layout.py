"""The vector field's layout: CMAAM's latent + attribute similarity as one inner product."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.search import inner_product
from pedsearch.attributes import AttributeSchema, latent_attribute_score
from pedsearch.schema import DetectionRow, VectorLayout


@pytest.fixture(scope="module")
def schema() -> AttributeSchema:
    return AttributeSchema.default()


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_text_query_inner_product_is_eq19_times_one_plus_w(schema):
    rng = np.random.default_rng(0)
    layout = VectorLayout.current(16, schema)
    assert layout.dim == 16 + schema.dim and layout.row_norm_sq == 2.0
    e, probs = _unit(rng, 5, 16), rng.random((5, schema.dim))
    x = layout.stored(e, probs, schema)
    assert x.shape == (5, layout.dim) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1) ** 2, 2.0, rtol=1e-5)
    t, a_t = _unit(rng, 1, 16)[0], schema.attribute_space(rng.random((1, schema.dim)))[0]
    for w in (0.0, 0.5, 1.0, 3.0):
        q = layout.query(t, a_t, w)
        assert q.shape == (1, layout.dim)
        s_a = schema.attribute_space(probs) @ a_t
        np.testing.assert_allclose((x @ q[0]) / (1 + w),
                                   latent_attribute_score(e @ t, s_a, w), atol=1e-5)


def test_image_and_attribute_queries_see_the_cosine_alone(schema):
    rng = np.random.default_rng(1)
    layout = VectorLayout.current(8, schema)
    e, probs = _unit(rng, 4, 8), rng.random((4, schema.dim))
    q = layout.query(_unit(rng, 3, 8))  # (A, D) alternatives
    assert q.shape == (3, layout.dim) and not q[:, 8:].any()
    np.testing.assert_allclose(layout.stored(e, probs, schema) @ q.T, e @ q[:, :8].T, atol=1e-6)
    # a text query of weight 0 is the cosine too
    assert not layout.query(e[0], np.ones(schema.dim), 0.0)[:, 8:].any()


def test_earlier_layout_is_the_joint_embedding_alone(schema):
    layout = VectorLayout(8, 0)
    e = _unit(np.random.default_rng(2), 2, 8)
    assert layout.dim == 8 and layout.row_norm_sq == 1.0
    np.testing.assert_array_equal(layout.stored(e, np.full((2, schema.dim), 0.9), schema), e)
    np.testing.assert_array_equal(layout.query(e[0], np.ones(schema.dim), 1.0), e[:1])


def test_layout_of_a_collection_by_its_vector_dim(schema):
    assert VectorLayout.of_collection(8 + schema.dim, 8, schema) == VectorLayout(8, schema.dim)
    assert VectorLayout.of_collection(8, 8, schema) == VectorLayout(8, 0)
    assert VectorLayout.of_collection(9, 8, schema) is None  # another model's collection


def test_layout_checks_shapes(schema):
    layout = VectorLayout.current(8, schema)
    with pytest.raises(ValueError, match="9 values, the layout 8"):
        layout.stored(np.zeros((1, 9)), np.zeros((1, schema.dim)), schema)
    with pytest.raises(ValueError, match="2 embeddings but 3 attribute rows"):
        layout.stored(np.zeros((2, 8)), np.full((3, schema.dim), 0.5), schema)
    with pytest.raises(ValueError, match="query has 4 values"):
        layout.query(np.zeros(4))


def test_row_entity_holds_the_layouts_vector(schema):
    rng = np.random.default_rng(3)
    e, p = _unit(rng, 1, 8)[0], rng.random(schema.dim).astype(np.float32)
    row = DetectionRow(id=1, camera_id="c", ts_us=1, track_id=1, frame_seq=0, box=(0, 0, 1, 2),
                       det_score=0.5, crop_ref="r", model_version="v", embedding=e,
                       attributes=p)
    v = np.asarray(row.to_entity(schema)["embedding"], np.float32)
    np.testing.assert_allclose(v, np.r_[e, schema.attribute_space(p[None])[0]], atol=1e-6)
    assert len(row.to_entity(schema, VectorLayout(8, 0))["embedding"]) == 8


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_every_metric_gives_back_the_inner_product(schema, w):
    """IP, COSINE and L2 rank alike on rows of one norm; each distance maps back to x.q."""
    rng = np.random.default_rng(4)
    layout = VectorLayout.current(8, schema)
    x = layout.stored(_unit(rng, 6, 8), rng.random((6, schema.dim)), schema)
    q = layout.query(_unit(rng, 1, 8), schema.attribute_space(rng.random((1, schema.dim))), w)[0]
    ip, q_sq = x @ q, float(q @ q)
    dist = {"IP": ip, "COSINE": ip / (np.linalg.norm(x, axis=1) * np.linalg.norm(q)),
            "L2": ((x - q) ** 2).sum(axis=1)}
    for metric, d in dist.items():
        got = [inner_product(float(v), metric, q_sq, layout.row_norm_sq) for v in d]
        np.testing.assert_allclose(got, ip, atol=1e-5, err_msg=metric)
