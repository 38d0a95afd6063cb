"""The joint model: architecture validation, the search-embedding layout, the three towers."""

from __future__ import annotations

import math

import pytest
import torch

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import ConfigError
from pedsearch.models.joint import (
    MAX_EMBED_DIM,
    EmbeddingLayout,
    ModelArchitecture,
    PersonSearchModel,
)
from pedsearch.models.tokenizer import Vocab

SCHEMA = AttributeSchema.default()
TEXTS = ["a woman in a red dress", "a man with a black backpack and blue jeans"]
SMALL = {
    "image_size": (128, 64),
    "backbone": {"type": "efficientnet_lite0", "pretrained": False},
}


@pytest.fixture(scope="module")
def model() -> PersonSearchModel:
    torch.manual_seed(0)
    return PersonSearchModel.from_config(
        SMALL, vocab=Vocab.build(TEXTS), training_heads=True, num_identities=7,
        num_semantic_ids=5,
    )


def test_default_architecture_fits_the_embedding_budget():
    arch = ModelArchitecture()
    assert arch.embed_dim == 256 + 6 * 128 == 1024 <= MAX_EMBED_DIM
    assert arch.num_parts == 6 and arch.image_size == (192, 96)
    assert arch.backbone.params()["last_stride"] == 1  # defaults are filled in and stored
    again = ModelArchitecture.parse(arch.model_dump(mode="json"))
    assert again == arch


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"part_dim": 256}, "exceeds 1024"),
        ({"backbone": {"type": "vgg16"}}, "known: .*efficientnet_lite0"),
        ({"text_encoder": {"type": "bilstm", "hiden": 3}}, "bad configuration"),
        ({"num_parts": 0}, "num_parts"),
        # one stripe has no other part to relate to: the embedding was NaN
        ({"num_parts": 1}, "num_parts\n  Input should be greater than or equal to 2"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_architectures_are_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        ModelArchitecture.parse(bad)


def test_too_few_feature_rows_for_the_stripes():
    arch = {"image_size": (64, 32), "backbone": {"type": "efficientnet_lite0",
                                                 "pretrained": False, "last_stride": 2}}
    with pytest.raises(ConfigError, match="fewer than num_parts"):
        PersonSearchModel.from_config(arch, parts=("image",))


def test_layout_inner_product_is_weighted_mean_of_cosines():
    torch.manual_seed(0)
    layout = EmbeddingLayout(global_dim=5, part_dim=3, num_parts=4, global_weight=0.3)
    ga, gb = torch.randn(2, 5), torch.randn(2, 5)
    pa, pb = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    ea, eb = layout.compose(ga, pa), layout.compose(gb, pb)
    assert ea.shape == (2, 5 + 4 * 3)
    torch.testing.assert_close(ea.norm(dim=1), torch.ones(2))
    cos = torch.nn.functional.cosine_similarity
    expected = 0.3 * cos(ga, gb, dim=-1) + 0.7 * cos(pa, pb, dim=-1).mean(dim=1)
    torch.testing.assert_close((ea * eb).sum(dim=1), expected)
    # any vector (a generator concept) is brought into the same layout
    flat = torch.randn(2, 17)
    torch.testing.assert_close(layout.normalize(flat).norm(dim=1), torch.ones(2))
    g, p = layout.split(layout.normalize(flat))
    torch.testing.assert_close(g.norm(dim=1), torch.full((2,), math.sqrt(0.3)))


def test_global_weight_one_is_the_global_feature_alone():
    # SSAN's "global" ablation: the part slots are zero, the inner product is cos(g_a, g_b)
    layout = EmbeddingLayout(global_dim=5, part_dim=3, num_parts=4, global_weight=1.0)
    ga, gb = torch.randn(2, 5), torch.randn(2, 5)
    ea, eb = layout.compose(ga, torch.randn(2, 4, 3)), layout.compose(gb, torch.randn(2, 4, 3))
    assert float(ea[:, 5:].abs().max()) == 0.0
    cos = torch.nn.functional.cosine_similarity(ga, gb, dim=-1)
    torch.testing.assert_close((ea * eb).sum(dim=1), cos)


def test_towers_output_shapes_and_unit_embeddings(model):
    model.eval()
    D = model.embed_dim
    assert D == 1024
    with torch.no_grad():
        img = model.encode_image(torch.randn(3, 3, 128, 64))
        txt = model.encode_text(*model.tokenize(TEXTS))
        att_in = torch.zeros(4, SCHEMA.dim)
        att_in[:, SCHEMA.index("gender", "female")] = 1
        att = model.encode_attributes(att_in)
    assert img["global"].shape == (3, 256) and img["parts"].shape == (3, 6, 128)
    assert img["attr_logits"].shape == (3, SCHEMA.dim)
    assert txt["global"].shape == (2, 256) and txt["parts"].shape == (2, 6, 128)
    assert att["concept"].shape == (4, D)
    for emb, n in ((img["embedding"], 3), (txt["embedding"], 2), (att["embedding"], 4)):
        assert emb.shape == (n, D) and emb.dtype == torch.float32
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(n))


