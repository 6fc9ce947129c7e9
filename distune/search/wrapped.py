"""Building blocks of distune's own searchers: a pass-through wrapper (in the manner of Ray's
ConcurrencyLimiter) and their state for resume as versioned JSON."""

from __future__ import annotations

import json
from typing import Any

from ray.tune.search import Searcher

from distune.ops import HEARD
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

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        ok = self.inner.set_search_properties(metric, mode, config, **spec)
        self._metric, self._mode = metric, mode
        return ok

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


class CaughtUp(Delegating):
    """A model-based searcher that survives Ray's non-atomic experiment save. Ray copies the
    experiment state and the searcher's state to storage separately, in the background
    (ray-project/ray#19113): a driver killed in between resumes with a searcher older than its
    trials, and the first result of a trial it never suggested raises (Optuna) or is dropped
    (HyperOpt, which would then suggest that config again). Such a trial is suggested again
    here, from the same saved state: the same config means the searcher is exactly where it
    was; any other, and the searcher is told that suggestion failed and learns nothing from
    the trial (said once), which keeps running on its own config."""

    def __init__(self, inner: Searcher):
        super().__init__(inner)
        self.ignored: set[str] = set()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._caught_up(trial_id, result):
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        if self._caught_up(trial_id, result):
            self.inner.on_trial_complete(trial_id, result=result, error=error)

    def _caught_up(self, trial_id: str, result: dict | None) -> bool:
        if trial_id in self.ignored:
            return False
        live = _live_trials(self.inner)
        if live is None or trial_id in live or not result:
            return True
        from ray.tune.utils import flatten_dict

        ran = {k.removeprefix("config/"): v for k, v in result.items() if k.startswith("config/")}
        again = flatten_dict(self.inner.suggest(trial_id) or {})
        if all(plain(v) == plain(ran.get(k)) for k, v in again.items()):
            return True
        self.inner.on_trial_complete(trial_id, error=True)
        self.ignored.add(trial_id)
        HEARD.say(f"trial {trial_id} is not in the searcher's saved state (the driver was "
                  "killed while Ray saved it): the searcher does not learn from it", "resume")
        return False


def _live_trials(searcher) -> set | dict | None:
    """The trial ids the innermost searcher holds (Optuna's and HyperOpt's own maps), or None
    for a searcher that keeps no such map."""
    while isinstance(searcher, Delegating):
        searcher = searcher.inner
    for name in ("_ot_trials", "_live_trial_mapping"):
        if hasattr(searcher, name):
            return getattr(searcher, name)
    return None
