"""The `distune` command as a user runs it: real processes, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def distune(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distune", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_run_then_show(mnist_path, tmp_path):
    """`distune run` of the default preset, as scripts/bench/default_preset.py --quick runs it
    (so this also keeps that script working), then `distune show` of its results."""
    storage = str(tmp_path / "store")
    r = subprocess.run([sys.executable, "scripts/bench/default_preset.py", "--quick", "--data",
                        str(mnist_path), "--storage", storage], capture_output=True, text=True,
                       cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test accuracy: 0." in r.stdout and "Traceback" not in r.stdout + r.stderr
    assert "epoch   1/1" in r.stdout
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("default_preset_test_accuracy: 0.")
    best = json.loads((tmp_path / "store" / "bench" / "best.json").read_text())
    assert float(last.split(": ")[1]) == pytest.approx(best["test_accuracy"], abs=1e-4)
    assert (tmp_path / "store" / "bench" / "report.html").is_file()  # on by default

    s = distune("show", "bench", "--storage", storage)
    assert s.returncode == 0, s.stderr
    assert "2 trials, ranked by best val_accuracy" in s.stdout and best["trial"] in s.stdout
    assert s.stdout.index(best["trial"]) < s.stdout.rindex("completed")
    assert f"winner: {best['trial']}" in s.stdout

    again = distune("run", "--data", str(mnist_path), "--storage", storage, "--name", "bench")
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.parametrize("args,message", [
    (["run", "--searcher", "tpee"], "search.searcher: 'tpee' is not one of: random, grid"),
    (["run", "--data", "/nowhere/mnist.npz"], "data.path: MNIST file not found: /nowhere/mnist.npz"),
    (["run", "no-such-preset"], "no such file or preset"),
    (["validate", "--set", "train.epochs=0"], "train.epochs"),
    (["validate", "--scheduler", "asha", "--set", "schedule.options={grace_period: 9, max_t: 2}"],
     "grace_period (9) must be <= max_t (2)"),
    (["show", "never-ran", "--storage", "/tmp/distune-nothing-here"], "no experiment at"),
    (["run", "--storage", "/proc/distune", "--data", str(REPO)], "data.path: MNIST file not found"),
])
def test_user_mistakes_exit_2_without_traceback(args, message):
    r = distune(*args, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("distune: error:")


def test_unwritable_storage_is_refused_before_the_sweep(mnist_path, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = distune("run", "--data", str(mnist_path), "--storage", str(blocker / "results"), timeout=120)
    assert r.returncode == 2 and "run.storage: cannot write to" in r.stderr
    assert "Choose a writable --storage path" in r.stderr and "Traceback" not in r.stderr
    v = distune("validate", "--data", str(mnist_path), "--storage", str(blocker / "results"))
    assert v.returncode == 2 and "run.storage: cannot write to" in v.stderr


def test_malformed_yaml_file(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("search:\n  searcher: [random\n")
    r = distune("validate", str(f))
    assert r.returncode == 2 and "not valid YAML at line" in r.stderr and "Traceback" not in r.stderr


def test_debug_shows_the_traceback():
    r = distune("validate", "--searcher", "nope", "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_validate_and_presets(mnist_path):
    r = distune("validate", "--data", str(mnist_path))
    assert r.returncode == 0 and r.stdout.startswith("OK: 12 trials, searcher random")
    p = distune("presets")
    assert p.returncode == 0 and "mnist-mlp" in p.stdout
