"""A small explicit registry of swappable components, open to third-party plugins via entry points."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from topograph.errors import TopographError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories. Built-ins register with ``@registry.register("name")``; third-party
    packages add ``[project.entry-points."<group>"] name = "pkg.module:Factory"``."""

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.group = entry_point_group
        self._factories: dict[str, Callable[..., T]] = {}
        self._loaded_entry_points = False

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories and self._factories[name] is not factory:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._factories[name] = factory
            return factory

        return deco

    def _load_entry_points(self) -> None:
        if self._loaded_entry_points:
            return
        self._loaded_entry_points = True
        for ep in entry_points(group=self.group):
            if ep.name not in self._factories:
                self._factories[ep.name] = _lazy(ep)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._factories)

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        self._load_entry_points()
        if name not in self._factories:
            raise TopographError(f"unknown {self.kind} '{name}'", f"choose one of: {', '.join(self.names())}")
        return self._factories[name](*args, **kwargs)


def _lazy(ep: Any) -> Callable[..., Any]:
    def factory(*args: Any, **kwargs: Any) -> Any:
        return ep.load()(*args, **kwargs)

    return factory
