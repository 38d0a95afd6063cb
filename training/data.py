"""Data of a training run: sources -> records -> identity-disjoint splits -> label tables, and the
sharded batch sampler every Ray Train worker draws its batches from.

The driver resolves the data once (:func:`prepare_data`): it generates the synthetic world if
the config asks for it, reads every source, splits identities into train / val / test, numbers
the training identities and AAIPR semantic IDs, and builds the caption vocabulary. The result is
plain data (records, dicts, a :class:`~pedsearch.models.tokenizer.Vocab`), so it travels to the
workers inside the train-loop config; workers read the image files themselves, which on a
multi-node cluster means the image paths must be on storage every node sees.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

import numpy as np

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import ConfigError, InvalidInput, NotFound

from training.config import (
    CaptionSource,
    DataConfig,
    PetaSource,
    ReidSource,
    SyntheticSource,
    TrainConfig,
)
from training.datasets import ImageRecord, encode_record

log = logging.getLogger("pedsearch.training")


# ------------------------------------------------------------------------------------------------
# sources
# ------------------------------------------------------------------------------------------------
def synthetic_dir(src: SyntheticSource, output_dir: pathlib.Path) -> pathlib.Path:
    """Where a synthetic source lives: its ``path``, else a cache folder named by its settings."""
    if src.path is not None:
        return src.path.expanduser().resolve()
    name = f"synthetic-{src.num_ids}x{src.images_per_id}-h{src.height_px}-s{src.seed}"
    return (output_dir / "data" / name).expanduser().resolve()


def ensure_synthetic(src: SyntheticSource, output_dir: pathlib.Path) -> pathlib.Path:
    """Generate the synthetic data set unless it is already complete on disk.

    Generation writes into a temporary sibling folder that is renamed into place at the end, so
    a run killed while generating never leaves a half-written data set behind.
    """
    target = synthetic_dir(src, output_dir)
    if (target / "reid_raw.json").is_file():
        return target
    if src.path is not None:
        raise NotFound(
            f"synthetic data set {target} has no reid_raw.json; generate it with `pedsearch synth "
            f"--out {target}` or drop `path` to let training generate one"
        )
    from pedsearch.synthetic.dataset import generate_dataset

    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log.info("generating synthetic data set (%d ids x %d images) in %s",
             src.num_ids, src.images_per_id, target)
    generate_dataset(tmp, num_ids=src.num_ids, images_per_id=src.images_per_id, seed=src.seed,
                     height_px=src.height_px)
    try:
        tmp.rename(target)
    except OSError:  # another process finished the same data set first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "reid_raw.json").is_file():
            raise
    return target


def _absolute(path: str | pathlib.Path) -> pathlib.Path:
    """``path`` made absolute against the driver's working directory: records travel to Ray
    Train workers, which run in folders of their own (``RAY_CHDIR_TO_TRIAL_DIR``)."""
    return pathlib.Path(path).expanduser().resolve()


def _data_root(root: pathlib.Path | None) -> pathlib.Path:
    if root is not None:
        return _absolute(root)
    from pedsearch.config import load_settings

    found = load_settings().paths.resolved_data_root()
    if found is None:
        raise ConfigError(
            "no data root: set `root` in the data source or PEDSEARCH_PATHS__DATA_ROOT to the "
            "folder that holds peta/"
        )
    return _absolute(found)


def check_source(src: Any, *, data_root: pathlib.Path | None = None) -> None:
    """Raise what :func:`load_source` would raise for a missing folder or file, without reading.

    Raises:
        ConfigError: PETA has no data root to look in.
        NotFound: the source's folder or file does not exist.
    """
    if isinstance(src, PetaSource):
        from training.datasets.peta import peta_subsets

        found = peta_subsets(_data_root(src.root or data_root))
        missing = [s for s in src.subsets or () if s not in found]
        if missing:
            raise NotFound(f"PETA subset(s) {', '.join(map(repr, missing))} not found; the data "
                           f"root has {', '.join(found) or 'none'}")
        return
    paths: list[tuple[str, pathlib.Path | None, bool]] = []
    if isinstance(src, CaptionSource):
        paths = [("caption file", src.annotations, False), ("image folder", src.image_root, True)]
    elif isinstance(src, ReidSource):
        from training.datasets.market import REID_FOLDERS

        # training reads the train folder: a root without it fails here, not after rendering
        paths = [("image folder", pathlib.Path(src.root) / REID_FOLDERS["train"], True),
                 ("attribute file", src.attributes, False)]
    for what, path, folder in paths:
        if path is None:
            continue
        path = pathlib.Path(path).expanduser()
        if not (path.is_dir() if folder else path.is_file()):
            raise NotFound(f"the {src.type} data source's {what} {path} "
                           f"{'is not a folder' if folder else 'is not a file'}")


def load_source(
    src: Any,
    *,
    output_dir: pathlib.Path,
    schema: AttributeSchema,
    data_root: pathlib.Path | None = None,
) -> list[ImageRecord]:
    """The records of one configured source (generating the synthetic world when needed).

    ``data_root`` is where sources without a ``root`` of their own (PETA) are looked for;
    None = the configured data root (``PEDSEARCH_PATHS__DATA_ROOT``, else ``../shared/data``).
    """
    if isinstance(src, SyntheticSource):
        from training.datasets.captions import load_synthetic

        records = load_synthetic(ensure_synthetic(src, output_dir), schema=schema)
    elif isinstance(src, PetaSource):
        from training.datasets.peta import load_peta

        records = load_peta(_data_root(src.root or data_root), subsets=src.subsets,
                            schema=schema)
    elif isinstance(src, CaptionSource):
        from training.datasets.captions import load_caption_file

        records = load_caption_file(
            _absolute(src.annotations), source=src.type,
            image_root=None if src.image_root is None else _absolute(src.image_root))
    elif isinstance(src, ReidSource):
        from training.datasets.market import (
            load_duke_attributes,
            load_market_attributes,
            load_reid_folder,
        )

        read = load_duke_attributes if src.type == "dukemtmc" else load_market_attributes
        attrs = read(_absolute(src.attributes)) if src.attributes is not None else None
        records = load_reid_folder(_absolute(src.root), split="train", source=src.type,
                                   attributes=attrs)
    else:  # pragma: no cover - the config's discriminated union admits nothing else
        raise ConfigError(f"unknown data source {src!r}")
    return limit_records(records, max_ids=src.max_ids, max_images_per_id=src.max_images_per_id,
                         min_images_per_id=src.min_images_per_id)


def limit_records(
    records: Sequence[ImageRecord], *, max_ids: int | None, max_images_per_id: int | None,
    min_images_per_id: int | None = None,
) -> list[ImageRecord]:
    """Keep the identities with at least ``min_images_per_id`` images, of those the first
    ``max_ids`` (sorted pid), and ``max_images_per_id`` images of each."""
    if max_ids is None and max_images_per_id is None and min_images_per_id is None:
        return list(records)
    counts = Counter(r.pid for r in records)
    keep = sorted(pid for pid, n in counts.items() if n >= (min_images_per_id or 1))
    if max_ids is not None:
        keep = keep[:max_ids]
    allowed = set(keep)
    seen: dict[str, int] = defaultdict(int)
    out = []
    for r in records:
        if r.pid not in allowed:
            continue
        if max_images_per_id is not None and seen[r.pid] >= max_images_per_id:
            continue
        seen[r.pid] += 1
        out.append(r)
    return out


def load_records(
    data: DataConfig,
    *,
    output_dir: pathlib.Path,
    schema: AttributeSchema,
    data_root: pathlib.Path | None = None,
) -> list[ImageRecord]:
    """All records of all sources, identities namespaced by source (they never collide).

    Identities are namespaced by the data set's type (``cuhk-pedes/11004``); a second source of
    the same type (the public CUHK-PEDES and the owner's own captions in its format) gets
    ``cuhk-pedes#2/11004``, so its people are not merged with the first's.

    Every source's files are looked for before any is read, so a missing PETA root or caption
    file is reported before minutes of rendering the synthetic world (and before it is written).
    """
    for src in data.sources:
        check_source(src, data_root=data_root)
    records: list[ImageRecord] = []
    seen: dict[str, int] = {}
    for src in data.sources:
        got = load_source(src, output_dir=output_dir, schema=schema, data_root=data_root)
        if not got:
            raise InvalidInput(f"data source {src.type} yielded no images; check its path")
        missing = [r.path for r in got if not r.path.is_file()]
        if missing:  # else a worker meets the first one mid-epoch, and Ray retries the run
            raise NotFound(f"data source {src.type}: {len(missing)} of its {len(got)} images do "
                           f"not exist, e.g. {', '.join(map(str, missing[:3]))}; check its "
                           "image_root (or root)")
        seen[src.type] = n = seen.get(src.type, 0) + 1
        if n > 1:
            got = [replace(r, pid=f"{src.type}#{n}/{r.pid.partition('/')[2]}") for r in got]
        records.extend(got)
    return records


# ------------------------------------------------------------------------------------------------
# the prepared data of a run
# ------------------------------------------------------------------------------------------------
@dataclass
class PreparedData:
    """What every worker needs to build its data loaders and heads.

    Attributes:
        train, val, test: identity-disjoint records.
        pid_index: training pid -> class index of the identity classifiers.
        semantic_table: ``(S, A)`` distinct training attribute descriptions (AAIPR semantic
            IDs, unknown entries -1), one row per semantic ID.
        vocab_words: the caption vocabulary's words (the vocab is rebuilt from them).
        vocab_options: the vocab's tokenizer options.
        attr_prior: ``(A,)`` frequency of each attribute value in the training split
            (:func:`attribute_prior`), for the balanced attribute loss.
    """

    train: list[ImageRecord]
    val: list[ImageRecord]
    test: list[ImageRecord]
    pid_index: dict[str, int]
    semantic_table: np.ndarray
    vocab_words: list[str]
    vocab_options: dict[str, Any] = field(default_factory=dict)
    attr_prior: np.ndarray | None = None

    @property
    def num_ids(self) -> int:
        return len(self.pid_index)

    @property
    def num_semantic_ids(self) -> int:
        return int(self.semantic_table.shape[0])

    def vocab(self):
        from pedsearch.models.tokenizer import Vocab

        return Vocab(self.vocab_words, **self.vocab_options)

    def summary(self) -> dict[str, int]:
        return {
            "train_images": len(self.train), "val_images": len(self.val),
            "test_images": len(self.test), "train_ids": self.num_ids,
            "semantic_ids": self.num_semantic_ids, "vocab": len(self.vocab_words),
        }


def attribute_keys(records: Sequence[ImageRecord], schema: AttributeSchema) -> np.ndarray:
    """``(N, A)`` float32: 1 / 0 for known values, -1 where unknown (AAIPR's descriptions)."""
    keys = np.empty((len(records), schema.dim), np.float32)
    for i, r in enumerate(records):
        target, mask = encode_record(r, schema)
        keys[i] = np.where(mask > 0, target, -1.0)
    return keys


def attribute_prior(records: Sequence[ImageRecord], schema: AttributeSchema) -> np.ndarray:
    """``(A,)`` float32: each value's share of the images where it is known (0.5 if never)."""
    pos = np.zeros(schema.dim, np.float64)
    known = np.zeros(schema.dim, np.float64)
    for r in records:
        target, mask = encode_record(r, schema)
        pos += target * mask
        known += mask
    return np.where(known > 0, pos / np.maximum(known, 1.0), 0.5).astype(np.float32)


def semantic_table(records: Sequence[ImageRecord], schema: AttributeSchema) -> np.ndarray:
    """Distinct attribute descriptions of ``records`` in sorted order: ``(S, A)`` float32."""
    if not records:
        return np.zeros((0, schema.dim), np.float32)
    return np.unique(attribute_keys(records, schema), axis=0)


def make_dataset(
    records: Sequence[ImageRecord],
    cfg: TrainConfig,
    *,
    train: bool,
    schema: AttributeSchema,
    pid_index: dict[str, int] | None = None,
):
    """The :class:`~training.datasets.torch_data.PedestrianDataset` of ``records`` for ``cfg``.

    Every worker builds it with the same seed, so captions written from labels (PETA, Market)
    are the same everywhere, and the same ones the vocabulary was built from.
    """
    from training.datasets.torch_data import PedestrianDataset

    d = cfg.data
    aug = {"pad": d.pad, "flip_p": d.flip_p, "brightness": d.brightness, "contrast": d.contrast}
    if not train:
        aug = {"pad": 0, "flip_p": 0.0, "brightness": 0.0, "contrast": 0.0}
    return PedestrianDataset(
        records, schema=schema, image_size=tuple(cfg.model.image_size), train=train,
        captions_per_image=d.captions_per_image, seed=cfg.seed, pid_index=pid_index, **aug,
    )


def check_supervision(cfg: TrainConfig, train: Sequence[ImageRecord], captioned: Sequence[bool],
                      schema: AttributeSchema) -> None:
    """Refuse training images the active losses cannot learn from correctly.

    - An image with neither a caption nor labels to describe it would be paired with the same
      stand-in text as every other such image in the text losses, different people sharing
      one positive description.
    - An image without a single attribute label would get AAIPR's semantic ID of the empty
      description, which makes all such people one class in l_I and l_sc.

    Args:
        captioned: per training record, whether it has a caption (given or generated).

    Raises:
        ConfigError: naming the sources, how many images, the losses, and what to change.
    """
    from training.step import LOSS_INPUTS

    active = [n for n, t in cfg.losses.items() if t.weight > 0 and n in LOSS_INPUTS]
    text_losses = [n for n in active if "text" in LOSS_INPUTS[n].towers]
    aaipr = [n for n in active if n.startswith("aaipr_")]

    def refuse(bad: list[ImageRecord], what: str, losses: list[str], fix: str) -> None:
        sources = ", ".join(sorted({r.source for r in bad}))
        raise ConfigError(f"{len(bad)} of the {len(train)} training images ({sources}) have "
                          f"{what}, which {', '.join(losses)} cannot learn from; {fix}, or set "
                          "those losses' weight to 0")

    no_text = [r for r, ok in zip(train, captioned) if not ok]
    if no_text and text_losses:
        refuse(no_text, "neither a caption nor attribute labels to describe them", text_losses,
               "give those sources captions or an attribute file")
    unlabelled = [r for r in train if not encode_record(r, schema)[1].any()]
    if unlabelled and aaipr:
        refuse(unlabelled, "no attribute labels (AAIPR's semantic IDs are attribute "
               "descriptions)", aaipr, "give those sources an attribute file")


def split_records(records: Sequence[ImageRecord], cfg: TrainConfig):
    """Identity-disjoint train / val / test (a benchmark's own split kept when asked)."""
    from training.datasets.splits import IdentitySplit, split_by_identity

    sp = cfg.data.split
    fixed: dict[str, list[ImageRecord]] = {"train": [], "val": [], "test": []}
    rest: list[ImageRecord] = []
    for r in records:
        if sp.respect_source_splits and r.split in fixed:
            fixed[r.split].append(r)
        else:
            rest.append(r)
    parts = split_by_identity(rest, fractions=(sp.train, sp.val, sp.test), seed=sp.seed)
    return IdentitySplit(
        train=fixed["train"] + parts.train, val=fixed["val"] + parts.val,
        test=fixed["test"] + parts.test,
    )


def prepare_data(
    cfg: TrainConfig,
    *,
    schema: AttributeSchema | None = None,
    data_root: pathlib.Path | None = None,
) -> PreparedData:
    """Resolve a run's data: load, split by identity, number identities, build the vocab.

    ``data_root``: where PETA & co. are looked for (see :func:`load_source`).

    Raises:
        ConfigError / NotFound / InvalidInput: a source is missing or malformed, or the training
            split comes out empty.
    """
    from pedsearch.models.tokenizer import Vocab

    schema = schema or AttributeSchema.default()
    records = load_records(cfg.data, output_dir=cfg.output_dir, schema=schema,
                           data_root=data_root)
    parts = split_records(records, cfg)
    if not parts.train:
        raise InvalidInput(
            f"the training split is empty ({len(records)} images of "
            f"{len({r.pid for r in records})} identities); add data or raise split.train"
        )
    pid_index = {p: i for i, p in enumerate(sorted({r.pid for r in parts.train}))}
    ds = make_dataset(parts.train, cfg, train=False, schema=schema, pid_index=pid_index)
    check_supervision(cfg, parts.train, [any(ds.captions(i)) for i in range(len(ds))], schema)
    texts = [c for i in range(len(ds)) for c in ds.captions(i) if c]
    vocab = Vocab.build(
        texts, min_count=cfg.data.min_word_count, max_length=cfg.data.max_caption_words
    )
    return PreparedData(
        train=list(parts.train),
        val=list(parts.val),
        test=list(parts.test),
        pid_index=pid_index,
        semantic_table=semantic_table(parts.train, schema),
        vocab_words=list(vocab.words),
        vocab_options=vocab.options,
        attr_prior=attribute_prior(parts.train, schema),
    )


# ------------------------------------------------------------------------------------------------
# sharded batch sampling
# ------------------------------------------------------------------------------------------------
class ShardedBatchSampler:
    """Batches of indices for one of ``world_size`` workers, reshuffled every epoch.

    Like ``DistributedSampler``, every worker draws from the same seeded global order and takes
    its own share, so the workers see disjoint images and exactly the same number of batches
    (DDP needs that: a worker with one batch more would wait forever in the all-reduce).

    With ``images_per_id = K > 1`` each batch holds ``batch_size / K`` identities with ``K``
    images each (PK sampling; an identity with fewer than ``K`` images is drawn with
    replacement), so triplet and ranking losses always find positives in the batch.

    Args:
        labels: ``(N,)`` identity of each dataset item.
        batch_size: items per batch and worker.
        images_per_id: ``K``; 1 gives plain shuffling.
        rank, world_size: this worker and the number of workers.
        seed: base seed; the epoch is added to it.
        max_batches: cut each epoch to at most this many batches per worker.
    """

    def __init__(
        self,
        labels: Sequence[int],
        *,
        batch_size: int,
        images_per_id: int = 1,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        max_batches: int | None = None,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise InvalidInput(f"rank {rank} is not in [0, world_size={world_size})")
        if images_per_id < 1 or batch_size < images_per_id or batch_size % images_per_id:
            raise InvalidInput(
                f"batch_size {batch_size} must be a positive multiple of images_per_id "
                f"{images_per_id}"
            )
        self.labels = np.asarray(labels, np.int64)
        self.batch_size = batch_size
        self.k = images_per_id
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.max_batches = max_batches
        self.epoch = 0
        self._groups: dict[int, np.ndarray] = {
            int(pid): np.flatnonzero(self.labels == pid) for pid in np.unique(self.labels)
        }
        if len(self) == 0:
            raise InvalidInput(
                f"{len(self.labels)} training images make no full batch of {batch_size} for each "
                f"of {world_size} workers; lower batch_size or num_workers, or add data"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _global_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch))
        if self.k == 1:
            order = rng.permutation(len(self.labels))
            n = len(order) // self.batch_size
            return [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(n)]
        chunks: list[np.ndarray] = []
        for idx in self._groups.values():
            if len(idx) < self.k:
                chunks.append(rng.choice(idx, self.k, replace=True))
                continue
            idx = rng.permutation(idx)
            chunks.extend(idx[i * self.k:(i + 1) * self.k] for i in range(len(idx) // self.k))
        order = rng.permutation(len(chunks))
        p = self.batch_size // self.k
        n = len(chunks) // p
        return [np.concatenate([chunks[j] for j in order[i * p:(i + 1) * p]]) for i in range(n)]

    def _per_worker(self, total: int) -> int:
        n = total // self.world_size
        return n if self.max_batches is None else min(n, self.max_batches)

    def __len__(self) -> int:
        if self.k == 1:
            total = len(self.labels) // self.batch_size
        else:
            chunks = sum(max(1, len(g) // self.k) for g in self._groups.values())
            total = chunks // (self.batch_size // self.k)
        return self._per_worker(total)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._global_batches()
        n = self._per_worker(len(batches))
        for b in batches[self.rank::self.world_size][:n]:
            yield [int(i) for i in b]


def eval_subset(records: Sequence[ImageRecord], limit: int, seed: int) -> list[ImageRecord]:
    """At most ``limit`` records, whole identities first, chosen by seed (stable across runs)."""
    if len(records) <= limit:
        return list(records)
    by_pid: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in records:
        by_pid[r.pid].append(r)
    pids = sorted(by_pid)
    order = np.random.default_rng(seed).permutation(len(pids))
    out: list[ImageRecord] = []
    for j in order:
        group = by_pid[pids[j]]
        if len(out) + len(group) > limit and out:
            break
        out.extend(group)
    return out[:limit]


__all__ = [
    "PreparedData",
    "ShardedBatchSampler",
    "attribute_keys",
    "ensure_synthetic",
    "eval_subset",
    "limit_records",
    "load_records",
    "prepare_data",
    "semantic_table",
    "synthetic_dir",
    "make_dataset",
    "split_records",
]
