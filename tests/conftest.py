"""Shared fixtures: the real MNIST file, small real slices of it, one Ray for in-process sweeps."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import pytest

from distune.ops import QUIET_ENV, forked_workers, local_ray_environment

REPO = Path(__file__).resolve().parents[1]
for key, value in QUIET_ENV.items():
    os.environ.setdefault(key, value)


# Seconds each file's tests took (sum of durations, 2026-12-07 on 2 cores), for the order files
# are handed to xdist's workers. With --dist loadfile a file runs on one worker, and xdist gives a
# worker the next file in collection order when it runs low (--no-loadscope-reorder; its default
# order, most tests first, put the few-but-slow files last, and one worker ran on alone for
# 20-40 s). Longest first, so both workers end on short files together. A new file: 0, last.
FILE_SECONDS = {
    "test_scripts.py": 180, "test_faults.py": 170, "test_search_algorithms.py": 105,
    "test_fused.py": 98, "test_multinode.py": 75, "test_tree_space.py": 73, "test_cli.py": 63,
    "test_sweeps.py": 60, "test_user_model.py": 46, "test_nightly.py": 42, "test_select.py": 43,
    "test_submit.py": 40, "test_backends.py": 29, "test_gp.py": 24, "test_zygote.py": 22,
    "test_model.py": 21, "test_training.py": 20, "test_tracking.py": 20, "test_storage.py": 15,
    "test_report.py": 5, "test_bad_input.py": 4, "test_worker_start.py": 3, "test_layout.py": 2, "test_data.py": 1,
}


def pytest_collection_modifyitems(items) -> None:
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))  # stable: a file's own order kept


def mnist_file() -> Path:
    """$DISTUNE_MNIST (as the README sets it: relative to the repository root, where the
    tests run), else the shared copy beside the repository. Absolute from here on, since
    tests hand it to other processes and directories."""
    path = Path(os.environ.get("DISTUNE_MNIST", REPO.parent / "shared" / "data" / "mnist.npz"))
    if not path.is_file():
        pytest.exit(f"real MNIST not found at {path}; set DISTUNE_MNIST to Keras's mnist.npz", 2)
    return path.resolve()


@contextmanager
def within(seconds: float, what: str, state: Callable[[], str] = lambda: ""):
    """Fail the block (an AssertionError naming `what` and `state()` then) if it runs past
    `seconds`, instead of waiting for pytest's timeout with a stack alone. A Tune loop handles
    the first SIGINT itself (it ends the sweep and saves its state) but may be waiting for a
    searcher for up to 600 s before it looks; the second reaches this handler, which Tune put
    back, wherever the main thread waits."""
    seen: list[str] = []
    done = threading.Event()

    def hung(*_):
        raise AssertionError(f"{what} ran past {seconds} s; then: {seen[0] if seen else state()}")

    def fire():
        seen.append(state())
        for _ in range(2):
            if done.wait(2):
                return
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, hung)
    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except BaseException as e:  # the sweep's own way out, or `hung`
        if seen:
            raise AssertionError(f"{what} ran past {seconds} s; then: {seen[0]}") from e
        raise
    finally:
        done.set()
        timer.cancel()
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    return mnist_file()


@pytest.fixture(scope="session")
def small_splits(mnist_path):
    from distune.trial import load_mnist

    return load_mnist(str(mnist_path), validation_split=0.2, train_subset=1500, seed=0)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for every in-process sweep; the CLI tests start their own. Always a new
    one: never join a cluster some other test (or program) left running on this machine."""
    from distune.trial import configure_tensorflow

    local_ray_environment()  # loopback only, token required, as distune starts its own
    import ray

    configure_tensorflow()  # quiet TF in this process before any test imports it
    # QUIET_ENV reaches the workers from this process's environment (distune.ops.job_runtime_env);
    # the workers are forked, not imported anew, as distune starts its own
    with forked_workers():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def joined_ray(ray_local) -> dict[str, str]:
    """The environment for a distune process (a CLI driver, a benchmark script) that joins the
    suite's Ray instead of starting its own, as `run.address` or $RAY_ADDRESS would: no Ray
    start-up, and the node's zygote has imported TensorFlow already (~10 s of CPU a process).
    For tests whose point is not a private Ray's start (test_cli and the Ctrl-C test start one)."""
    return {"RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}


def experiment(mnist_path, tmp_path, **sections):
    """A small, fast experiment on a real MNIST slice, with `sections` merged over it. No
    report (2-4 s a sweep): the sweeps that test it (`reported_sweep`) turn it on. One trial
    at a time: the other xdist worker keeps the second core busy, and a second slot costs a
    second actor and training process (~2.5 s of CPU a sweep); tests of concurrency raise it.
    Keras on JAX, the default preset's backend: a warm 2-trial sweep costs 4.0 s of CPU on it
    against 5.5 s on TensorFlow (each new model's tracing); the end-to-end sweep and the fault
    drivers keep TensorFlow's trials tested."""
    from distune.config import validate

    raw = {
        "data": {"path": str(mnist_path), "train_subset": 1200, "validation_split": 0.25},
        "model": {"architecture": "mlp", "space": {"hidden_layers": 1, "units": 32}},
        "train": {"epochs": 2, "backend": "jax"},
        "search": {"searcher": "random", "num_samples": 2},
        "schedule": {"scheduler": "fifo"},
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 1},
        "run": {"storage": str(tmp_path / "results"), "name": "t", "seed": 0, "report": False},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return validate(raw, "test experiment")


@pytest.fixture(scope="session")
def reported_sweep(ray_local, mnist_path, tmp_path_factory):
    """One sweep that the grid x ASHA, report, TensorBoard and MLflow tests all read: a 2x2
    grid, 3 epochs, ASHA halving (some trials complete, some are stopped early), the report
    written at the end and one MLflow run per trial. Returns (summary, progress lines, the
    MLflow URI)."""
    from distune import run

    tmp = tmp_path_factory.mktemp("reported")
    uri = f"sqlite:///{tmp}/mlflow.db"
    exp = experiment(mnist_path, tmp,
                     model={"space": {"hidden_layers": 1, "units": {"choice": [8, 32]},
                                      "learning_rate": {"choice": [1e-4, 3e-3]}}},
                     # TensorFlow: test_report compares the zygote's test with one in this
                     # process, whose Keras is on TensorFlow (exact, so the same backend)
                     train={"epochs": 3, "backend": "tensorflow"},
                     search={"searcher": "grid", "num_samples": 1},
                     schedule={"scheduler": "asha",
                               "options": {"grace_period": 1, "reduction_factor": 2}},
                     run={"report": True, "mlflow": uri})
    lines: list[str] = []
    summary = run(exp, "t", say=lines.append)
    return summary, lines, uri



def process_gone(pid: int, within_s: float) -> bool:
    """Whether process `pid` exits (or is a zombie) within `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def tensorflow_mapped(pid: int) -> bool | None:
    """Whether TensorFlow's library is mapped into process `pid` (an import's own lines are
    silenced: distune.ops.environment.quiet_tensorflow); None once it has exited."""
    try:
        return "_pywrap_tensorflow_internal" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None


def fake_mnist(path: Path, n_train: int, n_test: int = 5) -> Path:
    """A tiny file in Keras's mnist.npz layout (blank images, label 0), for input checks."""
    import numpy as np

    np.savez(path, x_train=np.zeros((n_train, 28, 28), np.uint8), y_train=np.zeros(n_train, np.uint8),
             x_test=np.zeros((n_test, 28, 28), np.uint8), y_test=np.zeros(n_test, np.uint8))
    return path


