"""Name -> factory tables, the shape shared by searchers and schedulers.

Each entry declares its options as a strict pydantic model, so a misspelt option is an error
(Ray's own `create_searcher`/`create_scheduler` silently drop unknown keyword arguments).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    """Base of every entry's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Context:
    """What a factory may need beyond its own options."""

    seed: int
    max_epochs: int
    space: dict = field(default_factory=dict)  # Ray Tune param_space (domains and fixed values)
    params: dict = field(default_factory=dict)  # distune's parsed space (name -> Param)
    points: list = field(default_factory=list)  # search.initial_points: evaluated first
    metric: str = "val_accuracy"
    mode: str = "max"
    num_samples: int = 1
    max_concurrent: int = 0  # resources.max_concurrent_trials (0: no limit)

    @property
    def conditional(self) -> bool:
        from distune.space.params import is_conditional

        return is_conditional(self.params)


O = TypeVar("O", bound=Options)


@dataclass(frozen=True)
class Entry(Generic[O]):
    name: str
    summary: str
    options: type[O]
    build: Callable[[O, Context], Any]
    only_with: tuple[str, ...] = ()  # the other side's names it works with (empty: all)
    capabilities: frozenset[str] = frozenset()  # what it can do: see Registry.add

    def can(self, capability: str) -> bool:
        return capability in self.capabilities


class Registry(dict[str, Entry]):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def add(self, name: str, summary: str, options: type[O], only_with: tuple[str, ...] = (),
            can: tuple[str, ...] = ()):
        """Decorator: register `build(options, context)` under `name`. Searcher capabilities:
        "grid" (takes {grid: [...]} values), "enumerate" (walks every choice instead of
        sampling), "tree" (tree-structured spaces), "warm_start" (learns from earlier trials)."""

        def deco(build: Callable[[O, Context], Any]) -> Callable[[O, Context], Any]:
            self[name] = Entry(name, summary, options, build, only_with, frozenset(can))
            return build

        return deco

    def able(self, capability: str) -> list[str]:
        """The names of the entries that can do `capability`."""
        return sorted(name for name, entry in self.items() if entry.can(capability))

    def unknown(self, name: str) -> str:
        return f"{name!r} is not one of: {', '.join(self)}"
