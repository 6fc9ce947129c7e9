"""The practitioners' one-hyperparameter-at-a-time search, as a Ray Tune Searcher.

Stage k tries every value of the k-th hyperparameter with the earlier ones at their best values
and the later ones at their first listed value; once all of the stage's trials are done, the
best value is kept and the next stage starts. A config already scored (the stage's value that
equals the current best) is not trained twice. Works with early-stopping schedulers: a trial's
score is the best value of the metric it reported.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search import Searcher

from distune.space.params import Param, grid_values
from distune.search.wrapped import JSONState
from distune.results.values import better


def stages(params: dict[str, Param], order: list[str] | None) -> tuple[list[tuple[str, list]], dict]:
    """(stages, starting config) from the searched params; ValueError names what cannot work."""
    values = {}
    for k, p in params.items():
        try:
            values[k] = grid_values(p)
        except ValueError:
            raise ValueError(f"{k}: stepwise tries listed values; give it {{choice: [...]}} or a "
                             "small {int: [...]} range") from None
    searched = {k: v for k, v in values.items() if len(v) > 1}
    order = list(order) if order is not None else list(searched)
    unknown = [k for k in order if k not in searched]
    if unknown:
        raise ValueError(f"order lists {', '.join(unknown)}, which the space does not search over")
    start = {k: v[0] for k, v in values.items()}
    return [(k, searched[k]) for k in order], start


class StepwiseSearch(JSONState, Searcher):
    STATE = ("best", "best_score", "stage", "index", "running", "seen", "scores")

    def __init__(self, stages: list[tuple[str, list]], start: dict[str, Any],
                 metric: str | None = None, mode: str | None = None):
        super().__init__(metric=metric, mode=mode)
        self.stages, self.best = stages, dict(start)
        self.best_score: float | None = None
        self.stage, self.index = 0, 0
        self.running: dict[str, tuple[int, Any]] = {}  # trial id -> (stage, value)
        self.seen: dict[str, float] = {}  # trial id -> best metric so far
        self.scores: list[tuple[int, Any, float]] = []  # (stage, value, score)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def total_trials(self) -> int:
        return sum(len(values) for _, values in self.stages) - max(0, len(self.stages) - 1)

    def suggest(self, trial_id: str):
        while self.stage < len(self.stages):
            name, values = self.stages[self.stage]
            while self.index < len(values):
                value = values[self.index]
                self.index += 1
                if self.stage > 0 and value == self.best[name] and self.best_score is not None:
                    self.scores.append((self.stage, value, self.best_score))  # already trained
                    continue
                self.running[trial_id] = (self.stage, value)
                return {**self.best, name: value}
            if any(stage == self.stage for stage, _ in self.running.values()):
                return None  # wait for this stage's trials
            self._close_stage(name)
        return Searcher.FINISHED

    def _close_stage(self, name: str) -> None:
        done = [(v, s) for stage, v, s in self.scores if stage == self.stage and math.isfinite(s)]
        if done:
            value, score = done[0]
            for v, s in done[1:]:
                if better(s, score, self._mode):
                    value, score = v, s
            self.best[name], self.best_score = value, score
        self.stage, self.index = self.stage + 1, 0

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self._metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            old = self.seen.get(trial_id)
            self.seen[trial_id] = value if old is None or better(value, old, self._mode) else old

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if result:
            self.on_trial_result(trial_id, result)
        stage, value = self.running.pop(trial_id, (None, None))
        if stage is not None:
            self.scores.append((stage, value, self.seen.pop(trial_id, math.nan)))
