"""Training checkpoints -> a versioned model bundle.

A checkpoint folder (``<run>/checkpoint_epoch_NNNN/``) is self-contained: ``state.pt`` (model,
discriminator and optimiser states), ``meta.json`` (epoch, step, metrics, config hash, class
counts, file sizes), ``train_config.json`` and ``vocab.json``. :func:`export_bundle` rebuilds the
model from it and writes a bundle with :func:`pedsearch.bundle.save_bundle`, recording the
checkpoint's validation metrics and the training-config hash.

Example:
    >>> export_bundle("runs/tiny", "bundles/tiny", which="best")   # doctest: +SKIP
    PosixPath('bundles/tiny')
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
from dataclasses import dataclass
from typing import Any, Literal

import torch

from pedsearch.errors import BundleError, InvalidInput, NotFound

log = logging.getLogger("pedsearch.training")

CHECKPOINT_PREFIX = "checkpoint_epoch_"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
CONFIG_FILE = "train_config.json"
VOCAB_FILE = "vocab.json"
CHECKPOINT_FORMAT = 1


def checkpoint_dir_name(epoch: int) -> str:
    """``checkpoint_epoch_0003`` for the checkpoint taken after 3 completed epochs."""
    return f"{CHECKPOINT_PREFIX}{epoch:04d}"


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint on disk.

    Attributes:
        path: the folder. epoch: completed epochs. global_step: optimiser steps so far.
        metrics: what the epoch reported (losses, ``val/*``). config_hash: the run's hash.
    """

    path: pathlib.Path
    epoch: int
    global_step: int
    metrics: dict[str, Any]
    config_hash: str

    def score(self, metric: str) -> float:
        v = self.metrics.get(metric)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf


def write_checkpoint(
    folder: pathlib.Path,
    *,
    state: dict[str, Any],
    epoch: int,
    global_step: int,
    metrics: dict[str, Any],
    train_config: dict[str, Any],
    config_hash: str,
    vocab: Any,
    num_identities: int,
    num_semantic_ids: int,
) -> pathlib.Path:
    """Write a checkpoint into ``folder`` (``meta.json`` last, with the state file's size)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({**state, "epoch": epoch, "global_step": global_step}, folder / STATE_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(train_config, indent=1, sort_keys=True))
    vocab.save(folder / VOCAB_FILE)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "global_step": global_step,
        "metrics": {k: v for k, v in metrics.items() if _jsonable(v)},
        "config_hash": config_hash,
        "num_identities": num_identities,
        "num_semantic_ids": num_semantic_ids,
        "files": {n: (folder / n).stat().st_size for n in (STATE_FILE, CONFIG_FILE, VOCAB_FILE)},
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return folder


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, bool)) or (isinstance(v, float) and math.isfinite(v))


def read_meta(folder: pathlib.Path) -> dict[str, Any] | None:
    """``meta.json`` of a *complete* checkpoint, else None (missing, corrupt, half-copied)."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        return None
    for name, size in (meta.get("files") or {}).items():
        p = folder / name
        if not p.is_file() or p.stat().st_size != size:
            return None
    return meta


def list_checkpoints(run_dir: str | pathlib.Path) -> list[CheckpointInfo]:
    """Complete checkpoints of a run, oldest first."""
    run = pathlib.Path(run_dir)
    out = []
    for d in sorted(run.glob(f"{CHECKPOINT_PREFIX}*")):
        meta = read_meta(d) if d.is_dir() else None
        if meta is None:
            continue
        out.append(CheckpointInfo(path=d, epoch=int(meta["epoch"]),
                                  global_step=int(meta["global_step"]),
                                  metrics=dict(meta.get("metrics") or {}),
                                  config_hash=str(meta.get("config_hash", ""))))
    return sorted(out, key=lambda c: (c.epoch, c.global_step))


def select_checkpoint(
    path: str | pathlib.Path,
    which: Literal["best", "last"] = "best",
    metric: str = "val/score",
) -> CheckpointInfo:
    """A checkpoint folder itself, or the best / last checkpoint of a run folder.

    ``best`` is the highest ``metric`` (ties and missing values: the later one).

    Raises:
        NotFound: no complete checkpoint there.
    """
    p = pathlib.Path(path).expanduser()
    meta = read_meta(p) if p.is_dir() else None
    if meta is not None:
        return CheckpointInfo(path=p, epoch=int(meta["epoch"]),
                              global_step=int(meta["global_step"]),
                              metrics=dict(meta.get("metrics") or {}),
                              config_hash=str(meta.get("config_hash", "")))
    found = list_checkpoints(p)
    if not found:
        raise NotFound(
            f"no complete checkpoint under {p}; train first (`pedsearch train --config ...`) or "
            "point at a run folder holding checkpoint_epoch_* folders"
        )
    if which == "last":
        return found[-1]
    if which != "best":
        raise InvalidInput(f"which must be 'best' or 'last', not {which!r}")
    return max(found, key=lambda c: (c.score(metric), c.epoch))


