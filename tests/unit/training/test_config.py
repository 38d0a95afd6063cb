"""Training configuration: packaged files, _base_ chains, environment, strict validation."""

from __future__ import annotations

import pytest

from pedsearch.errors import ConfigError
from training.config import (
    CONFIGS_DIR,
    TrainConfig,
    env_overrides,
    load_train_config,
    parse_train_config,
)

MINIMAL = {
    "data": {"sources": [{"type": "synthetic", "num_ids": 10, "images_per_id": 2}]},
    "losses": {"ssan": {}},
}


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS_DIR.glob("*.yaml")))
def test_packaged_configs_load(name):
    cfg = load_train_config(name, environ={})
    assert cfg.losses
    assert cfg.model.embed_dim <= 1024


def test_tiny_is_small_and_fast():
    cfg = load_train_config("tiny.yaml", environ={})
    src = cfg.data.sources[0]
    assert src.type == "synthetic" and src.num_ids * src.images_per_id <= 200
    assert cfg.epochs == 2 and cfg.num_workers == 2
    assert cfg.model.image_size[0] <= 128


def test_base_chain_and_file_wins(tmp_path):
    (tmp_path / "exp.yaml").write_text(
        "_base_: tiny.yaml\nepochs: 5\noptimizer: {lr: 0.01}\nlosses:\n  ssan: {weight: 2.0}\n"
    )
    cfg = load_train_config(tmp_path / "exp.yaml", environ={})
    assert cfg.epochs == 5
    assert cfg.optimizer.lr == 0.01
    assert cfg.optimizer.type == "adam"  # from base.yaml, two levels up
    assert cfg.losses["ssan"].weight == 2.0
    assert cfg.name == "tiny"  # from tiny.yaml


def test_environment_and_overrides_beat_the_file():
    env = {"PEDSEARCH_TRAIN__EPOCHS": "7", "PEDSEARCH_TRAIN__OPTIMIZER__LR": "0.5",
           "OTHER": "x"}
    assert env_overrides(env) == {"epochs": 7, "optimizer": {"lr": 0.5}}
    cfg = load_train_config("tiny.yaml", environ=env, overrides={"epochs": 9})
    assert cfg.epochs == 9 and cfg.optimizer.lr == 0.5


@pytest.mark.parametrize("env, overrides, culprit", [
    ({"PEDSEARCH_TRAIN__OPTIMIZER__LR": "-1"}, {}, "PEDSEARCH_TRAIN__OPTIMIZER__LR"),
    ({"PEDSEARCH_TRAIN__OPTIMIZER__LRR": "1"}, {}, "PEDSEARCH_TRAIN__OPTIMIZER__LRR"),
    # a variable that sets a whole mapping is named as the user spelled it
    ({"PEDSEARCH_TRAIN__OPTIMIZER": "{lr: -1}"}, {}, "PEDSEARCH_TRAIN__OPTIMIZER"),
    ({"PEDSEARCH_TRAIN__optimizer__lr": "-1"}, {}, "PEDSEARCH_TRAIN__optimizer__lr"),
    ({}, {"num_workers": 0}, "--workers"),
    ({}, {"epochs": 0}, "overrides (epochs)"),  # no flag named for it
])
def test_a_bad_value_from_the_environment_or_a_flag_is_blamed_on_it(env, overrides, culprit):
    with pytest.raises(ConfigError) as err:
        load_train_config("tiny.yaml", environ=env, overrides=overrides,
                          flags={"num_workers": "--workers"})
    assert err.value.message.endswith(f"(a value set by {culprit})")


def test_train_names_the_flag_of_a_bad_value(capsys):
    from pedsearch.cli import main

    code = main(["train", "--config", "tiny.yaml", "--init-from", ""])
    assert code == 2
    assert "(a value set by --init-from)" in capsys.readouterr().err


def test_a_bad_value_in_the_file_blames_only_the_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("_base_: tiny.yaml\nepochs: 0\n")
    with pytest.raises(ConfigError) as err:
        load_train_config(tmp_path / "bad.yaml", environ={"PEDSEARCH_TRAIN__SEED": "3"})
    assert "bad.yaml" in err.value.message and "set by" not in err.value.message


def test_loss_params_are_validated_and_filled_in():
    cfg = parse_train_config({**MINIMAL, "losses": {"apr": {"params": {"lambda_id": 4.0}}}})
    assert cfg.losses["apr"].params == {"lambda_id": 4.0, "label_smoothing": 0.0}


