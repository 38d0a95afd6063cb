"""The joint model: image, text and attribute towers in ONE search space.

:class:`PersonSearchModel` composes

- the image tower (:class:`~pedsearch.models.image.ImageEncoder`: backbone, SSAN global +
  ``K`` stripes + MV-NLN, APR attribute head),
- the text tower (:mod:`pedsearch.models.text`: Bi-LSTM or MiniLM, SSAN word attention),
- the attribute tower (:class:`~pedsearch.models.concept.ConceptGenerator`, AAIPR),

with the SSAN layers both towers share (:class:`~pedsearch.models.image.SSANHeads`), and, for
training only, AAIPR's discriminator and semantic-ID classifier and SSAN's identity classifiers.

The search embedding
--------------------
Every image, text and attribute set becomes one float32 vector ``e`` of size
``D = M + K * N`` (default ``256 + 6 * 128 = 1024``), L2 norm 1::

    e = [ sqrt(w) g/|g|,  sqrt((1-w)/K) p_1/|p_1|,  ...,  sqrt((1-w)/K) p_K/|p_K| ]

with ``g (M)`` the global feature (SSAN ``v_g`` / ``t_g``), ``p_k (N)`` the MV-NLN part features
(``v_n^k`` / ``t_n^k``) and ``w = global_weight``. So the inner product of two embeddings is

    <e_a, e_b> = w * cos(g_a, g_b) + (1 - w) * mean_k cos(p_a^k, p_b^k),

which Milvus searches with metric IP. SSAN's test score is ``S_g + S_l + S_n`` (Sec. IV); the
stored vector keeps ``S_g`` and ``S_n`` -- with ``w = 0.5`` (the default) it is
``(S_g + S_n) / 2``, part cosines averaged instead of one cosine of the concatenation -- and
drops ``S_l``, the PFL part features that MV-NLN refines and that train the word attention,
to keep ``D <= 1024``. A concept from the generator (``tanh``, size ``D``) is cut into the same
``1 + K`` pieces and normalised the same way (:meth:`EmbeddingLayout.normalize`), so attribute
queries land in the same space.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Literal, Mapping, Sequence

import pydantic
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn
from torch.func import functional_call

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import ConfigError, InvalidInput
from pedsearch.models import BACKBONES, TEXT_ENCODERS
from pedsearch.models.backbone import Backbone
from pedsearch.models.concept import (
    DISCRIMINATOR_HIDDEN,
    GENERATOR_HIDDEN,
    ConceptDiscriminator,
    ConceptGenerator,
)
from pedsearch.models.image import CosineAttributeClassifier, ImageEncoder, PartLinear, SSANHeads
from pedsearch.models.text import TextEncoder, build_text_encoder
from pedsearch.models.tokenizer import Vocab

#: Largest search embedding the system accepts (Milvus field and gateway budget).
MAX_EMBED_DIM = 1024
#: The towers a bundle holds, by the name ``load_bundle(parts=...)`` uses.
PARTS = ("image", "text", "attributes")


class PluginSpec(BaseModel):
    """A plug-in by name (``type``); the other keys are checked by the plug-in's own model."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(..., min_length=1)

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BackboneSpec(PluginSpec):
    type: str = Field("efficientnet_lite0", min_length=1, description="a BACKBONES name")


class TextEncoderSpec(PluginSpec):
    type: str = Field("bilstm", min_length=1, description="a TEXT_ENCODERS name")


