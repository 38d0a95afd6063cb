"""One training step: model forward -> dict of named losses -> weighted total -> update.

Losses are chosen by name (:data:`training.losses.LOSSES`); :data:`LOSS_INPUTS` says, for each
loss the step can train, which model outputs it reads and how they become the loss's
arguments. The step never asks "is SSAN on?": it runs the towers the active losses need, asks
each active loss for its value and sums ``weight * value``.

AAIPR's adversarial game (Yin et al. 2018, Eqs. 4-5: "solved by iteratively optimizing theta_D
and theta_G") alternates inside every step, the usual GAN order:

1. one forward of the towers gives image concepts ``Phi_I(I)`` and generated concepts
   ``Phi_A(A)``;
2. **discriminator update**: ``lambda_D l_adv^D`` on the *detached* concepts, its own optimiser;
3. **generator / image update**: every other loss, with ``l_adv^G`` read from the discriminator
   *just updated* in 2, its parameters frozen (gradients reach the generator only).

Under data parallelism the discriminator is its own DDP module, so each of the two updates is
one forward and one backward of one DDP module, as DDP requires.

Example (one worker, no Ray)::

    step = TrainStep.build(cfg, num_identities=8, semantic_table=table, vocab=vocab)
    logs = step(batch, epoch=0)       # batch from training.datasets.torch_data.collate
    logs["loss/total"], logs["loss/ssan"], logs["loss/aaipr_discriminator"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import ConfigError, InvalidInput
from training.config import AaiprConfig
from training.losses import LOSSES, BoundLoss
from training.losses.cmaam import attribute_frequency_weights
from training.losses.ssan import SsanBranch
from training.losses.vitaa import identity_positive_mask

#: The towers a loss can need: ``image`` (crops), ``text`` (captions), ``attributes`` (targets).
TOWERS = ("image", "text", "attributes")


# ------------------------------------------------------------------------------------------------
# which outputs each loss reads
# ------------------------------------------------------------------------------------------------
@dataclass
class LossContext:
    """What a loss's input builder reads.

    Attributes:
        out: model outputs by name (``image_global``, ``text_parts``, ``sid_weight``, ...).
        batch: the batch tensors (``pid``, ``attr_target``, ``attr_mask``, ``semantic_id``).
        schema: the attribute schema (softmax / sigmoid groups of the attribute losses).
        adversary: the discriminator with frozen parameters, ``(B, D) -> (B,)`` logits; set
            during the generator update of an adversarial run.
        classifier_input: what AAIPR's semantic-ID classifier reads, ``"embedding"`` or
            ``"features"`` (:class:`training.config.AaiprConfig`).
    """

    out: Mapping[str, Tensor]
    batch: Mapping[str, Any]
    schema: AttributeSchema
    adversary: Callable[[Tensor], Tensor] | None = None
    classifier_input: str = "embedding"


@dataclass(frozen=True)
class LossFeed:
    """How the step feeds one registered loss.

    Attributes:
        outputs: model outputs it reads (the forward returns exactly the union of these).
        build: ``ctx -> (args, kwargs)`` for the bound loss.
        towers: the towers whose inputs the forward must receive.
        phase: ``"generator"`` (the main update) or ``"discriminator"`` (AAIPR's D update).
    """

    outputs: tuple[str, ...]
    build: Callable[[LossContext], tuple[tuple[Any, ...], dict[str, Any]]]
    towers: frozenset[str]
    phase: str = "generator"


#: loss name -> how the training step feeds it. A loss registered in ``LOSSES`` without an entry
#: here needs inputs the model does not produce (e.g. ViTAA's segmentation maps).
LOSS_INPUTS: dict[str, LossFeed] = {}


def feeds(name: str, *outputs: str, phase: str = "generator"):
    """Decorator: register how loss ``name`` is fed from the model ``outputs``."""

    def deco(fn: Callable[[LossContext], tuple[tuple[Any, ...], dict[str, Any]]]):
        towers = frozenset(t for t in TOWERS for o in outputs if o.startswith(_PREFIX[t]))
        if name in LOSS_INPUTS:
            raise ConfigError(f"loss {name!r} has two input builders")
        LOSS_INPUTS[name] = LossFeed(outputs=tuple(outputs), build=fn, towers=towers, phase=phase)
        return fn

    return deco


_PREFIX = {"image": "image_", "text": "text_", "attributes": "attr_"}


def _pid(ctx: LossContext) -> Tensor:
    return ctx.batch["pid"]


@feeds("identity", "image_id_global")
def _identity(ctx):
    return (ctx.out["image_id_global"], _pid(ctx)), {}


@feeds("cross_modal_identity", "image_global", "text_global", "id_weight", "id_bias")
def _cross_modal_identity(ctx):
    o = ctx.out
    return (o["image_global"], o["text_global"], _pid(ctx), o["id_weight"], o["id_bias"]), {}


@feeds("apr", "image_id_global", "image_attr_logits")
def _apr(ctx):
    o, b = ctx.out, ctx.batch
    return (o["image_id_global"], _pid(ctx), o["image_attr_logits"], b["attr_target"],
            b["attr_mask"], ctx.schema), {}


@feeds("apr_attributes", "image_attr_logits")
def _apr_attributes(ctx):
    b = ctx.batch
    return ((ctx.out["image_attr_logits"], b["attr_target"], b["attr_mask"], ctx.schema),
            {"prior": b.get("attr_prior")})


@feeds("ssan", "image_global", "text_global", "image_parts_local", "text_parts_local",
       "image_parts", "text_parts", "image_id_global", "text_id_global",
       "image_id_parts_local", "text_id_parts_local", "image_id_parts", "text_id_parts")
def _ssan(ctx):
    o = ctx.out
    branches = [
        SsanBranch(o[f"image_{k}"], o[f"text_{k}"], o[f"image_id_{k}"], o[f"text_id_{k}"])
        for k in ("global", "parts_local", "parts")
    ]
    return (branches, _pid(ctx)), {}


@feeds("ssan_compound_ranking", "image_embedding", "text_embedding")
def _ssan_cr(ctx):
    return (ctx.out["image_embedding"], ctx.out["text_embedding"], _pid(ctx)), {}


@feeds("vitaa_alignment", "image_embedding", "text_embedding")
def _vitaa_alignment(ctx):
    o = ctx.out
    return (o["image_embedding"], o["text_embedding"], identity_positive_mask(_pid(ctx))), {}


@feeds("vitaa_attribute_alignment", "image_parts", "text_parts")
def _vitaa_attribute_alignment(ctx):
    # SSAN's K stripe / word-attention parts are the per-body-part features ViTAA aligns
    return (ctx.out["image_parts"], ctx.out["text_parts"], _pid(ctx)), {}


# CMAAM's attribute space: the image and text attribute heads' scores over the schema's values
# are Eq. 3's S(l_j | x); the embeddings a_I / a_T of its semantic triplet are ``attr_space``:
# the d_a-dim space of the cosine heads (model.attr_classifier: cosine), else the scores too.
def _frequency_weights(ctx) -> tuple[Tensor | None, Tensor | None]:
    """CMAAM Eq. 4's frequency balance ``(w^p, w^n)`` from the training split's positive
    ratio of each value (the prior the data module computes); none without a prior."""
    prior = ctx.batch.get("attr_prior")
    return (None, None) if prior is None else attribute_frequency_weights(prior)


@feeds("cmaam_multilabel", "image_attr_logits", "text_attr_logits")
def _cmaam_multilabel(ctx):
    o, b = ctx.out, ctx.batch
    scores = torch.cat([o["image_attr_logits"], o["text_attr_logits"]])
    return (scores, torch.cat([b["attr_target"]] * 2), torch.cat([b["attr_mask"]] * 2),
            *_frequency_weights(ctx)), {}


@feeds("cmaam_coral", "image_attr_logits", "text_attr_logits")
def _cmaam_coral(ctx):
    return (ctx.out["image_attr_logits"], ctx.out["text_attr_logits"]), {}


@feeds("cmaam_semantic_triplet", "image_attr_space", "text_attr_space")
def _cmaam_semantic_triplet(ctx):
    o, b = ctx.out, ctx.batch
    return (o["image_attr_space"], o["text_attr_space"], b["attr_target"], b["attr_mask"]), {}


@feeds("cmaam_attribute_space", "image_attr_space", "text_attr_space", "image_attr_logits",
       "text_attr_logits")
def _cmaam_attribute_space(ctx):
    o, b = ctx.out, ctx.batch
    return (o["image_attr_space"], o["text_attr_space"], o["image_attr_logits"],
            o["text_attr_logits"], b["attr_target"], b["attr_mask"],
            *_frequency_weights(ctx)), {}


@feeds("cmaam_latent_triplet", "image_embedding", "text_embedding")
def _cmaam_latent_triplet(ctx):
    return (ctx.out["image_embedding"], ctx.out["text_embedding"], _pid(ctx)), {}


@feeds("cmaam_norm_regularization", "image_global", "text_global")
def _cmaam_norm_reg(ctx):
    return (ctx.out["image_global"], ctx.out["text_global"]), {}


@feeds("cmaam_latent_space", "image_global", "text_global", "id_weight")
def _cmaam_latent_space(ctx):
    o = ctx.out
    return (o["image_global"], o["text_global"], _pid(ctx), o["id_weight"]), {}


@feeds("cmaam", "image_attr_space", "text_attr_space", "image_attr_logits", "text_attr_logits",
       "image_global", "text_global", "id_weight")
def _cmaam(ctx):
    o, b = ctx.out, ctx.batch
    return (o["image_attr_space"], o["text_attr_space"], o["image_attr_logits"],
            o["text_attr_logits"], b["attr_target"], b["attr_mask"], o["image_global"],
            o["text_global"], _pid(ctx), o["id_weight"], *_frequency_weights(ctx)), {}


@feeds("aaipr_generator", "image_embedding", "attr_embedding", "image_global", "image_parts",
       "attr_concept", "sid_weight", "sid_bias")
def _aaipr_generator(ctx):
    o = ctx.out
    if ctx.adversary is None:
        # no discriminator this step (aaipr_discriminator has weight 0 or starts later): the
        # adversarial term is a constant log 2 with no gradient, i.e. AAIPR "w/o adversary"
        fake = o["attr_embedding"].new_zeros(o["attr_embedding"].shape[0])
    else:
        fake = ctx.adversary(o["attr_embedding"])
    if ctx.classifier_input == "features":
        # the vectors the unit embeddings are made of, in the same (B, D) layout:
        # [global (B, M) | parts (B, K*N)] and the generator's tanh output
        image = torch.cat([o["image_global"], o["image_parts"].flatten(1)], dim=1)
        attr = o["attr_concept"]
    else:
        image, attr = o["image_embedding"], o["attr_embedding"]
    return (image, attr, ctx.batch["semantic_id"], fake, o["sid_weight"], o["sid_bias"]), {}


@feeds("aaipr_discriminator", "image_embedding", "attr_embedding", phase="discriminator")
def _aaipr_discriminator(ctx):  # fed by DiscriminatorStep; listed so configs may name it
    raise InvalidInput("aaipr_discriminator is computed by the discriminator update")


# ------------------------------------------------------------------------------------------------
# modules run under DDP
# ------------------------------------------------------------------------------------------------
class TrainingModule(nn.Module):
    """The model's forward returning only the outputs the active losses read.

    DDP (``find_unused_parameters=True``) then sees exactly the parameters that get gradients:
    returning an output no loss reads would make DDP wait for its gradients forever. Classifier
    weights that losses take as arguments (``id_weight``, ``sid_weight``) are returned as views,
    so DDP finds them in the graph too.

    Args:
        model: a :class:`~pedsearch.models.joint.PersonSearchModel` built with training heads
            and *without* its discriminator (that one trains in :class:`DiscriminatorStep`).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        keys: Sequence[str],
        images: Tensor | None = None,
        token_ids: Tensor | None = None,
        lengths: Tensor | None = None,
        attr_inputs: Tensor | None = None,
    ) -> dict[str, Tensor]:
        out = self.model(images=images, token_ids=token_ids, lengths=lengths,
                         attr_targets=attr_inputs)
        m = self.model
        extra: dict[str, Callable[[], Tensor | None]] = {
            "id_weight": lambda: _view(m.id_classifiers.global_fc.weight),
            "id_bias": lambda: _view(m.id_classifiers.global_fc.bias),
            "sid_weight": lambda: _view(m.sid_classifier.weight),
            "sid_bias": lambda: _view(m.sid_classifier.bias),
        }
        result = {}
        for k in keys:
            if k in out:
                result[k] = out[k]
            elif k in extra and _has_head(m, k):
                result[k] = extra[k]()
            else:
                raise ConfigError(
                    f"a configured loss reads the model output {k!r}, which this model does not "
                    "produce (a tower or training head is missing)"
                )
        return result


