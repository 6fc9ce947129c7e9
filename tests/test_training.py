"""One trial's epoch loop: checkpoints resume exactly, early stopping, divergence, seeding."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from distune.config import EarlyStopping, TrainConfig
from distune.space import Hyperparams
from distune.trial import Training, trial_seed

HP = Hyperparams(hidden_layers=2, units=64, dropout=0.2, lr_schedule="exponential", lr_decay=0.5,
                 batch_size=32)


# Optimizers with state, a learning-rate schedule each, dropout (its masks are random) and batch
# norm (moving statistics: non-trainable weights), on 300 training images: 9 steps an epoch
# (whole batches of 32: distune.trial.training.epoch_rows).
RESUMABLE = {
    "adam-exponential": Hyperparams(hidden_layers=2, units=32, dropout=0.2, lr_schedule="exponential",
                                    lr_decay=0.5, batch_size=32),
    "sgd-momentum-cosine": Hyperparams(hidden_layers=1, units=32, dropout=0.1, batch_norm=True,
                                       optimizer="sgd", momentum=0.9, nesterov=True, learning_rate=0.05,
                                       lr_schedule="cosine", batch_size=32),
}


@pytest.fixture(scope="module")
def tiny(mnist_path):
    from distune.trial import load_mnist

    return load_mnist(str(mnist_path), validation_split=0.25, train_subset=400, seed=0).for_trials()


def state_of(t: Training) -> tuple[list[np.ndarray], list[tuple[str, np.ndarray]]]:
    """Every weight and every optimizer variable (iterations, slots, a constant learning rate),
    in Keras's order; the names only label a failure (their layer counters differ per model)."""
    opt = t.model.optimizer
    return ([w.copy() for w in t.model.get_weights()],
            [(v.name, np.array(v.numpy())) for v in opt.variables])


@pytest.mark.parametrize("name", RESUMABLE)
def test_checkpoint_round_trip_restores_every_variable_and_continues_exactly(tiny, tmp_path, name):
    """A restored trial (a new Training, then load) holds exactly the saved weights and optimizer
    variables, and its next epoch equals the uninterrupted run's: the same shuffle order and
    dropout masks (drawn from the seed and the epoch alone), the same optimizer state."""
    hp = RESUMABLE[name]
    a = Training(hp, tiny, TrainConfig(epochs=2), seed=7)
    a.run_epoch()
    a.save(tmp_path)
    weights, optimizer = state_of(a)
    assert int(a.model.optimizer.iterations) == 9 and len(optimizer) > 2  # slots, not just counters
    assert all(np.any(value) for _, value in optimizer)  # none left at its zero start
    uninterrupted = a.run_epoch()

    b = Training(hp, tiny, TrainConfig(epochs=2), seed=7)
    b.load(tmp_path)
    got_weights, got_optimizer = state_of(b)
    assert len(got_weights) == len(weights) and all(map(np.array_equal, got_weights, weights))
    assert len(got_optimizer) == len(optimizer)
    for (key, value), (got_key, got) in zip(optimizer, got_optimizer):
        assert got.dtype == value.dtype and np.array_equal(got, value), (key, got_key)
    assert b.epoch == 1
    restored = b.run_epoch()
    assert restored["epoch"] == uninterrupted["epoch"] == 2 and restored["done"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):  # lr: the schedule's position
        assert restored[key] == pytest.approx(uninterrupted[key], rel=1e-5, abs=1e-5), key


def small(**update) -> Hyperparams:
    return Hyperparams(hidden_layers=1, units=8, batch_size=32).model_copy(update=update)


def checkpoint_of(hp: Hyperparams, data, directory: Path, iterations: int = 3) -> Training:
    """A checkpoint of `hp` whose optimizer has taken `iterations` steps (without training)."""
    directory.mkdir(exist_ok=True)
    t = Training(hp, data, TrainConfig(epochs=3), seed=1)
    t.model.optimizer.build(t.model.trainable_variables)
    t.model.optimizer.iterations.assign(iterations)
    t.save(directory)
    return t


