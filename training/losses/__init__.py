"""Training losses of the five papers, as pure functions.

Each loss is a function of plain tensors named for what it computes, with the paper and equation
in its one-line docstring; its hyper-parameters are keyword arguments whose defaults are the
paper's. ``LOSSES`` names every loss together with a strict pydantic model of its
hyper-parameters, so a training configuration picks a loss by name and overrides only what it
changes::

    >>> from training.losses import LOSSES
    >>> align = LOSSES.build("vitaa_alignment", tau_n=30.0)
    >>> align.params["alpha"], align.params["tau_n"]
    (0.6, 30.0)

``align(visual, textual, positive_mask)`` then calls
:func:`training.losses.vitaa.alignment_loss` with those hyper-parameters. An unknown name or a
misspelt hyper-parameter raises :class:`pedsearch.errors.ConfigError` with the known names;
malformed tensors raise :class:`pedsearch.errors.InvalidInput`.

The table of losses, papers, equations and defaults is ``docs/LOSSES.md``.
"""

from __future__ import annotations

from typing import Any, Callable

import pydantic
import torch

from pedsearch.errors import ConfigError, InvalidInput
from pedsearch.registry import Registry


class BoundLoss:
    """A loss function with its hyper-parameters bound; what ``LOSSES.build`` returns.

    Args:
        name: the registry name.
        fn: the pure loss function.
        params: validated hyper-parameters, passed to ``fn`` as keyword arguments.
    """

    def __init__(self, *, name: str, fn: Callable[..., torch.Tensor], params: dict[str, Any]):
        self.name = name
        self.fn = fn
        self.params = dict(params)

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        clash = sorted(set(kwargs) & set(self.params))
        if clash:
            raise ConfigError(
                f"loss {self.name!r}: {', '.join(clash)} come from its configuration; "
                "set them there instead of passing them to the call"
            )
        return self.fn(*args, **self.params, **kwargs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"BoundLoss({self.name}: {self.fn.__module__}.{self.fn.__name__}({args}))"


class _Binder:
    """Registry entry: builds a :class:`BoundLoss` from validated hyper-parameters."""

    def __init__(self, name: str, fn: Callable[..., torch.Tensor]) -> None:
        self.name = name
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __call__(self, **params: Any) -> BoundLoss:
        return BoundLoss(name=self.name, fn=self.fn, params=params)


LOSSES: Registry[BoundLoss] = Registry("loss")


def register_loss(
    name: str, config: type[pydantic.BaseModel]
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Function decorator: put a pure loss into ``LOSSES`` under ``name`` with its config model.

    The function itself is returned unchanged, so it stays importable and callable directly.
    """

    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        LOSSES.register(name, config)(_Binder(name, fn))  # type: ignore[arg-type]
        return fn

    return deco


class LossConfig(pydantic.BaseModel):
    """Base of every loss's hyper-parameter model: unknown keys are errors, values immutable."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


# -- input checks shared by the loss modules ------------------------------------------------------
# They run on every call, so they only look at shapes and dtypes, plus label ranges (one small
# reduction) where a bad label would otherwise surface as an opaque indexing error.


def check_float(name: str, t: Any, ndim: int | tuple[int, ...]) -> torch.Tensor:
    """``t`` must be a floating tensor with ``ndim`` dimensions; returns it."""
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if not isinstance(t, torch.Tensor):
        raise InvalidInput(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise InvalidInput(f"{name} must be a floating tensor (float32), got {t.dtype}")
    if t.dim() not in dims:
        want = " or ".join(str(d) for d in dims)
        raise InvalidInput(f"{name} must have {want} dimensions, got shape {tuple(t.shape)}")
    return t


def check_labels(name: str, labels: Any, n: int, num_classes: int | None = None) -> torch.Tensor:
    """``labels`` must be an integer tensor ``(n,)`` with values in ``[0, num_classes)``."""
    if not isinstance(labels, torch.Tensor):
        raise InvalidInput(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise InvalidInput(f"{name} must be an integer tensor (int64), got {labels.dtype}")
    if labels.shape != (n,):
        raise InvalidInput(f"{name} must have shape ({n},), got {tuple(labels.shape)}")
    if num_classes is not None and n > 0:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise InvalidInput(
                f"{name} must lie in [0, {num_classes}) (the classifier's classes), "
                f"got values in [{lo}, {hi}]"
            )
    return labels


def check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise InvalidInput(
            f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape"
        )


def check_mask(name: str, mask: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """A 0/1 (or bool) mask of ``shape``; returned as a bool tensor (True = known/valid)."""
    if not isinstance(mask, torch.Tensor):
        raise InvalidInput(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(shape):
        raise InvalidInput(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")
    return mask != 0


def check_nonempty(name: str, t: torch.Tensor) -> None:
    if t.shape[0] == 0:
        raise InvalidInput(f"{name} is an empty batch; a loss needs at least one sample")


# Registration happens on import of each paper's module; they need LOSSES and the checks above.
from training.losses import aaipr, apr, cmaam, identity, ssan, vitaa  # noqa: E402

__all__ = [
    "LOSSES",
    "BoundLoss",
    "LossConfig",
    "register_loss",
    "aaipr",
    "apr",
    "cmaam",
    "identity",
    "ssan",
    "vitaa",
]
