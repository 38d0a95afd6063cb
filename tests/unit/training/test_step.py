"""The training step on a tiny hand-made batch: finite losses, gradients in every tower, AAIPR's
alternating updates, and every loss the step can feed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import ConfigError
from pedsearch.models.tokenizer import Vocab
from training.config import LossTerm, parse_train_config
from training.data import ShardedBatchSampler, semantic_table
from training.datasets import ImageRecord
from training.losses.cmaam import weighted_multilabel_loss
from training.step import (
    LOSS_INPUTS,
    DiscriminatorStep,
    LossContext,
    TrainStep,
    frozen_adversary,
    lr_factor,
    param_groups,
    renormalizer,
    semantic_ids,
)

SCHEMA = AttributeSchema.default()
PEOPLE = [
    {"gender": "female", "hair": "long", "upper_color": ["red"], "backpack": "yes"},
    {"gender": "male", "hair": "short", "upper_color": ["blue"], "backpack": "no"},
    {"gender": "male", "hair": "short", "upper_color": ["black", "white"], "hat": "yes"},
    {"gender": "female", "age": "senior", "lower_color": ["gray"], "bag": "yes"},
]
CAPTIONS = [
    "a woman with long hair in a red top carrying a backpack",
    "a man with short hair wearing a blue jacket",
    "a man in a black and white shirt with a hat",
    "an elderly woman in grey trousers with a bag",
]
MODEL = {
    "backbone": {"type": "efficientnet_lite0", "pretrained": False, "last_stride": 1},
    "text_encoder": {"type": "bilstm", "word_dim": 16},
    "image_size": [64, 32], "feat_dim": 32, "num_parts": 2, "global_dim": 16, "part_dim": 8,
    "relation_dim": 8,
}
ALL_LOSSES = {
    "ssan": {}, "apr_attributes": {}, "cmaam_multilabel": {"weight": 0.25},
    "aaipr_generator": {}, "aaipr_discriminator": {},
}


def make_cfg(losses=None, **over):
    return parse_train_config({
        "data": {"sources": [{"type": "synthetic", "num_ids": 4, "images_per_id": 2}]},
        "model": MODEL, "losses": losses or ALL_LOSSES, "batch_size": 8, **over,
    })


@pytest.fixture(scope="module")
def batch():
    """2 images of each of 4 people: random pixels, real labels and captions."""
    torch.manual_seed(0)
    idx = np.repeat(np.arange(4), 2)
    enc = [SCHEMA.encode(PEOPLE[i]) for i in idx]
    return {
        "image": torch.randn(8, 3, 64, 32),
        "pid": torch.as_tensor(idx, dtype=torch.int64),
        "attr_target": torch.from_numpy(np.stack([t for t, _ in enc])),
        "attr_mask": torch.from_numpy(np.stack([m for _, m in enc])),
        "caption": [CAPTIONS[i] for i in idx],
        "index": torch.arange(8),
    }


@pytest.fixture(scope="module")
def table():
    records = [ImageRecord(path=f"{i}.jpg", pid=str(i), source="t", labels=p)  # type: ignore
               for i, p in enumerate(PEOPLE)]
    return semantic_table(records, SCHEMA)


def build(cfg, table):
    torch.manual_seed(0)
    return TrainStep.build(cfg, num_identities=4, semantic_table=table,
                           vocab=Vocab.build(CAPTIONS), pretrained=False)


@pytest.fixture(scope="module")
def step(table):
    return build(make_cfg(), table)


def test_losses_are_finite_and_named(step, batch):
    logs = step(batch, epoch=0)
    for name in ALL_LOSSES:
        assert np.isfinite(logs[f"loss/{name}"]), name
    assert np.isfinite(logs["loss/total"]) and logs["loss/total"] > 0
    expected = sum(step_loss.weight * logs[f"loss/{step_loss.name}"]
                   for step_loss in step.losses if step_loss.name != "aaipr_discriminator")
    assert logs["loss/total"] == pytest.approx(expected, rel=1e-5)


def _grad_ok(module: torch.nn.Module) -> bool:
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    return any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_gradients_reach_every_tower_and_head(step, batch):
    step(batch, epoch=0)
    m = step.model
    for name in ("image_encoder", "text_encoder", "generator", "heads", "id_classifiers",
                 "sid_classifier"):
        assert _grad_ok(getattr(m, name)), f"no gradient in {name}"
    assert _grad_ok(m.image_encoder.backbone)
    assert _grad_ok(m.image_encoder.attr_head)  # APR's attribute FCs
    assert _grad_ok(step.discriminator)


def test_parameters_change_after_a_step(table, batch):
    st = build(make_cfg(), table)
    before = {n: p.detach().clone() for n, p in st.model.named_parameters()}
    d_before = [p.detach().clone() for p in st.discriminator.parameters()]
    st(batch, epoch=0)
    moved = [n for n, p in st.model.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("image_encoder.backbone") for n in moved)
    assert any(n.startswith("text_encoder") for n in moved)
    assert any(n.startswith("generator") for n in moved)
    assert any(not torch.equal(p, q) for p, q in zip(st.discriminator.parameters(), d_before))


def test_aaipr_discriminator_updates_before_generator(table, batch):
    """AAIPR alternates: D steps on detached concepts, then G plays against the updated D."""
    st = build(make_cfg(), table)
    order: list[str] = []
    d_step, g_step = st.disc_optimizer.step, st.optimizer.step
    seen_d_params: list[torch.Tensor] = []

    def record_d(*a, **k):
        order.append("discriminator")
        return d_step(*a, **k)

    def record_g(*a, **k):
        order.append("generator")
        return g_step(*a, **k)

    st.disc_optimizer.step = record_d  # type: ignore[method-assign]
    st.optimizer.step = record_g  # type: ignore[method-assign]
    real_adversary = frozen_adversary

    def spy(disc, real=None):
        seen_d_params.extend(p.detach().clone() for p in disc.parameters())
        return real_adversary(disc, real)

    import training.step as step_module

    step_module.frozen_adversary, saved = spy, step_module.frozen_adversary
    try:
        d0 = [p.detach().clone() for p in st.discriminator.parameters()]
        st(batch, epoch=0)
    finally:
        step_module.frozen_adversary = saved
    assert order == ["discriminator", "generator"]
    # the generator's adversary is the discriminator after its update, not before
    assert any(not torch.equal(a, b) for a, b in zip(seen_d_params, d0))


def test_frozen_adversary_gives_gradient_to_the_input_only(step):
    disc = step.discriminator
    for p in disc.parameters():
        p.grad = None
    x = torch.randn(4, step.model.embed_dim, requires_grad=True)
    frozen_adversary(disc)(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(p.grad is None for p in disc.parameters())


def _shrunk_and_shifted(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated concepts ``fake (32, dim)`` and real ones ``0.3 fake + shift``: the same cloud,
    shrunk and moved -- what concepts crowding together look like to D."""
    fake = torch.randn(32, dim, generator=torch.Generator().manual_seed(0))
    return 0.3 * fake + 0.5, fake


