"""The benchmark scripts keep working: each runs in its --quick mode and prints its headline
(default_preset.py runs in test_cli.test_run_then_show; preset_variants.py, its loop over
variants and seeds, is not run here: its run_preset is default_preset's, and one more `distune
run` cost the suite 33 s). Those that start Ray join the suite's instead (joined_ray, as they
would a cluster's): the smoke test checks that a script runs and prints its headline, not its
figures."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script,headline,joins", [
    ("scripts/bench/memory.py", "worker_rss_growth_mb_per_trial: ", True),
    ("scripts/bench/search_quality.py", "best_searcher_scheduler_val_accuracy: ", True),
    ("scripts/bench/trial_startup.py", "trial_first_epoch_forked_s: ", True),
    ("scripts/bench/backends.py", "jax_speedup_mlp_128: ", False),
    ("scripts/bench/command_cost.py", "command_fixed_cost_s: ", True),
])
def test_quick_mode(script, headline, joins, mnist_path, request):
    env = request.getfixturevalue("joined_ray") if joins else {}
    last = quick_headline(script, mnist_path, env=env, timeout=300)
    assert last.startswith(headline) and math.isfinite(float(last.split(": ")[1]))


def quick_headline(script: str, mnist_path, *extra: str, env: dict, timeout: int = 420) -> str:
    """Run a benchmark script in --quick mode, `env` added to the environment; its last line
    (the headline)."""
    r = subprocess.run([sys.executable, script, "--quick", "--data", str(mnist_path), *extra], cwd=REPO,
                       capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip().splitlines()[-1]


def test_engine_overhead_quick(mnist_path, joined_ray):
    last = quick_headline("scripts/bench/engine_overhead.py", mnist_path, env=joined_ray)
    assert last.startswith("engine_wall_ratio: ")
    assert float(last.split(": ")[1]) > 0


def test_vs_kerastuner_quick(mnist_path, joined_ray):
    pytest.importorskip("keras_tuner", reason="keras-tuner is the `bench` extra")
    # Hyperband only: the headline's peer (RandomSearch runs the same code path, one more method)
    last = quick_headline("scripts/bench/vs_kerastuner.py", mnist_path, "--kt", "hyperband", env=joined_ray,
                          timeout=600)
    assert last.startswith("time_ratio_to_kt_hyperband: ")
    # inf when no distune method reached KerasTuner Hyperband's accuracy within the short budget
    assert float(last.split(": ")[1]) >= 0


def test_gpu_packing_quick(mnist_path, joined_ray):
    last = quick_headline("scripts/bench/gpu_packing.py", mnist_path, env=joined_ray)
    value = last.removeprefix("gpu_trials_per_hour_best: ")
    assert value != last
    assert value == "n/a (no GPU)" or float(value) > 0
