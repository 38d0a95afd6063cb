"""Run-folder logic of the training job without Ray: checkpoints on disk, best/last choice,
half-written checkpoints, metrics history after a crash, run-folder rules."""

from __future__ import annotations

import json
import math

import pytest

from pedsearch.errors import ConfigError, NotFound
from pedsearch.models.tokenizer import Vocab
from training.config import load_train_config
from training.export import (
    STATE_FILE,
    checkpoint_dir_name,
    list_checkpoints,
    read_meta,
    select_checkpoint,
    write_checkpoint,
)
from training.job import (
    CONFIG_FILE,
    RUN_FILE,
    backfill_epochs,
    check_run_dir,
    clear_run_dir,
    curve_history,
    ray_report_metrics,
    read_history,
    truncate_history,
)


def fake_checkpoint(run, epoch, score):
    return write_checkpoint(
        run / checkpoint_dir_name(epoch), state={"model": {}, "optimizer": {}}, epoch=epoch,
        global_step=3 * epoch, metrics={"epoch": epoch, "step": 3 * epoch, "val/score": score,
                                        "loss/total": 1.0 / epoch, "nan": float("nan")},
        train_config={"name": "t"}, config_hash="h", vocab=Vocab.build(["a b"]),
        num_identities=2, num_semantic_ids=2,
    )


def test_best_and_last_checkpoint(tmp_path):
    for epoch, score in ((1, 0.2), (2, 0.5), (3, 0.4)):
        fake_checkpoint(tmp_path, epoch, score)
    assert [c.epoch for c in list_checkpoints(tmp_path)] == [1, 2, 3]
    assert select_checkpoint(tmp_path, "best").epoch == 2
    assert select_checkpoint(tmp_path, "last").epoch == 3
    assert select_checkpoint(tmp_path, "best", metric="missing").epoch == 3  # ties: the later
    assert select_checkpoint(tmp_path / checkpoint_dir_name(1)).epoch == 1
    assert "nan" not in list_checkpoints(tmp_path)[0].metrics  # not JSON; left out


def test_an_epoch_without_validation_is_never_the_best(tmp_path):
    """``eval_every: 2``: epochs 1 and 3 are not validated. Epoch 2 (0.40) is the best, not
    epoch 3, which must not inherit epoch 2's score."""
    for epoch in (1, 2, 3, 4):
        metrics = {"epoch": epoch, "loss/total": 1.0 / epoch}
        if epoch % 2 == 0:
            metrics["val/score"] = {2: 0.40, 4: 0.38}[epoch]
        reported = ray_report_metrics(metrics, "val/score")
        assert math.isnan(reported["val/score"]) == (epoch % 2 == 1)  # Ray ranks NaN last
        write_checkpoint(tmp_path / checkpoint_dir_name(epoch),
                         state={"model": {}, "optimizer": {}}, epoch=epoch, global_step=epoch,
                         metrics=metrics, train_config={"name": "t"}, config_hash="h",
                         vocab=Vocab.build(["a b"]), num_identities=2, num_semantic_ids=2)
    assert "val/score" not in read_meta(tmp_path / checkpoint_dir_name(3))["metrics"]
    assert select_checkpoint(tmp_path, "best").epoch == 2


def test_half_written_checkpoint_is_ignored(tmp_path):
    fake_checkpoint(tmp_path, 1, 0.1)
    torn = fake_checkpoint(tmp_path, 2, 0.9)
    state = torn / STATE_FILE
    state.write_bytes(state.read_bytes()[:-10])  # a copy cut short by a kill
    assert read_meta(torn) is None
    assert [c.epoch for c in list_checkpoints(tmp_path)] == [1]
    (tmp_path / checkpoint_dir_name(3)).mkdir()  # no meta.json at all
    assert select_checkpoint(tmp_path, "best").epoch == 1


def test_no_checkpoint_is_not_found(tmp_path):
    with pytest.raises(NotFound, match="no complete checkpoint"):
        select_checkpoint(tmp_path)


