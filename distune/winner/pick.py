"""After the sweep: pick the winner by validation only, then touch the test set exactly once."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from distune.config.schema import Experiment
from distune.trial.data import Splits
from distune.errors import DistuneError
from distune.ops.storage import checkpoint_path, in_mirror, local_copy
from distune.results.layout import CHECKPOINT_MODEL_FILE
from distune.results.records import TrialRecord, sort_best_first, trial_status
from distune.results.values import better, plain_config
from distune.trial.training import (Training, checkpoint_problem, configure_tensorflow, test_model,
                                    test_saved_model, trial_seed)
from distune.trial.worker import test_in_child
from distune.trial.zygote import Unavailable
from distune.trial.usermodel import trial_inputs


def pick_winner(analysis, exp: Experiment) -> TrialRecord:
    """The best checkpointed epoch of any trial, by the validation metric. Only epochs with a
    checkpoint can win: a trial cut off before saving (say, by the sweep's stop target) has
    nothing to test."""
    ranking = ranked(analysis.trials, exp.search.metric, exp.search.mode)
    if not ranking:
        raise DistuneError(f"no trial saved a checkpoint with a finite {exp.search.metric}; "
                           "`distune show` gives each trial's status (errors, divergence) and "
                           "where its log is.")
    return ranking[0]


def ranked(trials, metric: str, mode: str) -> list[TrialRecord]:
    """Each trial at its best checkpointed epoch, best first (ties keep the trials' order);
    trials without a checkpoint with a finite metric are left out."""
    found = []
    for trial in trials:
        best = None
        for result in trial.run_metadata.checkpoint_manager.best_checkpoint_results:
            value = result.metrics.get(metric)
            if value is None or not math.isfinite(value) or not _loadable(trial, result):
                continue
            if best is None or better(value, best[0], mode):
                best = (value, result)
        if best is not None:
            value, result = best
            last = trial.last_result or {}
            found.append(TrialRecord(
                trial.trial_id, plain_config(dict(trial.config)),
                trial_status(trial, last, trial.config.get("epochs") or 0), float(value),
                int(result.metrics.get("training_iteration", 0)),
                int(last.get("training_iteration", 0)), checkpoint_path(trial, result.checkpoint)))
    return sort_best_first(found, mode)


def _loadable(trial, result) -> bool:
    """A checkpoint whose files are on disk and whole: a trial that failed on a corrupt
    checkpoint (`resume --skip-corrupt`) leaves it behind, and it may be its best. In a URI's
    mirror, files arrive when used."""
    path = checkpoint_path(trial, result.checkpoint)
    return in_mirror(path) or checkpoint_problem(path) is None


class Tested(NamedTuple):
    loss: float
    accuracy: float
    probabilities: np.ndarray  # each test image's classes: the report's charts
    model_file: Path


def evaluate_checkpoint(winner: TrialRecord, splits: Splits,
                        node: tuple[int, dict[str, str]] | None = None) -> Tested:
    """The winner's best checkpoint on the test set. `node` (raylet, trials' environment;
    distune.sweep.tune.training_node): test it in a process its zygote forks, so that this one
    need not import TensorFlow; else (or if that zygote is gone) here."""
    model_file = local_copy(winner.checkpoint) / CHECKPOINT_MODEL_FILE
    if not model_file.is_file():
        raise DistuneError(f"the winner's checkpoint is missing its model: {model_file}")
    if node:
        try:
            return Tested(*test_in_child(model_file, splits.x_test, splits.y_test, *node), model_file)
        except Unavailable:
            pass
    configure_tensorflow()
    return Tested(*test_saved_model(model_file, splits.x_test, splits.y_test), model_file)


def refit(winner: TrialRecord, exp: Experiment, splits: Splits, out_dir: Path) -> Tested:
    """Retrain the winning config on train + validation for the epochs it needed, then test."""
    configure_tensorflow()
    hp, user = trial_inputs(exp.model.code, bool(exp.model.keras_tuner), winner.config)
    data = {"x_train": np.concatenate([splits.x_train, splits.x_val]),
            "y_train": np.concatenate([splits.y_train, splits.y_val]),
            "x_val": splits.x_val, "y_val": splits.y_val}  # no held-out data is left: reported only
    train = exp.train.model_copy(update={"early_stopping": None})
    training = Training(hp, data, train, trial_seed(exp.run.seed, winner.config), user=user)
    for _ in range(max(1, winner.epoch)):
        training.run_epoch()
    model_file = out_dir / f".refit-{CHECKPOINT_MODEL_FILE}"
    training.model.save(model_file)
    return Tested(*test_model(training.model, splits.x_test, splits.y_test), model_file)


def export_model(model_file: Path, destination: Path) -> None:
    """Copy then rename, so `best_model.keras` is always a whole file."""
    with tempfile.NamedTemporaryFile(dir=destination.parent, prefix=".best.", suffix=".keras",
                                     delete=False) as tmp:
        pass
    shutil.copyfile(model_file, tmp.name)
    Path(tmp.name).replace(destination)
