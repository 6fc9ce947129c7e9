"""After the sweep: pick the winner by validation only, then touch the test set exactly once."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from distune.config.schema import Experiment
from distune.trial.data import Splits
from distune.errors import DistuneError
from distune.ops.storage import checkpoint_path, in_mirror, local_copy
from distune.results.layout import CHECKPOINT_MODEL_FILE
from distune.results.records import TrialRecord, sort_best_first, trial_status
from distune.results.values import better, plain_config
from distune.trial.training import Training, checkpoint_problem, trial_seed
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


def evaluate_checkpoint(winner: TrialRecord, splits: Splits) -> tuple[float, float, Path]:
    """(test loss, test accuracy, model file) of the winner's best checkpoint."""
    import keras

    model_file = local_copy(winner.checkpoint) / CHECKPOINT_MODEL_FILE
    if not model_file.is_file():
        raise DistuneError(f"the winner's checkpoint is missing its model: {model_file}")
    model = keras.saving.load_model(model_file)
    return (*_evaluate(model, winner.config, splits), model_file)


def refit(winner: TrialRecord, exp: Experiment, splits: Splits, out_dir: Path) -> tuple[float, float, Path]:
    """Retrain the winning config on train + validation for the epochs it needed, then test."""
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
    return (*_evaluate(training.model, winner.config, splits), model_file)


def _evaluate(model, config: dict[str, Any], splits: Splits) -> tuple[float, float]:
    from distune.trial.model import labels_for, reshape_for

    loss, accuracy = model.evaluate(reshape_for(model, splits.x_test), labels_for(model, splits.y_test),
                                    batch_size=1024, verbose=0)
    return float(loss), float(accuracy)


def export_model(model_file: Path, destination: Path) -> None:
    """Copy then rename, so `best_model.keras` is always a whole file."""
    with tempfile.NamedTemporaryFile(dir=destination.parent, prefix=".best.", suffix=".keras",
                                     delete=False) as tmp:
        pass
    shutil.copyfile(model_file, tmp.name)
    Path(tmp.name).replace(destination)
