"""The distributed training job: Ray Train ``TorchTrainer`` over N workers.

The driver (:func:`run_training`) resolves the data once, starts a ``TorchTrainer`` with
``ScalingConfig(num_workers=N, use_gpu=...)`` (gloo on CPU, NCCL on GPU) and shows rich progress
while the workers train. Every worker (:func:`train_loop_per_worker`) builds the model, wraps it
with ``ray.train.torch.prepare_model`` (DDP), draws its own share of every epoch's batches
(:class:`training.data.ShardedBatchSampler`) and calls ``ray.train.report(metrics,
checkpoint=...)`` once per epoch; rank 0 validates and writes the checkpoint.

Run folder ``<output_dir>/<run_name>/`` (Ray Train's storage path for the run)::

    run.json              config hash, data fingerprint and sizes (checked on --resume)
    train_config.json     the resolved configuration
    metrics.jsonl         one JSON line per logged step and per epoch
    training_curves.png   every logged metric over the steps
    checkpoint_epoch_NNNN/  state.pt, meta.json, train_config.json, vocab.json

``resume=True`` continues from the latest checkpoint of the run's storage path, also after the
driver or a worker was killed with SIGKILL: Ray Train's checkpoint manager snapshot names it
(``ray.train.get_checkpoint()``), and the newest complete ``checkpoint_epoch_*`` folder serves
when no snapshot exists. A worker that dies mid-run is restarted by Ray Train from the latest
checkpoint (``max_failures``). With ``RAY_ADDRESS`` or ``ray.address`` set, the same job runs on
that cluster; the run folder and the image files must then be on storage every node reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import pathlib
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from typing import Any

import numpy as np

from pedsearch.errors import BundleError, ConfigError, InvalidInput, NotFound, PedsearchError
from training.config import TrainConfig
from training.data import PreparedData
from training.export import (
    checkpoint_dir_name,
    list_checkpoints,
    read_meta,
    select_checkpoint,
    write_checkpoint,
)

log = logging.getLogger("pedsearch.training")

RUN_FILE = "run.json"
CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "training_curves.png"


# ------------------------------------------------------------------------------------------------
# progress channel: workers -> driver
# ------------------------------------------------------------------------------------------------
class ProgressBoard:
    """Ray actor body: rank 0 posts events, the driver drains them (rich progress, metrics.jsonl).

    A plain queue in an actor reaches the driver from any node of a cluster, which a file on a
    worker's disk would not.
    """

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []

    def post(self, event: dict[str, Any]) -> None:
        self._events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        out, self._events = self._events, []
        return out


def _post(board: Any, event: dict[str, Any]) -> None:
    if board is not None:
        board.post.remote(event)  # fire and forget: progress must never stall training


# ------------------------------------------------------------------------------------------------
# the worker
# ------------------------------------------------------------------------------------------------
def _quiet_report_lines() -> None:
    """Ray Train 2.x logs each ``ray.train.report`` at INFO, with every metric, under a logger
    named by its file path: outside the ``ray.train`` loggers ``LoggingConfig`` sets, so the
    lines (thousands of characters each) would drown the progress bar. Warnings still show."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray version: nothing to quiet, or not there
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker entry: train ``config["train_config"]`` on ``config["data"]``.

    ``config`` keys: ``train_config`` (a :class:`TrainConfig` dump), ``data`` (a
    :class:`~training.data.PreparedData`), ``board`` (a :class:`ProgressBoard` handle or None),
    ``run_dir`` (the run folder, scanned for checkpoints Ray Train does not know about).
    """
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from pedsearch.attributes import AttributeSchema
    from training.data import ShardedBatchSampler, eval_subset, make_dataset
    from training.datasets.torch_data import collate
    from training.step import DiscriminatorStep, TrainingModule, TrainStep, build_model

    _quiet_report_lines()
    cfg = TrainConfig.model_validate(config["train_config"])
    data: PreparedData = config["data"]
    board = config.get("board")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed + rank)
    device = ray.train.torch.get_device()
    if isinstance(device, list):
        device = device[0]
    schema = AttributeSchema.default()
    vocab = data.vocab()

    state, resumed_from = _restore_state(config.get("run_dir"))
    if world > 1 and dist.is_available() and dist.is_initialized():
        # every rank must start at the same epoch, or the all-reduces would pair up wrongly
        chosen = [resumed_from]
        dist.broadcast_object_list(chosen, src=0)
        if chosen[0] != resumed_from:
            state = (torch.load(pathlib.Path(chosen[0]) / "state.pt", map_location="cpu",
                                weights_only=False) if chosen[0] else None)
            resumed_from = chosen[0]
    # ImageNet weights only for a run that starts from nothing else
    model, disc = build_model(cfg, num_identities=data.num_ids,
                              num_semantic_ids=data.num_semantic_ids, vocab=vocab, schema=schema,
                              pretrained=state is None and not config.get("init_states"))
    start_epoch, global_step = 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        if disc is not None and state.get("discriminator") is not None:
            disc.load_state_dict(state["discriminator"])
        start_epoch, global_step = int(state["epoch"]), int(state["global_step"])
    elif config.get("init_states"):
        # a fine-tuning run's first epoch starts from the bundle (training.finetune)
        from training.finetune import load_towers

        load_towers(model, config["init_states"])

    module = ray.train.torch.prepare_model(
        TrainingModule(model), parallel_strategy_kwargs={"find_unused_parameters": True})
    disc_module = None
    if disc is not None:
        objective = TrainStep.active_losses({"aaipr_discriminator":
                                             cfg.losses["aaipr_discriminator"]})[0].loss
        disc_module = ray.train.torch.prepare_model(DiscriminatorStep(
            disc, objective, joint=cfg.aaipr.joint_discriminator))
    step = TrainStep.assemble(
        cfg, model=model, discriminator=disc, module=module, disc_module=disc_module,
        device=device, semantic_table=torch.tensor(data.semantic_table, dtype=torch.float32),
        attr_prior=(None if data.attr_prior is None
                    else torch.tensor(data.attr_prior, dtype=torch.float32)),
    )
    if state is not None:
        step.optimizer.load_state_dict(state["optimizer"])
        if step.disc_optimizer is not None and state.get("disc_optimizer") is not None:
            step.disc_optimizer.load_state_dict(state["disc_optimizer"])

    train_ds = make_dataset(data.train, cfg, train=True, schema=schema, pid_index=data.pid_index)
    sampler = ShardedBatchSampler(
        [data.pid_index[r.pid] for r in data.train], batch_size=cfg.batch_size,
        images_per_id=cfg.sampler.images_per_id if cfg.sampler.type == "identity" else 1,
        rank=rank, world_size=world, seed=cfg.seed, max_batches=cfg.max_steps_per_epoch,
    )
    loader = torch.utils.data.DataLoader(
        train_ds, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.loader_workers,
        persistent_workers=cfg.loader_workers > 0,
    )
    val_records = eval_subset(data.val, cfg.data.max_val_images, cfg.seed)
    steps_per_epoch = len(sampler)
    if rank == 0:
        _post(board, {"kind": "start", "start_epoch": start_epoch, "epochs": cfg.epochs,
                      "steps_per_epoch": steps_per_epoch, "world_size": world,
                      "global_step": global_step, "resumed_from": resumed_from,
                      "device": str(device)})
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.monotonic()
        # randomness by (seed, epoch, rank): a resumed epoch draws what an uninterrupted one would
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, epoch, rank]).generate_state(1)[0]))
        train_ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        lr_factor = step.set_epoch_lr(cfg, epoch)
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for i, batch in enumerate(loader):
            logs = step(batch, epoch)
            global_step += 1
            for k, v in logs.items():
                sums[k] += v
                counts[k] += 1
            if rank == 0:
                event = {"kind": "step", "epoch": epoch + 1, "epoch_step": i + 1,
                         "step": global_step}
                if global_step % cfg.log_every_steps == 0 or i + 1 == steps_per_epoch:
                    event.update(logs)
                    event["log"] = True
                _post(board, event)
        names = sorted(sums)
        means = torch.tensor([sums[k] / max(counts[k], 1) for k in names], dtype=torch.float64)
        if world > 1 and dist.is_available() and dist.is_initialized():
            means = means.to(device)
            dist.all_reduce(means)  # every worker logged the same names in the same order
            means = (means / world).cpu()
        metrics: dict[str, Any] = {k: float(v) for k, v in zip(names, means.tolist())}
        metrics.update(epoch=epoch + 1, step=global_step, lr=cfg.optimizer.lr * lr_factor,
                       train_seconds=time.monotonic() - t0)
        validate = val_records and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs)
        if rank == 0 and validate:
            metrics.update(_validate(model, val_records, cfg, device, schema))
        reported = ray_report_metrics(metrics, cfg.checkpoint_metric)
        name = checkpoint_dir_name(epoch + 1)
        if rank == 0:
            _post(board, {"kind": "epoch", **metrics})
            with tempfile.TemporaryDirectory(prefix="pedsearch-ckpt-") as tmp:
                write_checkpoint(
                    pathlib.Path(tmp), state=step.state_dict(), epoch=epoch + 1,
                    global_step=global_step, metrics=metrics,
                    train_config=cfg.model_dump(mode="json"), config_hash=cfg.config_hash(),
                    vocab=vocab, num_identities=data.num_ids,
                    num_semantic_ids=data.num_semantic_ids,
                )
                ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                                 checkpoint_dir_name=name)
        else:
            ray.train.report(reported, checkpoint=None, checkpoint_dir_name=name)


def _restore_state(run_dir: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The state to continue from: the newest of Ray Train's latest checkpoint and the newest
    complete ``checkpoint_epoch_*`` folder of the run.

    Both are needed: after a kill between a checkpoint's upload and its registration (or with
    no checkpoint-manager snapshot at all) only the folder knows the epoch was finished; the run
    folder holds this run's checkpoints only (a new run starts in an empty folder).
    """
    import ray.train
    import torch

    def load(folder: pathlib.Path) -> dict[str, Any]:
        return torch.load(folder / "state.pt", map_location="cpu", weights_only=False)

    done = list_checkpoints(run_dir) if run_dir else []
    newest_folder = done[-1] if done else None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:  # a local copy while inside, for remote storage
            meta = read_meta(pathlib.Path(d))
            if meta is not None and (newest_folder is None or
                                     int(meta["epoch"]) >= newest_folder.epoch):
                return load(pathlib.Path(d)), str(ckpt.path)
    if newest_folder is not None:
        return load(newest_folder.path), str(newest_folder.path)
    return None, None


