"""The training configuration: one strict, typed :class:`TrainConfig` per run.

A run is described by a YAML file over a ``_base_`` file (``training/configs/base.yaml``), like
the deployment settings of :mod:`pedsearch.config`; environment variables
``PEDSEARCH_TRAIN__<SECTION>__<FIELD>`` override both (values are read as YAML scalars, so
``PEDSEARCH_TRAIN__EPOCHS=3`` is the integer 3). Every model forbids unknown keys, so a typo is an
error naming the key's path.

Losses are chosen by name from :data:`training.losses.LOSSES`; each entry has a weight, the
epoch it starts at and the loss's own hyper-parameters, checked by the loss's config model::

    losses:
      apr: {weight: 1.0, params: {lambda_id: 8.0}}
      ssan: {weight: 1.0}
      aaipr_generator: {weight: 1.0, start_epoch: 1}
      aaipr_discriminator: {weight: 1.0, start_epoch: 1}

Example:
    >>> cfg = load_train_config("tiny.yaml")          # a file of training/configs/
    >>> cfg.epochs, sorted(cfg.losses)[:2]
    (2, ['aaipr_discriminator', 'aaipr_generator'])
"""

from __future__ import annotations

import os
import pathlib
from typing import Annotated, Any, Literal, Union

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pedsearch.config import deep_merge, read_yaml
from pedsearch.errors import ConfigError
from pedsearch.models.joint import ModelArchitecture

#: Folder of the packaged configuration files (``base.yaml``, ``tiny.yaml``, ``default.yaml``).
CONFIGS_DIR = pathlib.Path(__file__).resolve().parent / "configs"
ENV_PREFIX = "PEDSEARCH_TRAIN__"

