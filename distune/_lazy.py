"""Subpackage exports that load on first use: `from distune.sweep import build_tuner` works, and
importing a subpackage (or `distune` itself) stays cheap, so Ray and Keras load only when a
name that needs them is used."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: each public name -> the submodule defining it."""
    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)

    return __getattr__
