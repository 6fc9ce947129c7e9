"""Tree-structured (conditional) spaces for every searcher that can take them.

A choice option may carry a sub-space (`{value: sgd, space: {momentum: ...}}`) whose keys exist
only when that option is chosen. Ray's basic variant generator cannot express that, so:
random and grid use `TreeSearch` below; hyperopt gets a native nested `hp.choice` space;
Optuna gets a define-by-run function. Every suggestion is flat and holds only the keys of the
branches taken, so results tables and importance plots see no dead hyperparameters.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from distune.space.params import Choice, Fixed, Grid, IntRange, Param, Uniform, enumerate_space, sample
from distune.search.wrapped import Delegating, JSONState
from distune.results.values import plain

BRANCH_VALUE = "__value__"


class TreeSearch(JSONState, Searcher):
    """Random sampling (seeded) or full enumeration of a tree-structured space."""

    STATE = ("queue",)

    def get_state(self) -> dict:
        return {**super().get_state(), "rng": self.rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self.rng.bit_generator.state = state["rng"]

    def __init__(self, params: dict[str, Param], seed: int, grid: bool, repeats: int = 1):
        super().__init__()
        self.params, self.grid = params, grid
        self.rng = np.random.default_rng(seed)
        self.queue = enumerate_space(params) * repeats if grid else []

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        self._metric, self._mode = metric, mode
        return True

    def suggest(self, trial_id: str):
        if not self.grid:
            return sample(self.params, self.rng)
        return self.queue.pop(0) if self.queue else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass



class Flattened(Delegating):
    """Wraps a searcher that owns a native nested space; flattens what it suggests."""

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the inner searcher was built with its space, metric and mode

    def suggest(self, trial_id: str):
        config = self.inner.suggest(trial_id)
        return flatten(config) if isinstance(config, dict) else config


def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """{optimizer: {__value__: sgd, momentum: 0.9}} -> {optimizer: sgd, momentum: 0.9}."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and BRANCH_VALUE in value:
            out[key] = value[BRANCH_VALUE]
            out.update(flatten({k: v for k, v in value.items() if k != BRANCH_VALUE}))
        else:
            out[key] = plain(value)
    return out


def hyperopt_space(params: dict[str, Param], prefix: str = "") -> dict[str, Any]:
    """A native hyperopt space; labels carry the branch path so they stay unique."""
    from hyperopt import hp
    from hyperopt.pyll import scope

    out: dict[str, Any] = {}
    for name, p in params.items():
        label = f"{prefix}{name}"
        if isinstance(p, Fixed):
            out[name] = p.value
        elif isinstance(p, (Choice, Grid)) and not (isinstance(p, Choice) and p.conditional):
            out[name] = hp.choice(label, list(p.values))
        elif isinstance(p, Choice):
            out[name] = hp.choice(label, [
                {BRANCH_VALUE: v, **hyperopt_space(branch, f"{label}={v}/")}
                for v, branch in zip(p.values, p.branches)])
        elif isinstance(p, Uniform):
            out[name] = (hp.loguniform(label, math.log(p.low), math.log(p.high)) if p.log
                         else hp.uniform(label, p.low, p.high))
        elif isinstance(p, IntRange):
            out[name] = scope.int(
                hp.qloguniform(label, math.log(p.low), math.log(p.high), p.step) if p.log
                else hp.quniform(label, p.low, p.high, p.step))
    return out


class OptunaDefineByRun:
    """Optuna's define-by-run form: only the branches taken are suggested. A class, not a
    closure, so the searcher's state can be pickled for resume."""

    def __init__(self, params: dict[str, Param]):
        self.params = params

    def __call__(self, trial) -> dict[str, Any]:
        return self._suggest(trial, self.params)

    def _suggest(self, trial, space: dict[str, Param]) -> dict[str, Any]:
        fixed = {}
        for name, p in space.items():
            if isinstance(p, Fixed):
                fixed[name] = p.value
            elif isinstance(p, (Choice, Grid)):
                value = trial.suggest_categorical(name, list(p.values))
                if isinstance(p, Choice) and p.conditional:
                    fixed.update(self._suggest(trial, p.branches[list(p.values).index(value)]))
            elif isinstance(p, Uniform):
                trial.suggest_float(name, p.low, p.high, log=p.log)
            elif isinstance(p, IntRange):
                trial.suggest_int(name, p.low, p.high, step=1 if p.log else p.step, log=p.log)
        return fixed
