"""Trials whose latest checkpoint is gone from storage (distune.ops.storage.checkpoint_gone):
no checkpoint there matches the results the sweep's saved state holds, so such a trial
restarts from its first epoch, same seed, same curve, instead of failing its resume."""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback

from distune.ops import checkpoint_gone
from distune.results.layout import PROGRESS_FILE, RESULTS_LOG_FILE
from distune.sweep.unrestored import refuse


class RestartGone(Callback):
    """Before Tune restores a trial whose latest checkpoint is gone, forget its missing
    checkpoints: Tune then starts it afresh (without this, its restore fails). A trial that
    starts afresh after a fault (that, or no checkpoint in the saved state) begins its result
    logs anew, as Tune's loggers do on another machine; else the copy the killed driver left on
    this one, ahead of the state, would repeat its epochs (seen: epochs 1, 2, 1, 2)."""

    def setup(self, **info):  # Tune calls it after its restore, before anything runs
        refuse()

    def on_trial_start(self, iteration, trials, trial, **info):
        manager = trial.run_metadata.checkpoint_manager
        latest = manager.latest_checkpoint_result if manager else None
        if latest is not None and checkpoint_gone(trial, latest.checkpoint):
            manager._latest_checkpoint_result = None  # Ray has no public way to drop a checkpoint
            manager._checkpoint_results = [r for r in manager._checkpoint_results
                                           if not checkpoint_gone(trial, r.checkpoint)]
            trial.run_metadata.invalidate_cache()
        if trial.latest_checkpoint_result is None:  # from its first epoch: Tune's loggers,
            for name in (RESULTS_LOG_FILE, PROGRESS_FILE):  # which come after this, begin anew
                Path(trial.local_path, name).unlink(missing_ok=True)
