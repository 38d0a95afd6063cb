"""Fine-tuning from a bundle (training.finetune): the architecture check, on hand-made
architectures and on the shipped bundle against a config of another architecture."""

from __future__ import annotations

import pytest

from pedsearch.bundle import default_bundle_path
from pedsearch.errors import BundleError, ConfigError
from training.config import load_train_config
from training.finetune import architecture_differences, bundle_path, initial_towers


def test_same_architecture_has_no_differences():
    arch = {"backbone": {"type": "efficientnet_lite0", "pretrained": True}, "num_parts": 6,
            "image_size": [192, 96]}
    assert architecture_differences(arch, {**arch, "image_size": (192, 96)}) == []


def test_differences_name_the_nested_field_and_both_values():
    bundle = {"backbone": {"type": "efficientnet_lite0", "last_stride": 1}, "num_parts": 6}
    config = {"backbone": {"type": "resnet50", "last_stride": 1}, "num_parts": 4, "feat_dim": 128}
    assert architecture_differences(bundle, config) == [
        "model.backbone.type: bundle 'efficientnet_lite0', config 'resnet50'",
        "model.feat_dim: bundle None, config 128",
        "model.num_parts: bundle 6, config 4",
    ]


def test_pretrained_flag_is_not_a_difference():
    # it only says where an untrained backbone's weights come from; the bundle's replace them
    assert architecture_differences({"backbone": {"pretrained": True}},
                                    {"backbone": {"pretrained": False}}) == []


def test_default_names_the_shipped_bundle(tmp_path):
    assert bundle_path("default") == default_bundle_path()
    assert bundle_path(str(tmp_path)) == tmp_path


def test_no_init_from_is_no_towers():
    assert initial_towers(load_train_config("tiny.yaml")) is None


def test_the_shipped_bundle_fits_the_config_that_fine_tunes_it():
    towers = initial_towers(load_train_config("default_finetune.yaml"))
    assert towers.path == default_bundle_path()
    assert set(towers.states) == {"image", "text", "attributes"}
    assert towers.vocab_words[:2] == ["<pad>", "<unk>"]
    # float32 copies, whatever precision the bundle stores
    assert all(v.dtype.is_floating_point is False or str(v.dtype) == "torch.float32"
               for state in towers.states.values() for v in state.values())


def test_another_architecture_is_refused_before_training():
    cfg = load_train_config("tiny.yaml", overrides={"init_from": "default"})
    with pytest.raises(ConfigError) as err:
        initial_towers(cfg)
    msg = err.value.message
    assert "another architecture" in msg and "model.num_parts: bundle 6, config 4" in msg


def test_a_missing_bundle_is_named(tmp_path):
    cfg = load_train_config("tiny.yaml", overrides={"init_from": str(tmp_path / "nope")})
    with pytest.raises(BundleError, match="init_from: no model bundle at"):
        initial_towers(cfg)


def test_a_run_resumed_before_its_first_checkpoint_needs_the_bundle_it_started_from(tmp_path):
    import json

    from training.finetune import InitialTowers, check_same_bundle

    (tmp_path / "run.json").write_text(json.dumps({"init_from": {"version": "v1_aaaaaa"}}))
    same = InitialTowers(path=tmp_path, version="v1_aaaaaa", states={}, vocab_words=None,
                         vocab_options={})
    check_same_bundle(tmp_path, same)
    newer = InitialTowers(path=tmp_path, version="v2_bbbbbb", states={}, vocab_words=None,
                          vocab_options={})
    with pytest.raises(ConfigError, match="started from bundle v1_aaaaaa, but init_from now "
                                          "holds v2_bbbbbb"):
        check_same_bundle(tmp_path, newer)


def test_a_checkpoint_gives_back_its_vocabulary(tmp_path):
    from pedsearch.models.tokenizer import Vocab
    from training.finetune import checkpoint_vocab

    assert checkpoint_vocab(tmp_path) == (None, {})
    Vocab.build(["a man in a red coat"], max_length=32).save(tmp_path / "vocab.json")
    words, options = checkpoint_vocab(tmp_path)
    assert words[:2] == ["<pad>", "<unk>"] and "coat" in words
    assert options == {"punctuation": "drop", "max_length": 32}