def _validate(model: Any, records: list, cfg: TrainConfig, device: Any, schema: Any
              ) -> dict[str, float]:
    from training.evaluate import EvalSet, ModelEncoders, evaluate_encoders

    data = EvalSet.from_records(records, schema, seed=cfg.seed,
                                captions_per_image=cfg.data.captions_per_image)
    enc = ModelEncoders(model=model, image_size=tuple(cfg.model.image_size), device=device,
                        batch_size=max(cfg.batch_size, 32))
    m = evaluate_encoders(enc, data, schema, seed=cfg.seed)
    return {f"val/{k}": float(v) for k, v in m.items()}


# ------------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainOutcome:
    """What :func:`run_training` produced.

    Attributes:
        run_dir: the run folder. epochs: completed epochs. metrics: the last epoch's metrics.
        best_checkpoint: folder of the best checkpoint (by ``checkpoint_metric``).
        bundle: the exported bundle folder, when asked for.
    """

    run_dir: pathlib.Path
    epochs: int
    metrics: dict[str, Any]
    best_checkpoint: pathlib.Path | None
    bundle: pathlib.Path | None = None


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local Ray.

    Returns:
        whether the Ray is a local one this process started (no autoscaler adds to it).
    """
    import ray

    address = cluster_address(address)
    if ray.is_initialized():
        return address is None
    if address:  # run_training checked first that it answers (check_ray_address)
        ray.init(address=address, ignore_reinit_error=True)
        return False
    # "local" never attaches to a cluster someone else started on this machine; the
    # dashboard serves the state API Ray Train's placement-group cleaner polls
    ray.init(address="local", num_cpus=num_cpus, ignore_reinit_error=True)
    return True


def cluster_address(address: str | None) -> str | None:
    """The Ray cluster to join: ``address``, else ``$RAY_ADDRESS``; ``None`` = a local Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at a ``host:port`` (or ``ray://host:port``) address:
    ``ray.init`` would retry for minutes with only Ray's own log lines.

    Raises:
        ConfigError: the address does not answer.
    """
    import socket

    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return  # "auto" and other forms are Ray's to resolve
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({exc}); check the "
                          "address (ray.address, PEDSEARCH_RAY__ADDRESS or $RAY_ADDRESS) and that "
                          "its head node runs (`ray status` there)") from None


def data_fingerprint(data: PreparedData) -> str:
    """sha256 of what the model's shape and labels depend on (identities, descriptions, vocab)."""
    h = hashlib.sha256()
    h.update(json.dumps(sorted(data.pid_index.items())).encode())
    h.update(np.ascontiguousarray(data.semantic_table, np.float32).tobytes())
    h.update(json.dumps(data.vocab_words).encode())
    h.update(json.dumps(sorted(str(r.path) for r in data.train)).encode())
    return h.hexdigest()


def check_run_dir(cfg: TrainConfig, *, resume: bool, overwrite: bool) -> pathlib.Path:
    """Decide whether the run folder may be used; returns it.

    Nothing is deleted here: with ``overwrite`` an existing run is removed by
    :func:`clear_run_dir` only once the data is ready and training is about to start, so a
    failed start (missing data, a bad export folder) loses no finished run.

    Raises:
        NotFound: ``resume`` without a run to resume.
        ConfigError: a run already exists and neither ``resume`` nor ``overwrite`` is set,
            ``overwrite`` would delete a folder that is not a run, or the configuration changed
            since the run started.
    """
    run_dir = cfg.run_dir
    run_file = run_dir / RUN_FILE
    if resume:
        if not run_file.is_file():
            raise NotFound(
                f"no run to resume at {run_dir}; start it without --resume (or set run_name / "
                "output_dir to the run you mean)"
            )
        started = json.loads(run_file.read_text())
        if started.get("config_hash") != cfg.config_hash() and not _learns_the_same(
                run_dir / CONFIG_FILE, cfg):
            raise ConfigError(
                f"the configuration differs from the one run {run_dir.name} started with"
                f"{_config_changes(run_dir / CONFIG_FILE, cfg)} (see {run_dir / CONFIG_FILE}); "
                "resume with that configuration, or start a new run under another run_name"
            )
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"run folder {run_dir} already exists; pass --resume to continue it, --overwrite "
                "to start it again from scratch, or choose another run_name"
            )
        if not run_file.is_file():
            raise ConfigError(
                f"refusing to delete {run_dir}: it is not a training run (no {RUN_FILE}); "
                "choose another run_name or output_dir"
            )
    return run_dir