class ModelArchitecture(BaseModel):
    """Everything needed to rebuild the model classes (stored in a bundle's ``bundle.json``).

    Paper defaults are kept where the machine allows; the reduced sizes are:

    - ``global_dim`` ``M`` 256 / ``part_dim`` ``N`` 128 / ``relation_dim`` ``M'`` 128: SSAN's
      1024 / 512 / 512 divided by 4, so the embedding ``M + K * N`` is 1024 (<= MAX_EMBED_DIM);
    - ``feat_dim`` ``C`` 512: SSAN's ``C`` is ResNet-50's 2048 and also the Bi-LSTM's hidden
      size (``W_g`` is shared); 512 keeps the Bi-LSTM trainable on a 2-core CPU;
    - ``image_size`` (192, 96): SSAN/ViTAA use 384 x 128 (ResNet-50, GPU). The image tower's
      speed bounds the ingest rate on CPU. With EfficientNet-Lite0 and last stride 1, 192 x 96
      is 0.33 GMAC per crop (256 x 128: 0.58, 384 x 128: 0.87). Measured on this 2-core
      machine with 2 threads, best of 5-8 rounds on a busy host: 192 x 96 took 76 / 146-168 /
      96-101 crops/s at batch 1 / 16 / 64; 256 x 128 took 50 / 65-69 / 38-53. It also gives a
      12 x 6 map, so the K = 6 stripes are exactly 2 rows each (SSAN's non-overlapping
      partition; 256 x 128 gives 16 rows, which do not split into 6). Surveillance crops are
      mostly under 200 px tall, so little detail is lost. Set (256, 128) or (384, 128) when a
      GPU embeds.
    """

    model_config = ConfigDict(extra="forbid")

    backbone: BackboneSpec = Field(default_factory=BackboneSpec)
    text_encoder: TextEncoderSpec = Field(default_factory=TextEncoderSpec)
    image_size: tuple[int, int] = Field(
        (192, 96), description="(H, W) every crop is resized to (SSAN/ViTAA: 384 x 128)"
    )
    feat_dim: int = Field(512, ge=16, le=4096, description="C: visual channels = word feature size")
    # K >= 2: a part's relations (SSAN Eq. 14) are to the other parts; with one, the softmax
    # over none is NaN
    num_parts: int = Field(6, ge=2, le=16, description="K horizontal stripes (SSAN: 6)")
    global_dim: int = Field(256, ge=8, le=MAX_EMBED_DIM, description="M (SSAN: 1024)")
    part_dim: int = Field(128, ge=8, le=MAX_EMBED_DIM, description="N (SSAN: 512)")
    relation_dim: int = Field(128, ge=8, le=4096, description="M' of MV-NLN (SSAN: 512)")
    global_weight: float = Field(
        0.5, gt=0.0, le=1.0,
        description="share of the global cosine in the retrieval score; the rest is the mean "
        "part cosine (0.5 = SSAN's (S_g + S_n) / 2; 1.0 = global feature only, SSAN's "
        "'global' ablation: the part slots of the embedding are zero)",
    )
    attr_dropout: float = Field(0.9, ge=0.0, lt=1.0, description="APR: dropout 0.9 before FCs")
    attr_classifier: Literal["linear", "cosine"] = Field(
        "linear",
        description="the towers' attribute heads: 'linear' = APR's FC layer per family, each "
        "tower its own; 'cosine' = CMAAM Eq. 3, a d_a-dim attribute space per tower and one "
        "cosine classifier shared by both (the scale its CORAL term compares)",
    )
    attr_dim: int = Field(300, ge=8, le=4096, description="CMAAM d_a of the 'cosine' heads: 300")
    attr_scale: float = Field(
        10.0, gt=0.0, le=100.0,
        description="initial beta of the 'cosine' heads (learnt; CMAAM gives no start)",
    )
    generator_hidden: tuple[int, ...] = Field(
        GENERATOR_HIDDEN, min_length=1, description="AAIPR Table 1: 128, 256, 512"
    )
    discriminator_hidden: tuple[int, ...] = Field(DISCRIMINATOR_HIDDEN, min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "ModelArchitecture":
        if self.embed_dim > MAX_EMBED_DIM:
            raise ValueError(
                f"embedding size global_dim + num_parts * part_dim = {self.embed_dim} exceeds "
                f"{MAX_EMBED_DIM}; lower part_dim or global_dim"
            )
        h, w = self.image_size
        if not (32 <= h <= 1024 and 16 <= w <= 1024):
            raise ValueError(f"image_size {self.image_size} must lie within (32..1024, 16..1024)")
        # store every plug-in setting, defaults included, so a bundle rebuilds exactly this
        # model even if a later pedsearch changes a default
        backbone = BACKBONES.validate(self.backbone.type, self.backbone.params())
        self.backbone = BackboneSpec(type=self.backbone.type, **backbone)
        text = TEXT_ENCODERS.validate(self.text_encoder.type, self.text_encoder.params())
        self.text_encoder = TextEncoderSpec(type=self.text_encoder.type, **text)
        return self

    @property
    def embed_dim(self) -> int:
        return self.global_dim + self.num_parts * self.part_dim

    @classmethod
    def parse(cls, data: Mapping[str, Any] | "ModelArchitecture" | None) -> "ModelArchitecture":
        """Validate a mapping; raises :class:`ConfigError` with the pydantic message."""
        if isinstance(data, ModelArchitecture):
            return data
        try:
            return cls.model_validate(dict(data or {}))
        except pydantic.ValidationError as exc:
            raise ConfigError(f"invalid model architecture: {exc}") from exc


class EmbeddingLayout:
    """How global and part features form one unit search vector (see the module docstring).

    Args:
        global_dim: ``M``. part_dim: ``N``. num_parts: ``K``.
        global_weight: ``w``, the global cosine's share of the inner product.
    """

    def __init__(self, *, global_dim: int, part_dim: int, num_parts: int, global_weight: float):
        if not 0.0 < global_weight <= 1.0:
            raise ConfigError(f"global_weight must lie in (0, 1], not {global_weight}")
        self.global_dim, self.part_dim, self.num_parts = global_dim, part_dim, num_parts
        self.global_weight = global_weight
        self.dim = global_dim + num_parts * part_dim
        self._wg = math.sqrt(global_weight)
        self._wp = math.sqrt((1.0 - global_weight) / num_parts)

    def compose(self, global_feat: Tensor, parts: Tensor) -> Tensor:
        """``global (B, M)``, ``parts (B, K, N)`` -> unit embedding ``(B, D)``."""
        g = F.normalize(global_feat, dim=-1) * self._wg
        p = F.normalize(parts, dim=-1).flatten(1) * self._wp
        return torch.cat([g, p], dim=-1)

    def normalize(self, flat: Tensor) -> Tensor:
        """Any ``(B, D)`` vector (a generator concept) -> unit embedding in the same layout."""
        g, p = self.split(flat)
        return self.compose(g, p)

    def split(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, D)`` -> ``(global (B, M), parts (B, K, N))`` pieces (not re-normalised)."""
        if flat.shape[-1] != self.dim:
            raise InvalidInput(f"embedding has {flat.shape[-1]} values, the layout {self.dim}")
        g = flat[:, : self.global_dim]
        p = flat[:, self.global_dim :].reshape(flat.shape[0], self.num_parts, self.part_dim)
        return g, p


class IdentityClassifiers(nn.Module):
    """Training-only ID classifiers of SSAN (Sec. IV): one on the global feature, one per PFL
    part and one per MV-NLN part, shared by both modalities (the instance loss of Zheng et al.
    cited by SSAN shares the classifier so both towers map an identity to the same class)."""

    def __init__(self, *, num_identities: int, global_dim: int, part_dim: int, num_parts: int):
        super().__init__()
        self.global_fc = nn.Linear(global_dim, num_identities)
        self.local_fc = PartLinear(num_parts, global_dim, num_identities, bias=True)
        self.part_fc = PartLinear(num_parts, part_dim, num_identities, bias=True)

    def forward(self, feats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``global (B, M)``, ``parts_local (B, K, M)``, ``parts (B, K, N)`` ->
        ``id_global (B, I)``, ``id_parts_local (B, K, I)``, ``id_parts (B, K, I)``."""
        return {
            "id_global": self.global_fc(feats["global"]),
            "id_parts_local": self.local_fc(feats["parts_local"]),
            "id_parts": self.part_fc(feats["parts"]),
        }


class PersonSearchModel(nn.Module):
    """Image, text and attribute towers over one joint embedding space.

    Build it with :meth:`from_config`; a bundle rebuilds it with only the towers it needs.

    Args:
        schema: the attribute schema (sizes of the attribute heads and of the generator input).
        layout: the :class:`EmbeddingLayout` of the search embedding.
        heads: the SSAN layers shared by the image and text towers (``None`` if neither).
        image_encoder, text_encoder, generator: the towers present (``None`` = not built).
        discriminator, id_classifiers, sid_classifier: training-only heads, or ``None``.
        arch: the architecture it was built from (required by ``save_bundle``).
    """

    def __init__(
        self,
        *,
        schema: AttributeSchema,
        layout: EmbeddingLayout,
        heads: SSANHeads | None = None,
        image_encoder: ImageEncoder | None = None,
        text_encoder: TextEncoder | None = None,
        generator: ConceptGenerator | None = None,
        discriminator: ConceptDiscriminator | None = None,
        id_classifiers: IdentityClassifiers | None = None,
        sid_classifier: nn.Linear | None = None,
        arch: ModelArchitecture | None = None,
    ) -> None:
        super().__init__()
        self.schema = schema
        self.layout = layout
        self.arch = arch
        self.heads = heads
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.generator = generator
        self.discriminator = discriminator
        self.id_classifiers = id_classifiers
        self.sid_classifier = sid_classifier

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        arch: ModelArchitecture | Mapping[str, Any] | None = None,
        *,
        schema: AttributeSchema | None = None,
        vocab: Vocab | None = None,
        parts: Iterable[str] = PARTS,
        pretrained: bool = True,
        training_heads: bool = False,
        num_identities: int = 0,
        num_semantic_ids: int = 0,
    ) -> "PersonSearchModel":
        """Build the towers named in ``parts`` from an architecture.

        Args:
            arch: a :class:`ModelArchitecture` or its mapping (``None`` = defaults).
            schema: attribute schema (``None`` = ``AttributeSchema.default()``).
            vocab: word vocabulary, required when ``"text"`` is built with ``bilstm``.
            parts: subset of ``("image", "text", "attributes")``.
            pretrained: ``False`` skips the backbone's pretrained weights (a bundle loads its
                own weights next).
            training_heads: also build AAIPR's discriminator (with ``"attributes"``), and the
                identity / semantic-ID classifiers when their class counts are > 0.
            num_identities: training identities for SSAN's ID losses (0 = none).
            num_semantic_ids: AAIPR semantic IDs (distinct attribute vectors; 0 = none).

        Raises:
            ConfigError: unknown part or plug-in, bad sizes, missing vocabulary or weights.
        """
        arch = ModelArchitecture.parse(arch)
        schema = schema or AttributeSchema.default()
        parts = tuple(parts)
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            raise ConfigError(f"unknown model parts {unknown}; known: {', '.join(PARTS)}")
        layout = EmbeddingLayout(
            global_dim=arch.global_dim, part_dim=arch.part_dim, num_parts=arch.num_parts,
            global_weight=arch.global_weight,
        )
        heads = None
        if "image" in parts or "text" in parts:
            heads = SSANHeads(
                feat_dim=arch.feat_dim, num_parts=arch.num_parts, global_dim=arch.global_dim,
                part_dim=arch.part_dim, relation_dim=arch.relation_dim,
            )
        # CMAAM's classifier is one module in both towers, so its parameters are trained by
        # both and saved with each (a bundle's image.pt and text.pt hold a copy)
        attr_classifier = (CosineAttributeClassifier(arch.attr_dim, schema, scale=arch.attr_scale)
                           if arch.attr_classifier == "cosine" else None)
        image_encoder = None
        if "image" in parts:
            params = arch.backbone.params()
            if not pretrained:
                params["pretrained"] = False
            backbone: Backbone = BACKBONES.build(arch.backbone.type, **params)
            rows = math.ceil(arch.image_size[0] / backbone.stride)
            if rows < arch.num_parts:
                raise ConfigError(
                    f"image height {arch.image_size[0]} gives {rows} feature rows at stride "
                    f"{backbone.stride}, fewer than num_parts={arch.num_parts}; use a taller "
                    "image_size or last_stride 1"
                )
            image_encoder = ImageEncoder(
                backbone=backbone, heads=heads, schema=schema, feat_dim=arch.feat_dim,
                attr_dropout=arch.attr_dropout, attr_classifier=attr_classifier,
            )
        text_encoder = None
        if "text" in parts:
            text_encoder = build_text_encoder(
                {"type": arch.text_encoder.type, **arch.text_encoder.params()},
                vocab=vocab, heads=heads, schema=schema, feat_dim=arch.feat_dim,
                attr_classifier=attr_classifier,
            )
        generator = discriminator = None
        if "attributes" in parts:
            generator = ConceptGenerator(
                attr_dim=schema.dim, embed_dim=layout.dim, hidden=arch.generator_hidden
            )
            if training_heads:
                discriminator = ConceptDiscriminator(
                    embed_dim=layout.dim, hidden=arch.discriminator_hidden
                )
        id_classifiers = sid_classifier = None
        if training_heads and num_identities > 0 and heads is not None:
            id_classifiers = IdentityClassifiers(
                num_identities=num_identities, global_dim=arch.global_dim,
                part_dim=arch.part_dim, num_parts=arch.num_parts,
            )
        if training_heads and num_semantic_ids > 0:
            sid_classifier = nn.Linear(layout.dim, num_semantic_ids)
        return cls(
            schema=schema, layout=layout, heads=heads, image_encoder=image_encoder,
            text_encoder=text_encoder, generator=generator, discriminator=discriminator,
            id_classifiers=id_classifiers, sid_classifier=sid_classifier, arch=arch,
        )

    # -- properties -----------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return self.layout.dim

    @property
    def parts(self) -> tuple[str, ...]:
        present = {
            "image": self.image_encoder, "text": self.text_encoder, "attributes": self.generator
        }
        return tuple(p for p in PARTS if present[p] is not None)

    @property
    def vocab(self) -> Vocab | None:
        return getattr(self.text_encoder, "vocab", None)

    @property
    def pixel_mean(self) -> tuple[float, float, float]:
        return self._require("image").backbone.pixel_mean

    @property
    def pixel_std(self) -> tuple[float, float, float]:
        return self._require("image").backbone.pixel_std

    def _require(self, part: str) -> Any:
        module = {
            "image": self.image_encoder, "text": self.text_encoder, "attributes": self.generator
        }[part]
        if module is None:
            raise ConfigError(f"this model was built without its {part!r} part")
        return module

    # -- the three towers -----------------------------------------------------------------------
    def encode_image(self, images: Tensor) -> dict[str, Tensor]:
        """
        Args:
            images: ``(B, 3, H, W)`` normalised RGB (see ``pixel_mean`` / ``pixel_std``).

        Returns:
            ``global (B, M)``, ``parts (B, K, N)``, ``parts_local (B, K, M)``,
            ``part_relation (B, K, K)``, ``attr_logits (B, schema.dim)``, ``attr_space``
            (``(B, d_a)`` for CMAAM's cosine heads, else the logits) and the unit search
            ``embedding (B, D)``.
        """
        out = self._require("image")(images)
        out["embedding"] = self.layout.compose(out["global"], out["parts"])
        return out

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Texts -> ``(token_ids (B, L), lengths (B,))`` for :meth:`encode_text`."""
        return self._require("text").tokenize(texts)

    def encode_text(self, token_ids: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """
        Args:
            token_ids: ``(B, L)`` int64 from :meth:`tokenize`.
            lengths: ``(B,)`` int64.

        Returns:
            ``global (B, M)``, ``parts (B, K, N)``, ``parts_local (B, K, M)``,
            ``part_relation (B, K, K)``, ``word_part_weights (B, L, K)``,
            ``word_mask (B, L)``, ``attr_logits (B, schema.dim)``, ``attr_space`` (as for
            :meth:`encode_image`) and ``embedding (B, D)``.
        """
        out = self._require("text")(token_ids, lengths)
        out["embedding"] = self.layout.compose(out["global"], out["parts"])
        return out

    def encode_attributes(self, attr_targets: Tensor) -> dict[str, Tensor]:
        """
        Args:
            attr_targets: ``(B, schema.dim)`` float, ``AttributeSchema.encode`` targets (zeros
                for families left open).

        Returns:
            ``concept (B, D)`` (generator output, tanh) and ``embedding (B, D)`` (unit).
        """
        concept = self._require("attributes")(attr_targets.float())
        return {"concept": concept, "embedding": self.layout.normalize(concept)}

    # -- training --------------------------------------------------------------------------------
    def forward(
        self,
        images: Tensor | None = None,
        token_ids: Tensor | None = None,
        lengths: Tensor | None = None,
        attr_targets: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Run every tower that got an input and the training heads; returns named tensors.

        Keys (present when their inputs and heads are):

        - ``image_<k>`` / ``text_<k>`` for every key of :meth:`encode_image` /
          :meth:`encode_text`; ``attr_concept``, ``attr_embedding``;
        - ``image_id_global (B, I)``, ``image_id_parts_local (B, K, I)``,
          ``image_id_parts (B, K, I)`` and the same for ``text_`` (SSAN ID losses);
        - ``image_sid_logits``, ``attr_sid_logits (B, S)``: AAIPR's shared semantic-ID
          classifier on the image embedding (eq. 3) and the generated concept (eq. 6);
        - ``disc_real_logits``, ``disc_fake_logits (B,)``: the discriminator on *detached*
          image / attribute embeddings (for ``l_adv^D``, gradients reach only ``D``);
          ``disc_gen_logits (B,)``: the discriminator with *frozen* parameters on the attribute
          embedding (for ``l_adv^G``, gradients reach only the generator). One backward pass of
          ``lambda_D l_adv^D + lambda_G l_adv^G + ...`` thus trains both players (eq. 5).
        """
        out: dict[str, Tensor] = {}
        if images is not None:
            out.update({f"image_{k}": v for k, v in self.encode_image(images).items()})
        if token_ids is not None:
            if lengths is None:
                raise InvalidInput("token_ids need their lengths")
            out.update({f"text_{k}": v for k, v in self.encode_text(token_ids, lengths).items()})
        if attr_targets is not None:
            out.update({f"attr_{k}": v for k, v in self.encode_attributes(attr_targets).items()})
        if self.id_classifiers is not None:
            for side in ("image", "text"):
                if f"{side}_global" in out:
                    feats = {k: out[f"{side}_{k}"] for k in ("global", "parts_local", "parts")}
                    ids = self.id_classifiers(feats)
                    out.update({f"{side}_{k}": v for k, v in ids.items()})
        if self.sid_classifier is not None:
            if "image_embedding" in out:
                out["image_sid_logits"] = self.sid_classifier(out["image_embedding"])
            if "attr_embedding" in out:
                out["attr_sid_logits"] = self.sid_classifier(out["attr_embedding"])
        if self.discriminator is not None and "attr_embedding" in out:
            if "image_embedding" in out:
                out["disc_real_logits"] = self.discriminator.logits(out["image_embedding"].detach())
            out["disc_fake_logits"] = self.discriminator.logits(out["attr_embedding"].detach())
            net = self.discriminator.net
            frozen = {n: p.detach() for n, p in net.named_parameters()}
            gen_logits = functional_call(net, frozen, (out["attr_embedding"],))
            out["disc_gen_logits"] = gen_logits.squeeze(-1)
        return out

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per built module; a module both towers share (the SSAN heads, CMAAM's
        cosine attribute classifier) is counted once, under the first name that holds it."""
        counts = {}
        seen: set[int] = set()
        for name in ("heads", "image_encoder", "text_encoder", "generator", "discriminator",
                     "id_classifiers", "sid_classifier"):
            module = getattr(self, name)
            if module is not None:
                params = [p for p in module.parameters() if id(p) not in seen]
                seen.update(id(p) for p in params)
                counts[name] = sum(p.numel() for p in params)
        return counts
