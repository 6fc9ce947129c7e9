"""Several trials' epochs as one JAX program: one fused step per batch trains every member.

Small models leave a device idle between their steps (one kernel launch or one Python dispatch
per layer and batch); fusing K members into one compiled step pays that once for K (HFTA,
MLSys 2021). Each member keeps its own Keras model, optimizer, learning-rate schedule, shuffle
order and dropout seeds (`Training.begin_epoch`), and its own gradients: the step is K of
Keras's own stateless `train_step`s side by side in one `jax.jit`, so a member's update is the
one it would get alone and a diverging member (NaN) cannot reach another's weights. No Ray
here: distune.trial.fuser serves this to Tune's trials.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from distune.trial.training import Training

MAX_PROGRAMS = 8  # compiled steps kept per group (one per membership seen lately)


def group_key(training: Training) -> tuple:
    """Members share a program's batch: same batch size and input view of the same rows."""
    return (training.hp.batch_size, tuple(training.x.shape), len(training.rows))


class FusedGroup:
    """Members that can share one step (same `group_key`); `epoch(ids)` trains those one epoch."""

    def __init__(self) -> None:
        self.members: dict[str, Training] = {}
        self.key: tuple | None = None
        self._data = None  # (x, y) on the device, shared by every member
        self._programs: dict[tuple, Any] = {}

    def add(self, member: str, training: Training) -> None:
        key = group_key(training)
        if self.members and key != self.key:
            raise ValueError(f"member {member} has batch size/data {key}, the group {self.key}")
        if not self.members:
            self.key, self._data = key, None
        self.members[member] = training
        training.model._symbolic_build(data_batch=(training.x[:1], training.y[:1]))
        training.model.optimizer.build(training.model.trainable_variables)

    def remove(self, member: str) -> None:
        self.members.pop(member, None)
        self._programs = {k: v for k, v in self._programs.items() if member not in k}

    def epoch(self, ids: list[str]) -> dict[str, dict[str, Any] | Exception]:
        """One epoch of each member in `ids`, fused; judged metrics (or the member's error)
        per id. Should the fused program itself fail, nothing of it is kept and each member
        runs its epoch alone, so one member's error stays its own."""
        trainings = [self.members[i] for i in ids]
        try:
            states, logs, epoch_s = self._train(tuple(ids), trainings)
        except Exception:  # noqa: BLE001 - which member? each alone tells
            return {i: _alone(t) for i, t in zip(ids, trainings)}
        out: dict[str, dict[str, Any] | Exception] = {}
        for i, t, state, log in zip(ids, trainings, states, logs):
            try:
                _set_state(t.model, state)
                # each member's share of the fused epoch's time
                metrics = t.end_epoch(float(log["loss"]), float(log["accuracy"]), epoch_s / len(ids))
                out[i] = {**t.judge(metrics), "fused": len(ids)}
            except Exception as e:  # noqa: BLE001 - that member's trial fails, alone
                out[i] = e
        return out

    def _train(self, ids: tuple[str, ...], trainings: list[Training]):
        """The members' states after one fused epoch (nothing set in their models yet), the
        last step's logs (the epoch's means) and the epoch's seconds."""
        import jax

        if self._data is None:
            first = trainings[0]
            self._data = (jax.device_put(np.asarray(first.x)), jax.device_put(np.asarray(first.y)))
        x, y = self._data
        orders = np.stack([t.begin_epoch() for t in trainings]).astype(np.int32)
        models = [t.model for t in trainings]
        for m in models:
            m.reset_metrics()
        states = [m._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                   optimizer_variables=True, metrics_variables=True) for m in models]
        step = self._program(ids, models)
        batch, rows = self.key[0], orders.shape[1]
        start = time.perf_counter()
        orders = jax.device_put(orders)
        logs = None
        for begin in range(0, rows, batch):  # the last batch may be short, as in fit()
            logs, states = step(states, x, y, orders, begin, min(batch, rows - begin))
        states = jax.block_until_ready(states)
        return states, logs, time.perf_counter() - start

    def _program(self, ids: tuple[str, ...], models: list):
        """The jitted fused step for this membership: K Keras train_steps side by side."""
        import jax
        from functools import partial

        if ids not in self._programs:
            @partial(jax.jit, static_argnames="size", donate_argnums=0)
            def step(states, x, y, orders, begin, size):
                logs, new = [], []
                for k, model in enumerate(models):
                    rows = jax.lax.dynamic_slice_in_dim(orders[k], begin, size)
                    log, state = model.train_step(states[k], (x[rows], y[rows]))
                    logs.append(log)
                    new.append(state)
                return logs, new

            while len(self._programs) >= MAX_PROGRAMS:
                self._programs.pop(next(iter(self._programs)))
            self._programs[ids] = step
        return self._programs[ids]


def _alone(training: Training) -> dict[str, Any] | Exception:
    try:
        return {**training.run_epoch(), "fused": 1}
    except Exception as e:  # noqa: BLE001 - that member's trial fails, alone
        return e


def _set_state(model, state) -> None:
    """A member's trained state back into its Keras variables (as fit() does at epoch end)."""
    trainable, non_trainable, optimizer, metrics = state
    for groups, values in ((model.trainable_variables, trainable),
                           (model.non_trainable_variables, non_trainable),
                           (model.optimizer.variables, optimizer),
                           (model.metrics_variables, metrics)):
        for var, value in zip(groups, values):
            var.assign(value)