def test_checkpoint_of_another_width_is_refused_naming_the_weight(tiny, tmp_path):
    from distune.trial.training import CheckpointMismatch

    checkpoint_of(small(units=16), tiny, tmp_path)
    t = Training(small(), tiny, TrainConfig(epochs=3), seed=2)
    before = t.model.get_weights()
    with pytest.raises(CheckpointMismatch, match=r"weight dense\S*/kernel is \(784, 16\) in the "
                       r"checkpoint, \(784, 8\) in this trial's model"):
        t.load(tmp_path)
    assert all(map(np.array_equal, before, t.model.get_weights())) and t.epoch == 0  # untouched


def test_checkpoint_of_another_optimizer_is_refused(tiny, tmp_path):
    from distune.errors import DistuneError

    checkpoint_of(small(optimizer="adam"), tiny, tmp_path)
    t = Training(small(optimizer="sgd", momentum=0.9), tiny, TrainConfig(epochs=3), seed=2)
    with pytest.raises(DistuneError, match=re.escape(f"checkpoint {tmp_path}: the checkpoint's "
                                                     "optimizer is Adam, this trial's SGD")):
        t.load(tmp_path)
    assert int(t.model.optimizer.iterations) == 0


def test_take_state_refuses_optimizer_state_that_does_not_fit(tiny):
    """Weights that fit, optimizer state that does not (AMSGrad keeps a third slot per weight):
    no longer skipped in silence."""
    import keras

    from distune.trial.model import build_model
    from distune.trial.training import CheckpointMismatch

    other = build_model(small(), 10, 3)
    other.compile(optimizer=keras.optimizers.Adam(amsgrad=True), loss="sparse_categorical_crossentropy")
    other.optimizer.build(other.trainable_variables)
    t = Training(small(), tiny, TrainConfig(epochs=3), seed=2)
    with pytest.raises(CheckpointMismatch, match=r"optimizer variable \S+kernel_velocity_hat is "
                       "only in the checkpoint"):
        t._take_state(other)


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_pbt_may_switch_momentum_on_or_off(tiny, tmp_path, optimizer):
    """Momentum is mutable (PBT) and its slots exist only while it is nonzero: a trial with
    momentum starts its own from rest on a donor without; one without drops the donor's."""
    checkpoint_of(small(optimizer=optimizer, momentum=0.0), tiny, tmp_path / "off")
    on = checkpoint_of(small(optimizer=optimizer, momentum=0.9), tiny, tmp_path / "on", iterations=5)
    t = Training(small(optimizer=optimizer, momentum=0.9), tiny, TrainConfig(epochs=3), seed=2)
    t.model.optimizer.build(t.model.trainable_variables)
    momenta = [v for v in t.model.optimizer.variables if v.name.endswith("_momentum")]
    for v in momenta:  # momentum of its own, which the donor's absence must reset
        v.assign(np.ones(v.shape, v.dtype))
    t.load(tmp_path / "off")
    assert int(t.model.optimizer.iterations) == 3 and momenta and not any(np.any(v.numpy()) for v in momenta)

    t = Training(small(optimizer=optimizer, momentum=0.0), tiny, TrainConfig(epochs=3), seed=2)
    t.load(tmp_path / "on")
    assert int(t.model.optimizer.iterations) == 5
    assert all(map(np.array_equal, on.model.get_weights(), t.model.get_weights()))


def test_same_config_and_seed_gives_the_same_curve(small_splits):
    curves = []
    for _ in range(2):
        t = Training(HP, small_splits.for_trials(), TrainConfig(epochs=2), seed=3)
        curves.append([t.run_epoch()["loss"] for _ in range(2)])
    assert curves[0] == pytest.approx(curves[1], rel=1e-5)


def test_an_epoch_trains_whole_batches_and_evaluates_in_equal_ones(tiny):
    """One compiled training step per model, not a second for a short last batch: 300 rows
    in batches of 32 train 288 (other rows left out each epoch); fewer rows than a batch train
    all of them; 6,000 validation images are scored in six batches of 1,000."""
    from distune.trial.training import eval_batch, epoch_rows

    t = Training(HP, tiny, TrainConfig(epochs=2), seed=0)
    first = t.begin_epoch()
    t.epoch = 1
    second = t.begin_epoch()
    assert len(first) == len(second) == 288 and set(first) != set(second)
    t.epoch = 0
    t.run_epoch()
    assert int(t.model.optimizer.iterations) == 9
    assert epoch_rows(20, 32) == 20 and epoch_rows(64, 32) == 64
    assert [eval_batch(n) for n in (6000, 300, 1024, 1025)] == [1000, 300, 1024, 513]


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
