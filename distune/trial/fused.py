"""Several trials' epochs as one JAX program: one fused step per batch trains every member.

Small models leave a device idle between their steps (one kernel launch or one Python dispatch
per layer and batch); fusing K members into one compiled step pays that once for K (HFTA,
MLSys 2021). Each member keeps its own Keras model, optimizer, learning-rate schedule, shuffle
order and dropout seeds (`Training.begin_epoch`), and its own gradients: the step is K of
Keras's own stateless `train_step`s side by side in one `jax.jit`, so a member's update is the
one it would get alone and a diverging member (NaN) cannot reach another's weights.

Members that join together form a cohort, compiled into one program once. A member that leaves,
or sits a round out, is switched off inside its cohort's program (`lax.cond`: its part does not
run) instead of recompiling the others: compiling costs as much as several epochs of a small
model, and a sweep's members come and go at every scheduler decision. No Ray here:
distune.trial.fuser serves this to Tune's trials.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from distune.trial.training import Training, epoch_steps


def group_key(training: Training) -> tuple:
    """Members share a program's inputs: the same view (shape) of the same training rows.
    Batch sizes may differ: each member steps through its own batches (`Cohort`)."""
    return (tuple(training.x.shape), len(training.rows))


SKIP, FULL, SHORT = 0, 1, 2  # a member's part in one fused step: none, a batch, its last short batch


class Cohort:
    """Members compiled into one program; `ids[k]` is None once member k has left. Step s
    trains member k on rows [s * b_k, (s + 1) * b_k) of its own order, with its own batch size
    b_k: a member of larger batches ends its epoch in fewer steps and sits the rest out, and
    its batches are exactly those Keras's fit would draw."""

    def __init__(self, ids: list[str], trainings: list[Training]) -> None:
        self.ids: list[str | None] = list(ids)
        self.models = [t.model for t in trainings]
        self.batches = [t.hp.batch_size for t in trainings]
        self.rest = [None] * len(ids)  # a departed member's last state: its part's inputs
        self._step = None

    def phases(self, active: np.ndarray, rows: int) -> np.ndarray:
        """(steps, members): each member's part in each step of an epoch over `rows` (whole
        batches, `epoch_steps`; one short batch where the rows make less than one)."""
        steps = max(epoch_steps(rows, b) for b, a in zip(self.batches, active) if a)
        table = np.full((steps, len(self.ids)), SKIP, np.int32)
        for k, (b, a) in enumerate(zip(self.batches, active)):
            if a:
                table[: rows // b, k] = FULL
                if rows < b:
                    table[0, k] = SHORT
        return table

    def step(self, rows: int):
        """The jitted fused step: every member's Keras train_step on its own batch, or nothing."""
        import jax
        from functools import partial

        if self._step is None:
            models, batches = self.models, self.batches

            @partial(jax.jit, donate_argnums=0)
            def step(states, phases, x, y, orders, s):
                logs, new = [], []
                for k, (model, b) in enumerate(zip(models, batches)):
                    def train(state, size, model=model, k=k, b=b):
                        rows_ = jax.lax.dynamic_slice_in_dim(orders[k], s * b, size)
                        return model.train_step(state, (x[rows_], y[rows_]))

                    full = partial(train, size=b)
                    short = partial(train, size=min(rows, b))
                    shape = jax.eval_shape(full, states[k])[0]

                    def skip(state, shape=shape):
                        return jax.tree.map(lambda v: jax.numpy.zeros(v.shape, v.dtype), shape), state

                    log, state = jax.lax.switch(phases[s, k], [skip, full, short], states[k])
                    logs.append(log)
                    new.append(state)
                return logs, new

            self._step = step
        return self._step


class FusedGroup:
    """Members that can share one step (same `group_key`); `epoch(ids)` trains those one epoch."""

    def __init__(self) -> None:
        self.members: dict[str, Training] = {}
        self.key: tuple | None = None
        self.cohorts: list[Cohort] = []
        self._data = None  # (x, y) on the device, shared by every member

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
        training = self.members.pop(member, None)
        for cohort in self.cohorts:
            if member in cohort.ids:
                k = cohort.ids.index(member)
                cohort.ids[k], cohort.rest[k] = None, _state(training.model)
        self.cohorts = [c for c in self.cohorts if any(c.ids)]

    def epoch(self, ids: list[str]) -> dict[str, dict[str, Any] | Exception]:
        """One epoch of each member in `ids`, fused; judged metrics (or the member's error)
        per id. Members not yet in a cohort form a new one. Should a fused program itself
        fail, nothing of it is kept and its members run their epoch alone, so one member's
        error stays its own."""
        placed = {i for c in self.cohorts for i in c.ids}
        new = [i for i in ids if i not in placed]
        if new:
            self.cohorts.append(Cohort(new, [self.members[i] for i in new]))
        out: dict[str, dict[str, Any] | Exception] = {}
        for cohort in self.cohorts:
            mine = [i for i in cohort.ids if i in ids]
            if mine:
                out.update(self._cohort_epoch(cohort, mine))
        return out

    def _cohort_epoch(self, cohort: Cohort, ids: list[str]) -> dict[str, dict[str, Any] | Exception]:
        try:
            states, logs, epoch_s = self._train(cohort, ids)
        except Exception:  # noqa: BLE001 - which member? each alone tells
            self.cohorts.remove(cohort)  # its members form a new one at their next round
            return {i: _alone(self.members[i]) for i in ids}
        out: dict[str, dict[str, Any] | Exception] = {}
        for k, i in enumerate(cohort.ids):
            if i not in ids:
                continue
            t = self.members[i]
            try:
                _set_state(t.model, states[k])
                # each member's share of the fused epoch's time
                metrics = t.end_epoch(float(logs[k]["loss"]), float(logs[k]["accuracy"]), epoch_s / len(ids))
                out[i] = {**t.judge(metrics), "fused": len(ids)}
            except Exception as e:  # noqa: BLE001 - that member's trial fails, alone
                out[i] = e
        return out

    def _train(self, cohort: Cohort, ids: list[str]):
        """The cohort's states after one fused epoch of the members in `ids` (the others'
        pass through unchanged; nothing is set in the models yet), the last step's logs (the
        epoch's means) and the epoch's seconds."""
        import jax

        if self._data is None:
            first = self.members[ids[0]]
            self._data = (jax.device_put(np.asarray(first.x)), jax.device_put(np.asarray(first.y)))
        x, y = self._data
        rows = self.key[1]
        active = np.array([i in ids for i in cohort.ids])
        orders = np.zeros((len(cohort.ids), rows), np.int32)
        states = []
        for k, i in enumerate(cohort.ids):
            if active[k]:
                t = self.members[i]
                order = t.begin_epoch()  # whole batches: the rest of its row stays unread
                orders[k, :len(order)] = order
                t.model.reset_metrics()
                states.append(_copy(_state(t.model)))
            else:  # sits this round out, or has left: its part does not run
                states.append(cohort.rest[k] if i is None else _copy(_state(self.members[i].model)))
        table = cohort.phases(active, rows)
        step = cohort.step(rows)
        start = time.perf_counter()
        phases, orders = jax.device_put(table), jax.device_put(orders)
        logs = [None] * len(states)
        for s in range(len(table)):
            out, states = step(states, phases, x, y, orders, s)
            logs = [out[k] if table[s, k] != SKIP else logs[k] for k in range(len(logs))]
        states = jax.block_until_ready(states)
        for k, i in enumerate(cohort.ids):
            if i is None:
                cohort.rest[k] = states[k]  # donated: keep the live copy
        return states, logs, time.perf_counter() - start


def _state(model):
    return model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                optimizer_variables=True, metrics_variables=True)


def _copy(state):
    """The step donates its input buffers; the models' own variables must survive a failed
    epoch (its members then train alone) and a round they sit out."""
    import jax

    return jax.tree.map(lambda a: a.copy(), state)


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
