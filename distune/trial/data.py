"""MNIST: find it, check it, split it. The test split never reaches a trial.

Order of sources: an explicit file (data.path / --data, then $DISTUNE_MNIST), Keras's cache
(~/.keras/datasets/mnist.npz, or $KERAS_HOME), Keras's download. All use Keras's npz layout.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distune.errors import DistuneError

ENV_VAR = "DISTUNE_MNIST"
SHAPES = {"x_train": (28, 28), "y_train": (), "x_test": (28, 28), "y_test": ()}
HOW_TO_PROVIDE = (f"Pass --data PATH (or set data.path, or the environment variable {ENV_VAR}) to a "
                  "file in Keras's mnist.npz layout (x_train, y_train, x_test, y_test), or run once "
                  "with internet access so Keras can download it.")


@dataclass(frozen=True)
class Splits:
    """Pixels as float32 in [0, 1], shape (n, 28, 28); labels as uint8. Trials see train and val."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def for_trials(self) -> dict[str, np.ndarray]:
        return {"x_train": self.x_train, "y_train": self.y_train,
                "x_val": self.x_val, "y_val": self.y_val}


def keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "mnist.npz"


def find_mnist(path: str | None) -> Path | None:
    """The file to read, or None when only Keras's download is left."""
    explicit = path or os.environ.get(ENV_VAR)
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            source = "data.path" if path else f"${ENV_VAR}"
            raise DistuneError(f"{source}: MNIST file not found: {p}. {HOW_TO_PROVIDE}")
        return p
    return keras_cache() if keras_cache().is_file() else None


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read and check a Keras-layout MNIST file; any defect is one clear error."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in SHAPES if k not in f.files]
            if missing:
                raise DistuneError(f"{path}: not an MNIST file: missing arrays {', '.join(missing)} "
                                   f"(found {', '.join(f.files) or 'none'}). {HOW_TO_PROVIDE}")
            arrays = {k: f[k] for k in SHAPES}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DistuneError(f"{path}: cannot read it as an .npz file ({e}). {HOW_TO_PROVIDE}") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (len(x),) or len(x) == 0:
            raise DistuneError(f"{path}: x_{split} must be (n, 28, 28) and y_{split} (n,), got "
                               f"{x.shape} and {y.shape}. {HOW_TO_PROVIDE}")
        if y.min() < 0 or y.max() > 9:
            raise DistuneError(f"{path}: y_{split} holds labels outside 0..9. {HOW_TO_PROVIDE}")
    return arrays


def download() -> dict[str, np.ndarray]:
    """Keras's own loader (downloads into its cache); offline this fails with our advice."""
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as e:  # network errors come in many types
        raise DistuneError(f"MNIST is not on this machine and Keras could not download it "
                           f"({type(e).__name__}). {HOW_TO_PROVIDE}") from None
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def load_mnist(path: str | None = None, validation_split: float = 0.1,
               train_subset: int | None = None, seed: int = 0) -> Splits:
    """Load, scale to [0, 1] and carve a seeded, stratification-free validation split."""
    file = find_mnist(path)
    arrays = read_npz(file) if file else download()
    x, y = arrays["x_train"], arrays["y_train"].astype(np.uint8)
    if train_subset is not None:
        x, y = x[:train_subset], y[:train_subset]
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * validation_split)))
    val, train = order[:n_val], order[n_val:]
    scale = lambda a: (a.astype(np.float32) / np.float32(255.0))  # noqa: E731
    return Splits(scale(x[train]), y[train], scale(x[val]), y[val],
                  scale(arrays["x_test"]), arrays["y_test"].astype(np.uint8))
