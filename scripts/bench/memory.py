#!/usr/bin/env python
"""Peak resident memory of the driver and the trial workers across a long sweep with actor
reuse: it must stay flat, not grow trial after trial (Keras sessions are cleared between trials).

    python scripts/bench/memory.py --data ../shared/data/mnist.npz            # 60 trials
    python scripts/bench/memory.py --data ../shared/data/mnist.npz --quick    # 6 trials

Reads /proc (Linux). Prints RSS after every 10th trial and, last, the growth per trial of the
workers' RSS between the first and the last tenth of the sweep.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("DISTUNE_MNIST"))
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_trials = 6 if args.quick else args.trials

    from ray import tune

    from distune.config import validate
    from distune.runner import build_tuner, load_data, quiet_environment, start_ray

    quiet_environment(verbose=False)
    rows: list[tuple[int, float, float]] = []
    worker_peak: dict[int, float] = {}

    class Sampler(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            pid = (trial.last_result or {}).get("pid")
            if pid and Path(f"/proc/{pid}").exists():
                worker_peak[pid] = max(worker_peak.get(pid, 0.0), rss_mb(pid))
                rows.append((len(rows) + 1, rss_mb(pid), rss_mb(os.getpid())))

    with tempfile.TemporaryDirectory() as storage:
        exp = validate({
            "data": {"path": args.data, "train_subset": 2000},
            "model": {"space": {"hidden_layers": {"int": [1, 3]}, "units": {"choice": [64, 128, 256]},
                                "learning_rate": {"loguniform": [1e-4, 1e-2]}}},
            "train": {"epochs": 1},
            "search": {"searcher": "random", "num_samples": n_trials},
            "run": {"storage": storage, "name": "memory", "seed": 0},
        })
        splits = load_data(exp)
        start_ray(exp, verbose=False)
        build_tuner(exp, splits.for_trials(), Path(storage) / "memory", say=lambda _: None,
                    callbacks=[Sampler()]).fit()

    print(f"{'trial':>6} {'worker_rss_mb':>14} {'driver_rss_mb':>14}")
    for n, worker, driver in rows:
        if n == 1 or n % 10 == 0 or n == len(rows):
            print(f"{n:>6} {worker:>14.0f} {driver:>14.0f}")
    tenth = max(1, len(rows) // 10)
    first = sum(r[1] for r in rows[:tenth]) / tenth
    last = sum(r[1] for r in rows[-tenth:]) / tenth
    growth = (last - first) / max(1, len(rows) - tenth)
    print(f"workers: {len(worker_peak)} processes, peak {max(worker_peak.values()):.0f} MB; "
          f"driver peak {max(r[2] for r in rows):.0f} MB; trials {len(rows)}")
    print(f"worker_rss_growth_mb_per_trial: {growth:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