def _learns_the_same(saved_file: pathlib.Path, cfg: TrainConfig) -> bool:
    """Whether a run's saved configuration, read by this version, learns what ``cfg`` does.

    A run started before a field was added has another hash; read now, the field takes its
    default, which is what the older version did, so the run may go on. A changed value,
    default or not, is in the saved file and still differs.
    """
    from training.config import parse_train_config

    try:
        saved = parse_train_config(json.loads(saved_file.read_text()), where=str(saved_file))
    except (OSError, ValueError, PedsearchError):
        return False
    return saved.learning_dump() == cfg.learning_dump()


def _config_changes(saved_file: pathlib.Path, cfg: TrainConfig, limit: int = 5) -> str:
    """``: epochs 2 -> 3, ...``: what differs between the run's saved configuration and
    ``cfg`` in the fields that decide what is learnt ('' if the saved file is unreadable)."""
    try:
        saved = json.loads(saved_file.read_text())
    except (OSError, ValueError):
        return ""

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix[:-1]: d}
        return {k: v for key, val in d.items() for k, v in flat(val, f"{prefix}{key}.").items()}

    learnt = cfg.learning_dump()
    now = flat(learnt)
    before = {k: v for k, v in flat(saved).items() if k.split(".")[0] in learnt}
    changed = [f"{k} {before.get(k, '(unset)')} -> {now.get(k, '(unset)')}"
               for k in sorted(set(now) | set(before)) if before.get(k) != now.get(k)]
    if not changed:
        return ""
    more = f", and {len(changed) - limit} more" if len(changed) > limit else ""
    return ": " + ", ".join(changed[:limit]) + more


