"""Run by tests/test_fused.py under KERAS_BACKEND=jax: fused members against the same configs
trained alone (Keras's own fit), a diverging member, a member that raises, and a fused resume.
Prints one JSON line.

    python tests/fused_check.py MNIST_NPZ WORKDIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(mnist: str, work: str) -> dict:
    from distune.config import TrainConfig
    from distune.space import Hyperparams
    from distune.trial import Training, load_mnist
    from distune.trial.fused import FusedGroup

    # 384 training images: twelve whole batches of 32; nine of 40 (24 left out each epoch: whole batches)
    data = load_mnist(mnist, validation_split=0.25, train_subset=512, seed=0).for_trials()
    train = TrainConfig(epochs=3)
    configs = {  # as different as the space allows, batch sizes too (c's don't divide the rows)
        "a": (Hyperparams(hidden_layers=2, units=32, dropout=0.2, max_norm=3.0, batch_size=32,
                          learning_rate=3e-3, lr_schedule="exponential"), 7),
        "b": (Hyperparams(hidden_layers=1, units=16, batch_size=64), 8),  # diverges (NaN)
        "c": (Hyperparams(hidden_layers=1, units=24, activation="elu", optimizer="sgd",
                          momentum=0.9, learning_rate=1e-2, batch_size=40), 9),
        "d": (Hyperparams(hidden_layers=1, units=8, batch_size=32), 10),  # raises at epoch 2
    }
    make = lambda name: Training(configs[name][0], data, train, configs[name][1])  # noqa: E731
    weights = lambda t: t.model.get_weights()  # noqa: E731
    same = lambda u, v: all(map(np.array_equal, weights(u), weights(v)))  # noqa: E731
    out: dict = {}

    alone = {n: make(n) for n in "ac"}
    alone_curves = {n: [t.run_epoch() for _ in range(3)] for n, t in alone.items()}

    group = FusedGroup()
    for n in "abcd":
        group.add(n, make(n))
    poisoned = group.members["b"].model.trainable_variables[0]
    poisoned.assign(np.full(poisoned.shape, np.nan, "float32"))

    def broken(*args):
        raise RuntimeError("member d's own failure")

    rounds = [group.epoch(["a", "b", "c", "d"])]
    group.members["d"].end_epoch = broken
    rounds.append(group.epoch(["a", "b", "c", "d"]))
    group.remove("d")
    (Path(work) / "a1").mkdir()
    group.members["a"].save(Path(work) / "a1")  # after epoch 2 (a checkpoint mid-sweep)
    rounds.append(group.epoch(["a", "b", "c"]))

    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    out["curves_equal"] = {n: [[r[n][k] for k in keys] for r in rounds] ==
                           [[e[k] for k in keys] for e in alone_curves[n]] for n in "ac"}
    out["weights_equal"] = {n: same(group.members[n], alone[n]) for n in "ac"}
    out["fused"] = [r["a"]["fused"] for r in rounds]
    out["b_diverged"] = [r["b"]["diverged"] for r in rounds]
    out["b_loss_is_nan"] = bool(np.isnan(rounds[0]["b"]["loss"]))
    out["d_error"] = str(rounds[1]["d"]) if isinstance(rounds[1]["d"], Exception) else None
    out["d_first_epoch"] = rounds[0]["d"]["epoch"]

    # Resumed from its checkpoint in a new group: the same last epoch as the uninterrupted one.
    resumed = make("a")
    resumed.load(Path(work) / "a1")
    again = FusedGroup()
    again.add("a", resumed)
    last = again.epoch(["a"])["a"]
    out["resume_equal"] = [last[k] for k in keys] == [rounds[2]["a"][k] for k in keys] and same(resumed, group.members["a"])
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
