"""A compact console view of a sweep: one line per epoch, one per finished trial."""

from __future__ import annotations

import math
import time
from typing import Callable

from ray.tune import Callback

from distune.results.records import trial_status
from distune.trial.training import trial_hyperparams
from distune.results.values import better


class ProgressLines(Callback):
    """Replaces Ray's boxed tables with lines a person (or a log file) can scan."""

    def __init__(self, metric: str, mode: str, epochs: int, say: Callable[[str], None] = print):
        self.metric, self.mode, self.epochs, self.say = metric, mode, epochs, say
        self.start = time.monotonic()
        self.best: tuple[float, str] | None = None
        self.best_by_trial: dict[str, float] = {}

    def setup(self, **info):
        self.start = time.monotonic()  # also after a resume, when this object is unpickled

    def _target(self, trial) -> int:
        """The trial's epochs (a select-stage retrain's config nests its hyperparameters)."""
        return trial_hyperparams(trial.config).get("epochs") or self.epochs

    def _line(self, text: str) -> None:
        self.say(f"[{time.monotonic() - self.start:6.0f}s] {text}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric, math.nan)
        tid = trial.trial_id
        if isinstance(value, (int, float)) and math.isfinite(value):
            if tid not in self.best_by_trial or better(value, self.best_by_trial[tid], self.mode):
                self.best_by_trial[tid] = value
            if self.best is None or better(value, self.best[0], self.mode):
                self.best = (value, tid)
        target = self._target(trial)
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        best = f"best {self.best[0]:.4f} ({self.best[1]})" if self.best else ""
        self._line(f"{tid} epoch {result.get('training_iteration', 0):>3}/{target:<3} "
                   f"{self.metric} {value:.4f}  loss {result.get('loss', math.nan):.4f}  "
                   f"{result.get('epoch_s', 0):.1f}s/epoch   {best}  [{done}/{len(trials)} done]")

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        status = trial_status(trial, last, self._target(trial), finished=True)
        status = {"stopped": "stopped early"}.get(status, status)
        best = self.best_by_trial.get(trial.trial_id, math.nan)
        self._line(f"{trial.trial_id} {status} after {last.get('training_iteration', 0)} epochs: "
                   f"best {self.metric} {best:.4f}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._line(f"{trial.trial_id} failed (worker lost or crashed); retrying {retry_point(trial)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(f"{trial.trial_id} failed for good (retries used up); its error: "
                   f"{trial.local_path}/error.txt")


def retry_point(trial) -> str:
    """Where a failed trial starts again: its latest checkpoint, if it has one."""
    latest = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
    if latest is None:
        return "from the start (no checkpoint yet)"
    return f"from its checkpoint of epoch {latest.metrics.get('training_iteration', '?')}"
