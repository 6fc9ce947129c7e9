"""The Ray Tune face of a trial: Tune's Trainable protocol, forwarded to a `Training` that
runs in the actor's child process (see distune.trial.worker for why)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from ray import tune

from distune.config.schema import Experiment
from distune.ops.environment import backend_environment
from distune.trial.usermodel import trial_inputs
from distune.trial.training import trial_hyperparams, trial_seed
from distune.trial.worker import TrainingProcess
from distune.results.values import plain


def training_environment(exp: Experiment) -> tuple[int, dict[str, str]]:
    """A trial's training threads, and what its process needs set before Keras is imported."""
    threads = max(1, int(exp.resources.cpus_per_trial))
    return threads, backend_environment(exp.train.backend, threads, float(exp.resources.gpus_per_trial))


class MnistTrainable(tune.Trainable):
    """One Keras MNIST trial; each `step()` is one epoch. Built with `tune.with_parameters`, so
    the data arrive once per node through the object store, not once per trial."""

    def setup(self, config: dict[str, Any], experiment: Experiment, data: dict[str, np.ndarray]):
        import ray

        self.experiment, self.node = experiment, ray.get_runtime_context().get_node_id()
        threads, env = training_environment(experiment)
        os.environ.update(env)  # for the child's Keras, imported after this
        self.process = TrainingProcess(data, threads=threads)
        self._start(config)

    def _start(self, config: dict[str, Any]) -> None:
        config = {k: plain(v) for k, v in config.items()}  # numpy scalars from some searchers
        exp = self.experiment
        hp, user = trial_inputs(exp.model.code, bool(exp.model.keras_tuner), trial_hyperparams(config))
        self.process.start(hp, exp.train, trial_seed(exp.run.seed, config), exp.search.cv_folds,
                           exp.run.seed, user)

    def step(self) -> dict[str, Any]:
        return {**self.process.call("run_epoch"), "training_pid": self.process.pid,
                "node_id": self.node}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.process.call("save", checkpoint_dir)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        self.process.call("load", checkpoint_dir)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this actor for the next trial; its child process starts a clean Keras model
        (and is itself replaced every few trials)."""
        self._start(new_config)
        return True

    def cleanup(self) -> None:
        self.process.close()
