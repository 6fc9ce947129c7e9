"""Where a trial's Keras training actually runs: a child process of the Ray actor.

TensorFlow keeps a few MB of every model it has trained for the life of its process
(`keras.backend.clear_session()` does not give it back), so an actor reused for 50 trials grows
trial after trial. The actor therefore trains in a child process and replaces that child every
`RECYCLE_AFTER` trials: memory stays flat. The child is forked by the node's zygote
(distune.trial.zygote), which has imported TensorFlow once, so a new child costs a fork, not a 6 s
import; without a zygote it is spawned. The child dies with the actor (a killed worker leaves
no orphan).
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from distune.errors import DistuneError
from distune.ops.private import NotPrivate, private_dir
from distune.trial.child import serve_spawned

RECYCLE_AFTER = 10  # trials per child process: ~45 MB of TF residue at most


def share_arrays(data: dict[str, np.ndarray]) -> Path:
    """The trial data as .npy files in this user's private temp dir, written once per node and
    content, so every child process of every actor maps the same pages instead of holding a
    copy. Nobody else can place files there (distune.ops.private)."""
    digest = hashlib.blake2b(digest_size=12)
    for key in sorted(data):
        digest.update(f"{key}{data[key].dtype}{data[key].shape}".encode())
        digest.update(memoryview(np.ascontiguousarray(data[key])).cast("B"))
    try:
        root = private_dir(f"distune-data-{os.getuid()}")
    except NotPrivate as e:
        raise DistuneError(f"{e}: the trial data are not written there. Remove it, or set "
                           "TMPDIR to a directory of your own.") from None
    directory = root / digest.hexdigest()
    if not directory.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=root))
        for key, array in data.items():
            np.save(staging / f"{key}.npy", array)
        try:
            os.rename(staging, directory)
        except OSError:  # another actor on this node got there first: use theirs
            for f in staging.iterdir():
                f.unlink()
            staging.rmdir()
    return directory


class Spawned:
    """A training process this actor spawned itself (where no zygote is to be had)."""

    def __init__(self, data_dir: str, threads: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded actor
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve_spawned, args=(child, data_dir, threads),
                                   daemon=True, name="distune-training")
        self.process.start()
        child.close()
        self.pid = self.process.pid

    def exitcode(self) -> int | None:
        return self.process.exitcode

    def stop(self, timeout: float) -> None:
        self.process.join(timeout=timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class Forked:
    """A training process forked by the node's zygote: not our child, so it is watched and
    stopped by pid (it also ends by itself when this actor does)."""

    def __init__(self, data_dir: str, threads: int, raylet: int | None = None,
                 environ: dict[str, str] | None = None) -> None:
        from distune.trial import zygote

        self.conn, self.pid = zygote.fork_child(data_dir, threads, raylet, environ)

    def exitcode(self) -> int | None:
        return None  # the zygote reaps it

    def stop(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while _running(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _new_process(data_dir: str, threads: int):
    """Forked by the zygote; spawned where there is none, or with DISTUNE_ZYGOTE=0 (for a
    platform where forking after TensorFlow's import misbehaves, and to measure the two)."""
    from distune.trial.zygote import Unavailable

    if os.environ.get("DISTUNE_ZYGOTE") != "0":
        try:
            return Forked(data_dir, threads)
        except Unavailable:
            pass
    return Spawned(data_dir, threads)


class TrainingProcess:
    """The actor's handle on its child: `start` a trial, then `call` Training's methods."""

    def __init__(self, data: dict[str, np.ndarray], threads: int) -> None:
        self.data_dir, self.threads = str(share_arrays(data)), threads
        self.process = None
        self.trials = 0

    def start(self, *training_args: Any) -> None:
        """A new trial (`Training`'s arguments without the data); a fresh child every
        `RECYCLE_AFTER` trials."""
        if self.process is None or self.trials >= RECYCLE_AFTER:
            self.close()
            self.process = _new_process(self.data_dir, self.threads)
            self.trials = 0
        self.trials += 1
        self.call("start", *training_args)

    def call(self, op: str, *args: Any) -> Any:
        try:
            self.process.conn.send((op, args))
            status, value = self.process.conn.recv()
        except (EOFError, OSError) as e:
            code = self.process.exitcode() if self.process else None
            self.process = None
            raise RuntimeError(f"the trial's training process died (exit code {code}); "
                               f"Tune retries the trial from its last checkpoint") from e
        if status == "error":
            raise value
        return value

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def close(self) -> None:
        if self.process is None:
            return
        try:
            self.process.conn.send(("close", ()))
        except OSError:
            pass
        self.process.stop(timeout=10)
        self.process.conn.close()
        self.process = None


def test_in_child(model_file: Path, x: np.ndarray, y: np.ndarray, raylet: int,
                  environ: dict[str, str]) -> tuple[float, float, np.ndarray]:
    """The winner's test (distune.trial.training.test_model) in a process forked by the zygote
    of `raylet`'s node, which has imported TensorFlow already: a driver that tests its winner
    here never imports it (10 s of CPU beside the trials). Raises zygote.Unavailable."""
    process = TrainingProcess({"x_test": x, "y_test": y}, os.cpu_count() or 1)
    process.process = Forked(process.data_dir, process.threads, raylet, environ)
    try:
        return process.call("test", str(model_file))
    finally:
        process.close()
