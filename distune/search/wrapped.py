"""Building blocks of distune's own searchers: a pass-through wrapper (in the manner of Ray's
ConcurrencyLimiter) and their state for resume as versioned JSON."""

from __future__ import annotations

import json
from typing import Any

from ray.tune.search import Searcher

from distune.results.values import plain

STATE_VERSION = 1


class JSONState:
    """Tune saves a searcher's state with the experiment and restores it on resume. distune's
    own searchers write it as plain, versioned JSON (never a pickle: a file read back cannot
    run code), the way KerasTuner's get_state/set_state do. A subclass names its `STATE`:
    the attributes that change as trials run (the rest is rebuilt from the experiment)."""

    STATE: tuple[str, ...] = ()

    def get_state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.STATE}

    def set_state(self, state: dict[str, Any]) -> None:
        for name in self.STATE:
            setattr(self, name, state[name])

    def save(self, checkpoint_path: str) -> None:
        state = {"version": STATE_VERSION, "searcher": type(self).__name__,
                 "metric": self._metric, "mode": self._mode, "state": self.get_state()}
        with open(checkpoint_path, "w") as f:
            json.dump(state, f, default=plain)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            state = json.load(f)
        if state.get("version") != STATE_VERSION or state.get("searcher") != type(self).__name__:
            raise ValueError(f"{checkpoint_path}: not a {type(self).__name__} state of version "
                             f"{STATE_VERSION}")
        self._metric, self._mode = state["metric"], state["mode"]
        self.set_state(state["state"])


class Delegating(Searcher):
    def __init__(self, inner: Searcher):
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner

    def suggest(self, trial_id: str):
        return self.inner.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self.inner.on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)
