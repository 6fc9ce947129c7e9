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

from distune.space.hyperparams import LOOP_KEYS, check_value, is_integer

GRID_ENUMERATE_LIMIT = 100  # an int range wider than this is not silently turned into a grid


@dataclass(frozen=True)
class Fixed:
    value: Any


@dataclass(frozen=True)
class Choice:
    values: tuple
    # Tree-structured spaces: branches[i] is the sub-space that exists only when values[i] is
    # chosen (empty dicts for plain values); () when no option carries a sub-space.
    branches: tuple = ()

    @property
    def conditional(self) -> bool:
        return any(self.branches)


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


def parse_param(name: str, raw: Any, free: bool = False) -> Param:
    """Turn one YAML entry into a Param; ValueError says what to write instead. `free`: a
    user's model function takes the values (hyperparams.check_value)."""
    if not isinstance(raw, dict):
        if isinstance(raw, list):
            raise ValueError(f"a bare list is ambiguous; write {{choice: {raw}}} or {{grid: {raw}}}")
        return Fixed(check_value(name, raw, free))
    if len(raw) != 1 or next(iter(raw)) not in KINDS:
        raise ValueError(f"expected one of {{{': ..., '.join(KINDS)}: ...}}, got {raw!r}")
    kind, args = next(iter(raw.items()))
    if not isinstance(args, list) or not args:
        raise ValueError(f"{kind} needs a non-empty list, got {args!r}")
    if kind in ("choice", "grid"):
        options = [_option(name, kind, a, free) for a in args]
        values = tuple(v for v, _ in options)
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"{kind} lists a value twice: {list(values)}")
        branches = tuple(b for _, b in options) if any(b for _, b in options) else ()
        return Choice(values, branches) if kind == "choice" else Grid(values)
    if kind in ("uniform", "loguniform"):
        if len(args) != 2:
            raise ValueError(f"{kind} takes [low, high], got {args!r}")
        low, high = (_number(v, kind) for v in args)
        if is_integer(name) and not (free and name not in LOOP_KEYS):
            raise ValueError(f"{name} is an integer; use {{int: [{args[0]}, {args[1]}]}}")
        _check_bounds(kind, low, high, log=kind == "loguniform")
        check_value(name, low, free), check_value(name, high, free)
        return Uniform(float(low), float(high), log=kind == "loguniform")
    # int / logint
    if len(args) not in (2, 3) or not all(isinstance(v, int) and not isinstance(v, bool) for v in args):
        raise ValueError(f"{kind} takes integers [low, high] or [low, high, step], got {args!r}")
    low, high, step = args[0], args[1], (args[2] if len(args) == 3 else 1)
    _check_bounds(kind, low, high, log=kind == "logint")
    check_value(name, low, free), check_value(name, high, free)
    if step < 1 or (high - low) % step:
        raise ValueError(f"step {step} must be >= 1 and divide high - low ({high - low})")
    return IntRange(low, high, step, log=kind == "logint")


def _option(name: str, kind: str, raw: Any, free: bool = False) -> tuple[Any, dict[str, "Param"]]:
    """One option of a choice: a plain value, or {value: V, space: {...}} for a branch whose
    hyperparameters exist only when V is chosen (a tree-structured space)."""
    if not isinstance(raw, dict):
        return check_value(name, raw, free), {}
    if kind != "choice" or "value" not in raw or set(raw) - {"value", "space"}:
        raise ValueError(f"an option with a sub-space is written {{value: V, space: {{...}}}} "
                         f"inside a choice, got {raw!r}")
    sub = raw.get("space") or {}
    if not isinstance(sub, dict):
        raise ValueError(f"the space of option {raw['value']!r} must be a mapping")
    branch = {}
    for key, value in sub.items():
        if key in (name, "architecture"):
            raise ValueError(f"option {raw['value']!r} cannot set {key} again in its sub-space")
        try:
            branch[key] = parse_param(key, value, free)
        except ValueError as e:
            raise ValueError(f"{raw['value']!r} -> {key}: {e}") from None
        if isinstance(branch[key], Grid):
            raise ValueError(f"{raw['value']!r} -> {key}: use choice inside a sub-space, not grid")
    return check_value(name, raw["value"], free), branch


def is_conditional(params: dict[str, "Param"]) -> bool:
    return any(isinstance(p, Choice) and p.conditional for p in params.values())


def sample(params: dict[str, "Param"], rng) -> dict[str, Any]:
    """One random config of a (tree-structured) space: only the chosen branches' keys."""
    out: dict[str, Any] = {}
    for name, p in params.items():
        if isinstance(p, Fixed):
            out[name] = p.value
        elif isinstance(p, (Choice, Grid)):
            i = int(rng.integers(len(p.values)))
            out[name] = p.values[i]
            if isinstance(p, Choice) and p.conditional:
                out.update(sample(p.branches[i], rng))
        elif isinstance(p, Uniform):
            out[name] = float(math.exp(rng.uniform(math.log(p.low), math.log(p.high)))
                              if p.log else rng.uniform(p.low, p.high))
        else:
            if p.log:
                v = math.exp(rng.uniform(math.log(p.low), math.log(p.high + 1)))
                out[name] = min(p.high, p.low + int((v - p.low) // p.step) * p.step)
            else:
                out[name] = int(rng.choice(p.values()))
    return out


def enumerate_space(params: dict[str, "Param"]) -> list[dict[str, Any]]:
    """Every config of a space the grid searcher walks: choices and small int ranges
    enumerated, each branch with its own sub-grid."""
    combos: list[dict[str, Any]] = [{}]
    for name, p in params.items():
        options = []
        for i, value in enumerate(grid_values(p)):
            subs = enumerate_space(p.branches[i]) if isinstance(p, Choice) and p.conditional else [{}]
            options += [{name: value, **sub} for sub in subs]
        combos = [{**c, **o} for c in combos for o in options]
    return combos


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
    """Number of configs one pass over the grid yields (before num_samples repeats it):
    counted, not built (a tree's branches add up their own sub-grids)."""
    sizes = [sum(grid_points(b, True) for b in p.branches)
             if enumerate_choices and isinstance(p, Choice) and p.conditional else len(grid_values(p))
             for p in space.values()
             if isinstance(p, Grid) or (enumerate_choices and not isinstance(p, Fixed))]
    return math.prod(sizes)
