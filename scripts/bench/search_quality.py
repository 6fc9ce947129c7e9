#!/usr/bin/env python
"""Best validation accuracy per searcher x scheduler on one equal budget (same space, same
trials, same epochs, same data, same seed), and the winner's test accuracy.

    python scripts/bench/search_quality.py --data ../shared/data/mnist.npz
    python scripts/bench/search_quality.py --data ../shared/data/mnist.npz --quick
    python scripts/bench/search_quality.py --data ../shared/data/mnist.npz --repeats 3 \
        --schedulers fifo,asha,hyperband     # seeds 0..2: mean +- std per pair
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SPACE = {
    "hidden_layers": {"int": [1, 3]},
    "units": {"choice": [64, 128, 256, 512]},
    "activation": {"choice": ["relu", "elu", "tanh", "sigmoid"]},
    "dropout": {"uniform": [0.0, 0.5]},
    "learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
    "batch_size": {"choice": [64, 128, 256]},
}
STEPWISE_SPACE = {**SPACE, "dropout": {"choice": [0.0, 0.2, 0.4]},
                  "learning_rate": {"choice": [1.0e-3, 3.0e-4, 3.0e-3]},
                  "hidden_layers": {"choice": [2, 1, 3]}, "units": {"choice": [256, 128, 512]},
                  "activation": {"choice": ["relu", "elu"]}, "batch_size": {"choice": [128, 256]}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("DISTUNE_MNIST"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--subset", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=1, help="seeds 0..N-1 per pair (mean +- std)")
    ap.add_argument("--searchers", default="random,hyperopt,optuna,stepwise")
    ap.add_argument("--schedulers", default="fifo,asha", help="e.g. fifo,asha,hyperband")
    args = ap.parse_args()
    searchers = ["hyperopt"] if args.quick else args.searchers.split(",")
    schedulers = ["asha"] if args.quick else args.schedulers.split(",")
    trials, epochs, subset = (2, 1, 1000) if args.quick else (args.trials, args.epochs, args.subset)
    seeds = range(1 if args.quick else args.repeats)

    import ray

    from distune.config import validate
    from distune.ops import QUIET_ENV, local_ray_environment, quiet_environment
    from distune import run

    quiet_environment(verbose=False)
    local_ray_environment()  # loopback only, token required: as distune run starts it
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"env_vars": dict(QUIET_ENV)})
    rows = []
    with tempfile.TemporaryDirectory() as storage:
        for searcher in searchers:
            for scheduler in schedulers:
                runs = []
                for seed in seeds:
                    exp = validate({
                        "data": {"path": args.data, "train_subset": subset},
                        "model": {"space": STEPWISE_SPACE if searcher == "stepwise" else SPACE},
                        "train": {"epochs": epochs},
                        "search": {"searcher": searcher, "num_samples": trials,
                                   **({"options": {"n_initial_points": max(2, trials // 3)}} if searcher == "hyperopt" else {})},
                        "schedule": {"scheduler": scheduler,
                                     **({"options": {"grace_period": 1}} if scheduler == "asha" else {})},
                        "run": {"storage": storage, "name": f"{searcher}-{scheduler}-{seed}",
                                "seed": seed},
                    })
                    start = time.perf_counter()
                    s = run(exp, "bench", say=lambda _: None)
                    runs.append((s.trials, time.perf_counter() - start, s.best_score, s.test_accuracy))
                rows.append((searcher, scheduler, *(list(col) for col in zip(*runs))))
    ray.shutdown()
    repeats = len(seeds)

    def fmt(values: list[float], spec: str, width: int) -> str:
        text = format(statistics.fmean(values), spec)
        if repeats > 1:
            text += " ± " + format(statistics.stdev(values), spec)
        return f"{text:>{width}}"

    w = 16 if repeats > 1 else 7
    print(f"{'searcher':<10} {'scheduler':<10} {'trials':>6} {'wall_s':>{w}} {'best_val':>{w + 2}} {'test':>{w}}")
    for searcher, scheduler, n, wall, val, test in rows:
        print(f"{searcher:<10} {scheduler:<10} {statistics.fmean(n):>6.0f} {fmt(wall, '.0f', w)} "
              f"{fmt(val, '.4f', w + 2)} {fmt(test, '.4f', w)}")
    seed_text = "seed 0" if repeats == 1 else f"seeds 0..{repeats - 1}, mean ± std"
    print(f"budget: {trials} trials (stepwise: its own count), {epochs} epochs, {subset} images, {seed_text}")
    best = max(rows, key=lambda r: statistics.fmean(r[4]))
    print(f"best_searcher_scheduler_val_accuracy: {statistics.fmean(best[4]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
