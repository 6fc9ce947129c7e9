"""Shared fixtures: the real MNIST file, small real slices of it, one Ray for in-process sweeps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distune.runner import QUIET_ENV

REPO = Path(__file__).resolve().parents[1]
for key, value in QUIET_ENV.items():
    os.environ.setdefault(key, value)


def mnist_file() -> Path:
    """$DISTUNE_MNIST, else the shared copy beside the repository (CI sets the variable)."""
    path = Path(os.environ.get("DISTUNE_MNIST", REPO.parent / "shared" / "data" / "mnist.npz"))
    if not path.is_file():
        pytest.exit(f"real MNIST not found at {path}; set DISTUNE_MNIST to Keras's mnist.npz", 2)
    return path


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    return mnist_file()


@pytest.fixture(scope="session")
def small_splits(mnist_path):
    from distune.data import load_mnist

    return load_mnist(str(mnist_path), validation_split=0.2, train_subset=1500, seed=0)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for every in-process sweep; the CLI tests start their own. Always a new
    one: never join a cluster some other test (or program) left running on this machine."""
    import ray

    from distune.training import configure_tensorflow

    configure_tensorflow()  # quiet TF in this process before any test imports it
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": dict(QUIET_ENV)})
    yield ray
    ray.shutdown()


def experiment(mnist_path, tmp_path, **sections):
    """A small, fast experiment on a real MNIST slice, with `sections` merged over it."""
    from distune.config import validate

    raw = {
        "data": {"path": str(mnist_path), "train_subset": 1200, "validation_split": 0.25},
        "model": {"architecture": "mlp", "space": {"hidden_layers": 1, "units": 32}},
        "train": {"epochs": 2},
        "search": {"searcher": "random", "num_samples": 2},
        "schedule": {"scheduler": "fifo"},
        "resources": {"cpus_per_trial": 1},
        "run": {"storage": str(tmp_path / "results"), "name": "t", "seed": 0},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return validate(raw, "test experiment")
