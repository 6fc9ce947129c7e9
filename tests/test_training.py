"""One trial's epoch loop: checkpoints resume exactly, early stopping, divergence, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distune.config import EarlyStopping, TrainConfig
from distune.space import Hyperparams
from distune.trial import Training, trial_seed

HP = Hyperparams(hidden_layers=2, units=64, dropout=0.2, lr_schedule="exponential", lr_decay=0.5,
                 batch_size=32)


def test_checkpoint_round_trip_continues_as_if_uninterrupted(small_splits, tmp_path):
    data = small_splits.for_trials()
    a = Training(HP, data, TrainConfig(epochs=3), seed=7)
    a.run_epoch(), a.run_epoch()
    a.save(tmp_path)
    uninterrupted = a.run_epoch()

    b = Training(HP, data, TrainConfig(epochs=3), seed=7)
    b.load(tmp_path)
    assert b.epoch == 2
    restored = b.run_epoch()
    assert restored["epoch"] == uninterrupted["epoch"] == 3 and restored["done"]
    assert restored["lr"] == pytest.approx(uninterrupted["lr"], rel=1e-6)  # schedule position kept
    assert restored["loss"] == pytest.approx(uninterrupted["loss"], rel=0.05)
    assert restored["val_accuracy"] == pytest.approx(uninterrupted["val_accuracy"], abs=0.02)


def test_same_config_and_seed_gives_the_same_curve(small_splits):
    curves = []
    for _ in range(2):
        t = Training(HP, small_splits.for_trials(), TrainConfig(epochs=2), seed=3)
        curves.append([t.run_epoch()["loss"] for _ in range(2)])
    assert curves[0] == pytest.approx(curves[1], rel=1e-5)


def test_trial_seed_depends_on_run_seed_and_config():
    assert trial_seed(0, {"a": 1, "b": 2}) == trial_seed(0, {"b": 2, "a": 1})
    assert trial_seed(0, {"a": 1}) != trial_seed(1, {"a": 1}) != trial_seed(0, {"a": 2})


def test_epoch_reports_every_metric(small_splits):
    m = Training(HP, small_splits.for_trials(), TrainConfig(epochs=1), seed=0).run_epoch()
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_s", "samples_per_s"):
        assert math.isfinite(m[key])
    assert m["done"] and not m["diverged"] and not m["early_stopped"] and m["val_accuracy"] > 0.5


def test_early_stopping_restores_best_weights(small_splits, tmp_path):
    # min_delta is so large that nothing after the first epoch counts as an improvement.
    train = TrainConfig(epochs=10, early_stopping=EarlyStopping(patience=2, min_delta=10.0))
    t = Training(HP, small_splits.for_trials(), train, seed=0)
    first = t.run_epoch()
    best = [w.copy() for w in t.model.get_weights()]
    assert not t.run_epoch()["done"]
    last = t.run_epoch()
    assert first["epoch"] == 1 and last["early_stopped"] and last["done"] and last["epoch"] == 3
    assert all(np.array_equal(a, b) for a, b in zip(best, t.model.get_weights()))
    t.save(tmp_path)  # best weights survive a checkpoint too
    again = Training(HP, small_splits.for_trials(), train, seed=0)
    again.load(tmp_path)
    assert again.wait == 2 and all(np.array_equal(a, b) for a, b in zip(best, again.best_weights))


def test_exploding_loss_is_marked_diverged(small_splits):
    hp = Hyperparams(activation="linear", optimizer="sgd", learning_rate=10.0, momentum=0.99,
                     batch_size=32)
    m = Training(hp, small_splits.for_trials(), TrainConfig(epochs=5), seed=0).run_epoch()
    assert m["diverged"] and m["done"] and m["epoch"] == 1


def test_loss_above_bound_is_marked_diverged(small_splits):
    m = Training(HP, small_splits.for_trials(), TrainConfig(epochs=5, max_loss=1e-3), seed=0).run_epoch()
    assert m["diverged"] and m["done"]


def test_loading_another_trials_checkpoint_keeps_this_trials_learning_rate(small_splits, tmp_path):
    """What a PBT exploit does: weights and optimizer state come from the donor, the mutated
    hyperparameters (here the learning rate) from this trial's own config."""
    donor = Training(HP.model_copy(update={"lr_schedule": "constant"}), small_splits.for_trials(),
                     TrainConfig(epochs=3), seed=1)
    donor.run_epoch()
    donor.save(tmp_path)
    mutated = HP.model_copy(update={"lr_schedule": "constant", "learning_rate": 0.0123})
    t = Training(mutated, small_splits.for_trials(), TrainConfig(epochs=3), seed=2)
    t.load(tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(donor.model.get_weights(), t.model.get_weights()))
    assert int(t.model.optimizer.iterations) == int(donor.model.optimizer.iterations) > 0
    assert t.run_epoch()["lr"] == pytest.approx(0.0123) and t.epoch == 2