def load_checkpoint(
    info: CheckpointInfo | str | pathlib.Path, *, device: str | torch.device = "cpu"
) -> tuple[Any, Any, dict[str, Any]]:
    """Rebuild the model of a checkpoint.

    Returns:
        ``(model, train_config, state)``: the :class:`~pedsearch.models.joint.PersonSearchModel`
        with training heads (in eval mode), the :class:`~training.config.TrainConfig`, and the
        raw checkpoint state (optimiser states, epoch).

    Raises:
        NotFound / BundleError: the folder is not a complete, readable checkpoint.
    """
    from pedsearch.models.tokenizer import Vocab
    from training.config import parse_train_config
    from training.step import build_model

    if not isinstance(info, CheckpointInfo):
        info = select_checkpoint(info, "last")
    meta = read_meta(info.path)
    if meta is None:
        raise NotFound(f"{info.path} is not a complete checkpoint")
    cfg = parse_train_config(json.loads((info.path / CONFIG_FILE).read_text()),
                             where=str(info.path / CONFIG_FILE))
    vocab = Vocab.load(info.path / VOCAB_FILE)
    try:
        state = torch.load(info.path / STATE_FILE, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise BundleError(f"{info.path / STATE_FILE} cannot be read: {exc}") from exc
    model, disc = build_model(cfg, num_identities=int(meta["num_identities"]),
                              num_semantic_ids=int(meta["num_semantic_ids"]), vocab=vocab,
                              pretrained=False)
    model.load_state_dict(state["model"])
    if disc is not None and state.get("discriminator") is not None:
        disc.load_state_dict(state["discriminator"])
        model.discriminator = disc
    model.to(device).eval()
    return model, cfg, state


def _started_from(run_dir: pathlib.Path) -> dict[str, Any] | None:
    """The version of the bundle a fine-tuning run started from, as its ``run.json`` recorded
    it (the folder it was read from means nothing on another machine)."""
    from training.job import RUN_FILE

    try:
        started = json.loads((run_dir / RUN_FILE).read_text()).get("init_from")
    except (OSError, ValueError):  # a checkpoint copied out of its run folder
        return None
    return {"version": started["version"]} if started else None


def export_bundle(
    path: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    *,
    which: Literal["best", "last"] = "best",
    metric: str | None = None,
    version: str | None = None,
    overwrite: bool = False,
    extra_metrics: dict[str, Any] | None = None,
) -> pathlib.Path:
    """Write the best (or last) checkpoint of a run as a model bundle.

    Args:
        path: a run folder or one checkpoint folder.
        out_dir: the bundle folder to create.
        which: ``best`` by ``metric`` (default: the run's ``checkpoint_metric``) or ``last``.
        version: bundle version; None derives one from time and weights.
        overwrite: replace an existing ``out_dir``.
        extra_metrics: more results to record (e.g. a test-split evaluation).

    Returns:
        The bundle folder.

    Raises:
        NotFound: no checkpoint. BundleError: the bundle cannot be written.
    """
    from pedsearch.bundle import save_bundle

    info = select_checkpoint(path, which, metric or _run_metric(path))
    model, cfg, _ = load_checkpoint(info)
    metrics: dict[str, Any] = {
        k.split("/", 1)[1] if k.startswith("val/") else k: v
        for k, v in info.metrics.items() if k.startswith("val/")
    }
    metrics.update(epoch=info.epoch, global_step=info.global_step,
                   checkpoint=info.path.name, selected=which)
    metrics.update(extra_metrics or {})
    out = save_bundle(model, out_dir, version=version, vocab=model.vocab, metrics=metrics,
                      train_config=cfg.learning_dump(), overwrite=overwrite,
                      init_from=_started_from(info.path.parent))
    log.info("exported %s (epoch %d) to %s", info.path.name, info.epoch, out)
    return out


def _run_metric(path: str | pathlib.Path) -> str:
    """The ``checkpoint_metric`` a run was configured with (``val/score`` if unknown)."""
    p = pathlib.Path(path)
    for cfg_file in (p / CONFIG_FILE, p / "run" / CONFIG_FILE):
        try:
            return str(json.loads(cfg_file.read_text()).get("checkpoint_metric", "val/score"))
        except (OSError, ValueError):
            continue
    return "val/score"


__all__ = [
    "CheckpointInfo",
    "checkpoint_dir_name",
    "export_bundle",
    "list_checkpoints",
    "load_checkpoint",
    "read_meta",
    "select_checkpoint",
    "write_checkpoint",
]
