"""The model builder: every hyperparameter value from the guides builds and trains a batch."""

from __future__ import annotations

import math
import typing

import keras
import numpy as np
import pytest

from distune.space import Activation, Hyperparams, Initializer, LRSchedule, Optimizer
from distune.trial import build_model, current_learning_rate, input_shape

CASES = (
    [{"activation": a} for a in typing.get_args(Activation)]
    + [{"initializer": i} for i in typing.get_args(Initializer)]
    + [{"optimizer": o} for o in typing.get_args(Optimizer)]
    + [{"optimizer": "sgd", "momentum": 0.9, "nesterov": True},
       {"optimizer": "rmsprop", "momentum": 0.5}]
    + [{"lr_schedule": s} for s in typing.get_args(LRSchedule)]
    + [{"dropout": 0.5, "max_norm": 3.0}, {"l2": 1e-4}, {"batch_norm": True},
       {"hidden_layers": 0}, {"hidden_layers": 3, "units": 16, "units_1": 64, "units_3": 8},
       {"batch_size": 1}, {"epochs": 1}]
    + [{"architecture": "cnn", "pooling": p} for p in ("max", "avg", "none")]
    + [{"architecture": "cnn", "conv_blocks": 3, "filters": 4, "filters_3": 5, "kernel_size": 5,
        "batch_norm": True, "hidden_layers": 1, "units": 16}]
)


def batch(splits, architecture, n=32):
    return splits.x_train[:n].reshape((-1, *input_shape(architecture))), splits.y_train[:n]


@pytest.mark.parametrize("overrides", CASES, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_builds_and_trains_one_batch(overrides, small_splits):
    base = {"hidden_layers": 1, "units": 16, "conv_blocks": 1, "filters": 4}
    hp = Hyperparams.model_validate({**base, **overrides})
    model = build_model(hp, steps_per_epoch=10, epochs=3)
    model.run_eagerly = True  # the same layers, optimizer and loss without tracing a graph (1 s a
    x, y = batch(small_splits, hp.architecture)  # case); every sweep trains the traced graph
    loss, acc = model.train_on_batch(x, y)
    assert math.isfinite(loss) and 0.0 <= acc <= 1.0
    assert model.output_shape == (None, 10)
    keras.backend.clear_session()


def test_layer_widths_and_filters_follow_per_layer_overrides():
    hp = Hyperparams(architecture="cnn", conv_blocks=3, filters=8, filters_2=12, hidden_layers=2,
                     units=20, units_2=7)
    model = build_model(hp, 10, 3)
    convs = [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    dense = [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert convs == [8, 12, 32] and dense == [20, 7, 10]


def test_max_norm_constraint_holds_after_training(small_splits):
    hp = Hyperparams(hidden_layers=1, units=32, max_norm=0.5, learning_rate=0.1, optimizer="sgd")
    model = build_model(hp, 10, 1)
    x, y = batch(small_splits, "mlp", 256)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    kernel = model.layers[1].kernel.numpy()
    assert np.linalg.norm(kernel, axis=0).max() <= 0.5 + 1e-5


@pytest.mark.parametrize("schedule,epoch,expected", [
    ("constant", 3, 0.1),
    ("exponential", 2, 0.1 * math.exp(-0.1 * 2)),  # lr0 * e^(-k t), k = lr_decay = 0.1
    ("step", 5, 0.05),  # halved every 5 epochs
    ("step", 4, 0.1),
    ("cosine", 10, 0.0),
    ("cosine", 5, 0.05),
    ("cosine_restarts", 2, 0.1),  # first cycle of 2 epochs ends: restart at lr0
])
def test_learning_rate_schedules(schedule, epoch, expected):
    spe = 10
    hp = Hyperparams(learning_rate=0.1, lr_schedule=schedule)
    model = build_model(hp, steps_per_epoch=spe, epochs=10)
    model.optimizer.iterations.assign(epoch * spe)
    assert current_learning_rate(model) == pytest.approx(expected, abs=1e-6)
