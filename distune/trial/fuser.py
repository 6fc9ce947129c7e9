"""Fused trials on Ray (resources.fuse: K): each trial stays an ordinary Tune trial, a thin
actor whose `step()` asks its node's fuser for one epoch; the fuser trains every member that
asked together (distune.trial.fused) and answers each with its own metrics.

Why this shape: Tune's searchers, schedulers, checkpoints, PBT, results and resume all work per
trial, and keep working unchanged if the trial stays the unit; only the compute is pooled. So:
- a `Placement` actor (owned by the driver, so it and its fusers end with the sweep) puts a new
  member in a fuser on the member's own node and GPUs that has room for it; a CPU node's
  fusers start with the sweep, one per slot, so their imports overlap Tune's start-up;
- a `Fuser` is one process per slot (Keras on JAX, the slot's threads) holding up to K members
  in fused programs (distune.trial.fused). An epoch round starts when every member
  it holds has asked, or a short wait after the first asked: a member whose trial Tune paused
  or stopped (and whose actor it keeps for reuse) holds no one up for long, and is left out of
  later rounds until it asks again;
- members pay for the slot: each asks Ray for 1/K of cpus_per_trial and gpus_per_trial, so Ray
  places K of them where one unfused trial would run, and frees 1/K when a scheduler stops one:
  a new trial takes that place at the fuser's next round;
- checkpoints are the ordinary trial's (`Training.save` writes the trial's own directory, on
  the same node), so resume, PBT's exploit, the winner's test and export see no difference;
- a fuser that dies fails each member's step; Tune retries each from its own last checkpoint,
  in a new fuser.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from ray import tune

from distune.config.schema import Experiment
from distune.results.values import plain
from distune.trial.training import trial_hyperparams, trial_seed
from distune.trial.usermodel import trial_inputs
from distune.trial.worker import share_arrays

PATIENCE_S = 1.0  # wait this long (or a quarter of the last round) for the rest of a round
JOIN_PATIENCE_S = 5.0  # and this long for a member placed here that is still joining: members
# that join together share one compiled program (distune.trial.fused), the others never do


class Fuser:
    """One fused training process on a node (a Ray actor; see the module's docstring)."""

    def __init__(self) -> None:
        from distune.trial.training import cache_jax_compilations

        import keras  # noqa: F401 - imported while Tune starts, not when the first member joins

        cache_jax_compilations()
        self.data: dict | None = None
        self.groups: dict[tuple, Any] = {}  # group key -> FusedGroup (distune.trial.fused)
        self.keys: dict[str, tuple] = {}  # member -> its group's key
        self.keras = threading.Lock()  # one member's Keras work at a time
        self.cond = threading.Condition()
        self.asked: dict[str, float] = {}  # member -> when it asked for its next epoch
        self.idle: set[str] = set()  # left out of the last round for not asking in time
        self.coming: set[str] = set()  # placed here by Placement, not joined yet
        self.results: dict[str, Any] = {}
        self.running = False
        self.last_round_s = self.last_round_end = 0.0

    def expect(self, member: str) -> None:
        """Placement put `member` here: a round about to start waits a little for it."""
        with self.cond:
            if member not in self.keys:
                self.coming.add(member)

    def join(self, member: str, hp, train, seed: int, data_dir: str) -> int:
        """Build the member's model into the group of its input view; this process's id."""
        import os
        from pathlib import Path

        from distune.trial.child import load_arrays
        from distune.trial.fused import FusedGroup, group_key
        from distune.trial.training import Training

        with self.keras:
            if self.data is None:
                self.data = load_arrays(Path(data_dir))
            training = Training(hp, self.data, train, seed)
            key = group_key(training)
            self.groups.setdefault(key, FusedGroup()).add(member, training)
            self.keys[member] = key
        with self.cond:
            self.coming.discard(member)
            self.cond.notify_all()
        return os.getpid()

    def leave(self, member: str) -> None:
        with self.keras:
            key = self.keys.pop(member, None)
            if key is not None:
                self.groups[key].remove(member)
                if not self.groups[key].members:
                    del self.groups[key]
        with self.cond:
            self.asked.pop(member, None)
            self.idle.discard(member)
            self.coming.discard(member)
            self.cond.notify_all()

    def _training(self, member: str):
        return self.groups[self.keys[member]].members[member]

    def save(self, member: str, directory: str) -> None:
        with self.keras:
            self._training(member).save(directory)

    def load(self, member: str, directory: str) -> None:
        with self.keras:
            self._training(member).load(directory)

    def epoch(self, member: str) -> dict[str, Any]:
        """Block until a round has trained this member one epoch; its metrics (or its error)."""
        with self.cond:
            self.asked[member] = time.monotonic()
            self.idle.discard(member)
            self.cond.notify_all()
            while member not in self.results:
                if not self.running and member in self.asked and self._due():
                    self._round()
                else:
                    self.cond.wait(timeout=0.05)
            result = self.results.pop(member)
        if isinstance(result, Exception):
            raise result
        return result

    def _due(self) -> bool:
        waiting = [m for m in [*self.keys, *self.coming] if m not in self.idle]
        if all(m in self.asked for m in waiting):
            return True
        # counted from the first ask, or from the last round's end for a member that asked
        # during it (else members that fell out of step would alternate, never fused again)
        patience = max(PATIENCE_S, self.last_round_s / 4)
        if any(m in self.coming for m in waiting):
            patience = max(patience, JOIN_PATIENCE_S)
        return time.monotonic() - max(min(self.asked.values()), self.last_round_end) >= patience

    def _round(self) -> None:
        """Train every member that asked (called holding `cond`, released while training)."""
        ids = sorted(m for m in self.asked if m in self.keys)
        self.idle |= (set(self.keys) | self.coming) - set(ids)
        self.asked = {m: t for m, t in self.asked.items() if m not in ids}
        self.running = True
        self.cond.release()
        start = time.monotonic()
        out: dict[str, Any] = {}
        try:
            with self.keras:
                for key, group in list(self.groups.items()):  # mlp and cnn members apart
                    if mine := [m for m in ids if self.keys.get(m) == key]:
                        out.update(group.epoch(mine))
        except Exception as e:  # noqa: BLE001 - not one member's: every member's step fails
            out = {m: out.get(m, e) for m in ids}
        finally:
            self.cond.acquire()
            self.running = False
        self.last_round_end = time.monotonic()
        self.last_round_s = self.last_round_end - start
        for m in ids:
            result = out[m]
            self.results[m] = result
        self.cond.notify_all()


class Placement:
    """Which fuser a new member joins (a Ray actor owned by the driver; see the module)."""

    def __init__(self, fuse: int, env: dict[str, str], warm: dict[str, int]) -> None:
        """`warm`: fusers to start at once per node (CPU nodes: their slots), so their Keras
        and JAX import overlaps Tune's start-up instead of delaying the first epoch."""
        self.fuse, self.env = fuse, env
        self.fusers: dict[str, dict] = {}  # id -> {"handle", "where", "members"}
        for node, count in warm.items():
            for _ in range(count):
                self._start((node, ()))

    def place(self, where: tuple, member: str):
        """(fuser id, handle) for `member`: the fuser on its node and GPUs with the most
        members that still has room (a slot fills before the next one opens); else a new one."""
        open_ = [f for f in self.fusers.values() if f["where"] == where and len(f["members"]) < self.fuse]
        chosen = max(open_, key=lambda f: len(f["members"]), default=None) or self._start(where)
        chosen["members"].add(member)
        chosen["handle"].expect.remote(member)
        return chosen["id"], chosen["handle"]

    def release(self, member: str) -> None:
        for f in self.fusers.values():
            f["members"].discard(member)

    def forget(self, fuser_id: str) -> None:
        """A fuser that died: its members are retried elsewhere, new ones never go there."""
        self.fusers.pop(fuser_id, None)

    def _start(self, where: tuple) -> dict:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node, gpus = where
        env = dict(self.env)
        if gpus:  # the members' own GPUs, which Ray does not give a zero-GPU actor
            env.update(CUDA_VISIBLE_DEVICES=",".join(gpus),
                       RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES="1",
                       XLA_PYTHON_CLIENT_PREALLOCATE="false")
        handle = ray.remote(Fuser).options(
            num_cpus=0, max_concurrency=4 * self.fuse + 4,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            runtime_env={"env_vars": env}).remote()
        fuser = {"id": uuid.uuid4().hex[:8], "handle": handle, "where": where, "members": set()}
        self.fusers[fuser["id"]] = fuser
        return fuser


class FusedTrainable(tune.Trainable):
    """One fused trial: Tune's Trainable protocol, forwarded to its member in a `Fuser`."""

    def setup(self, config: dict[str, Any], experiment: Experiment, data: dict, placement):
        import ray

        self.experiment, self.placement = experiment, placement
        self.where = (ray.get_runtime_context().get_node_id(), tuple(map(str, ray.get_gpu_ids())))
        self.data_dir = str(share_arrays(data))
        self.member = None
        self._join(config)

    def _join(self, config: dict[str, Any]) -> None:
        import ray
        from ray.exceptions import RayActorError

        exp = self.experiment
        config = {k: plain(v) for k, v in config.items()}
        hp, _ = trial_inputs(None, False, trial_hyperparams(config))
        self.member = f"{self.trial_id}-{uuid.uuid4().hex[:6]}"
        for attempt in range(2):
            fuser_id, self.fuser = ray.get(self.placement.place.remote(self.where, self.member))
            try:
                self.pid = ray.get(self.fuser.join.remote(self.member, hp, exp.train,
                                                          trial_seed(exp.run.seed, config),
                                                          self.data_dir))
                return
            except RayActorError:
                self.placement.forget.remote(fuser_id)
                if attempt:
                    raise

    def step(self) -> dict[str, Any]:
        import ray

        return {**ray.get(self.fuser.epoch.remote(self.member)), "training_pid": self.pid,
                "node_id": self.where[0]}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        import ray

        ray.get(self.fuser.save.remote(self.member, checkpoint_dir))

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        import ray

        ray.get(self.fuser.load.remote(self.member, checkpoint_dir))

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reused for the next trial (or PBT's exploit): leave, and join as a new member."""
        self._leave()
        self._join(new_config)
        return True

    def cleanup(self) -> None:
        self._leave()

    def _leave(self) -> None:
        if self.member is not None:
            self.fuser.leave.remote(self.member)
            self.placement.release.remote(self.member)
            self.member = None

