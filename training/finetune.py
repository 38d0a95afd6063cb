"""Fine-tuning: a training run that starts from a model bundle's towers instead of ImageNet.

``init_from: BUNDLE`` in a training config (or ``pedsearch train --init-from BUNDLE``) reads the
bundle on the driver before any worker starts, checks that it is the architecture and attribute
schema the config trains, and hands its three towers (image, text, attribute generator) to the
workers, which load them into the freshly built model. The bundle's vocabulary replaces the one
built from the captions, so its word embeddings keep their rows; words of the new data that it
lacks read as ``<unk>``. What a bundle does not hold -- the identity classifiers (their classes
are the new data's persons), AAIPR's semantic-ID classifier and discriminator -- starts afresh.

A resumed run restores its own checkpoint (towers and vocabulary); the bundle only seeds epoch 1,
and a run resumed before its first checkpoint must find the very bundle ``run.json`` recorded.

Example:
    >>> towers = initial_towers(cfg)                    # doctest: +SKIP
    >>> towers.version, sorted(towers.states)           # doctest: +SKIP
    ('v20261206_1503_e53f65', ['attributes', 'image', 'text'])
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any, Mapping

from pedsearch.errors import BundleError, ConfigError

#: ``init_from`` value naming the bundle that ships with the package
DEFAULT_BUNDLE = "default"


@dataclass
class InitialTowers:
    """What a fine-tuning run starts from.

    Attributes:
        path: the bundle folder. version: its version.
        states: bundle part (``image`` / ``text`` / ``attributes``) -> float32 CPU state dict.
        vocab_words, vocab_options: the bundle's vocabulary (None: its text tower needs none).
    """

    path: pathlib.Path
    version: str
    states: dict[str, dict[str, Any]]
    vocab_words: list[str] | None
    vocab_options: dict[str, Any]


def bundle_path(init_from: str) -> pathlib.Path:
    """The folder ``init_from`` names: ``default`` is the shipped bundle."""
    from pedsearch.bundle import default_bundle_path

    return default_bundle_path() if init_from == DEFAULT_BUNDLE else pathlib.Path(init_from)


def architecture_differences(bundle_arch: Mapping[str, Any], config_arch: Mapping[str, Any],
                             prefix: str = "") -> list[str]:
    """``model.<key>: bundle X, config Y`` for every architecture field that differs.

    ``backbone.pretrained`` is left out: it only says where an untrained backbone's weights
    come from, and the bundle's replace them.
    """
    out = []
    for key in sorted(set(bundle_arch) | set(config_arch)):
        if f"{prefix}{key}" == "backbone.pretrained":
            continue
        a, b = bundle_arch.get(key), config_arch.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += architecture_differences(a, b, f"{prefix}{key}.")
        elif (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
            out.append(f"model.{prefix}{key}: bundle {a!r}, config {b!r}")
    return out


def initial_towers(cfg: Any) -> InitialTowers | None:
    """Read and check the bundle ``cfg.init_from`` names (None when it names none).

    Raises:
        BundleError: the bundle is missing or corrupt (checksums are verified).
        ConfigError: its architecture or attribute schema is not the config's.
    """
    if cfg.init_from is None:
        return None
    from pedsearch.attributes import AttributeSchema
    from pedsearch.bundle import load_bundle, tower_modules

    path = bundle_path(cfg.init_from)
    try:
        bundle = load_bundle(path)
    except BundleError as exc:
        raise BundleError(f"init_from: {exc.message}") from exc
    diffs = architecture_differences(bundle.model.arch.model_dump(mode="json"),
                                     cfg.model.model_dump(mode="json"))
    if diffs:
        raise ConfigError(
            f"init_from: bundle {bundle.version} ({path}) has another architecture than the "
            f"config trains: {'; '.join(diffs[:6])}"
            + (f" (and {len(diffs) - 6} more)" if len(diffs) > 6 else "")
            + ". Start from a bundle of this architecture, or set the config's model to the "
            "bundle's (its bundle.json, 'architecture')")
    if bundle.schema != AttributeSchema.default():
        raise ConfigError(f"init_from: bundle {bundle.version} ({path}) speaks another attribute "
                          "schema than this version of pedsearch trains; it cannot be fine-tuned")
    states = {part: {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.cpu()
                     for k, v in module.state_dict().items()}
              for part, module in tower_modules(bundle.model).items()}
    vocab = bundle.model.vocab
    return InitialTowers(
        path=path, version=bundle.version, states=states,
        vocab_words=list(vocab.words) if vocab is not None else None,
        vocab_options=vocab.options if vocab is not None else {},
    )


def check_same_bundle(run_dir: pathlib.Path, towers: InitialTowers) -> None:
    """A resumed fine-tuning run that has no checkpoint yet must start from the bundle it
    recorded in ``run.json`` (``init_from: default`` may name another one after an upgrade).

    Raises:
        ConfigError: ``init_from`` now holds another bundle version.
    """
    import json

    from training.job import RUN_FILE

    recorded = json.loads((run_dir / RUN_FILE).read_text()).get("init_from") or {}
    if recorded.get("version") != towers.version:
        raise ConfigError(
            f"run {run_dir.name} started from bundle {recorded.get('version') or '(none)'}, but "
            f"init_from now holds {towers.version} ({towers.path}); point --init-from at the "
            "bundle it started from, or start the run again with --overwrite")


def checkpoint_vocab(checkpoint: pathlib.Path) -> tuple[list[str] | None, dict[str, Any]]:
    """The vocabulary a fine-tuning run's checkpoint was trained with (words, options)."""
    from pedsearch.models.tokenizer import Vocab
    from training.export import VOCAB_FILE

    path = checkpoint / VOCAB_FILE
    if not path.is_file():
        return None, {}
    vocab = Vocab.load(path)
    return list(vocab.words), vocab.options


def load_towers(model: Any, states: Mapping[str, Mapping[str, Any]]) -> None:
    """Load :attr:`InitialTowers.states` into a freshly built training model (strictly: every
    tower's every weight, so a mismatch cannot go unnoticed)."""
    from pedsearch.bundle import tower_modules

    modules = tower_modules(model)
    for part, state in states.items():
        try:
            modules[part].load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"init_from: the bundle's {part} tower does not fit the model the "
                              f"config builds: {exc}") from exc


__all__ = ["DEFAULT_BUNDLE", "InitialTowers", "architecture_differences", "bundle_path",
           "check_same_bundle", "checkpoint_vocab", "initial_towers", "load_towers"]
