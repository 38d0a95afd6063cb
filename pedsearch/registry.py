"""Registries of plug-ins chosen by name from configuration.

A plug-in registers itself with a decorator on its class, together with the pydantic model of
its own configuration; ``build(name, **cfg)`` validates the configuration against that model and
constructs the plug-in with keyword arguments. An unknown name fails with the known names.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

import pydantic

from pedsearch.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> (class, config model) table for one kind of plug-in.

    Args:
        kind: what the plug-ins are ("detector", "backbone", "loss"), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, tuple[type[T], type[pydantic.BaseModel] | None]] = {}

    def register(
        self, name: str, config: type[pydantic.BaseModel] | None = None
    ) -> Callable[[type[T]], type[T]]:
        """Class decorator: ``@DETECTORS.register("hog", HogConfig)``."""

        def deco(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name][0] is not cls:
                raise ConfigError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = (cls, config)
            return cls

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> type[T]:
        return self._entry(name)[0]

    def config_model(self, name: str) -> type[pydantic.BaseModel] | None:
        return self._entry(name)[1]

    def validate(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Check ``params`` against the plug-in's config model; returns the filled-in values."""
        model = self.config_model(name)
        if model is None:
            return dict(params)
        try:
            return model.model_validate(params).model_dump()
        except pydantic.ValidationError as exc:
            raise ConfigError(f"bad configuration for {self.kind} {name!r}: {exc}") from exc

    def build(self, name: str, **params: Any) -> T:
        """Construct the plug-in ``name`` from validated keyword arguments."""
        return self.get(name)(**self.validate(name, params))

    def _entry(self, name: str) -> tuple[type[T], type[pydantic.BaseModel] | None]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none registered)"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries
