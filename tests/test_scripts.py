"""The benchmark scripts keep working: each runs in its --quick mode and prints its headline."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script,headline", [
    ("scripts/bench/default_preset.py", "default_preset_test_accuracy: "),
    ("scripts/bench/memory.py", "worker_rss_growth_mb_per_trial: "),
    ("scripts/bench/search_quality.py", "best_searcher_scheduler_val_accuracy: "),
])
def test_quick_mode(script, headline, mnist_path):
    r = subprocess.run([sys.executable, script, "--quick", "--data", str(mnist_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith(headline) and math.isfinite(float(last.split(": ")[1]))
