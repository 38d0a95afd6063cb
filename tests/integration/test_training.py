"""The training job end to end on a real Ray cluster: train ``tiny.yaml`` with 2 Ray Train
workers, SIGKILL the driver after the first epoch's checkpoint, resume with ``--resume``,
evaluate and export the bundle, then load its towers the way workers and the gateway do."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import ray
import torch

from pedsearch.bundle import load_bundle, read_manifest
from pedsearch.errors import BundleError
from training.config import load_train_config
from training.export import export_bundle, list_checkpoints, load_checkpoint, read_meta
from training.job import read_history

pytestmark = pytest.mark.integration

STEP_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def ray_2_cpus(ray_local):
    """The session's Ray (``ray_local``: $RAY_ADDRESS, else a local 2-CPU one); its address is
    what the ``pedsearch train`` subprocesses join."""
    yield ray.get_runtime_context().gcs_address


def cli() -> list[str]:
    """The ``pedsearch`` command line, run with this interpreter."""
    return [sys.executable, "-m", "pedsearch.cli"]


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None,
             log: pathlib.Path | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-4000:] if log else ""
            pytest.fail(f"trainer exited with {proc.returncode} before {what}:\n{tail}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def free_cpus() -> float:
    return ray.available_resources().get("CPU", 0.0)


def test_train_kill_resume_eval_export_load(ray_2_cpus, tmp_path):
    out = tmp_path / "runs"
    cfg = load_train_config("tiny.yaml", overrides={"output_dir": str(out)})
    run_dir = cfg.run_dir
    env = {**os.environ, "RAY_ADDRESS": ray_2_cpus, "PYTHONUNBUFFERED": "1"}
    train = [*cli(), "train", "--config", "tiny.yaml", "--output-dir", str(out)]

    # 1. train with 2 workers; SIGKILL the driver once the first checkpoint is complete
    log1 = tmp_path / "train1.log"
    with open(log1, "w") as f:
        proc = subprocess.Popen(train, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for(lambda: read_meta(run_dir / "checkpoint_epoch_0001") is not None,
                 STEP_TIMEOUT_S, "the first checkpoint", proc, log1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(c.epoch for c in list_checkpoints(run_dir))
    assert killed_at < cfg.epochs, "the run finished before it could be killed"
    first_state = sha256(run_dir / "checkpoint_epoch_0001" / "state.pt")
    # the dead driver's job (controller and 2 workers) gives its CPUs back to the cluster
    wait_for(lambda: free_cpus() >= 2, 120, "the killed job's workers to go away")

    # 2. resume: it continues after the checkpointed epoch, then exports the best checkpoint
    bundle_dir = tmp_path / "bundle"
    resumed = subprocess.run([*train, "--resume", "--export", str(bundle_dir)], env=env,
                             capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-6000:]
    assert f"resumed after epoch {killed_at}" in output, output[-6000:]

    done = list_checkpoints(run_dir)
    assert [c.epoch for c in done] == list(range(1, cfg.epochs + 1))
    assert sha256(run_dir / "checkpoint_epoch_0001" / "state.pt") == first_state  # not redone
    history = read_history(run_dir / "metrics.jsonl")
    epochs = [e["epoch"] for e in history if e["kind"] == "epoch"]
    assert epochs == list(range(1, cfg.epochs + 1))
    steps = [e["step"] for e in history if e["kind"] == "step"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    per_epoch = done[0].global_step
    assert per_epoch >= 1
    assert done[-1].global_step == per_epoch * cfg.epochs  # the step count carried over
    first_resumed = min(e["step"] for e in history
                        if e["kind"] == "step" and e["epoch"] == killed_at + 1)
    assert first_resumed == per_epoch * killed_at + 1
    for e in history:
        if e["kind"] == "epoch":
            assert np.isfinite(e["loss/total"]) and 0.0 <= e["val/score"] <= 1.0
    curves = cv2.imread(str(run_dir / "training_curves.png"))
    assert curves is not None and curves.shape[0] > 100

    # the resumed run learns what an uninterrupted one does (state, optimiser, data order and
    # randomness all continue where the checkpoint left them)
    ref = subprocess.run([*train, "--run-name", "reference"], env=env, capture_output=True,
                         text=True, timeout=STEP_TIMEOUT_S)
    assert ref.returncode == 0, (ref.stdout + ref.stderr)[-6000:]
    ref_last = list_checkpoints(out / "reference")[-1]
    for key in ("loss/total", "val/score"):
        assert done[-1].metrics[key] == pytest.approx(ref_last.metrics[key], rel=1e-4), key

    # 3. evaluate exactly what ships, on the held-out identities
    eval_dir = tmp_path / "eval"
    ev = subprocess.run([*cli(), "eval", "--bundle", str(bundle_dir), "--data", "tiny.yaml",
                         "--output-dir", str(out), "--out", str(eval_dir), "--source", "synthetic"],
                        env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    assert ev.returncode == 0, (ev.stdout + ev.stderr)[-6000:]
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    for key in ("text_R@1", "text_R@5", "text_R@10", "text_mAP", "attr_mAP", "image_R@1",
                "image_mAP", "attr_mA"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["text_R@1"] <= metrics["text_R@5"] <= metrics["text_R@10"]
    assert cv2.imread(str(eval_dir / "cmc.png")) is not None
    # what the gateway serves against the attribute-prediction baselines, with intervals
    baselines = json.loads((eval_dir / "baselines.json").read_text())["differences"]
    assert {d["metric"] for d in baselines} >= {"text_served vs textpred R@1",
                                                 "attrsoft vs attrpred mAP"}
    assert all(d["low"] <= d["delta"] <= d["high"] for d in baselines)

    # 4. the bundle records where it came from
    manifest = read_manifest(bundle_dir)
    assert manifest["train_config_hash"] == cfg.config_hash()
    assert manifest["metrics"]["epoch"] in range(1, cfg.epochs + 1)
    assert "score" in manifest["metrics"]
    last = export_bundle(run_dir, tmp_path / "bundle-last", which="last")
    assert read_manifest(last)["metrics"]["epoch"] == cfg.epochs

    # 5. the last checkpoint against the best one, paired on the same held-out images
    cmp_dir = tmp_path / "compare"
    cmp = subprocess.run([*cli(), "eval", "--bundle", str(last), "--against", str(bundle_dir),
                          "--data", "tiny.yaml", "--output-dir", str(out), "--out", str(cmp_dir),
                          "--source", "synthetic"],
                         env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    assert cmp.returncode == 0, (cmp.stdout + cmp.stderr)[-6000:]
    doc = json.loads((cmp_dir / "compare.json").read_text())
    assert doc["candidate"] == read_manifest(last)["version"]
    rows = {d["metric"]: d for d in doc["differences"]}
    assert {"text_served_R@1", "image_mAP", "attr_mA"} <= set(rows)
    assert all(r["verdict"] in ("better", "worse", "not decided") for r in rows.values())
    assert cv2.imread(str(cmp_dir / "compare.png")) is not None
    assert (cmp_dir / f"new-{doc['candidate']}" / "metrics.json").is_file()

    # 5. load the towers as workers (image) and the gateway (text + attributes) do
    test_image = next(run_dir.parent.glob("data/*/imgs/**/*.jpg"))
    crop = cv2.imread(str(test_image))
    image_side = load_bundle(bundle_dir, parts=("image",))
    emb, probs = image_side.encode_images([crop])
    assert emb.shape == (1, cfg.model.embed_dim) and probs.shape == (1, image_side.schema.dim)
    assert np.linalg.norm(emb[0]) == pytest.approx(1.0, abs=1e-4)
    assert ((probs >= 0) & (probs <= 1)).all()
    with pytest.raises(BundleError):
        image_side.encode_texts(["a woman in a red coat"])

    query_side = load_bundle(bundle_dir, parts=("text", "attributes"))
    text = query_side.encode_texts(["a woman in a long red coat carrying a black backpack"])
    attrs = query_side.encode_attribute_sets([{"gender": "female", "upper_color": ["red"]}])
    for e in (text, attrs):
        assert e.shape == (1, cfg.model.embed_dim)
        assert np.linalg.norm(e[0]) == pytest.approx(1.0, abs=1e-4)

    # serving embeds a crop as training saw it (same weights, same pixel normalisation)
    from training.evaluate import ModelEncoders
    from training.datasets import ImageRecord

    best = read_manifest(bundle_dir)["metrics"]["checkpoint"]
    model, _, _ = load_checkpoint(run_dir / best)
    trained, _ = ModelEncoders(model=model, image_size=tuple(cfg.model.image_size),
                               device="cpu").encode_images(
        [ImageRecord(path=test_image, pid="x", source="synthetic")])
    assert float(trained[0] @ emb[0]) > 0.98

    # 6. fine-tune: a new run starts from the exported bundle's towers, not from ImageNet. At a
    # learning rate too small to move them, its bundle holds the same weights (BatchNorm's
    # running statistics aside, which training mode updates whatever the rate)
    tuned = tmp_path / "bundle-tuned"
    ft_env = {**env, "PEDSEARCH_TRAIN__OPTIMIZER__LR": "1e-12",
              "PEDSEARCH_TRAIN__MAX_STEPS_PER_EPOCH": "1"}
    ft = subprocess.run([*train, "--run-name", "tuned", "--init-from", str(bundle_dir),
                         "--epochs", "1", "--workers", "1", "--export", str(tuned)],
                        env=ft_env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    assert ft.returncode == 0, (ft.stdout + ft.stderr)[-6000:]
    started = json.loads((out / "tuned" / "run.json").read_text())
    assert started["init_from"]["version"] == read_manifest(bundle_dir)["version"]
    assert read_manifest(tuned)["init_from"] == {"version": started["init_from"]["version"]}
    for part in ("image.pt", "text.pt", "concept.pt"):
        before = torch.load(bundle_dir / part, weights_only=True)
        after = torch.load(tuned / part, weights_only=True)
        assert before.keys() == after.keys()
        for key, value in before.items():
            if value.is_floating_point() and "running_" not in key:
                assert torch.allclose(value.float(), after[key].float(), atol=2e-3), (part, key)
