"""What one epoch of a trial does, and what a trial's checkpoint holds. No Ray here: the
Trainable wraps this, and the refit of the winner and the tests use it directly."""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distune.config.schema import MIN_FOLD_IMAGES, TrainConfig
from distune.errors import DistuneError
from distune.ops.environment import quiet_tensorflow, stderr_silenced
from distune.space.hyperparams import Hyperparams
from distune.results.layout import BEST_WEIGHTS_FILE, CHECKPOINT_MODEL_FILE, CV_FILE, STATE_FILE

if TYPE_CHECKING:
    from distune.trial.usermodel import UserModel

RETRAIN_KEYS = {"config", "seed"}  # a select-stage retrain's config (see trial_hyperparams)

_configured = False
_configuring = threading.Lock()
EVAL_BATCH = 1024  # most rows one evaluation batch holds


def epoch_rows(rows: int, batch_size: int) -> int:
    """Rows one epoch trains on: whole batches only, so that a model compiles one training
    step and not a second one for a short last batch (on JAX that second compile cost 3 s of
    CPU a config for the default preset's MLP, measured); each epoch's shuffle leaves out other
    rows. All of them when they make less than one batch."""
    return rows - rows % batch_size if rows > batch_size else rows


def epoch_steps(rows: int, batch_size: int) -> int:
    """Optimizer steps in one epoch over `rows` (`epoch_rows`: its last batch may be short
    only when there is one batch)."""
    return -(-epoch_rows(rows, batch_size) // batch_size)


def eval_batch(rows: int) -> int:
    """Evaluation in equal batches of at most EVAL_BATCH rows where the rows divide so (6,000
    validation images: six of 1,000): one compiled step instead of two."""
    return -(-rows // -(-rows // EVAL_BATCH))


def warm_up_tensorflow() -> None:
    """Configure TensorFlow in a background thread: a driver imports it (~6 s) while its
    trials train, not after them, when it tests the winner."""
    threading.Thread(target=configure_tensorflow, daemon=True, name="distune-tf-import").start()


def configure_tensorflow(threads: int | None = None) -> None:
    """Match TF's thread pools to the trial's CPUs and let trials share a GPU. Must run before
    TF executes any op; later calls in the same process (reused actors) do nothing; a call
    during a warm-up waits for it."""
    global _configured
    with _configuring:
        if not _configured:
            _configure(threads)
            _configured = True


def _configure(threads: int | None) -> None:
    tf = quiet_tensorflow()
    with stderr_silenced(os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"):
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


JAX_CACHE_DIR = f"distune-jax-cache-{os.getuid()}"  # under the temp dir, private (ops.private)
JAX_CACHE_MAX_BYTES = 1 << 30


def cache_jax_compilations(directory: Path | None = None) -> None:
    """For a trial's process on JAX, which compiles each model anew (2-5 s of CPU for the MLP
    here) and so lost its faster epochs on short trials: JAX's persistent cache keeps compiled
    steps on the node's disk, keyed by the program, and a later trial of the same shape, in
    any process, loads them. In a directory only this user can write (the files are machine
    code; `directory`: a benchmark's own); none, no cache."""
    import keras

    if keras.backend.backend() != "jax":
        return
    import jax

    from distune.ops.private import NotPrivate, private_dir

    try:
        directory = directory or private_dir(JAX_CACHE_DIR)
    except (NotPrivate, OSError):
        return
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # a trial's are ~0.1-1 s each
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", JAX_CACHE_MAX_BYTES)  # least recently used go


def import_keras() -> None:
    """Keras, its backend and the model builder imported, no op run: what distune.trial.zygote
    forks from. TensorFlow only where Keras runs on it ($KERAS_BACKEND, as the trial's
    environment sets it): a JAX training process never needs it (~3 s of CPU to import)."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        quiet_tensorflow()  # before Keras imports it, without its start-up lines
    importlib.import_module("distune.trial.model")


def configure_backend(threads: int) -> None:
    """A training process's threads and devices: TensorFlow's set here; JAX's come from its
    environment (ops.environment.backend_environment), its compilations are cached."""
    import keras

    if keras.backend.backend() == "tensorflow":
        configure_tensorflow(threads)
    cache_jax_compilations()


def set_random_seed(seed: int) -> None:
    """`keras.utils.set_random_seed`, which also seeds TensorFlow (for tf.data pipelines)
    when it can import it, without that import where Keras runs on another backend and
    TensorFlow is not loaded: distune feeds arrays, not tf.data, so such a process behaves as
    in an install without TensorFlow (Keras then skips that seed, as it would there)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        with _configuring:  # never while configure_tensorflow imports it in another thread
            if "tensorflow" not in sys.modules:
                sys.modules["tensorflow"] = None  # Python's way to make an import fail
                try:
                    keras.utils.set_random_seed(seed)
                finally:
                    del sys.modules["tensorflow"]
                return
    keras.utils.set_random_seed(seed)


def trial_seed(run_seed: int, config: dict[str, Any]) -> int:
    """Seed from the run's seed and the trial's config, so the same config retrains the same."""
    blob = json.dumps({"seed": run_seed, "config": config}, sort_keys=True, default=str)
    return int(hashlib.sha256(blob.encode()).hexdigest()[:8], 16)


def trial_hyperparams(config: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters in a trial's config. A select-stage retrain's config is
    {"config": hyperparameters, "seed": n}: n is no hyperparameter, it only makes `trial_seed`
    (which hashes the whole config) differ between the retrains of one config."""
    return config["config"] if set(config) == RETRAIN_KEYS else config


class CorruptCheckpoint(DistuneError):
    """A checkpoint that cannot be loaded; the trial fails instead of training from garbage."""


class CheckpointMismatch(CorruptCheckpoint):
    """A whole checkpoint whose weights or optimizer state do not fit this trial's model (another
    architecture or optimizer): the trial fails instead of continuing from half a state."""


def test_model(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Test loss, accuracy and each image's class probabilities (for the report's charts):
    the test set's one use, on the winner."""
    from distune.trial.model import labels_for, reshape_for

    x = reshape_for(model, x)
    loss, accuracy = model.evaluate(x, labels_for(model, y), batch_size=eval_batch(len(x)), verbose=0)
    return float(loss), float(accuracy), model.predict(x, batch_size=eval_batch(len(x)), verbose=0)


def test_saved_model(model_file: str | Path, x: np.ndarray, y: np.ndarray):
    import keras

    return test_model(keras.saving.load_model(model_file), x, y)


def checkpoint_problem(directory: Path) -> str | None:
    """Why a checkpoint directory cannot be loaded, or None if it looks whole."""
    if not directory.is_dir():
        return f"checkpoint {directory} is missing"
    model, state = directory / CHECKPOINT_MODEL_FILE, directory / STATE_FILE
    try:
        with zipfile.ZipFile(model) as z:
            if z.testzip() is not None:
                return f"checkpoint model {model} is corrupt (CRC error)"
        json.loads(state.read_text())["epoch"]
    except FileNotFoundError as e:
        return f"checkpoint {directory} lacks {Path(e.filename).name}"
    except (zipfile.BadZipFile, ValueError, KeyError, OSError) as e:
        return f"checkpoint {directory} is corrupt ({type(e).__name__}: {e})"
    if (directory / CV_FILE).is_file():  # cross-validated: folds 2..k live inside it
        try:
            folds = int(json.loads((directory / CV_FILE).read_text())["folds"])
        except (ValueError, KeyError, OSError) as e:
            return f"checkpoint {directory} is corrupt ({type(e).__name__}: {e})"
        return next(filter(None, (checkpoint_problem(directory / f"fold_{i}")
                                  for i in range(2, folds + 1))), None)
    return None


class Training:
    """One model, its data views and its epoch counter; `run_epoch` is one unit of Tune time."""

    def __init__(self, hp: Hyperparams, data: dict[str, np.ndarray], train: TrainConfig, seed: int,
                 rows: np.ndarray | None = None, user: UserModel | None = None):
        """`rows`: train on these rows of x_train only (a cross-validation fold, without a copy).
        `user`: the user's model function, else distune's own model for `hp`."""
        import keras

        from distune.trial.model import labels_for, reshape_for
        from distune.trial.usermodel import make_model

        self.hp, self.train, self.seed = hp, train, seed
        self.epochs = hp.epochs or train.epochs
        self.rows = np.arange(len(data["x_train"])) if rows is None else rows
        set_random_seed(seed)
        self.model = make_model(hp, user, epoch_steps(len(self.rows), hp.batch_size), self.epochs)
        self.x, self.y = reshape_for(self.model, data["x_train"]), labels_for(self.model, data["y_train"])
        self.x_val = reshape_for(self.model, data["x_val"])
        self.y_val = labels_for(self.model, data["y_val"])
        self.epoch = 0
        self.best_val_loss = math.inf
        self.wait = 0  # epochs since val_loss last improved
        self.best_weights: list[np.ndarray] | None = None

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch, score on validation, and say whether the trial is done and why."""
        return self.judge(self._epoch())

    def _epoch(self) -> dict[str, Any]:
        import keras

        order = self.begin_epoch()
        start = time.perf_counter()
        history = self.model.fit(self.x[order], self.y[order], batch_size=self.hp.batch_size,
                                 epochs=1, shuffle=False, verbose=0,
                                 callbacks=[keras.callbacks.TerminateOnNaN()])
        return self.end_epoch(history.history["loss"][-1], history.history["accuracy"][-1],
                              time.perf_counter() - start)

    def begin_epoch(self) -> np.ndarray:
        """This epoch's shuffle order (rows of x) and dropout masks, drawn from (seed, epoch)
        alone: the same for a trial trained alone, fused (distune.trial.fused) or resumed."""
        rng = np.random.default_rng((self.seed, self.epoch))
        order = self.rows[rng.permutation(len(self.rows))]
        self._seed_dropout()
        return order[:epoch_rows(len(order), self.hp.batch_size)]

    def end_epoch(self, loss: float, accuracy: float, epoch_s: float) -> dict[str, Any]:
        """Score the trained epoch on validation: the epoch's metrics, before judging."""
        import keras

        from distune.trial.model import current_learning_rate

        val_loss, val_accuracy = self.model.evaluate(self.x_val, self.y_val, batch_size=eval_batch(len(self.x_val)),
                                                     verbose=0)
        self.epoch += 1
        return {
            "epoch": self.epoch,
            "loss": float(loss),
            "accuracy": float(accuracy),
            "val_loss": float(val_loss),
            "val_accuracy": float(val_accuracy),
            "lr": current_learning_rate(self.model),
            "epoch_s": epoch_s,
            "samples_per_s": epoch_rows(len(self.rows), self.hp.batch_size) / epoch_s,
            "backend": keras.backend.backend(),
            "diverged": False,
        }

    def _seed_dropout(self) -> None:
        """Dropout masks of epoch e drawn from (seed, e) alone, as its shuffle order is: Keras
        keeps its seed generators' state in no checkpoint, so a resumed trial would otherwise
        draw epoch 1's masks again and drift from the uninterrupted run."""
        import keras

        generators = [g for layer in self.model.layers for g in vars(layer).values()
                      if isinstance(g, keras.random.SeedGenerator)]
        seeds = np.random.default_rng((self.seed, self.epoch, 1)).integers(1, 2**31, len(generators))
        for g, s in zip(generators, seeds):
            g.state.assign(np.array([s, 0], dtype=g.state.dtype))

    def judge(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Diverged, early-stopped or done, from the epoch's (possibly fold-averaged) metrics.
        Diverged on the validation loss at the epoch's end, not the epoch's mean training loss:
        on JAX, Keras clips probabilities, so a blown-up model's losses stay finite (~15) and
        its gradients vanish, where TensorFlow's go NaN; a spike it recovered from is not one."""
        loss, val_loss = metrics["loss"], metrics["val_loss"]
        metrics["early_stopped"] = False
        if (metrics["diverged"] or not math.isfinite(loss) or not math.isfinite(val_loss)
                or val_loss > self.train.max_loss):
            metrics["diverged"] = True
        elif self._early_stop(val_loss):
            metrics["early_stopped"] = True
        metrics["done"] = metrics["diverged"] or metrics["early_stopped"] or self.epoch >= self.epochs
        return metrics

    def _early_stop(self, val_loss: float) -> bool:
        es = self.train.early_stopping
        if es is None:
            return False
        if val_loss < self.best_val_loss - es.min_delta:
            self.best_val_loss, self.wait = val_loss, 0
            self._keep_best()
            return False
        self.wait += 1
        if self.wait >= es.patience:
            self._restore_best()
            return True
        return False

    def _keep_best(self) -> None:
        self.best_weights = self.model.get_weights()

    def _restore_best(self) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def save(self, directory: str | Path) -> None:
        """Weights, optimizer state (iterations = LR schedule position) and the epoch counter."""
        d = Path(directory)
        self.model.optimizer.build(self.model.trainable_variables)  # all its state, even at epoch 0
        self.model.save(d / CHECKPOINT_MODEL_FILE)
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
        saved = keras.saving.load_model(d / CHECKPOINT_MODEL_FILE)
        try:
            self._take_state(saved)
        except CheckpointMismatch as e:
            raise CheckpointMismatch(f"checkpoint {d}: {e}") from None
        state = json.loads((d / STATE_FILE).read_text())
        self.epoch, self.best_val_loss, self.wait = state["epoch"], state["best_val_loss"], state["wait"]
        if (d / BEST_WEIGHTS_FILE).is_file():
            with np.load(d / BEST_WEIGHTS_FILE) as f:
                self.best_weights = [f[f"arr_{i}"] for i in range(len(f.files))]

    def _take_state(self, saved) -> None:
        """Weights and optimizer state from a saved model into this trial's model, which is built
        from the trial's own config: a resumed trial continues exactly, and a PBT trial that
        copies a better one keeps its own (mutated) learning rate, dropout or L2. Everything is
        checked before anything is set: state that does not fit raises CheckpointMismatch."""
        weights = saved.get_weights()
        mine = self.model.weights
        if len(weights) != len(mine):
            raise CheckpointMismatch(f"the checkpoint holds {len(weights)} weight arrays, this "
                                     f"trial's model {len(mine)} (another architecture)")
        for var, value in zip(mine, weights):
            if tuple(var.shape) != value.shape:
                raise CheckpointMismatch(f"weight {var.path} is {value.shape} in the checkpoint, "
                                         f"{tuple(var.shape)} in this trial's model")
        pairs = _optimizer_pairs(self.model, saved)
        self.model.set_weights(weights)
        for var, value in pairs:
            var.assign(value)


# Optimizer slots that exist only while a hyperparameter PBT may mutate is nonzero: SGD's and
# RMSprop's momentum. One side without them is no mismatch if its momentum is 0.
_MOMENTUM_SLOT = "momentum"


def _optimizer_slots(model) -> dict[Any, Any]:
    """A built optimizer's variables keyed independently of layer names (which count up per
    process): (index of the trainable variable it tracks, slot) for per-variable state such
    as Adam's momentum and velocity, else its own name ("iteration", "learning_rate")."""
    prefixes = sorted(((v.path.replace("/", "_") + "_", i)
                       for i, v in enumerate(model.trainable_variables)), key=lambda p: -len(p[0]))
    slots = {}
    for var in model.optimizer.variables:
        name = var.path.split("/")[-1]
        slots[next(((i, name[len(p):]) for p, i in prefixes if name.startswith(p)), name)] = var
    return slots


def _optimizer_pairs(model, saved) -> list[tuple[Any, Any]]:
    """(this model's optimizer variable, the saved value) for every piece of optimizer state
    but the learning rate, which is the trial's own; CheckpointMismatch if the state does not
    fit: another optimizer, a slot only one side has, or a slot of another shape."""
    mine, theirs = model.optimizer, saved.optimizer
    if type(mine) is not type(theirs):
        raise CheckpointMismatch(f"the checkpoint's optimizer is {type(theirs).__name__}, "
                                 f"this trial's {type(mine).__name__}")
    mine.build(model.trainable_variables)
    theirs.build(saved.trainable_variables)
    own, saved_slots = _optimizer_slots(model), _optimizer_slots(saved)
    own.pop("learning_rate", None), saved_slots.pop("learning_rate", None)
    pairs = []
    for key in [*own, *(k for k in saved_slots if k not in own)]:
        var, value = own.get(key), saved_slots.get(key)
        if var is not None and value is not None:
            if tuple(var.shape) != tuple(value.shape):
                raise CheckpointMismatch(f"optimizer variable {value.path} is {tuple(value.shape)} "
                                         f"in the checkpoint, {tuple(var.shape)} in this trial's")
            pairs.append((var, value))
            continue
        lacking = theirs if var is not None else mine
        if not (isinstance(key, tuple) and key[1] == _MOMENTUM_SLOT
                and getattr(lacking, "momentum", None) == 0):
            name = (var if var is not None else value).path
            where = "this trial's optimizer" if var is not None else "the checkpoint"
            raise CheckpointMismatch(f"optimizer variable {name} is only in {where} "
                                     f"({type(mine).__name__} state of another kind)")
        if var is not None:  # the donor had no momentum: this trial starts its own from rest
            pairs.append((var, np.zeros(tuple(var.shape), var.dtype)))
    return pairs


class CrossValidated(Training):
    """k-fold cross-validation as one trial, with Training's interface (run_epoch, save, load).

    Train and validation are pooled and cut into k folds by a permutation seeded with the run's
    seed, so every trial of a sweep is scored on the same folds; the test set is never here.
    Each epoch trains the k fold models one epoch each and reports the mean of their metrics,
    plus `val_accuracy_std` and `val_loss_std` across folds. Early stopping and divergence are
    judged on the means. `model` (tested and exported if the trial wins) is fold 1's model; its
    checkpoint is fold 1's, holding folds 2..k in `fold_2/` ... `fold_k/` and the shared state in
    `cv.json`."""

    def __init__(self, hp: Hyperparams, data: dict[str, np.ndarray], train: TrainConfig, seed: int,
                 folds: int, fold_seed: int, user: UserModel | None = None):
        x = np.concatenate([data["x_train"], data["x_val"]])
        y = np.concatenate([data["y_train"], data["y_val"]])
        if len(x) // folds < MIN_FOLD_IMAGES:
            raise DistuneError(f"search.cv_folds: {folds} folds of {len(x)} images leave fewer "
                               f"than {MIN_FOLD_IMAGES} per fold; use fewer folds or more data.")
        parts = np.array_split(np.random.default_rng(fold_seed).permutation(len(x)), folds)
        per_fold = train.model_copy(update={"early_stopping": None})  # judged here, on the means
        self.folds = [
            Training(hp, {"x_train": x, "y_train": y, "x_val": x[val], "y_val": y[val]}, per_fold,
                     trial_seed(seed, {"fold": i}), rows=np.concatenate(parts[:i] + parts[i + 1:]),
                     user=user)
            for i, val in enumerate(parts)]
        self.hp, self.train, self.seed = hp, train, seed
        self.epochs, self.epoch = self.folds[0].epochs, 0
        self.best_val_loss, self.wait = math.inf, 0

    @property
    def model(self):
        return self.folds[0].model

    def _epoch(self) -> dict[str, Any]:
        results = [fold.run_epoch() for fold in self.folds]
        self.epoch += 1
        mean = {k: float(np.mean([r[k] for r in results]))
                for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        epoch_s = sum(r["epoch_s"] for r in results)
        return {"epoch": self.epoch, **mean,
                "val_accuracy_std": float(np.std([r["val_accuracy"] for r in results])),
                "val_loss_std": float(np.std([r["val_loss"] for r in results])),
                "lr": results[0]["lr"], "epoch_s": epoch_s, "backend": results[0]["backend"],
                "samples_per_s": sum(epoch_rows(len(f.rows), f.hp.batch_size) for f in self.folds) / epoch_s,
                "folds": len(self.folds), "diverged": any(r["diverged"] for r in results)}

    def _keep_best(self) -> None:
        for fold in self.folds:
            fold.best_weights = fold.model.get_weights()

    def _restore_best(self) -> None:
        for fold in self.folds:
            fold._restore_best()

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        for i, fold in enumerate(self.folds, 1):
            sub = d if i == 1 else d / f"fold_{i}"
            sub.mkdir(exist_ok=True)
            fold.save(sub)
        state = {"epoch": self.epoch, "best_val_loss": self.best_val_loss, "wait": self.wait,
                 "folds": len(self.folds)}
        (d / CV_FILE).write_text(json.dumps(state))

    def load(self, directory: str | Path) -> None:
        d = Path(directory)
        problem = checkpoint_problem(d) or (None if (d / CV_FILE).is_file() else
                                            f"checkpoint {d} is not a cross-validated one (no {CV_FILE})")
        if problem:
            raise CorruptCheckpoint(problem)
        state = json.loads((d / CV_FILE).read_text())
        if state["folds"] != len(self.folds):
            raise CorruptCheckpoint(f"checkpoint {d} holds {state['folds']} folds, not {len(self.folds)}")
        for i, fold in enumerate(self.folds, 1):
            fold.load(d if i == 1 else d / f"fold_{i}")
        self.epoch, self.best_val_loss, self.wait = state["epoch"], state["best_val_loss"], state["wait"]


def make_training(hp: Hyperparams, data: dict[str, np.ndarray], train: TrainConfig, seed: int,
                  folds: int = 1, fold_seed: int = 0, user: UserModel | None = None) -> Training:
    """One validation split, or k-fold cross-validation (search.cv_folds) seeded by fold_seed."""
    if folds > 1:
        return CrossValidated(hp, data, train, seed, folds, fold_seed, user)
    return Training(hp, data, train, seed, user=user)