def _has_head(model: nn.Module, key: str) -> bool:
    head = "id_classifiers" if key.startswith("id_") else "sid_classifier"
    return getattr(model, head, None) is not None


def _view(p: Tensor | None) -> Tensor | None:
    # a view has a grad_fn, so DDP's search of the output graph reaches the parameter
    return None if p is None else p.view_as(p)


class DiscriminatorStep(nn.Module):
    """AAIPR's discriminator update as one module: ``lambda_D l_adv^D`` of detached concepts.

    ``joint=False``: real and generated concepts go through the discriminator in two calls, so
    its BatchNorm normalises each kind by its own batch statistics -- which also hides from D
    any shift or uniform shrink of the generated concepts (after the first layer's
    normalisation the two batches look alike). ``joint=True``: one call on both, so they share
    the statistics and such differences stay visible. Either way DDP sees one forward per
    backward.
    """

    def __init__(self, discriminator: nn.Module, objective: BoundLoss, *,
                 joint: bool = False) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.objective = objective
        self.joint = joint

    def forward(self, real: Tensor, fake: Tensor) -> Tensor:
        """``real (B, D)``, ``fake (B', D)`` concepts -> scalar ``lambda_D l_adv^D``."""
        d = self.discriminator
        real, fake = real.detach(), fake.detach()
        if self.joint:
            return self.objective(*_one_batch(d.logits, real, fake))
        return self.objective(d.logits(real), d.logits(fake))


