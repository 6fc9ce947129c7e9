"""Building blocks of distune's own searchers: a pass-through wrapper (in the manner of Ray's
ConcurrencyLimiter) and whole-state pickling for resume."""

from __future__ import annotations

import pickle

from ray.tune.search import Searcher


class PickledState:
    """Tune saves a searcher's state with the experiment and restores it on resume."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


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