def clear_run_dir(run_dir: pathlib.Path) -> None:
    """Delete the run that ``--overwrite`` replaces (checked by :func:`check_run_dir`)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)


def run_training(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    export_dir: str | pathlib.Path | None = None,
    ray_address: str | None = None,
    ray_num_cpus: int | None = None,
    data_root: pathlib.Path | None = None,
    console: Any = None,
) -> TrainOutcome:
    """Train ``cfg`` with Ray Train; optionally export the best checkpoint as a bundle.

    Args:
        cfg: the run's configuration (``num_workers`` / ``use_gpu`` place it).
        resume: continue the run in ``cfg.run_dir`` from its latest checkpoint.
        overwrite: delete an existing run folder (and an existing ``export_dir``) first.
        export_dir: write the best checkpoint as a bundle there when training ends.
        ray_address: cluster address (default ``$RAY_ADDRESS``; None starts a local Ray).
        ray_num_cpus: CPUs of a local Ray (None = all).
        data_root: where data sets without their own path are read (None = configured root).
        console: a ``rich.console.Console`` for progress (default: stderr).

    Returns:
        A :class:`TrainOutcome`.

    Raises:
        ConfigError / NotFound / InvalidInput: bad configuration, data or run folder.
        PedsearchError: training failed on a worker (the worker's error is chained).
    """
    from rich.console import Console
    from rich.markup import escape

    from training.data import prepare_data
    from training.finetune import check_same_bundle, checkpoint_vocab, initial_towers

    console = console or Console(stderr=True)
    run_dir = check_run_dir(cfg, resume=resume, overwrite=overwrite)
    if cluster_address(ray_address):  # before any folder is written
        check_ray_address(cluster_address(ray_address))
    if export_dir is not None:  # now, not after hours of training
        from pedsearch.bundle import check_bundle_target

        if resume and not overwrite and pathlib.Path(export_dir).exists():
            # --overwrite would restart the run, not replace the bundle: say what does
            raise BundleError(f"{export_dir} already exists; give --export another folder, or "
                              f"replace it once the run is done: `pedsearch export --run "
                              f"{run_dir} --out {export_dir} --overwrite`")
        check_bundle_target(export_dir, overwrite=overwrite)
        target, run = pathlib.Path(export_dir).resolve(), run_dir.resolve()
        if target == run or run in target.parents or target in run.parents:
            # the run folder would hold the bundle (or the bundle the run): refused at the
            # export, after the training, were it not checked now
            raise ConfigError(f"--export {export_dir} overlaps the run folder {run_dir}; give "
                              "the bundle a folder of its own (e.g. beside the run)")
    # no spinner here: generating the synthetic world shows its own progress bar
    done = list_checkpoints(run_dir) if resume else []
    # a fine-tuning run reads its bundle until its first checkpoint, which from then on holds
    # the towers and the vocabulary; a wrong bundle fails now, before the data is prepared
    towers = initial_towers(cfg) if not done else None
    if towers is not None and resume:
        check_same_bundle(run_dir, towers)
    console.print(f"preparing data for {run_dir.name} ...")
    data = prepare_data(cfg, data_root=data_root)
    if cfg.init_from is not None:
        # the bundle's word embeddings keep their rows; new words read as <unk>
        words, options = ((towers.vocab_words, towers.vocab_options) if towers is not None
                          else checkpoint_vocab(done[-1].path))
        if words is not None:
            data = dataclasses.replace(data, vocab_words=words, vocab_options=options)
    fingerprint = data_fingerprint(data)
    run_file = run_dir / RUN_FILE
    if not resume and overwrite:
        clear_run_dir(run_dir)
    if resume:
        started = json.loads(run_file.read_text())
        if started.get("data_fingerprint") != fingerprint:
            raise InvalidInput(
                f"the training data differs from the data run {run_dir.name} started with "
                "(identities, attribute descriptions, vocabulary or images changed); restore "
                "the data or start a new run"
            )
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(json.dumps(cfg.model_dump(mode="json"), indent=1))
        _write_json_atomic(run_file, {
            "config_hash": cfg.config_hash(), "data_fingerprint": fingerprint,
            "data": data.summary(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **({"init_from": {"path": str(towers.path.resolve()), "version": towers.version}}
               if towers is not None else {}),
        })
    console.print(f"[bold]{run_dir.name}[/]: " + ", ".join(
        f"{k} {v}" for k, v in data.summary().items()))
    if towers is not None:
        console.print(f"starting from bundle {towers.version} ({escape(str(towers.path))})")
    if done and done[-1].epoch >= cfg.epochs:
        console.print(f"run {run_dir.name} already completed {done[-1].epoch} of {cfg.epochs} "
                      "epochs; nothing left to train")
    else:
        _fit(cfg, data, run_dir, ray_address=ray_address, ray_num_cpus=ray_num_cpus,
             console=console, init_states=towers.states if towers is not None else None)
    history = read_history(run_dir / METRICS_FILE)
    if history:
        from training.plots import plot_training_curves

        plot_training_curves(curve_history(history), run_dir / CURVES_FILE, x="step",
                             title=run_dir.name)
    done = list_checkpoints(run_dir)
    best = select_checkpoint(run_dir, "best", cfg.checkpoint_metric) if done else None
    outcome = TrainOutcome(run_dir=run_dir, epochs=done[-1].epoch if done else 0,
                           metrics=dict(done[-1].metrics) if done else {},
                           best_checkpoint=best.path if best else None)
    if export_dir is not None:
        from training.export import export_bundle

        outcome.bundle = export_bundle(run_dir, export_dir, which="best",
                                       metric=cfg.checkpoint_metric, overwrite=overwrite)
    return outcome


def _fit(
    cfg: TrainConfig,
    data: PreparedData,
    run_dir: pathlib.Path,
    *,
    ray_address: str | None,
    ray_num_cpus: int | None,
    console: Any,
    init_states: dict[str, Any] | None = None,
) -> None:
    """Run the ``TorchTrainer`` (blocking) while a thread shows progress and logs metrics.

    ``init_states``: the towers a fine-tuning run starts from (:mod:`training.finetune`)."""
    import ray
    from ray.train import (CheckpointConfig, FailureConfig, LoggingConfig, RunConfig,
                           ScalingConfig)
    from ray.train.torch import TorchConfig, TorchTrainer

    local = connect_ray(ray_address, ray_num_cpus)
    have = ray.cluster_resources()
    use_gpu = cfg.use_gpu
    if use_gpu is None:
        use_gpu = have.get("GPU", 0) >= cfg.num_workers
    need = {"CPU": cfg.num_workers * cfg.cpus_per_worker, "GPU": cfg.num_workers if use_gpu else 0}
    short = {k: (v, have.get(k, 0)) for k, v in need.items() if v > have.get(k, 0)}
    if short and local:
        raise ConfigError("; ".join(
            f"{cfg.num_workers} workers need {v:g} {k} but this machine's Ray has {h:g}"
            for k, (v, h) in short.items())
            + " -- lower --workers, train on the CPU (--cpu), or point ray.address at a "
            "cluster that has them")
    if short:
        console.print("[yellow]warning:[/] " + "; ".join(
            f"{cfg.num_workers} workers need {v:g} {k} but the cluster has {h:g}"
            for k, (v, h) in short.items())
            + " -- training waits until an autoscaler adds them (or lower --workers)")
    board = ray.remote(num_cpus=0)(ProgressBoard).remote()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train_config": cfg.model_dump(mode="json"), "data": data,
                           "board": board, "run_dir": str(run_dir),
                           "init_states": init_states},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=run_dir.name, storage_path=str(run_dir.parent),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.keep_checkpoints, checkpoint_score_attribute=cfg.checkpoint_metric,
                checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            # per-report INFO lines would drown the progress bar; warnings and errors still show
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    watcher = _ProgressWatcher(board, run_dir / METRICS_FILE, console, cfg)
    watcher.start()
    try:
        trainer.fit()
    except SystemExit as exc:
        # Ray Train's own Ctrl-C handler aborts the run, then exits the process with status 1
        # and no word: report it as the interruption it is (the command line answers 130)
        console.print(f"training stopped; the run is kept in {run_dir}: continue it with "
                      "the same command and --resume (without --overwrite)")
        raise KeyboardInterrupt from exc
    except PedsearchError:
        raise
    except Exception as exc:  # Ray wraps the worker's exception; surface its message
        cause = _root_cause(exc)
        if isinstance(cause, PedsearchError):
            raise type(cause)(f"training failed: {cause.message}") from exc
        raise PedsearchError(f"training failed: {cause!r}") from exc
    finally:
        watcher.stop()
        try:
            ray.kill(board)
        except Exception:  # the actor may be gone with a cluster that went away
            log.debug("progress board already gone", exc_info=True)


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = getattr(exc, "cause", None) or exc.__cause__
        if isinstance(exc, Exception) and hasattr(exc, "worker_failures"):
            failures = getattr(exc, "worker_failures") or {}
            if failures:
                nxt = next(iter(failures.values()))
        if nxt is None or nxt is exc:
            break
        exc = nxt
    return exc


def _write_json_atomic(path: pathlib.Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_history(path: pathlib.Path) -> list[dict[str, Any]]:
    """The entries of a ``metrics.jsonl`` (a torn last line, from a killed driver, is skipped)."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


#: Validation metrics drawn in ``training_curves.png`` (the rest stay in ``metrics.jsonl``).
CURVE_METRICS = ("val/text_R@1", "val/text_mAP", "val/attr_mAP", "val/image_R@1",
                 "val/image_mAP", "val/attr_mA", "val/score")


def curve_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries worth a panel: step losses, and per epoch the learning rate and the main
    validation metrics (epoch means of the losses would zig-zag against the step values)."""
    out = []
    for e in history:
        if "step" not in e:
            continue
        if e.get("kind") == "step":
            keep = {k: v for k, v in e.items() if k.startswith("loss/") or k == "grad_norm"}
        else:
            keep = {k: e[k] for k in ("lr", *CURVE_METRICS) if k in e}
        if keep:
            out.append({"step": e["step"], **keep})
    return out


def truncate_history(path: pathlib.Path, completed_epochs: int) -> None:
    """Drop entries of epochs after ``completed_epochs`` (written before a crash, then redone)."""
    kept = [e for e in read_history(path) if int(e.get("epoch", 0)) <= completed_epochs]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in kept))
    os.replace(tmp, path)


def backfill_epochs(path: pathlib.Path, completed_epochs: int) -> None:
    """Add the epoch entries of checkpoints up to ``completed_epochs`` that ``metrics.jsonl``
    lacks (a driver killed right after a checkpoint never wrote that epoch's line)."""
    have = {int(e["epoch"]) for e in read_history(path) if e.get("kind") == "epoch"}
    lines = [
        json.dumps({"kind": "epoch", **c.metrics})
        for c in list_checkpoints(path.parent)
        if c.epoch <= completed_epochs and c.epoch not in have and c.metrics
    ]
    if lines:
        with open(path, "a") as f:
            f.write("".join(line + "\n" for line in lines))


class _ProgressWatcher:
    """Driver thread: drains the board, appends ``metrics.jsonl``, drives a rich progress bar."""

    def __init__(self, board: Any, metrics_path: pathlib.Path, console: Any, cfg: TrainConfig,
                 interval_s: float = 0.5) -> None:
        self.board = board
        self.metrics_path = metrics_path
        self.console = console
        self.cfg = cfg
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="train-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _append(self, lines: list[str]) -> None:
        if lines:
            with open(self.metrics_path, "a") as f:
                f.write("".join(line + "\n" for line in lines))

    def _run(self) -> None:
        import ray
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        task = progress.add_task("waiting for workers", total=None, info="")
        per_epoch = 0
        last_loss = ""
        warned = False  # about a checkpoint_metric the validation does not measure
        with progress:
            while True:
                stopping = self._stop.is_set()
                try:
                    events = ray.get(self.board.drain.remote(), timeout=10)
                except Exception:  # board gone (cluster lost); the fit() call reports why
                    events = []
                    if stopping:
                        break
                lines: list[str] = []
                for ev in events:
                    kind = ev.pop("kind", "")
                    if kind == "start":
                        self._append(lines)
                        lines = []
                        truncate_history(self.metrics_path, int(ev["start_epoch"]))
                        backfill_epochs(self.metrics_path, int(ev["start_epoch"]))
                        per_epoch = int(ev["steps_per_epoch"])
                        total = per_epoch * int(ev["epochs"])
                        done = per_epoch * int(ev["start_epoch"])
                        what = (f"resumed after epoch {ev['start_epoch']}" if ev["resumed_from"]
                                else "started")
                        self.console.print(
                            f"{what}: {ev['world_size']} workers on {ev['device']}, "
                            f"{per_epoch} steps per epoch")
                        progress.update(task, total=total, completed=done,
                                        description=f"epoch {int(ev['start_epoch']) + 1}")
                    elif kind == "step":
                        progress.update(
                            task, completed=per_epoch * (ev["epoch"] - 1) + ev["epoch_step"],
                            description=f"epoch {ev['epoch']}/{self.cfg.epochs}")
                        if ev.pop("log", False):
                            last_loss = f"loss {ev.get('loss/total', float('nan')):.3f}"
                            lines.append(json.dumps({"kind": "step", **ev}))
                        progress.update(task, info=last_loss)
                    elif kind == "epoch":
                        lines.append(json.dumps({"kind": "epoch", **ev}))
                        self.console.print(_epoch_line(ev, self.cfg.checkpoint_metric))
                        unmeasured = _unmeasured_metric(ev, self.cfg.checkpoint_metric)
                        if unmeasured and not warned:
                            warned = True
                            self.console.print(f"[bold yellow]warning:[/] {unmeasured}")
                self._append(lines)
                if stopping:
                    break
                self._stop.wait(self.interval_s)


def ray_report_metrics(metrics: dict[str, Any], checkpoint_metric: str) -> dict[str, Any]:
    """What an epoch reports to Ray Train, which ranks the checkpoints it keeps by
    ``checkpoint_metric`` and needs it in every report.

    An epoch that was not validated (``eval_every`` > 1) has no score: NaN ranks it below every
    validated one (Ray keeps the latest checkpoint whatever its score), while the checkpoint's
    own metadata claims none, so the best checkpoint is always a validated epoch.
    """
    return {checkpoint_metric: float("nan"), **metrics}


def _unmeasured_metric(ev: dict[str, Any], metric: str) -> str | None:
    """What to tell the user when a validated epoch lacks ``checkpoint_metric`` (the data
    cannot measure it: ``attr_*`` without labels, ``image_*`` without a second image of any
    person): Ray then keeps checkpoints by age, and the "best" one is the last."""
    def finite(key: str) -> bool:
        return isinstance(ev.get(key), (int, float)) and math.isfinite(ev[key])

    measured = sorted(k for k in ev if k.startswith("val/") and k.endswith(
        ("mAP", "R@1", "score", "mA")) and finite(k))
    if not measured or finite(metric):
        return None  # not validated this epoch, or measured
    return (f"checkpoint_metric {metric} is not measured on this run's validation data, so "
            "the checkpoints kept and the one exported as best are the latest ones; choose "
            f"one that is: {', '.join(measured)}")


def _epoch_line(ev: dict[str, Any], metric: str) -> str:
    parts = [f"epoch {ev.get('epoch')}", f"loss {ev.get('loss/total', float('nan')):.4f}"]
    for k in ("val/text_R@1", "val/attr_mAP", "val/image_R@1", "val/attr_mA", metric):
        if k in ev:
            parts.append(f"{k} {ev[k]:.3f}")
    return "  ".join(dict.fromkeys(parts))


__all__ = [
    "ProgressBoard",
    "TrainOutcome",
    "check_ray_address",
    "check_run_dir",
    "clear_run_dir",
    "cluster_address",
    "connect_ray",
    "curve_history",
    "data_fingerprint",
    "ray_report_metrics",
    "read_history",
    "run_training",
    "train_loop_per_worker",
    "truncate_history",
]