def test_text_and_image_towers_share_the_ssan_heads(model):
    assert model.image_encoder.heads is model.text_encoder.heads is model.heads
    # counted once
    total = sum(p.numel() for p in model.parameters())
    assert total == sum(model.parameter_counts().values())


def test_cmaam_cosine_heads_share_one_classifier_across_the_towers():
    torch.manual_seed(0)
    m = PersonSearchModel.from_config({**SMALL, "attr_classifier": "cosine", "attr_dim": 12},
                                      vocab=Vocab.build(TEXTS))
    clf = m.image_encoder.attr_head.classifier
    assert m.text_encoder.attr_head.classifier is clf and clf.dim == 12
    assert sum(p.numel() for p in m.parameters()) == sum(m.parameter_counts().values())
    m.eval()
    with torch.no_grad():
        img = m.encode_image(torch.randn(3, 3, 128, 64))
        txt = m.encode_text(*m.tokenize(TEXTS))
    assert img["attr_space"].shape == (3, 12) and txt["attr_space"].shape == (2, 12)
    assert img["attr_logits"].shape == (3, SCHEMA.dim)
    assert txt["attr_logits"].shape == (2, SCHEMA.dim)
    # each tower's saved state carries the classifier, so image.pt / text.pt load alone
    assert "attr_head.classifier.weight" in m.image_encoder.state_dict()
    assert "attr_head.classifier.weight" in m.text_encoder.state_dict()


def test_training_forward_returns_what_the_losses_need(model):
    model.train()
    ids, lengths = model.tokenize(TEXTS * 2)
    attrs = torch.zeros(4, SCHEMA.dim)
    attrs[:2, SCHEMA.index("gender", "male")] = 1
    attrs[2:, SCHEMA.index("gender", "female")] = 1
    out = model(torch.randn(4, 3, 128, 64), ids, lengths, attrs)
    for side in ("image", "text"):
        assert out[f"{side}_embedding"].shape == (4, 1024)
        assert out[f"{side}_id_global"].shape == (4, 7)
        assert out[f"{side}_id_parts_local"].shape == (4, 6, 7)
        assert out[f"{side}_id_parts"].shape == (4, 6, 7)
    assert out["text_word_part_weights"].shape[::2] == (4, 6)
    assert out["image_sid_logits"].shape == out["attr_sid_logits"].shape == (4, 5)
    for key in ("disc_real_logits", "disc_fake_logits", "disc_gen_logits"):
        assert out[key].shape == (4,)


def _grad_norms(model: PersonSearchModel, loss: torch.Tensor) -> tuple[float, float]:
    model.zero_grad()
    loss.backward(retain_graph=True)
    g = sum(float(p.grad.abs().sum()) for p in model.generator.parameters() if p.grad is not None)
    d = sum(float(p.grad.abs().sum()) for p in model.discriminator.parameters()
            if p.grad is not None)
    return g, d


def test_adversarial_terms_reach_only_their_player(model):
    """l_adv^D (on detached embeddings) trains only D; l_adv^G (through frozen D) only G."""
    model.train()
    attrs = torch.zeros(4, SCHEMA.dim)
    attrs[torch.arange(4), torch.arange(4)] = 1
    out = model(torch.randn(4, 3, 128, 64), attr_targets=attrs)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    loss_d = bce(out["disc_real_logits"], torch.ones(4)) + bce(out["disc_fake_logits"],
                                                               torch.zeros(4))
    loss_g = bce(out["disc_gen_logits"], torch.ones(4))
    g, d = _grad_norms(model, loss_d)
    assert g == 0 and d > 0
    g, d = _grad_norms(model, loss_g)
    assert g > 0 and d == 0
    model.zero_grad()


def test_parts_subset_builds_only_what_is_asked():
    m = PersonSearchModel.from_config(SMALL, parts=("image",), pretrained=False)
    assert m.parts == ("image",) and m.text_encoder is None and m.generator is None
    with pytest.raises(ConfigError, match="without its 'text' part"):
        m.tokenize(["a man"])
    g = PersonSearchModel.from_config(SMALL, parts=("attributes",))
    assert g.parts == ("attributes",) and g.heads is None and g.discriminator is None
    with pytest.raises(ConfigError, match="unknown model parts"):
        PersonSearchModel.from_config(SMALL, parts=("audio",))
    with pytest.raises(ConfigError, match="needs a vocabulary"):
        PersonSearchModel.from_config(SMALL, parts=("text",))
