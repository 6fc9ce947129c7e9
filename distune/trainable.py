"""The Ray Tune face of a trial: `Training` behind Tune's Trainable protocol."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import tune

from distune.config import Experiment
from distune.hyperparams import Hyperparams
from distune.training import Training, configure_tensorflow, trial_seed


class MnistTrainable(tune.Trainable):
    """One Keras MNIST trial; each `step()` is one epoch. Built with `tune.with_parameters`, so
    the data arrive once per node through the object store, not once per trial."""

    def setup(self, config: dict[str, Any], experiment: Experiment, data: dict[str, np.ndarray]):
        self.experiment, self.data = experiment, data
        configure_tensorflow(max(1, int(experiment.resources.cpus_per_trial)))
        self._start(config)

    def _start(self, config: dict[str, Any]) -> None:
        config = {k: v.item() if hasattr(v, "item") else v for k, v in config.items()}  # numpy
        seed = trial_seed(self.experiment.run.seed, config)
        self.training = Training(Hyperparams.model_validate(config), self.data,
                                 self.experiment.train, seed)

    def step(self) -> dict[str, Any]:
        return self.training.run_epoch()

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.training.save(checkpoint_dir)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        self.training.load(checkpoint_dir)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this actor (and its imported TF) for the next trial, with a clean Keras state."""
        import keras

        del self.training
        keras.backend.clear_session()
        self._start(new_config)
        return True

    def cleanup(self) -> None:
        import keras

        keras.backend.clear_session()
