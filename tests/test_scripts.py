"""The benchmark scripts keep working: each runs in its --quick mode and prints its headline
(default_preset.py runs in test_cli.test_run_then_show)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script,headline", [
    ("scripts/bench/memory.py", "worker_rss_growth_mb_per_trial: "),
    ("scripts/bench/search_quality.py", "best_searcher_scheduler_val_accuracy: "),
    ("scripts/bench/trial_startup.py", "trial_first_epoch_forked_s: "),
    ("scripts/bench/backends.py", "jax_speedup_mlp_128: "),
])
def test_quick_mode(script, headline, mnist_path):
    r = subprocess.run([sys.executable, script, "--quick", "--data", str(mnist_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith(headline) and math.isfinite(float(last.split(": ")[1]))


def quick_headline(script: str, mnist_path, *extra: str, timeout: int = 420) -> str:
    """Run a benchmark script in --quick mode; its last line (the headline)."""
    r = subprocess.run([sys.executable, script, "--quick", "--data", str(mnist_path), *extra], cwd=REPO,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip().splitlines()[-1]


def test_engine_overhead_quick(mnist_path):
    last = quick_headline("scripts/bench/engine_overhead.py", mnist_path)
    assert last.startswith("engine_wall_ratio: ")
    assert float(last.split(": ")[1]) > 0


def test_vs_kerastuner_quick(mnist_path):
    pytest.importorskip("keras_tuner", reason="keras-tuner is the `bench` extra")
    # Hyperband only: the headline's peer (RandomSearch runs the same code path, one more method)
    last = quick_headline("scripts/bench/vs_kerastuner.py", mnist_path, "--kt", "hyperband", timeout=600)
    assert last.startswith("time_ratio_to_kt_hyperband: ")
    # inf when no distune method reached KerasTuner Hyperband's accuracy within the short budget
    assert float(last.split(": ")[1]) >= 0


def test_gpu_packing_quick(mnist_path):
    last = quick_headline("scripts/bench/gpu_packing.py", mnist_path)
    value = last.removeprefix("gpu_trials_per_hour_best: ")
    assert value != last
    assert value == "n/a (no GPU)" or float(value) > 0
