"""The training process's side: what it imports, and its loop that runs the actor's calls on
one `Training` per trial. Started by the actor (distune.trial.worker), spawned, or forked by the
node's zygote (distune.trial.zygote)."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import numpy as np

from distune.trial.training import (Training, configure_backend, import_keras, make_training,
                                    test_saved_model)


def load_arrays(directory: Path) -> dict[str, np.ndarray]:
    return {f.stem: np.load(f, mmap_mode="r") for f in directory.glob("*.npy")}


def die_with_parent() -> None:
    try:  # Linux: SIGKILL this process when the actor that started it dies
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere the closed pipe ends the child at its next message


def preload() -> None:
    """What every training process imports; distune.trial.zygote does it once and forks."""
    import_keras()


def serve_spawned(conn, data_dir: str, threads: int) -> None:
    die_with_parent()
    serve_trials(conn, data_dir, threads)


def serve_trials(conn, data_dir: str, threads: int) -> None:
    """The child's loop: build a `Training` per trial and run the actor's calls on it (or test
    a saved model on the data's x_test, y_test)."""
    configure_backend(threads)
    data = load_arrays(Path(data_dir))
    training: Training | None = None
    while True:
        try:
            op, args = conn.recv()
        except (EOFError, OSError):
            return
        if op == "close":
            return
        try:
            if op == "start":
                import keras

                training = None
                keras.backend.clear_session()
                training = make_training(args[0], data, *args[1:])
                reply: tuple[str, Any] = ("ok", None)
            elif op == "test":  # the winner's test, for a driver (distune.trial.worker)
                reply = ("ok", test_saved_model(args[0], data["x_test"], data["y_test"]))
            else:
                reply = ("ok", getattr(training, op)(*args))
        except Exception as e:  # noqa: BLE001 - the actor re-raises it as the trial's error
            reply = ("error", _portable(e))
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


def _portable(e: Exception) -> Exception:
    """The exception itself if it survives pickling (our own errors do), else its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return RuntimeError("".join(traceback.format_exception(e)))