@pytest.mark.parametrize(
    "losses, message",
    [
        ({"ssam": {}}, "unknown loss 'ssam'; known: .*ssan"),
        ({"apr": {"params": {"lambda": 4.0}}}, "lambda"),
        ({"apr": {"params": {"lambda_id": -1.0}}}, "lambda_id"),
        ({"vitaa_segmentation": {}}, "cannot feed it"),
        ({"aaipr_generator": {}}, "needs both aaipr_generator and aaipr_discriminator"),
        ({"ssan": {"weight": 0.0}}, "weight 0"),
        ({"ssan": {"wieght": 1.0}}, "wieght"),
        ({}, "losses"),
    ],
)
def test_bad_losses_are_errors(losses, message):
    with pytest.raises(ConfigError, match=message):
        parse_train_config({**MINIMAL, "losses": losses})


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 15}, "multiple of sampler.images_per_id"),
        ({"typo": 1}, "typo"),
        ({"data": {"sources": []}}, "sources"),
        ({"data": {"sources": [{"type": "imagenet"}]}}, "imagenet"),
        ({"data": {"sources": [{"type": "synthetic"}], "split": {"train": 0.9, "val": 0.2,
                                                                 "test": 0.0}}}, "sum to 1"),
        ({"model": {"backbone": {"type": "vgg"}}}, "vgg"),
        ({"model": {"global_dim": 1000, "part_dim": 100}}, "exceeds"),
        ({"optimizer": {"lr_mult": {"image_encoder": -1}}}, "lr_mult"),
        ({"run_name": "../escape"}, "run_name"),
        ({"optimizer": {"betas": [0.9, 9.99]}}, "betas"),
        ({"checkpoint_metric": "val/text_r@1"}, "not a validation figure"),
        ({"checkpoint_metric": "loss/total"}, "not a validation figure"),
    ],
)
def test_bad_values_are_errors_naming_the_key(patch, message):
    with pytest.raises(ConfigError, match=message):
        parse_train_config({**MINIMAL, **patch})


def test_missing_file_lists_packaged_configs(tmp_path):
    with pytest.raises(ConfigError, match="tiny.yaml"):
        load_train_config(tmp_path / "nope.yaml", environ={})


def test_base_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_train_config(tmp_path / "a.yaml", environ={})


def test_config_hash_ignores_placement_only():
    base = load_train_config("tiny.yaml", environ={})
    moved = base.model_copy(update={"num_workers": 8, "output_dir": base.output_dir / "x",
                                    "use_gpu": True})
    assert moved.config_hash() == base.config_hash()
    changed = load_train_config("tiny.yaml", environ={}, overrides={"optimizer": {"lr": 0.1}})
    assert changed.config_hash() != base.config_hash()
    assert len(base.config_hash()) == 64


def test_run_dir_and_adversarial():
    cfg = TrainConfig.model_validate({**MINIMAL, "output_dir": "/tmp/x", "name": "exp"})
    assert str(cfg.run_dir).endswith("/tmp/x/exp")
    assert not cfg.adversarial
    assert load_train_config("tiny.yaml", environ={}).adversarial


def test_every_checkpoint_metric_is_a_figure_validation_reports():
    from training.config import CHECKPOINT_METRICS
    from training.evaluate import PROTOCOLS

    protocols = {name.rsplit("_", 1)[0] for name in CHECKPOINT_METRICS if "@" in name
                 or name.endswith("_mAP")}
    assert protocols == set(PROTOCOLS)
    assert "score" in CHECKPOINT_METRICS


def test_a_checkpoint_metric_the_validation_does_not_measure_is_warned_about():
    """Caption-only data has no attr_* figures: every epoch scored NaN, Ray kept checkpoints by
    age, and "best" silently meant "last"."""
    from training.job import _unmeasured_metric

    epoch = {"epoch": 1, "val/text_mAP": 0.3, "val/text_R@1": 0.2, "val/text_R@5": 0.5,
             "val/score": 0.3}
    warning = _unmeasured_metric(epoch, "val/attr_mAP")
    assert warning.startswith("checkpoint_metric val/attr_mAP is not measured")
    assert warning.endswith("choose one that is: val/score, val/text_R@1, val/text_mAP")
    assert _unmeasured_metric(epoch, "val/text_R@5") is None
    assert _unmeasured_metric({"epoch": 2, "loss/total": 1.0}, "val/attr_mAP") is None
