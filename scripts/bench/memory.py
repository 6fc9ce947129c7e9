#!/usr/bin/env python
"""Peak resident memory of the driver and the trial workers across a long sweep with actor
reuse: it must stay flat, not grow trial after trial. A worker is a Ray actor plus the child
process that trains its trials (replaced every distune.trial.worker.RECYCLE_AFTER trials).

    python scripts/bench/memory.py --data ../shared/data/mnist.npz            # 60 trials
    python scripts/bench/memory.py --data ../shared/data/mnist.npz --quick    # 4 trials

Reads /proc (Linux). Prints RSS after every 10th trial and, last, the growth per trial of the
workers' peak RSS between the first and the last third of the sweep.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def rss_mb(pid: int | None) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("DISTUNE_MNIST"))
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_trials = 4 if args.quick else args.trials

    from ray import tune

    from distune.config import validate
    from distune.ops import quiet_environment
    from distune.sweep import load_data
    from distune.sweep import build_tuner, start_ray

    quiet_environment(verbose=False)
    rows: list[tuple[int, float, float]] = []
    worker_peak: dict[int, float] = {}

    class Sampler(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            pid = result.get("pid")
            if pid and Path(f"/proc/{pid}").exists():
                worker = rss_mb(pid) + rss_mb(result.get("training_pid"))
                worker_peak[pid] = max(worker_peak.get(pid, 0.0), worker)
                rows.append((len(rows) + 1, worker, rss_mb(os.getpid())))

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
    # Workers recycle their training process, so RSS is a saw-tooth: compare the peaks of the
    # first and the last third of the sweep, not two single readings.
    third = max(1, len(rows) // 3)
    first, last = max(r[1] for r in rows[:third]), max(r[1] for r in rows[-third:])
    growth = (last - first) / max(1, len(rows) - third)
    print(f"worker peak RSS: first third {first:.0f} MB, last third {last:.0f} MB")
    print(f"workers: {len(worker_peak)} processes, peak {max(worker_peak.values()):.0f} MB; "
          f"driver peak {max(r[2] for r in rows):.0f} MB; trials {len(rows)}")
    print(f"worker_rss_growth_mb_per_trial: {growth:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
