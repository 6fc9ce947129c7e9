"""search.warm_start: an earlier experiment's finished trials become the searcher's history.

Model-based searchers (hyperopt, optuna) learn from (config, score) pairs; feeding them the
results of an earlier sweep over the same space means the new sweep does not start from zero.
Trials whose config no longer fits the space (a removed choice, a narrowed range) are skipped.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from distune.errors import DistuneError
from distune.search.wrapped import Delegating
from distune.space.params import Choice, Fixed, Grid, IntRange, Param, Uniform
from distune.results.records import from_analysis
from distune.results.table import open_analysis



def fits(params: dict[str, Param], config: dict[str, Any]) -> bool:
    for name, p in params.items():
        if isinstance(p, Fixed):
            continue
        if name not in config:
            return False
        v = config[name]
        if isinstance(p, (Choice, Grid)) and v not in p.values:
            return False
        if isinstance(p, (Uniform, IntRange)) and not (isinstance(v, (int, float)) and p.low <= v <= p.high):
            return False
    return True


def prior_results(directory: Path, params: dict[str, Param], metric: str, mode: str) -> list[tuple[dict, float]]:
    """(searched part of the config, best metric) of every scored trial of an experiment."""
    if not directory.is_dir():
        raise DistuneError(f"search.warm_start: no experiment at {directory}. Name an earlier "
                           "experiment in the same storage (see its directory name).")
    searched = [k for k, p in params.items() if not isinstance(p, Fixed)]
    out = []
    for trial in from_analysis(open_analysis(directory), metric, mode, default_epochs=1):
        config = {k: trial.config.get(k) for k in searched}
        if math.isfinite(trial.score) and fits(params, config):
            out.append((config, trial.score))
    return out


class WarmStarted(Delegating):
    """Hands an earlier sweep's results to a searcher once its space is set up."""

    def __init__(self, inner, prior: list[tuple[dict, float]]):
        super().__init__(inner)
        self.prior = prior

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        ok = super().set_search_properties(metric, mode, config, **spec)
        for params, score in self.prior:
            self.inner.add_evaluated_point(copy.deepcopy(params), score)
        return ok


def hyperopt_with_history():
    """HyperOptSearch that accepts finished trials (Ray's raises NotImplementedError)."""
    import hyperopt as hpo
    from hyperopt.fmin import generate_trials_to_calculate
    from ray.tune.search.hyperopt import HyperOptSearch

    class HyperOptWithHistory(HyperOptSearch):
        def add_evaluated_point(self, parameters, value, error=False, pruned=False,
                                intermediate_values=None):
            point = copy.deepcopy(parameters)
            self._convert_categories_to_indices(point)
            doc = generate_trials_to_calculate([point])._dynamic_trials[0]
            tid = self._hpopt_trials.new_trial_ids(1)[0]
            doc["tid"] = doc["misc"]["tid"] = tid
            doc["misc"]["idxs"] = {k: [tid] for k in doc["misc"]["idxs"]}
            doc["state"] = hpo.base.JOB_STATE_DONE
            doc["result"] = self._to_hyperopt_result({self._metric: value})
            self._hpopt_trials.insert_trial_docs([doc])
            self._hpopt_trials.refresh()

    return HyperOptWithHistory