def interrupt_once(marker: Path):
    """What Ctrl-C does to a sweep, sent from inside it once the first epoch is reported. Tune
    pickles its callbacks with the sweep's state, so `marker` (a file, not object state) says
    it was sent: not again on resume."""
    import signal

    from ray import tune

    class InterruptOnce(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGUSR1)  # Tune's own "save and stop" signal

    return InterruptOnce()


def run_under_jax(script: str, mnist_path, work) -> dict:
    """tests/`script` MNIST WORK in its own process on Keras's JAX backend (fixed when Keras
    is imported, so it cannot be switched in the suite's processes); its last line, as JSON."""
    import json
    import subprocess
    import sys

    from distune.ops.environment import backend_environment

    env = {**os.environ, **QUIET_ENV, **backend_environment("jax", 1)}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name(script)), str(mnist_path),
                           str(work)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def interrupted_sweep(exp, tmp_path: Path, monkeypatch) -> Path:
    """`exp` run in this process and Ctrl-C'd once its first epoch is reported; its directory."""
    from distune import pipeline, run
    from distune.errors import Interrupted

    build = pipeline.build_tuner
    monkeypatch.setattr(pipeline, "build_tuner", lambda *a, **k: build(
        *a, **{**k, "callbacks": [interrupt_once(tmp_path / "sent")]}))
    with pytest.raises(Interrupted):
        run(exp, "t", say=lambda _: None)
    monkeypatch.undo()
    return Path(exp.run.storage) / exp.run.name


def assert_refused_resume(directory: Path, monkeypatch) -> None:
    """A resume whose restore fails inside Tune (the schedulers' replay made to raise) is
    refused within a minute, naming the cause, and leaves every file as it was."""
    from distune import resume
    from distune.errors import DistuneError

    files = {f: f.read_bytes() for f in directory.rglob("*") if f.is_file()}
    monkeypatch.setattr("distune.search.replayed.earlier_results",
                        lambda *a: (_ for _ in ()).throw(RuntimeError("replay broke")))
    with pytest.raises(DistuneError, match=r"could not restore .*\(RuntimeError: replay broke\)"), \
            within(60, "the refused resume (run anew, it waits on its restored searcher)"):
        resume(directory, say=lambda _: None)
    monkeypatch.undo()
    assert {f: f.read_bytes() for f in directory.rglob("*") if f.is_file()} == files