def _one_batch(logits: Callable[[Tensor], Tensor], real: Tensor,
               fake: Tensor) -> tuple[Tensor, Tensor]:
    """``logits`` of ``real (B, D)`` and ``fake (B', D)`` from one call on both, so D's
    BatchNorm normalises them with shared statistics -> ``(B,)``, ``(B',)``."""
    both = logits(torch.cat([real, fake]))
    return both[: len(real)], both[len(real):]


def frozen_adversary(discriminator: nn.Module,
                     real: Tensor | None = None) -> Callable[[Tensor], Tensor]:
    """The discriminator as a function whose parameters get no gradient (``l_adv^G`` side).

    Args:
        discriminator: the :class:`~pedsearch.models.concept.ConceptDiscriminator`.
        real: ``(B, D)`` image concepts to batch the generated ones with (the ``joint``
            discriminator batch, see :class:`DiscriminatorStep`); None: the generated concepts
            alone.

    Returns:
        ``concepts (B', D) -> (B',)`` logits, differentiable in ``concepts`` only.
    """
    net = discriminator.net
    params = {n: p.detach() for n, p in net.named_parameters()}

    def logits(concepts: Tensor) -> Tensor:
        return functional_call(net, params, (concepts,)).squeeze(-1)

    if real is None:
        return logits
    real = real.detach()
    return lambda concepts: _one_batch(logits, real, concepts)[1]