def _discriminator(dim: int):
    from pedsearch.models.concept import ConceptDiscriminator

    torch.manual_seed(0)
    return ConceptDiscriminator(embed_dim=dim, hidden=(16, 8)).train()


def test_separate_batches_hide_a_shift_and_shrink_from_the_discriminator():
    # fc1 is linear and bn1 normalises each batch by its own mean and spread, so after bn1 the
    # real batch (0.3 fake + 0.5) is exactly the fake one: D gives both the same logits
    real, fake = _shrunk_and_shifted(6)
    d = _discriminator(6)
    seen = []
    DiscriminatorStep(d, lambda r, f: seen.append((r, f)) or r.sum(), joint=False)(real, fake)
    r, f = seen[0]
    assert torch.allclose(r, f, atol=1e-3)  # up to BatchNorm's eps
    DiscriminatorStep(d, lambda r, f: seen.append((r, f)) or r.sum(), joint=True)(real, fake)
    r, f = seen[1]
    assert r.shape == f.shape == (32,)
    assert float((r - f).detach().abs().max()) > 1e-2  # one batch: the difference survives bn1


def test_joint_adversary_gives_the_generator_a_gradient_along_the_shift():
    real, fake = _shrunk_and_shifted(6)
    d = _discriminator(6)
    for joint in (False, True):
        x = fake.clone().requires_grad_(True)
        logits = frozen_adversary(d, real if joint else None)(x)
        assert logits.shape == (32,)
        logits.sum().backward()
        along_shift = float(x.grad.sum())  # d/d(shift) of the summed logits
        if joint:
            assert abs(along_shift) > 1e-3
        else:
            assert abs(along_shift) < 1e-4  # a shift of the whole batch is normalised away
        assert all(p.grad is None for p in d.parameters())


