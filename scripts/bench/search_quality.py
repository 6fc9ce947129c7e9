#!/usr/bin/env python
"""Best validation accuracy per searcher x scheduler on one equal budget (same space, same
trials, same epochs, same data, same seed), and the winner's test accuracy.

    python scripts/bench/search_quality.py --data ../shared/data/mnist.npz
    python scripts/bench/search_quality.py --data ../shared/data/mnist.npz --quick
"""

from __future__ import annotations

import argparse
import logging
import os
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
    args = ap.parse_args()
    searchers = ["random", "hyperopt", "optuna"] if args.quick else ["random", "hyperopt", "optuna", "stepwise"]
    schedulers = ["fifo", "asha"]
    trials, epochs, subset = (2, 1, 1000) if args.quick else (args.trials, args.epochs, args.subset)

    import ray

    from distune.config import validate
    from distune.runner import QUIET_ENV, quiet_environment, run

    quiet_environment(verbose=False)
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"env_vars": dict(QUIET_ENV)})
    rows = []
    with tempfile.TemporaryDirectory() as storage:
        for searcher in searchers:
            for scheduler in schedulers:
                exp = validate({
                    "data": {"path": args.data, "train_subset": subset},
                    "model": {"space": STEPWISE_SPACE if searcher == "stepwise" else SPACE},
                    "train": {"epochs": epochs},
                    "search": {"searcher": searcher, "num_samples": trials,
                               **({"options": {"n_initial_points": max(2, trials // 3)}} if searcher == "hyperopt" else {})},
                    "schedule": {"scheduler": scheduler,
                                 **({"options": {"grace_period": 1}} if scheduler == "asha" else {})},
                    "run": {"storage": storage, "name": f"{searcher}-{scheduler}", "seed": 0},
                })
                start = time.perf_counter()
                s = run(exp, "bench", say=lambda _: None)
                rows.append((searcher, scheduler, s.trials, time.perf_counter() - start,
                             s.best_score, s.test_accuracy))
    ray.shutdown()
    print(f"{'searcher':<10} {'scheduler':<10} {'trials':>6} {'wall_s':>7} {'best_val':>9} {'test':>7}")
    for r in rows:
        print(f"{r[0]:<10} {r[1]:<10} {r[2]:>6} {r[3]:>7.0f} {r[4]:>9.4f} {r[5]:>7.4f}")
    print(f"budget: {trials} trials (stepwise: its own count), {epochs} epochs, {subset} images, seed 0")
    best = max(rows, key=lambda r: r[4])
    print(f"best_searcher_scheduler_val_accuracy: {best[4]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