#: Fields that say where and on what a run executes, not what it learns; they are left out of
#: :meth:`TrainConfig.config_hash`, so a run can resume on another number of workers.
_RUNTIME_FIELDS = frozenset(
    {"output_dir", "run_name", "num_workers", "use_gpu", "cpus_per_worker", "loader_workers",
     "torch_threads", "log_every_steps", "max_failures"}
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
class _SourceBase(Strict):
    max_ids: int | None = Field(
        None, ge=1, description="keep at most this many identities of the source (by sorted pid)"
    )
    max_images_per_id: int | None = Field(
        None, ge=1, description="keep at most this many images of each identity"
    )
    min_images_per_id: int | None = Field(
        None, ge=1, le=1000,
        description="keep only identities with at least this many images (before "
        "max_images_per_id), e.g. 2 so every identity has a positive pair for the identity and "
        "re-identification losses",
    )


class SyntheticSource(_SourceBase):
    """People of the synthetic pedestrian world, generated once and cached on disk."""

    type: Literal["synthetic"]
    num_ids: int = Field(200, ge=2, le=1_000_000, description="identities to generate")
    images_per_id: int = Field(4, ge=2, le=1000, description="views per identity")
    seed: int = Field(0, ge=0, description="seed of the generator")
    height_px: int = Field(256, ge=32, le=1024, description="crop height (width is half)")
    path: pathlib.Path | None = Field(
        None,
        description="an existing data set in the synthetic format (reid_raw.json + "
        "attributes.json); None generates one under <output_dir>/data/",
    )


class PetaSource(_SourceBase):
    """PETA crops with their attribute labels (captions are written from the labels)."""

    type: Literal["peta"]
    root: pathlib.Path | None = Field(
        None, description="folder holding peta/ (or peta/ itself); None = the configured "
        "data root (PEDSEARCH_PATHS__DATA_ROOT, else ../shared/data)",
    )
    subsets: list[str] | None = Field(None, description="PETA subsets; None = every one found")


class CaptionSource(_SourceBase):
    """A text-based person search benchmark in its published JSON form."""

    type: Literal["cuhk-pedes", "icfg-pedes", "rstpreid"]
    annotations: pathlib.Path = Field(description="the caption JSON file")
    image_root: pathlib.Path | None = Field(
        None, description="folder the entries' image paths are relative to (default imgs/ "
        "beside the JSON file)",
    )


class ReidSource(_SourceBase):
    """Market-1501 / DukeMTMC-reID training images, with Market's attribute file if given."""

    type: Literal["market1501", "dukemtmc"]
    root: pathlib.Path = Field(description="folder holding bounding_box_train/ etc.")
    attributes: pathlib.Path | None = Field(
        None, description="market_attribute.mat / duke_attribute.mat (DukeMTMC-attribute); "
        "None = images without attribute labels"
    )


DataSource = Annotated[
    Union[SyntheticSource, PetaSource, CaptionSource, ReidSource], Field(discriminator="type")
]


class SplitConfig(Strict):
    """Identity-disjoint train / val / test split of all sources together."""

    train: float = Field(0.7, gt=0.0, le=1.0, description="share of identities for training")
    val: float = Field(0.1, ge=0.0, lt=1.0, description="share for validation (best checkpoint)")
    test: float = Field(0.2, ge=0.0, lt=1.0, description="share held out for `pedsearch eval`")
    seed: int = Field(0, ge=0, description="the same seed and data give the same split")
    respect_source_splits: bool = Field(
        False,
        description="keep the train/val/test split a benchmark's own file assigns (CUHK-PEDES, "
        "ICFG-PEDES, RSTPReid, synthetic); only records without one are split by identity",
    )

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitConfig":
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError(
                f"split shares must sum to 1, got train {self.train} + val {self.val} + test "
                f"{self.test}"
            )
        return self


class DataConfig(Strict):
    sources: list[DataSource] = Field(min_length=1, description="data sets trained on together")
    split: SplitConfig = Field(default_factory=SplitConfig)
    flip_p: float = Field(0.5, ge=0.0, le=1.0, description="chance of a horizontal flip")
    pad: int = Field(10, ge=0, le=256, description="pixels padded before the random crop")
    brightness: float = Field(0.2, ge=0.0, lt=1.0, description="brightness jitter (all channels)")
    contrast: float = Field(0.2, ge=0.0, lt=1.0, description="contrast jitter (all channels)")
    captions_per_image: int = Field(
        2, ge=1, le=16, description="captions written from the labels of an image without any"
    )
    min_word_count: int = Field(
        1, ge=1, le=1000, description="words seen fewer times in training captions map to <unk>"
    )
    max_caption_words: int = Field(
        64, ge=4, le=512, description="longer captions are cut to this many words"
    )
    max_val_images: int = Field(
        512, ge=8, le=1_000_000,
        description="validation images scored after each epoch (a fixed, seeded subset)",
    )


# ------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------
class LossTerm(Strict):
    weight: float = Field(1.0, ge=0.0, le=10_000.0, description="factor in the weighted total")
    start_epoch: int = Field(
        0, ge=0, le=100_000,
        description="first (0-based) epoch the loss is on; AAIPR pre-trains the image network "
        "before the adversarial part starts",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="hyper-parameters, checked by the loss's config model"
    )


# ------------------------------------------------------------------------------------------------
# optimisation
# ------------------------------------------------------------------------------------------------
#: an Adam beta (torch refuses others, but only inside a worker once training has started)
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class OptimizerConfig(Strict):
    type: Literal["adam", "adamw", "sgd"] = Field("adam", description="optimiser")
    lr: float = Field(3e-4, gt=0.0, le=10.0, description="base learning rate")
    weight_decay: float = Field(5e-4, ge=0.0, le=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="Adam betas, each in [0, 1)")
    lr_mult: dict[str, float] = Field(
        default_factory=dict,
        description="parameter-name prefix -> learning-rate factor, e.g. {image.backbone: 0.1}; "
        "the longest matching prefix wins (AAIPR: image branch 0.001, attribute branch 0.01)",
    )
    discriminator_lr: float | None = Field(
        None, gt=0.0, le=10.0, description="learning rate of AAIPR's discriminator; None = lr"
    )
    scheduler: Literal["none", "cosine", "step"] = Field("cosine")
    warmup_epochs: int = Field(0, ge=0, le=1000, description="linear warm-up epochs")
    step_epochs: int = Field(10, ge=1, le=10_000, description="'step': decay every N epochs")
    step_gamma: float = Field(0.1, gt=0.0, le=1.0, description="'step': decay factor")
    grad_clip_norm: float | None = Field(
        5.0, gt=0.0, le=1e6, description="clip the global gradient norm; None = no clipping"
    )

    @field_validator("lr_mult")
    @classmethod
    def _positive_mults(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: m for k, m in v.items() if not (0.0 <= m <= 1000.0)}
        if bad:
            raise ValueError(f"lr_mult factors must lie in [0, 1000], got {bad}")
        return v


class SamplerConfig(Strict):
    type: Literal["random", "identity"] = Field(
        "identity",
        description="'identity' fills each batch with P identities x K images (PK sampling), "
        "which the triplet and ranking losses need to see positives; 'random' shuffles images",
    )
    images_per_id: int = Field(2, ge=1, le=64, description="K of PK sampling")


class AaiprConfig(Strict):
    """How the training step wires AAIPR's game where the paper leaves it open.

    The defaults are the wiring the shipped bundle and the ablation tables of docs/RESULTS.md
    were trained with; its "AAIPR's wiring" section measures the alternatives (over three
    seeds they did not improve attribute queries).
    """

    discriminator_batch: Literal["separate", "joint"] = Field(
        "separate",
        description="'separate': real and generated concepts go through D as two batches, so "
        "the BatchNorm after D's first layer normalises each by its own statistics and D cannot "
        "see a shift or a shrink of the generated concepts; 'joint': one batch of both, in the "
        "discriminator update and in the generator's adversarial loss alike",
    )
    classifier_input: Literal["embedding", "features"] = Field(
        "embedding",
        description="what the shared semantic-ID classifier Psi_I (Eqs. 3, 6) reads: "
        "'embedding', the unit retrieval embeddings (logits bounded by the weights' norm); "
        "'features', the un-normalised concepts they are made from (the image's global and "
        "part features, the generator's tanh output), as the paper's Psi_I reads Phi_I(I)",
    )

    @property
    def joint_discriminator(self) -> bool:
        return self.discriminator_batch == "joint"


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------
#: Validation figures a run may rank its checkpoints by (``val/<name>``, all higher-is-better):
#: what :func:`training.evaluate.evaluate_encoders` reports.
CHECKPOINT_METRICS = frozenset(
    ["score", "attr_mA", "attr_mean_accuracy", "attr_instance_f1"]
    + [f"{protocol}_{figure}"
       for protocol in ("text", "textpred", "textla", "attr", "attrpred", "attrsoft", "image")
       for figure in ("R@1", "R@5", "R@10", "mAP")])


class TrainConfig(Strict):
    """Everything that defines one training run."""

    name: str = Field(
        "pedsearch", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="experiment name"
    )
    run_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="folder of the run under output_dir; None = <name>",
    )
    output_dir: pathlib.Path = Field(
        pathlib.Path("runs"),
        description="runs are written to <output_dir>/<run_name>; on a multi-node cluster this "
        "must be storage every node can reach (NFS, a mounted bucket)",
    )
    data: DataConfig
    model: ModelArchitecture = Field(
        default_factory=ModelArchitecture,
        description="the architecture (pedsearch.models.joint.ModelArchitecture; the bundle "
        "stores it)",
    )
    init_from: str | None = Field(
        None, min_length=1, max_length=4096,
        description="a model bundle folder ('default' = the shipped one) whose image, text and "
        "attribute towers start the training instead of ImageNet weights: fine-tuning on new "
        "data. Its architecture must be this config's model; its vocabulary is kept. The "
        "training heads (identity classifiers, discriminator) start afresh",
    )
    losses: dict[str, LossTerm] = Field(min_length=1, description="loss name -> term")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    aaipr: AaiprConfig = Field(default_factory=AaiprConfig)
    epochs: int = Field(30, ge=1, le=100_000)
    batch_size: int = Field(32, ge=2, le=4096, description="images per worker and step")
    max_steps_per_epoch: int | None = Field(
        None, ge=1, description="cut epochs short (smoke tests); None = the whole data set"
    )
    num_workers: int = Field(2, ge=1, le=4096, description="Ray Train workers (processes)")
    use_gpu: bool | None = Field(None, description="None = use GPUs when the Ray cluster has them")
    cpus_per_worker: float = Field(1.0, gt=0.0, le=256.0)
    loader_workers: int = Field(
        0, ge=0, le=64, description="DataLoader processes per worker; 0 loads in the worker"
    )
    torch_threads: int | None = Field(
        1, ge=1, le=256,
        description="intra-op threads per worker (1 keeps N workers on N CPUs from "
        "oversubscribing); None = torch's default",
    )
    seed: int = Field(0, ge=0)
    keep_checkpoints: int = Field(
        3, ge=1, le=10_000, description="checkpoints kept: the best ones by checkpoint_metric "
        "(the latest is always kept too)"
    )
    checkpoint_metric: str = Field(
        "val/score", description="reported metric that ranks checkpoints (higher is better)"
    )
    eval_every: int = Field(1, ge=1, le=10_000, description="validate every N epochs")
    max_failures: int = Field(
        2, ge=-1, le=1000,
        description="times Ray Train restarts the worker group from the latest checkpoint after "
        "a worker dies (-1 = without limit)",
    )
    log_every_steps: int = Field(10, ge=1, le=100_000)

    @field_validator("checkpoint_metric")
    @classmethod
    def _known_metric(cls, name: str) -> str:
        # a misspelt name would be missing from every report, and Ray would keep checkpoints
        # by time while the run looked as if it ranked them
        if not name.startswith("val/") or name.removeprefix("val/") not in CHECKPOINT_METRICS:
            raise ValueError(
                f"{name!r} is not a validation figure; name one of val/score (the default), "
                "val/text_mAP, val/text_R@1, val/attr_mAP, val/image_mAP, val/attr_mA, ... "
                "(every val/<protocol>_<R@1|R@5|R@10|mAP> of pedsearch eval; higher is better)")
        return name

    @field_validator("losses")
    @classmethod
    def _known_losses(cls, losses: dict[str, LossTerm]) -> dict[str, LossTerm]:
        # imported here: the loss modules import torch, which a config check should not need
        # until a config actually names losses
        from training.losses import LOSSES
        from training.step import LOSS_INPUTS

        out: dict[str, LossTerm] = {}
        for name, term in losses.items():
            if name not in LOSSES:
                raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES.names())}")
            if name not in LOSS_INPUTS:
                raise ValueError(
                    f"loss {name!r} is registered but the training step cannot feed it (it "
                    f"needs inputs this model does not produce); trainable: "
                    f"{', '.join(sorted(LOSS_INPUTS))}"
                )
            try:
                params = LOSSES.validate(name, term.params)
            except ConfigError as exc:
                raise ValueError(exc.message) from None
            out[name] = term.model_copy(update={"params": params})
        adversarial = {"aaipr_generator", "aaipr_discriminator"} & set(out)
        if len(adversarial) == 1:
            raise ValueError(
                "AAIPR's adversarial training needs both aaipr_generator and aaipr_discriminator "
                f"(got only {adversarial.pop()})"
            )
        if not any(t.weight > 0 for t in out.values()):
            raise ValueError("every loss has weight 0; nothing would be trained")
        return out

    @model_validator(mode="after")
    def _batch_fits_sampler(self) -> "TrainConfig":
        if self.sampler.type == "identity" and self.batch_size % self.sampler.images_per_id:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of sampler.images_per_id "
                f"{self.sampler.images_per_id} (P identities x K images)"
            )
        return self

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def run_dir(self) -> pathlib.Path:
        """``<output_dir>/<run_name or name>``, absolute."""
        return (self.output_dir / (self.run_name or self.name)).expanduser().resolve()

    @property
    def adversarial(self) -> bool:
        """Whether AAIPR's generator/discriminator game is part of the run."""
        return "aaipr_discriminator" in self.losses

    def learning_dump(self) -> dict[str, Any]:
        """The fields that decide what is learnt (runtime placement left out), JSON-ready."""
        return self.model_dump(mode="json", exclude=set(_RUNTIME_FIELDS))

    def config_hash(self) -> str:
        """sha256 of :meth:`learning_dump` (as :func:`pedsearch.bundle.config_hash` computes it,
        so it equals the ``train_config_hash`` of a bundle exported from this run)."""
        from pedsearch.bundle import config_hash

        return str(config_hash(self.learning_dump()))


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------
def resolve_config_path(path: str | os.PathLike[str]) -> pathlib.Path:
    """``path`` itself when it exists, else the packaged file of that name in ``configs/``.

    Raises:
        ConfigError: neither exists.
    """
    p = pathlib.Path(path).expanduser()
    if p.is_file():
        return p.resolve()
    packaged = CONFIGS_DIR / p.name
    if p.parent == pathlib.Path(".") and packaged.is_file():
        return packaged
    known = ", ".join(sorted(f.name for f in CONFIGS_DIR.glob("*.yaml")))
    raise ConfigError(f"training config {path} does not exist (packaged configs: {known})")