def test_classifier_input_features_feeds_the_unnormalised_concepts():
    out = {"image_embedding": torch.zeros(2, 6), "attr_embedding": torch.zeros(2, 6),
           "image_global": torch.full((2, 2), 3.0), "image_parts": torch.arange(8.0).view(2, 2, 2),
           "attr_concept": torch.full((2, 6), 0.5), "sid_weight": torch.ones(3, 6),
           "sid_bias": torch.zeros(3)}
    batch = {"semantic_id": torch.tensor([0, 2])}
    feed = LOSS_INPUTS["aaipr_generator"]
    args, _ = feed.build(LossContext(out=out, batch=batch, schema=SCHEMA))
    assert args[0] is out["image_embedding"] and args[1] is out["attr_embedding"]
    args, _ = feed.build(LossContext(out=out, batch=batch, schema=SCHEMA,
                                     classifier_input="features"))
    assert args[0].tolist() == [[3.0, 3.0, 0.0, 1.0, 2.0, 3.0], [3.0, 3.0, 4.0, 5.0, 6.0, 7.0]]
    assert args[1] is out["attr_concept"]


@pytest.mark.parametrize("wiring", [{"discriminator_batch": "joint"},
                                    {"classifier_input": "features"}])
def test_aaipr_wiring_alternatives_train(wiring, batch, table):
    st = build(make_cfg(aaipr=wiring), table)
    logs = st(batch, epoch=0)
    assert np.isfinite(logs["loss/total"]) and np.isfinite(logs["loss/aaipr_discriminator"])


def test_aaipr_wiring_is_checked():
    with pytest.raises(Exception, match="discriminator_batch"):
        make_cfg(aaipr={"discriminator_batch": "mixed"})


@pytest.mark.parametrize("name", sorted(n for n, f in LOSS_INPUTS.items()
                                        if f.phase == "generator"))
def test_every_feedable_loss_trains(name, step, batch):
    """Each loss the config can name runs through the step with finite value and gradients."""
    terms = {name: LossTerm()}
    if name == "aaipr_generator":
        terms["aaipr_discriminator"] = LossTerm()
    saved = step.losses
    step.losses = TrainStep.active_losses(terms)
    try:
        logs = step(batch, epoch=0)
    finally:
        step.losses = saved
    assert np.isfinite(logs[f"loss/{name}"])
    assert np.isfinite(logs["loss/total"])


def test_start_epoch_holds_a_loss_back(table, batch):
    losses = {**ALL_LOSSES, "aaipr_generator": {"start_epoch": 1},
              "aaipr_discriminator": {"start_epoch": 1}}
    st = build(make_cfg(losses), table)
    early = st(batch, epoch=0)
    assert "loss/aaipr_generator" not in early and "loss/aaipr_discriminator" not in early
    late = st(batch, epoch=1)
    assert "loss/aaipr_generator" in late and "loss/aaipr_discriminator" in late


def test_state_dict_round_trip(table, batch):
    a = build(make_cfg(), table)
    a(batch, epoch=0)
    b = build(make_cfg(), table)
    b.load_state_dict(a.state_dict())
    for (n, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), n
    assert b.optimizer.state_dict()["state"].keys() == a.optimizer.state_dict()["state"].keys()