# ------------------------------------------------------------------------------------------------
# optimisers
# ------------------------------------------------------------------------------------------------
def param_groups(
    named: Iterable[tuple[str, nn.Parameter]], base_lr: float, lr_mult: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Parameter groups by the longest matching ``lr_mult`` prefix.

    Raises:
        ConfigError: a prefix matches no parameter (a typo would silently do nothing).
    """
    groups: dict[float, list[nn.Parameter]] = {}
    used: set[str] = set()
    prefixes = sorted(lr_mult, key=len, reverse=True)
    for name, p in named:
        if not p.requires_grad:
            continue
        mult = 1.0
        for pre in prefixes:
            if name == pre or name.startswith(pre.rstrip(".") + "."):
                mult = lr_mult[pre]
                used.add(pre)
                break
        groups.setdefault(mult, []).append(p)
    unused = sorted(set(lr_mult) - used)
    if unused:
        raise ConfigError(
            f"optimizer.lr_mult prefixes {unused} match no parameter; top-level modules are "
            "image_encoder, text_encoder, generator, heads, id_classifiers, sid_classifier"
        )
    return [{"params": ps, "lr": base_lr * m, "lr_mult": m} for m, ps in sorted(groups.items())]


def build_optimizer(opt_cfg: Any, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    if opt_cfg.type == "sgd":
        return torch.optim.SGD(groups, lr=opt_cfg.lr, momentum=opt_cfg.momentum,
                               weight_decay=opt_cfg.weight_decay)
    cls = torch.optim.AdamW if opt_cfg.type == "adamw" else torch.optim.Adam
    return cls(groups, lr=opt_cfg.lr, betas=tuple(opt_cfg.betas),
               weight_decay=opt_cfg.weight_decay)


def lr_factor(opt_cfg: Any, epoch: int, epochs: int) -> float:
    """Learning-rate factor of ``epoch`` (0-based): linear warm-up, then the schedule."""
    if epoch < opt_cfg.warmup_epochs:
        return (epoch + 1) / (opt_cfg.warmup_epochs + 1)
    if opt_cfg.scheduler == "cosine":
        span = max(1, epochs - opt_cfg.warmup_epochs)
        t = (epoch - opt_cfg.warmup_epochs) / span
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if opt_cfg.scheduler == "step":
        return opt_cfg.step_gamma ** ((epoch - opt_cfg.warmup_epochs) // opt_cfg.step_epochs)
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = base_lr * g.get("lr_mult", 1.0) * factor


# ------------------------------------------------------------------------------------------------
# the step
# ------------------------------------------------------------------------------------------------
@dataclass
class ActiveLoss:
    name: str
    loss: BoundLoss
    weight: float
    start_epoch: int
    feed: LossFeed


@dataclass
class TrainStep:
    """Forward, named losses, weighted total, backward and update, for one batch.

    Build it with :meth:`build` (one worker) or from the pieces (the Ray job wraps ``module``
    and ``disc_module`` with ``ray.train.torch.prepare_model`` first).

    Attributes:
        module: the :class:`TrainingModule` (possibly DDP-wrapped).
        model: the unwrapped :class:`~pedsearch.models.joint.PersonSearchModel`.
        losses: the configured losses.
        optimizer: the generator/image optimiser (every model parameter).
        disc_module: the :class:`DiscriminatorStep` (possibly DDP-wrapped), or None.
        discriminator: the unwrapped discriminator, or None.
        disc_optimizer: its optimiser, or None.
        schema: attribute schema.
        grad_clip_norm: global gradient-norm clip of the main update, or None.
        image_renorm: ``(scale (3,), shift (3,))`` mapping the loader's normalisation onto the
            backbone's (see :func:`renormalizer`), or None.
        semantic_table: ``(S, A)`` the training set's distinct attribute descriptions (1/0
            known, -1 unknown); row ``s`` is AAIPR semantic ID ``s``.
        attr_prior: ``(A,)`` each attribute value's frequency among the training images where
            it is known (:func:`training.data.attribute_prior`), for balanced attribute losses.
        aaipr: AAIPR's wiring (:class:`training.config.AaiprConfig`).
    """

    module: nn.Module
    model: nn.Module
    losses: list[ActiveLoss]
    optimizer: torch.optim.Optimizer
    schema: AttributeSchema
    disc_module: nn.Module | None = None
    discriminator: nn.Module | None = None
    disc_optimizer: torch.optim.Optimizer | None = None
    grad_clip_norm: float | None = None
    image_renorm: tuple[Tensor, Tensor] | None = None
    semantic_table: Tensor | None = None
    attr_prior: Tensor | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    aaipr: AaiprConfig = field(default_factory=AaiprConfig)

    # -- construction ----------------------------------------------------------------------------
    @staticmethod
    def active_losses(loss_cfg: Mapping[str, Any]) -> list[ActiveLoss]:
        """Bind every configured loss (name -> ``LossTerm``) with its hyper-parameters."""
        out = []
        for name, term in loss_cfg.items():
            if name not in LOSS_INPUTS:
                raise ConfigError(
                    f"loss {name!r} cannot be fed by the training step; trainable: "
                    f"{', '.join(sorted(LOSS_INPUTS))}"
                )
            out.append(ActiveLoss(name=name, loss=LOSSES.build(name, **term.params),
                                  weight=term.weight, start_epoch=term.start_epoch,
                                  feed=LOSS_INPUTS[name]))
        return out

    @classmethod
    def build(
        cls,
        cfg: Any,
        *,
        num_identities: int,
        semantic_table: Any,
        vocab: Any,
        schema: AttributeSchema | None = None,
        pretrained: bool = True,
        device: torch.device | str = "cpu",
        attr_prior: Any = None,
    ) -> "TrainStep":
        """A single-process step for ``cfg`` (a :class:`~training.config.TrainConfig`).

        Args:
            num_identities: training identities (ID classifier size).
            semantic_table: ``(S, A)`` distinct training attribute descriptions
                (:func:`training.data.semantic_table`).
            vocab: caption vocabulary of the Bi-LSTM.
        """
        table = torch.as_tensor(semantic_table, dtype=torch.float32)
        model, disc = build_model(cfg, num_identities=num_identities,
                                  num_semantic_ids=int(table.shape[0]), vocab=vocab,
                                  schema=schema, pretrained=pretrained)
        device = torch.device(device)
        model.to(device)
        if disc is not None:
            disc.to(device)
        return cls.assemble(cfg, model=model, discriminator=disc, module=TrainingModule(model),
                            disc_module=None, device=device, semantic_table=table,
                            attr_prior=None if attr_prior is None else
                            torch.as_tensor(attr_prior, dtype=torch.float32))

    @classmethod
    def assemble(
        cls,
        cfg: Any,
        *,
        model: nn.Module,
        discriminator: nn.Module | None,
        module: nn.Module,
        disc_module: nn.Module | None,
        device: torch.device,
        semantic_table: Tensor | None = None,
        attr_prior: Tensor | None = None,
    ) -> "TrainStep":
        """Wire optimisers and losses around (possibly DDP-wrapped) modules."""
        losses = cls.active_losses(cfg.losses)
        opt = cfg.optimizer
        optimizer = build_optimizer(
            opt, param_groups(model.named_parameters(), opt.lr, opt.lr_mult))
        disc_optimizer = None
        by_name = {a.name: a for a in losses}
        if discriminator is not None and "aaipr_discriminator" in by_name:
            if disc_module is None:
                disc_module = DiscriminatorStep(discriminator, by_name["aaipr_discriminator"].loss,
                                                joint=cfg.aaipr.joint_discriminator)
            d_lr = opt.discriminator_lr or opt.lr
            disc_optimizer = build_optimizer(
                opt, [{"params": list(discriminator.parameters()), "lr": d_lr, "lr_mult": 1.0}])
            for g in disc_optimizer.param_groups:
                g["base_lr"] = d_lr
        elif "aaipr_discriminator" in by_name:
            raise ConfigError("aaipr_discriminator is configured but the model has no "
                              "discriminator (build it with the attribute tower)")
        return cls(
            module=module, model=model, losses=losses, optimizer=optimizer,
            schema=model.schema, disc_module=disc_module, discriminator=discriminator,
            disc_optimizer=disc_optimizer, grad_clip_norm=opt.grad_clip_norm,
            image_renorm=renormalizer(model, device), device=device,
            semantic_table=None if semantic_table is None else semantic_table.to(device),
            attr_prior=None if attr_prior is None else attr_prior.to(device),
            aaipr=cfg.aaipr,
        )

    # -- one step --------------------------------------------------------------------------------
    def active(self, epoch: int) -> list[ActiveLoss]:
        return [a for a in self.losses if a.start_epoch <= epoch and a.weight > 0]

    def prepare(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Loader batch (``training.datasets.torch_data.collate``) -> tensors on the device.

        Adds ``token_ids`` / ``lengths`` (captions tokenised by the model's text tower) when the
        model has one and ``attr_input`` (targets with unknown values 0, the generator's input).
        """
        dev = self.device
        out: dict[str, Any] = {
            "pid": batch["pid"].to(dev),
            "attr_target": batch["attr_target"].to(dev).float(),
            "attr_mask": batch["attr_mask"].to(dev).float(),
        }
        images = batch["image"].to(dev)
        if self.image_renorm is not None:
            scale, shift = self.image_renorm
            images = images * scale + shift
        out["image"] = images
        out["attr_input"] = out["attr_target"] * out["attr_mask"]
        if self.attr_prior is not None:
            out["attr_prior"] = self.attr_prior
        if self.semantic_table is not None and self.semantic_table.shape[0] > 0:
            out["semantic_id"] = semantic_ids(out["attr_target"], out["attr_mask"],
                                              self.semantic_table)
        if getattr(self.model, "text_encoder", None) is not None and "caption" in batch:
            captions = [c if c.strip() else "person" for c in batch["caption"]]
            token_ids, lengths = self.model.tokenize(captions)
            out["token_ids"], out["lengths"] = token_ids.to(dev), lengths
        return out

    def __call__(self, batch: Mapping[str, Any], epoch: int) -> dict[str, float]:
        """Train on one batch; returns ``loss/<name>`` and ``loss/total`` as floats.

        Raises:
            InvalidInput: a loss came out NaN or infinite (the message names it).
        """
        b = self.prepare(batch)
        active = self.active(epoch)
        if not active:
            return {"loss/total": 0.0}
        gen = [a for a in active if a.feed.phase == "generator"]
        disc = [a for a in active if a.feed.phase == "discriminator"]
        keys = sorted({k for a in active for k in a.feed.outputs})
        towers = set().union(*(a.feed.towers for a in active))
        self.module.train()
        out = self.module(
            keys,
            images=b["image"] if "image" in towers else None,
            token_ids=b.get("token_ids") if "text" in towers else None,
            lengths=b.get("lengths") if "text" in towers else None,
            attr_inputs=b["attr_input"] if "attributes" in towers else None,
        )
        logs: dict[str, float] = {}
        adversary = None
        if disc and self.disc_module is not None and self.disc_optimizer is not None:
            # 1) discriminator update on detached concepts
            self.disc_module.train()
            d_loss = self.disc_module(out["image_embedding"], out["attr_embedding"])
            _check_finite("aaipr_discriminator", d_loss)
            self.disc_optimizer.zero_grad(set_to_none=True)
            (disc[0].weight * d_loss).backward()
            self.disc_optimizer.step()
            logs["loss/aaipr_discriminator"] = float(d_loss.detach())
            # 2) the generator plays against the discriminator just updated
            adversary = frozen_adversary(
                self.discriminator,
                real=out["image_embedding"] if self.aaipr.joint_discriminator else None)
        ctx = LossContext(out=out, batch=b, schema=self.schema, adversary=adversary,
                          classifier_input=self.aaipr.classifier_input)
        total = None
        for a in gen:
            args, kwargs = a.feed.build(ctx)
            value = a.loss(*args, **kwargs)
            _check_finite(a.name, value)
            logs[f"loss/{a.name}"] = float(value.detach())
            total = a.weight * value if total is None else total + a.weight * value
        if total is not None:
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if self.grad_clip_norm is not None:
                norm = torch.nn.utils.clip_grad_norm_(
                    [p for g in self.optimizer.param_groups for p in g["params"]],
                    self.grad_clip_norm)
                logs["grad_norm"] = float(norm)
            self.optimizer.step()
            logs["loss/total"] = float(total.detach())
        return logs

    # -- state -----------------------------------------------------------------------------------
    def set_epoch_lr(self, cfg: Any, epoch: int) -> float:
        """Apply the schedule's learning rate for ``epoch``; returns the factor."""
        f = lr_factor(cfg.optimizer, epoch, cfg.epochs)
        set_lr(self.optimizer, cfg.optimizer.lr, f)
        if self.disc_optimizer is not None:
            set_lr(self.disc_optimizer, cfg.optimizer.discriminator_lr or cfg.optimizer.lr, f)
        return f

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "discriminator": self.discriminator.state_dict() if self.discriminator else None,
            "optimizer": self.optimizer.state_dict(),
            "disc_optimizer": self.disc_optimizer.state_dict() if self.disc_optimizer else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.discriminator is not None and state.get("discriminator") is not None:
            self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.disc_optimizer is not None and state.get("disc_optimizer") is not None:
            self.disc_optimizer.load_state_dict(state["disc_optimizer"])