def read_config_file(path: pathlib.Path) -> dict[str, Any]:
    """A YAML mapping with its ``_base_`` chain merged in (the file wins over its base); a
    ``_base_`` not beside the file is looked up among the packaged configs."""

    def resolve_base(file: pathlib.Path, base: str) -> pathlib.Path:
        beside = file.parent / base
        return beside if beside.is_file() else resolve_config_path(base)

    return read_yaml(path, what="training config", resolve_base=resolve_base)


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``PEDSEARCH_TRAIN__A__B=v`` -> ``{"a": {"b": v}}`` with ``v`` parsed as a YAML scalar."""
    environ = dict(os.environ if environ is None else environ)
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or len(key) == len(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX):].split("__")]
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment variable {key}: not a YAML value: {exc}") from exc
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {key} conflicts with another override")
        node[parts[-1]] = value
    return out


def load_train_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    flags: dict[str, str] | None = None,
) -> TrainConfig:
    """Read a training configuration.

    Precedence, lowest first: field defaults < ``_base_`` chain < the file < environment
    (``PEDSEARCH_TRAIN__...``) < ``overrides`` (command-line flags).

    Args:
        path: YAML file, or the name of a packaged config (``tiny.yaml``); None = ``base.yaml``.
        overrides: nested mapping merged over everything else.
        environ: environment to read instead of ``os.environ`` (tests).
        flags: the command-line flag that set each top-level key of ``overrides``
            (``{"num_workers": "--workers"}``), named when its value is invalid.

    Raises:
        ConfigError: unreadable file, unknown key or loss, a value out of bounds; the message
            names the file and the key's path.
    """
    file = resolve_config_path(path if path is not None else "base.yaml")
    data = read_config_file(file)
    environ = dict(os.environ if environ is None else environ)
    env = env_overrides(environ)
    data = deep_merge(data, env)
    data = deep_merge(data, overrides or {})
    try:
        return parse_train_config(data, where=str(file))
    except ConfigError as exc:
        culprits = _culprits(exc.__cause__, env, overrides or {}, flags or {},
                             {k.upper(): k for k in environ})
        if not culprits:
            raise
        raise ConfigError(f"{exc.message}\n(a value set by {', '.join(culprits)})"
                          ) from exc.__cause__


def _culprits(exc: BaseException | None, env: dict[str, Any], overrides: dict[str, Any],
              flags: dict[str, str], variables: dict[str, str]) -> list[str]:
    """Where each invalid value came from when it was not the file: the command-line flag
    (``flags``; else ``overrides (key)``) or the ``PEDSEARCH_TRAIN__...`` variable that set it
    (``variables``: upper-cased name -> name; one may set a whole mapping,
    ``PEDSEARCH_TRAIN__OPTIMIZER='{lr: 0.1}'``)."""
    if not isinstance(exc, pydantic.ValidationError):
        return []
    out: list[str] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        for source in (overrides, env):
            node, path = source, []
            for key in loc:  # the longest prefix of the error's path that the source set
                if not isinstance(node, dict) or key not in node:
                    break
                node, path = node[key], [*path, key]
            if path and not isinstance(node, dict):
                if source is env:
                    names = [ENV_PREFIX + "__".join(k.upper() for k in path[:n])
                             for n in range(len(path), 0, -1)]
                    out.append(next((variables[v] for v in names if v in variables), names[0]))
                else:
                    out.append(flags.get(path[0]) or f"overrides ({'.'.join(path)})")
                break
    return list(dict.fromkeys(out))


def parse_train_config(data: dict[str, Any], *, where: str = "the configuration") -> TrainConfig:
    """Validate a mapping as a :class:`TrainConfig` (the model section included)."""
    try:
        return TrainConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"invalid training configuration in {where}:\n{exc}") from exc


__all__ = [
    "CONFIGS_DIR",
    "CaptionSource",
    "DataConfig",
    "LossTerm",
    "OptimizerConfig",
    "PetaSource",
    "ReidSource",
    "SamplerConfig",
    "SplitConfig",
    "SyntheticSource",
    "TrainConfig",
    "env_overrides",
    "load_train_config",
    "parse_train_config",
    "resolve_config_path",
]
