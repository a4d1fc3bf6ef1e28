"""Name -> object registries that raise instead of guessing."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table filled by a decorator; duplicates and unknown names raise.

    ``kind`` is used in error messages ("unknown method 'x'; allowed: a, b").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"duplicate {self.kind} name {name!r}: already registered by {self._items[name]!r}")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; allowed: {', '.join(sorted(self._items))}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())


def import_submodules(package_name: str, package_path: list[str]) -> None:
    """Import every module of a package so that its decorators register.

    One file per method/setting/study: adding a file is all it takes to register it.
    """
    for info in pkgutil.iter_modules(package_path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")


class ConfigError(ValueError):
    """Bad user input; the message is one line naming parameter, value and what is allowed."""


def check(ok: bool, name: str, value: Any, allowed: str) -> None:
    """Raise ConfigError('name=value: allowed') unless ``ok``."""
    if not ok:
        raise ConfigError(f"{name}={value!r} is not allowed: {allowed}")