def semantic_ids(targets: Tensor, masks: Tensor, table: Tensor) -> Tensor:
    """AAIPR semantic ID of each sample: the row of ``table`` equal to its description.

    Args:
        targets: ``(B, A)`` attribute targets. masks: ``(B, A)`` 1 = known.
        table: ``(S, A)`` descriptions, -1 where unknown.

    Returns:
        ``(B,)`` int64 IDs.

    Raises:
        InvalidInput: a description is not in the table (not from the training set).
    """
    keys = torch.where(masks > 0, targets, torch.full_like(targets, -1.0))
    match = (keys[:, None, :] == table[None, :, :]).all(dim=2)  # (B, S)
    found = match.any(dim=1)
    if not bool(found.all()):
        raise InvalidInput(
            f"{int((~found).sum())} samples have attribute descriptions that are not in the "
            "training set's semantic-ID table; AAIPR trains on training images only"
        )
    return match.to(torch.int64).argmax(dim=1)


def _check_finite(name: str, value: Tensor) -> None:
    if not torch.isfinite(value).all():
        raise InvalidInput(
            f"loss {name!r} is {float(value)}; lower the learning rate or this loss's weight, "
            "or check the batch (empty captions, all-unknown attributes)"
        )


def renormalizer(model: nn.Module, device: torch.device) -> tuple[Tensor, Tensor] | None:
    """Map images normalised by the data loader (ImageNet mean/std) onto the backbone's own
    normalisation (``model.pixel_mean`` / ``pixel_std``), as ``x * scale + shift``.

    Serving normalises crops with the backbone's values; training must feed the same, or the
    bundle would see differently scaled pixels than it learnt on.
    """
    if getattr(model, "image_encoder", None) is None:
        return None
    from training.datasets.torch_data import IMAGENET_MEAN, IMAGENET_STD

    m_in, s_in = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    m_out, s_out = torch.tensor(model.pixel_mean), torch.tensor(model.pixel_std)
    if torch.allclose(m_in, m_out) and torch.allclose(s_in, s_out):
        return None
    scale = (s_in / s_out).view(1, 3, 1, 1).to(device)
    shift = ((m_in - m_out) / s_out).view(1, 3, 1, 1).to(device)
    return scale, shift


