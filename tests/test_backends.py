"""train.backend: trials on Keras's JAX backend; checkpoints and models cross between backends
(the JAX side runs in its own process, tests/backend_check.py)."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from conftest import experiment, run_under_jax, tensorflow_mapped

pytestmark = pytest.mark.slow


def test_models_cross_backends_and_jax_resumes_exactly(mnist_path, tmp_path):
    """A .keras written under TensorFlow predicts the same under JAX and back (the winner is
    tested and the report drawn in the driver, on TensorFlow); on JAX a checkpoint restores
    every weight and optimizer variable exactly and the next epoch equals the uninterrupted; a
    blown-up trial is marked diverged on JAX too."""
    import keras

    from distune.config import TrainConfig
    from distune.space import Hyperparams
    from distune.trial import Training, load_mnist, reshape_for

    data = load_mnist(str(mnist_path), validation_split=0.25, train_subset=400, seed=0).for_trials()
    x = data["x_val"][:64]
    t = Training(Hyperparams(hidden_layers=2, units=16, batch_norm=True, dropout=0.1), data,
                 TrainConfig(epochs=1), seed=1)
    t.run_epoch()
    t.model.save(tmp_path / "tf.keras")
    np.save(tmp_path / "tf_predictions.npy", t.model.predict(reshape_for(t.model, x), verbose=0))
    out = run_under_jax("backend_check.py", mnist_path, tmp_path)
    assert out["backend"] == "jax"
    assert out["tf_model_max_diff"] < 1e-5
    assert out["weights_equal"] and out["optimizer_equal"]
    assert all(d < 1e-5 for d in out["epoch_diffs"].values()), out["epoch_diffs"]
    blown = out["blown_up"]  # finite losses, yet diverged after its first epoch
    assert blown["diverged"] and blown["done"] and blown["epoch"] == 1, blown
    jax_model = keras.saving.load_model(tmp_path / "jax.keras")
    ours = jax_model.predict(reshape_for(jax_model, x), verbose=0)
    assert np.abs(ours - np.load(tmp_path / "jax_predictions.npy")).max() < 1e-5


@contextmanager
def tensorflow_watched(zygote: int):
    """{pid: whether TensorFlow's library was mapped} for `zygote` and each child it forks
    while the block runs, sampled every 0.1 s."""
    loaded: dict[int, bool] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            try:
                children = Path(f"/proc/{zygote}/task/{zygote}/children").read_text().split()
            except OSError:
                children = []
            for pid in [zygote, *map(int, children)]:
                mapped = tensorflow_mapped(pid)
                if mapped is not None:  # else it exited
                    loaded[pid] = loaded.get(pid, False) or mapped

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield loaded
    finally:
        done.set()
        thread.join()


def test_a_jax_sweep_trains_on_jax(ray_local, mnist_path, tmp_path):
    """train.backend: jax reaches the trials' training processes (a zygote of its own, as the
    zygote serves one Keras backend), and the winner, saved under JAX, is tested here. That
    zygote is started before any trial asks for it (sweep.start_zygotes, which every sweep
    calls as Tune starts), with the trials' own settings: the sweep forks from it. Neither it
    nor its children import TensorFlow (~3 s of CPU each, for nothing on JAX)."""
    from distune import run
    from distune.results import open_analysis
    from distune.sweep import start_zygotes

    from distune.sweep.tune import nodes_to_start, training_environment
    from distune.ops.worker_fork import worker_raylet
    from distune.trial.zygote import home_of

    exp = experiment(mnist_path, tmp_path, train={"epochs": 2, "backend": "jax"})
    _, env = training_environment(exp)
    # the JAX zygote's home on this node, as a worker with the trials' settings names it (an
    # earlier JAX sweep on the suite's Ray, the default preset's smoke runs, may have started it)
    raylet, jax_home = ray_local.get(ray_local.remote(
        lambda env: (worker_raylet(), str(home_of(worker_raylet(), {**os.environ, **env})))).remote(env))
    homes = lambda: set(Path(tempfile.gettempdir()).glob(f"distune-zygote-{os.getuid()}-{raylet}-*"))  # noqa: E731
    before = homes()
    start_zygotes(exp)
    deadline = time.monotonic() + 60
    log = Path(jax_home) / "zygote.log"  # "zygote PID ready ..." once it has imported
    while not ((Path(jax_home) / "zygote.sock").exists() and log.is_file() and "ready" in log.read_text()):
        assert time.monotonic() < deadline, "no zygote started before the sweep"
        time.sleep(0.1)
    sweep_start = time.time()
    zygote_pid = int(log.read_text().rsplit("zygote ", 1)[1].split()[0])
    with tensorflow_watched(zygote_pid) as loaded:
        summary = run(exp, "t", say=lambda _: None)
    assert len(loaded) >= 2 and not any(loaded.values()), f"TensorFlow mapped (pid: whether): {loaded}"
    assert homes() - before <= {Path(jax_home)}  # the trials asked that one, no other
    # With it up, the next sweep's driver sends this node no task to start it (a worker's start)
    assert ray_local.get_runtime_context().get_node_id() not in nodes_to_start(exp)
    assert nodes_to_start(experiment(mnist_path, tmp_path, train={"backend": "jax"},
                                     resources={"cpus_per_trial": 3})) == []  # no node hosts one
    # Their compiled steps went to (or came from) the node's persistent JAX cache, private to
    # this user: JAX stamps an entry's "-atime" file on every write and every hit.
    from distune.trial.training import JAX_CACHE_DIR

    cache = Path(tempfile.gettempdir()) / JAX_CACHE_DIR
    assert cache.stat().st_mode & 0o777 == 0o700
    used = [f for f in cache.glob("jit_train_step-*-atime") if f.stat().st_mtime >= sweep_start - 1]
    assert used, sorted(f.name for f in cache.iterdir())
    trials = open_analysis(summary.directory).trials
    assert len(trials) == 2 and {t.last_result["backend"] for t in trials} == {"jax"}
    # 14 steps of a 32-unit MLP: far from chance, and the test agrees with validation (a
    # model loaded wrongly across backends would score near 0.1)
    assert summary.test_accuracy > 0.3 and abs(summary.test_accuracy - summary.best_score) < 0.15
