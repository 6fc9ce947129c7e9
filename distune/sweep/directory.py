"""An experiment's directory on this machine: where it is, making it (never over a finished
one without --overwrite), the data its trials train on, and checkpoints that cannot be read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

from distune.config.schema import Experiment, storage_root
from distune.errors import DistuneError
from distune.ops.storage import (checkpoint_path, is_uri, join, local_copy, mirror,
                                 prepare_remote, remote_of, taken_error)
from distune.results.table import open_analysis
from distune.trial.data import load_mnist
from distune.trial.training import checkpoint_problem

def experiment_dir(exp: Experiment) -> Path:
    """The directory distune reads and writes: the experiment's own for a local or NFS
    storage, a local mirror of it for a URI (distune.ops.storage)."""
    root = storage_root(exp)
    if is_uri(root):
        return mirror(join(root, exp.run.name))
    return Path(root) / exp.run.name


def check_writable(directory: Path) -> None:
    """Fail before a sweep, not after it, when results could not be written."""
    parent = directory
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise DistuneError(f"run.storage: cannot write to {directory} ({parent} is not a writable "
                           "directory). Choose a writable --storage path.")


def prepare_directory(directory: Path, overwrite: bool) -> None:
    if remote_of(directory):
        return prepare_remote(directory, overwrite)
    check_writable(directory)
    if directory.exists() and any(directory.iterdir()):
        if not overwrite:
            raise taken_error(directory)
        shutil.rmtree(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise DistuneError(f"run.storage: cannot write to {directory} ({e.strerror}). Choose a "
                           "writable --storage path.") from None


def load_data(exp: Experiment):
    return load_mnist(exp.data.path, exp.data.validation_split, exp.data.train_subset, exp.run.seed)


class CheckpointCheck(NamedTuple):
    corrupt: list[str]  # unfinished trials whose latest checkpoint is on storage but unreadable
    restarting: list[str]  # trial ids whose latest is gone from storage (distune.sweep.gone)


def check_checkpoints(directory: Path) -> CheckpointCheck:
    """What a resume will find of each unfinished trial's latest checkpoint."""
    check = CheckpointCheck([], [])
    for trial in open_analysis(directory).trials:
        if trial.status in ("TERMINATED",):
            continue
        latest = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
        if latest is None:
            continue
        path = local_copy(checkpoint_path(trial, latest.checkpoint))  # a mirror's: downloaded
        if not path.is_dir():  # gone (distune.ops.storage.checkpoint_gone): it restarts
            check.restarting.append(trial.trial_id)
        elif problem := checkpoint_problem(path):
            check.corrupt.append(f"trial {trial.trial_id}: {problem}")
    return check