def test_semantic_ids_match_table_rows(table, batch):
    ids = semantic_ids(batch["attr_target"].float(), batch["attr_mask"].float(),
                       torch.as_tensor(table))
    # the two images of a person share the person's description
    assert ids.tolist()[0::2] == ids.tolist()[1::2]
    assert len(set(ids.tolist())) == 4


def test_renormalizer_maps_imagenet_onto_the_backbone(step):
    from training.datasets.torch_data import IMAGENET_MEAN, IMAGENET_STD

    scale, shift = renormalizer(step.model, torch.device("cpu"))
    rgb = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
    loader = (rgb - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD).view(1, 3, 1, 1)
    want = (rgb - torch.tensor(step.model.pixel_mean).view(1, 3, 1, 1)) / torch.tensor(
        step.model.pixel_std).view(1, 3, 1, 1)
    assert torch.allclose(loader * scale + shift, want, atol=1e-6)


def test_lr_mult_typo_is_an_error(step):
    with pytest.raises(ConfigError, match="image_encoder.backbon"):
        param_groups(step.model.named_parameters(), 1e-3, {"image_encoder.backbon": 0.1})
    groups = param_groups(step.model.named_parameters(), 1e-3, {"image_encoder.backbone": 0.1})
    assert sorted(g["lr"] for g in groups) == pytest.approx([1e-4, 1e-3])


def test_lr_schedule():
    opt = make_cfg(optimizer={"warmup_epochs": 1, "scheduler": "cosine"}).optimizer
    assert lr_factor(opt, 0, 11) == pytest.approx(0.5)
    assert lr_factor(opt, 1, 11) == pytest.approx(1.0)
    assert lr_factor(opt, 6, 11) == pytest.approx(0.5)
    step_opt = make_cfg(optimizer={"scheduler": "step", "step_epochs": 2,
                                   "step_gamma": 0.1}).optimizer
    assert [lr_factor(step_opt, e, 10) for e in (0, 1, 2, 4)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.01])


# -- the sharded batch sampler the Ray workers use ------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 4])
def test_sampler_shards_are_disjoint_and_equal(k):
    labels = np.repeat(np.arange(30), 5)
    shards = [list(ShardedBatchSampler(labels, batch_size=8, images_per_id=k, rank=r,
                                       world_size=3, seed=1)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) > 0
    flat = [i for s in shards for b in s for i in b]
    assert len(flat) == len(set(flat))  # no image on two workers
    for s in shards:
        for b in s:
            assert len(b) == 8
            if k > 1:  # P identities x K images
                _, counts = np.unique(labels[b], return_counts=True)
                assert all(c % k == 0 for c in counts)


def test_sampler_reshuffles_per_epoch_and_is_deterministic():
    labels = np.repeat(np.arange(10), 4)
    s = ShardedBatchSampler(labels, batch_size=4, images_per_id=2, seed=3)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert list(s) == e0 and e1 != e0


def test_sampler_too_little_data_is_an_error():
    from pedsearch.errors import InvalidInput

    with pytest.raises(InvalidInput, match="no full batch"):
        ShardedBatchSampler(np.arange(6), batch_size=4, rank=0, world_size=2)


def test_discriminator_weight_zero_trains_without_adversary(table, batch):
    # AAIPR "w/o adversary": the discriminator is never updated, the generator still learns
    # from the shared semantic-ID classifier
    losses = {**ALL_LOSSES, "aaipr_discriminator": {"weight": 0.0}}
    st = build(make_cfg(losses), table)
    before = {k: v.clone() for k, v in st.discriminator.state_dict().items()}
    gen_before = [p.detach().clone() for p in st.model.generator.parameters()]
    logs = st(batch, epoch=0)
    assert "loss/aaipr_discriminator" not in logs and np.isfinite(logs["loss/aaipr_generator"])
    after = st.discriminator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(a, p) for a, p in zip(gen_before, st.model.generator.parameters()))