def test_history_after_a_crash(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"kind": "step", "epoch": 1, "step": 1, "loss/total": 3.0},
             {"kind": "epoch", "epoch": 1, "step": 1, "loss/total": 3.0, "val/score": 0.1},
             {"kind": "step", "epoch": 2, "step": 2, "loss/total": 2.0}]
    path.write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"kind": "st')  # torn
    assert len(read_history(path)) == 3
    truncate_history(path, 1)  # epoch 2 is redone after the resume
    assert [e["epoch"] for e in read_history(path)] == [1, 1]

    # the epoch line of a checkpoint the killed driver never wrote comes back from its meta
    fake_checkpoint(tmp_path, 1, 0.3)
    fake_checkpoint(tmp_path, 2, 0.6)
    truncate_history(path, 2)
    backfill_epochs(path, 2)
    epochs = [e for e in read_history(path) if e["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[1]["val/score"] == 0.6


def test_curve_history_keeps_step_losses_and_main_val_metrics():
    history = [{"kind": "step", "epoch": 1, "step": 1, "loss/total": 3.0, "epoch_step": 1},
               {"kind": "epoch", "epoch": 1, "step": 1, "loss/total": 2.5, "lr": 0.1,
                "val/text_R@1": 0.2, "val/text_queries": 64.0}]
    assert curve_history(history) == [{"step": 1, "loss/total": 3.0},
                                      {"step": 1, "lr": 0.1, "val/text_R@1": 0.2}]


def test_run_folder_rules(tmp_path):
    cfg = load_train_config("tiny.yaml", environ={}, overrides={"output_dir": str(tmp_path)})
    with pytest.raises(NotFound, match="no run to resume"):
        check_run_dir(cfg, resume=True, overwrite=False)
    run = check_run_dir(cfg, resume=False, overwrite=False)
    run.mkdir(parents=True)
    (run / RUN_FILE).write_text(json.dumps({"config_hash": cfg.config_hash()}))
    (run / CONFIG_FILE).write_text(json.dumps(cfg.model_dump(mode="json")))
    with pytest.raises(ConfigError, match="--resume"):
        check_run_dir(cfg, resume=False, overwrite=False)
    assert check_run_dir(cfg, resume=True, overwrite=False) == run
    changed = load_train_config("tiny.yaml", environ={},
                                overrides={"output_dir": str(tmp_path), "epochs": 5})
    # the message names what changed (and only what decides what is learnt)
    with pytest.raises(ConfigError, match=f"differs .*: epochs {cfg.epochs} -> 5 \\(see"):
        check_run_dir(changed, resume=True, overwrite=False)
    # a run started by a version without a field added since (here model.attr_classifier, at
    # its default) resumes: read now, its configuration learns the same
    older = cfg.model_dump(mode="json")
    del older["model"]["attr_classifier"]
    (run / CONFIG_FILE).write_text(json.dumps(older))
    (run / RUN_FILE).write_text(json.dumps({"config_hash": "from an older version"}))
    assert check_run_dir(cfg, resume=True, overwrite=False) == run
    with pytest.raises(ConfigError, match="epochs"):
        check_run_dir(changed, resume=True, overwrite=False)
    # --overwrite: checked here, deleted only when training starts (clear_run_dir)
    assert check_run_dir(cfg, resume=False, overwrite=True) == run
    assert run.exists()
    clear_run_dir(run)
    assert not run.exists()
    # a folder that is not a run is never deleted
    run.mkdir()
    (run / "thesis.txt").write_text("years of work")
    with pytest.raises(ConfigError, match="not a training run"):
        check_run_dir(cfg, resume=False, overwrite=True)


def test_an_unreachable_ray_address_fails_at_once():
    import socket

    from training.job import check_ray_address

    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
            check_ray_address(f"127.0.0.1:{port}", timeout_s=2.0)
        with pytest.raises(ConfigError, match="cannot reach"):
            check_ray_address(f"ray://127.0.0.1:{port}", timeout_s=2.0)
    check_ray_address("auto")  # Ray's to resolve


@pytest.mark.parametrize("where", ["run", "run/bundle", "."])
def test_an_export_folder_overlapping_the_run_is_refused_before_training(tmp_path, where):
    from training.job import run_training

    cfg = load_train_config("tiny.yaml", environ={},
                            overrides={"output_dir": str(tmp_path / "runs"), "run_name": "run"})
    target = {"run": cfg.run_dir, "run/bundle": cfg.run_dir / "bundle",
              ".": tmp_path / "runs"}[where]
    with pytest.raises(ConfigError, match="overlaps the run folder"):
        run_training(cfg, export_dir=target)
    assert not cfg.run_dir.exists()  # nothing started