def build_model(
    cfg: Any,
    *,
    num_identities: int,
    num_semantic_ids: int,
    vocab: Any,
    schema: AttributeSchema | None = None,
    pretrained: bool = True,
) -> tuple[nn.Module, nn.Module | None]:
    """The model with its training heads, and its discriminator taken out (None if no AAIPR).

    The discriminator trains in its own update (:class:`DiscriminatorStep`), so it is detached
    from the model the main update wraps.
    """
    from pedsearch.models.joint import PARTS, PersonSearchModel

    # a bundle holds all three towers, so all are built even when no loss trains one of them
    adversarial = "aaipr_generator" in cfg.losses or "aaipr_discriminator" in cfg.losses
    model = PersonSearchModel.from_config(
        cfg.model, schema=schema, vocab=vocab, parts=PARTS, pretrained=pretrained,
        training_heads=True, num_identities=num_identities,
        num_semantic_ids=num_semantic_ids if adversarial else 0,
    )
    disc = model.discriminator
    model.discriminator = None
    if "aaipr_discriminator" not in cfg.losses:
        disc = None
    return model, disc


__all__ = [
    "LOSS_INPUTS",
    "DiscriminatorStep",
    "LossContext",
    "LossFeed",
    "TrainStep",
    "TrainingModule",
    "build_model",
    "feeds",
    "frozen_adversary",
    "lr_factor",
    "param_groups",
    "renormalizer",
    "semantic_ids",
]