def test_ablation_switches_are_typed_config():
    cfg = make_cfg({**ALL_LOSSES,
                    "ssan": {"params": {"branch_weights": [1.0, 0.0, 0.0], "beta": 0.0}},
                    "aaipr_generator": {"params": {"semantic_consistency": False}}},
                   model={**MODEL, "global_weight": 1.0})
    assert cfg.losses["aaipr_generator"].params["semantic_consistency"] is False
    assert cfg.model.global_weight == 1.0
    with pytest.raises(ConfigError, match="semantic_consistancy"):
        make_cfg({**ALL_LOSSES, "aaipr_generator": {"params": {"semantic_consistancy": False}}})


def test_balanced_attribute_loss_reads_the_training_prior(table, batch):
    from training.data import attribute_prior

    records = [ImageRecord(path=f"{i}.jpg", pid=str(i), source="t", labels=p)  # type: ignore
               for i, p in enumerate(PEOPLE)]
    prior = attribute_prior(records, SCHEMA)
    assert prior[SCHEMA.index("gender", "female")] == 0.5
    assert prior[SCHEMA.index("hat", "yes")] == 1.0  # only person 2 says anything about hats
    cfg = make_cfg({"apr_attributes": {"params": {"balance": "inverse_frequency"}}})
    torch.manual_seed(0)
    st = TrainStep.build(cfg, num_identities=4, semantic_table=table,
                         vocab=Vocab.build(CAPTIONS), pretrained=False, attr_prior=prior)
    assert np.isfinite(st(batch, epoch=0)["loss/apr_attributes"])
    st.attr_prior = None
    with pytest.raises(Exception, match="prior"):
        st(batch, epoch=0)


def test_cmaam_multilabel_is_balanced_by_the_training_prior():
    # CMAAM Eq. 4 with both balances: w^p = exp(1 - r) on positives, w^n = exp(r) on negatives
    # (r = the value's positive ratio in the training split), and alpha |P| / |N| on negatives
    prior = torch.tensor([0.2, 0.8])
    out = {"image_attr_logits": torch.zeros(1, 2), "text_attr_logits": torch.zeros(1, 2)}
    batch = {"attr_target": torch.tensor([[1.0, 0.0]]), "attr_mask": torch.ones(1, 2),
             "attr_prior": prior}
    ctx = LossContext(out=out, batch=batch, schema=SCHEMA)
    args, kwargs = LOSS_INPUTS["cmaam_multilabel"].build(ctx)
    loss = weighted_multilabel_loss(*args, **kwargs)
    log2 = float(np.log(2.0))  # -log sigmoid(0)
    per_sample = np.exp(0.8) * log2 + 2.0 * 1 / 1 * np.exp(0.8) * log2
    assert float(loss) == pytest.approx(per_sample)  # image and text rows alike: their mean
    batch.pop("attr_prior")
    args, kwargs = LOSS_INPUTS["cmaam_multilabel"].build(ctx)
    assert float(weighted_multilabel_loss(*args, **kwargs)) == pytest.approx(3 * log2)


def test_cmaam_cosine_heads_train_the_whole_attribute_space_loss(table, batch):
    # CMAAM's own head (Eq. 3): the semantic triplet reads the d_a-dim attribute space, CORAL
    # and L_MLC the scores of the one classifier both towers share
    cfg = make_cfg({"ssan": {}, "apr_attributes": {}, "cmaam_attribute_space": {"weight": 0.33}},
                   model={**MODEL, "attr_classifier": "cosine", "attr_dim": 12})
    st = build(cfg, table)
    feeds = LOSS_INPUTS["cmaam_attribute_space"].outputs
    assert {"image_attr_space", "text_attr_space"} <= set(feeds)
    clf = st.model.image_encoder.attr_head.classifier
    before = clf.weight.detach().clone()
    logs = st(batch, epoch=0)
    assert np.isfinite(logs["loss/cmaam_attribute_space"])
    assert not torch.equal(clf.weight, before)
    out = st.module(["image_attr_space", "text_attr_space"], images=batch["image"],
                    **dict(zip(("token_ids", "lengths"), st.model.tokenize(batch["caption"]))))
    assert out["image_attr_space"].shape == out["text_attr_space"].shape == (8, 12)
