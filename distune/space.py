"""The searcher-neutral search space: parsed from YAML once, translated to Ray Tune domains.

YAML forms, one per hyperparameter under `model.space`:

    activation: relu                      # fixed
    optimizer: {choice: [adam, sgd]}      # sampled (enumerated by the grid searcher)
    batch_size: {grid: [64, 128]}         # every value, for each sample (random/grid only)
    dropout: {uniform: [0.0, 0.5]}
    learning_rate: {loguniform: [1e-4, 1e-2]}
    units: {int: [32, 512, 32]}           # low, high (inclusive), optional step
    units_2: {logint: [8, 256]}           # log-scaled integers
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

from distune.hyperparams import check_value, is_integer

GRID_ENUMERATE_LIMIT = 100  # an int range wider than this is not silently turned into a grid


@dataclass(frozen=True)
class Fixed:
    value: Any


@dataclass(frozen=True)
class Choice:
    values: tuple


@dataclass(frozen=True)
class Grid:
    values: tuple


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))


Param = Union[Fixed, Choice, Grid, Uniform, IntRange]
KINDS = ("choice", "grid", "uniform", "loguniform", "int", "logint")


def parse_param(name: str, raw: Any) -> Param:
    """Turn one YAML entry into a Param; ValueError says what to write instead."""
    if not isinstance(raw, dict):
        if isinstance(raw, list):
            raise ValueError(f"a bare list is ambiguous; write {{choice: {raw}}} or {{grid: {raw}}}")
        return Fixed(check_value(name, raw))
    if len(raw) != 1 or next(iter(raw)) not in KINDS:
        raise ValueError(f"expected one of {{{': ..., '.join(KINDS)}: ...}}, got {raw!r}")
    kind, args = next(iter(raw.items()))
    if not isinstance(args, list) or not args:
        raise ValueError(f"{kind} needs a non-empty list, got {args!r}")
    if kind in ("choice", "grid"):
        values = tuple(check_value(name, v) for v in args)
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"{kind} lists a value twice: {list(args)}")
        return Choice(values) if kind == "choice" else Grid(values)
    if kind in ("uniform", "loguniform"):
        if len(args) != 2:
            raise ValueError(f"{kind} takes [low, high], got {args!r}")
        low, high = (_number(v, kind) for v in args)
        if is_integer(name):
            raise ValueError(f"{name} is an integer; use {{int: [{args[0]}, {args[1]}]}}")
        _check_bounds(kind, low, high, log=kind == "loguniform")
        check_value(name, low), check_value(name, high)
        return Uniform(float(low), float(high), log=kind == "loguniform")
    # int / logint
    if len(args) not in (2, 3) or not all(isinstance(v, int) and not isinstance(v, bool) for v in args):
        raise ValueError(f"{kind} takes integers [low, high] or [low, high, step], got {args!r}")
    low, high, step = args[0], args[1], (args[2] if len(args) == 3 else 1)
    _check_bounds(kind, low, high, log=kind == "logint")
    check_value(name, low), check_value(name, high)
    if step < 1 or (high - low) % step:
        raise ValueError(f"step {step} must be >= 1 and divide high - low ({high - low})")
    return IntRange(low, high, step, log=kind == "logint")


def _number(v: Any, kind: str) -> float:
    try:  # PyYAML reads 1e-4 (no dot) as a string
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{kind} bounds must be numbers, got {v!r}") from None


def _check_bounds(kind: str, low: float, high: float, log: bool) -> None:
    if not low < high:
        raise ValueError(f"{kind} needs low < high, got [{low}, {high}]")
    if log and low <= 0:
        raise ValueError(f"{kind} needs low > 0 (log scale), got {low}")


def to_ray(param: Param, enumerate_choices: bool = False) -> Any:
    """Ray Tune domain for a Param. `enumerate_choices` is the grid searcher's mode."""
    from ray import tune

    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Grid) or (enumerate_choices and isinstance(param, Choice)):
        return tune.grid_search(list(param.values))
    if isinstance(param, Choice):
        return tune.choice(list(param.values))
    if enumerate_choices:
        return tune.grid_search(grid_values(param))
    if isinstance(param, Uniform):
        return (tune.loguniform if param.log else tune.uniform)(param.low, param.high)
    if param.log:
        return tune.qlograndint(param.low, param.high, param.step) if param.step > 1 \
            else tune.lograndint(param.low, param.high + 1)
    return tune.qrandint(param.low, param.high, param.step) if param.step > 1 \
        else tune.randint(param.low, param.high + 1)


def grid_values(param: Param) -> list:
    """The values a grid walks through; ValueError for continuous or huge ranges."""
    if isinstance(param, Fixed):
        return [param.value]
    if isinstance(param, (Choice, Grid)):
        return list(param.values)
    if isinstance(param, IntRange) and len(param.values()) <= GRID_ENUMERATE_LIMIT:
        return param.values()
    raise ValueError("a grid cannot enumerate a continuous or very wide range; "
                     "list the values with {grid: [...]} or use another searcher")


def grid_points(space: dict[str, Param], enumerate_choices: bool) -> int:
    """Number of configs one pass over the grid yields (before num_samples repeats it)."""
    sizes = [len(grid_values(p)) for p in space.values()
             if isinstance(p, Grid) or (enumerate_choices and not isinstance(p, Fixed))]
    return math.prod(sizes)
