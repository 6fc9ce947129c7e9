"""Schedulers that survive a resume. Ray saves the searcher with the experiment but not the
scheduler (ray-project/ray#30838): after `Tuner.restore`, ASHA's rungs and the median rule's
histories start empty, and trials an uninterrupted sweep would stop train on. Tune re-adds
every restored trial through `on_trial_add`; each such trial's reported epochs (Ray's JSON
lines beside its checkpoints) are replayed into the scheduler there, so its records are what
they were before the fault and its later decisions the same."""

from __future__ import annotations

import json

from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, MedianStoppingRule

from distune.results import RESULTS_LOG_FILE


def earlier_results(trial: Trial, time_attr: str) -> list[dict]:
    """What a restored trial reported before the fault; [] for a new trial."""
    if time_attr not in (trial.last_result or {}):  # a new trial: nothing on storage to read
        return []
    storage = trial.storage
    path = f"{storage.trial_fs_path}/{RESULTS_LOG_FILE}"
    try:
        with storage.storage_filesystem.open_input_stream(path) as f:
            text = f.readall().decode()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class Replayed:
    """Mixin: replay a restored trial's history into the scheduler as it is re-added."""

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        history = earlier_results(trial, self._time_attr)
        for result in history:
            super().on_trial_result(tune_controller, trial, result)
        if history and trial.status == Trial.TERMINATED:
            super().on_trial_complete(tune_controller, trial, history[-1])


class ResumableASHA(Replayed, AsyncHyperBandScheduler):
    pass


class ResumableMedian(Replayed, MedianStoppingRule):
    pass
