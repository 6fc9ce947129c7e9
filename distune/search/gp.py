"""Bayesian optimisation with a Gaussian process and expected improvement (scikit-optimize's
ask/tell `Optimizer`), as a Ray Tune Searcher that needs no PyTorch.

Each suggestion is a pure function of the history (finished points and their scores, the points
still running) and the seed: the GP is refitted on the history, the running points enter as
"constant liars" (scored as the best so far, so parallel trials spread out instead of asking for
the same point), and the acquisition's maximum is the suggestion. The state is therefore plain
data: saved as versioned JSON, restored exactly, the next suggestion the same as if the sweep
had never stopped. A trial stopped early by a scheduler counts with the best score it reached
(as ASHA itself ranks it); a trial that errored or diverged without a score is left out.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ray.tune.search import Searcher

from distune.results.values import plain
from distune.search.wrapped import JSONState
from distune.space.params import Choice, Fixed, IntRange, Param, Uniform

ACQUISITIONS = {"ei": "EI", "pi": "PI", "ucb": "LCB"}  # skopt minimises: its LCB is our UCB


def dimensions(params: dict[str, Param]) -> dict[str, Any]:
    """skopt dimensions of the searched hyperparameters; ValueError names one it cannot take."""
    from skopt.space import Categorical, Integer, Real

    dims = {}
    for name, p in params.items():
        if isinstance(p, Fixed):
            continue
        if isinstance(p, Uniform):
            dims[name] = Real(p.low, p.high, prior="log-uniform" if p.log else "uniform", name=name)
        elif isinstance(p, IntRange) and p.step == 1:
            dims[name] = Integer(p.low, p.high, prior="log-uniform" if p.log else "uniform", name=name)
        elif isinstance(p, IntRange):  # the k-th value of the range low, low + step, ...
            dims[name] = Integer(0, (p.high - p.low) // p.step, name=name)
        elif isinstance(p, Choice) and not p.conditional:
            dims[name] = Categorical(list(p.values), name=name)
        else:
            raise ValueError(f"{name}: gp takes uniform, loguniform, int and choice (without "
                             "sub-spaces); for a tree-structured space use hyperopt or optuna")
    if not dims:
        raise ValueError("gp needs at least one searched hyperparameter in model.space")
    return dims


class GPSearch(JSONState, Searcher):
    STATE = ("X", "y", "pending", "best", "queue")

    def __init__(self, params: dict[str, Param], opts: Any, seed: int,
                 points: list[dict] = (), metric: str | None = None, mode: str | None = None):
        super().__init__(metric=metric, mode=mode)
        self.params, self.opts, self.seed = params, opts, seed
        self.dims = dimensions(params)
        self.queue = [dict(p) for p in points]  # search.initial_points: asked first, in order
        self.X: list[list] = []  # finished points, in skopt's coordinates
        self.y: list[float] = []  # their scores, negated when the mode is max (skopt minimises)
        self.pending: dict[str, list] = {}  # trial id -> point still running
        self.best: dict[str, float] = {}  # trial id -> best score it reported

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    # Ray Tune's side
    def suggest(self, trial_id: str) -> dict[str, Any]:
        x = self._point(self.queue.pop(0)) if self.queue else self._next()
        self.pending[trial_id] = x
        return self._config(x)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self._metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            old = self.best.get(trial_id)
            if old is None or (value > old if self._mode == "max" else value < old):
                self.best[trial_id] = float(value)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if result:
            self.on_trial_result(trial_id, result)
        x = self.pending.pop(trial_id, None)
        score = self.best.pop(trial_id, None)
        if x is not None and score is not None:  # no score (an error, NaN): nothing to learn
            self.X.append(x)
            self.y.append(self._sign * score)

    def add_evaluated_point(self, parameters: dict, value: float, error: bool = False,
                            pruned: bool = False, intermediate_values=None) -> None:
        """An earlier sweep's trial (search.warm_start): part of the history from the start."""
        if not error and value is not None and math.isfinite(value):
            self.X.append(self._point(parameters))
            self.y.append(self._sign * float(value))

    # The model
    @property
    def _sign(self) -> float:
        return -1.0 if self._mode == "max" else 1.0

    def _optimizer(self, told: int):
        from skopt import Optimizer

        o = self.opts
        seed = (self.seed * 1_000_003 + told) % 2**32  # the same history, the same suggestion
        return Optimizer(list(self.dims.values()), base_estimator=self._estimator(seed),
                         n_initial_points=o.n_initial_points, acq_func=ACQUISITIONS[o.acq],
                         acq_func_kwargs={"xi": o.xi, "kappa": o.kappa},
                         random_state=seed)

    def _estimator(self, seed: int):
        import numpy as np
        from skopt.learning import GaussianProcessRegressor
        from skopt.learning.gaussian_process.kernels import RBF, ConstantKernel, HammingKernel, Matern
        from skopt.space import Space
        from skopt.utils import normalize_dimensions

        space = Space(normalize_dimensions(list(self.dims.values())))
        n = space.transformed_n_dims  # the GP's input width (one-hot for choices)
        if space.is_categorical:  # only choices: skopt's own kernel for them
            shape = HammingKernel(length_scale=np.ones(n))
        elif self.opts.kernel == "rbf":
            shape = RBF(length_scale=np.ones(n), length_scale_bounds=(0.01, 100))
        else:
            shape = Matern(length_scale=np.ones(n), length_scale_bounds=(0.01, 100),
                           nu=2.5 if self.opts.kernel == "matern52" else 1.5)
        return GaussianProcessRegressor(kernel=ConstantKernel(1.0, (0.01, 1000.0)) * shape,
                                        normalize_y=True, noise="gaussian",
                                        n_restarts_optimizer=2, random_state=seed)

    def _next(self) -> list:
        """The acquisition's best point given the history, running points scored as liars."""
        running = list(self.pending.values())
        told = len(self.X) + len(running)
        optimizer = self._optimizer(told)
        lie = min(self.y) if self.y else 0.0  # constant liar: as good as the best so far
        if self.X or running:
            optimizer.tell(self.X + running, self.y + [lie] * len(running))
        seen = {json.dumps(p, default=plain) for p in self.X + running}
        x = [plain(v) for v in optimizer.ask()]
        for _ in range(20):  # a discrete space can make the model ask again for a point it has
            if json.dumps(x, default=plain) not in seen:
                break
            x = [plain(v) for v in optimizer.space.rvs(random_state=optimizer.rng)[0]]
        return x

    def _point(self, config: dict[str, Any]) -> list:
        """A config (initial point, warm start) in skopt's coordinates."""
        out = []
        for name in self.dims:
            p, v = self.params[name], config[name]
            out.append((v - p.low) // p.step if isinstance(p, IntRange) and p.step > 1 else plain(v))
        return out

    def _config(self, x: list) -> dict[str, Any]:
        config = {k: p.value for k, p in self.params.items() if isinstance(p, Fixed)}
        for (name, _), v in zip(self.dims.items(), x):
            p = self.params[name]
            config[name] = p.low + int(v) * p.step if isinstance(p, IntRange) and p.step > 1 else v
        return config
