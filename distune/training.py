"""What one epoch of a trial does, and what a trial's checkpoint holds. No Ray here: the
Trainable wraps this, and the refit of the winner and the tests use it directly."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from distune.config import TrainConfig
from distune.errors import DistuneError
from distune.hyperparams import Hyperparams

MODEL_FILE = "model.keras"
STATE_FILE = "state.json"
BEST_WEIGHTS_FILE = "best_weights.npz"

_configured = False


def configure_tensorflow(threads: int | None = None) -> None:
    """Match TF's thread pools to the trial's CPUs and let trials share a GPU. Must run before
    TF executes any op; later calls in the same process (reused actors) do nothing."""
    global _configured
    if _configured:
        return
    _configured = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    with _stderr_silenced(os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"):
        # TF's C++ start-up lines ignore TF_CPP_MIN_LOG_LEVEL: silence the fd while it loads.
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3":
        tf.get_logger().setLevel("ERROR")  # e.g. retracing notes when a reused actor builds anew
    try:
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # TF already initialised in this process: keep its settings
        pass


@contextlib.contextmanager
def _stderr_silenced(active: bool):
    if not active:
        yield
        return
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def trial_seed(run_seed: int, config: dict[str, Any]) -> int:
    """Seed from the run's seed and the trial's config, so the same config retrains the same."""
    blob = json.dumps({"seed": run_seed, "config": config}, sort_keys=True, default=str)
    return int(hashlib.sha256(blob.encode()).hexdigest()[:8], 16)


class CorruptCheckpoint(DistuneError):
    """A checkpoint that cannot be loaded; the trial fails instead of training from garbage."""


def checkpoint_problem(directory: Path) -> str | None:
    """Why a checkpoint directory cannot be loaded, or None if it looks whole."""
    if not directory.is_dir():
        return f"checkpoint {directory} is missing"
    model, state = directory / MODEL_FILE, directory / STATE_FILE
    try:
        with zipfile.ZipFile(model) as z:
            if z.testzip() is not None:
                return f"checkpoint model {model} is corrupt (CRC error)"
        json.loads(state.read_text())["epoch"]
    except FileNotFoundError as e:
        return f"checkpoint {directory} lacks {Path(e.filename).name}"
    except (zipfile.BadZipFile, ValueError, KeyError, OSError) as e:
        return f"checkpoint {directory} is corrupt ({type(e).__name__}: {e})"
    return None


class Training:
    """One model, its data views and its epoch counter; `run_epoch` is one unit of Tune time."""

    def __init__(self, hp: Hyperparams, data: dict[str, np.ndarray], train: TrainConfig, seed: int):
        import keras

        from distune.model import build_model, input_shape

        self.hp, self.train, self.seed = hp, train, seed
        self.epochs = hp.epochs or train.epochs
        shape = (-1, *input_shape(hp.architecture))
        self.x, self.y = data["x_train"].reshape(shape), data["y_train"]
        self.x_val, self.y_val = data["x_val"].reshape(shape), data["y_val"]
        keras.utils.set_random_seed(seed)
        self.model = build_model(hp, math.ceil(len(self.x) / hp.batch_size), self.epochs)
        self.epoch = 0
        self.best_val_loss = math.inf
        self.wait = 0  # epochs since val_loss last improved
        self.best_weights: list[np.ndarray] | None = None

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch, score on validation, and say whether the trial is done and why."""
        import keras

        from distune.model import current_learning_rate

        order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.x))
        start = time.perf_counter()
        history = self.model.fit(self.x[order], self.y[order], batch_size=self.hp.batch_size,
                                 epochs=1, shuffle=False, verbose=0,
                                 callbacks=[keras.callbacks.TerminateOnNaN()])
        epoch_s = time.perf_counter() - start
        val_loss, val_accuracy = self.model.evaluate(self.x_val, self.y_val, batch_size=1024, verbose=0)
        self.epoch += 1
        loss = float(history.history["loss"][-1])
        metrics: dict[str, Any] = {
            "epoch": self.epoch,
            "loss": loss,
            "accuracy": float(history.history["accuracy"][-1]),
            "val_loss": float(val_loss),
            "val_accuracy": float(val_accuracy),
            "lr": current_learning_rate(self.model),
            "epoch_s": epoch_s,
            "samples_per_s": len(self.x) / epoch_s,
            "diverged": False,
            "early_stopped": False,
        }
        if not math.isfinite(loss) or loss > self.train.max_loss or not math.isfinite(val_loss):
            metrics["diverged"] = True
        elif self._early_stop(float(val_loss)):
            metrics["early_stopped"] = True
        metrics["done"] = metrics["diverged"] or metrics["early_stopped"] or self.epoch >= self.epochs
        return metrics

    def _early_stop(self, val_loss: float) -> bool:
        es = self.train.early_stopping
        if es is None:
            return False
        if val_loss < self.best_val_loss - es.min_delta:
            self.best_val_loss, self.wait = val_loss, 0
            self.best_weights = self.model.get_weights()
            return False
        self.wait += 1
        if self.wait >= es.patience:
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)
            return True
        return False

    def save(self, directory: str | Path) -> None:
        """Weights, optimizer state (iterations = LR schedule position) and the epoch counter."""
        d = Path(directory)
        self.model.save(d / MODEL_FILE)
        state = {"epoch": self.epoch, "best_val_loss": self.best_val_loss, "wait": self.wait,
                 "seed": self.seed}
        (d / STATE_FILE).write_text(json.dumps(state))
        if self.best_weights is not None:
            np.savez(d / BEST_WEIGHTS_FILE, *self.best_weights)

    def load(self, directory: str | Path) -> None:
        import keras

        d = Path(directory)
        problem = checkpoint_problem(d)
        if problem:
            raise CorruptCheckpoint(problem)
        saved = keras.saving.load_model(d / MODEL_FILE)
        self._take_state(saved)
        state = json.loads((d / STATE_FILE).read_text())
        self.epoch, self.best_val_loss, self.wait = state["epoch"], state["best_val_loss"], state["wait"]
        if (d / BEST_WEIGHTS_FILE).is_file():
            with np.load(d / BEST_WEIGHTS_FILE) as f:
                self.best_weights = [f[f"arr_{i}"] for i in range(len(f.files))]

    def _take_state(self, saved) -> None:
        """Weights and optimizer state from a saved model into this trial's model, which is built
        from the trial's own config: a resumed trial continues exactly, and a PBT trial that
        copies a better one keeps its own (mutated) learning rate, dropout or L2."""
        self.model.set_weights(saved.get_weights())
        mine, theirs = self.model.optimizer, saved.optimizer
        if type(mine) is not type(theirs):
            return
        mine.build(self.model.trainable_variables)
        for var, value in zip(mine.variables, theirs.variables):
            if not var.path.endswith("learning_rate") and var.shape == value.shape:
                var.assign(value)
