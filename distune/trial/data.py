"""MNIST: find it, check it, split it. The test split never reaches a trial.

Order of sources: an explicit file (data.path / --data, then $DISTUNE_MNIST), Keras's cache
(~/.keras/datasets/mnist.npz, or $KERAS_HOME), Keras's download. All use Keras's npz layout.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from distune.errors import DistuneError, clip

ENV_VAR = "DISTUNE_MNIST"
SHAPES = {"x_train": (28, 28), "y_train": (), "x_test": (28, 28), "y_test": ()}
MAX_IMAGES = 10_000_000  # MNIST has 70,000: a header claiming more is a broken file, not MNIST
HEADER_READERS = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
# What reading a broken zip or .npy raises (zlib: corrupt compressed data; RuntimeError: encrypted).
UNREADABLE = (zipfile.BadZipFile, OSError, ValueError, EOFError, MemoryError, RuntimeError,
              NotImplementedError, zlib.error)
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
    """Read and check a Keras-layout MNIST file; any defect is one clear error. Shapes and
    dtypes are checked from the arrays' headers first: a header may claim terabytes."""
    try:
        _check_headers(path)
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in SHAPES}
    except UNREADABLE as e:  # numpy's own advice (to allow pickles) is not ours to give
        detail = "" if "pickle" in str(e) else f" ({clip(str(e))})"
        raise DistuneError(f"{path}: cannot read it as an .npz file{detail}. {HOW_TO_PROVIDE}") from None
    for split in ("train", "test"):
        y = arrays[f"y_{split}"]
        if y.min() < 0 or y.max() > 9:
            raise DistuneError(f"{path}: y_{split} holds labels outside 0..9. {HOW_TO_PROVIDE}")
    return arrays


def _check_headers(path: Path) -> None:
    """Every array there, each (n, 28, 28) or (n,) numbers, n at most MAX_IMAGES and within
    what the file holds: read from the .npy headers inside the zip, no data read yet."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DistuneError(f"{path}: cannot read it as an .npz file: it is not a zip of .npy arrays, "
                           f"as numpy.savez writes and Keras's mnist.npz is. {HOW_TO_PROVIDE}") from None
    with archive:
        members = {n.removesuffix(".npy"): n for n in archive.namelist()}
        missing = [k for k in SHAPES if k not in members]
        if missing:
            raise DistuneError(f"{path}: not an MNIST file: missing arrays {', '.join(missing)} "
                               f"(found {clip(', '.join(members)) or 'none'}). {HOW_TO_PROVIDE}")
        headers = {k: _header(archive, members[k]) for k in SHAPES}
    for split in ("train", "test"):
        (x, _, _), (y, _, _) = headers[f"x_{split}"], headers[f"y_{split}"]
        if len(x) != 3 or x[1:] != (28, 28) or y != x[:1] or x[0] == 0:
            raise DistuneError(f"{path}: x_{split} must be (n, 28, 28) and y_{split} (n,), got "
                               f"{clip(str(x))} and {clip(str(y))}. {HOW_TO_PROVIDE}")
        if x[0] > MAX_IMAGES:
            raise DistuneError(f"{path}: x_{split} claims {x[0]} images, more than {MAX_IMAGES} "
                               f"(MNIST has 70,000 in all): not an MNIST file. {HOW_TO_PROVIDE}")
    for name, (shape, dtype, held) in headers.items():
        if dtype.kind not in "biuf":
            raise DistuneError(f"{path}: {name} must hold numbers, not {dtype}. {HOW_TO_PROVIDE}")
        if (claimed := math.prod(shape) * dtype.itemsize) > held:
            raise DistuneError(f"{path}: {name} is cut short: its header claims {claimed} bytes, "
                               f"the file holds {held}. {HOW_TO_PROVIDE}")


def _header(archive: zipfile.ZipFile, member: str) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, bytes the member holds) from a .npy member; ValueError if it is none."""
    with archive.open(member) as fp:
        read = HEADER_READERS.get(npy.read_magic(fp))
        if read is None:
            raise ValueError(f"{member}: not a .npy array as numpy.savez writes them")
        shape, _, dtype = read(fp)
    return shape, dtype, archive.getinfo(member).file_size


def download() -> dict[str, np.ndarray]:
    """Keras's own loader (downloads into its cache); offline this fails with our advice."""
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as e:  # network errors come in many types
        raise DistuneError(f"MNIST is not on this machine and Keras could not download it "
                           f"({type(e).__name__}). {HOW_TO_PROVIDE}") from None
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def check_subset(train_subset: int | None, available: int, file: Path | None) -> None:
    """data.train_subset must not ask for more images than the file has (or all would be used)."""
    if train_subset is not None and train_subset > available:
        raise DistuneError(f"data.train_subset: {train_subset} training images asked for, but "
                           f"{file or 'MNIST'} has {available}; use at most {available}, or drop "
                           "data.train_subset to train on them all.")


def load_mnist(path: str | None = None, validation_split: float = 0.1,
               train_subset: int | None = None, seed: int = 0) -> Splits:
    """Load, scale to [0, 1] and carve a seeded, stratification-free validation split."""
    file = find_mnist(path)
    arrays = read_npz(file) if file else download()
    x, y = arrays["x_train"], arrays["y_train"].astype(np.uint8)
    check_subset(train_subset, len(x), file)
    if train_subset is not None:
        x, y = x[:train_subset], y[:train_subset]
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * validation_split)))
    val, train = order[:n_val], order[n_val:]
    scale = lambda a: (a.astype(np.float32) / np.float32(255.0))  # noqa: E731
    return Splits(scale(x[train]), y[train], scale(x[val]), y[val],
                  scale(arrays["x_test"]), arrays["y_test"].astype(np.uint8))
