#!/usr/bin/env python
"""Best validation accuracy per searcher x scheduler on one equal budget (same space, same
trials, same epochs, same data, same seed), the winner's test accuracy, the best-so-far curve
by trial number, and each searcher's own time per suggestion as its history grows.

    python scripts/bench/search_quality.py --data ../shared/data/mnist.npz
    python scripts/bench/search_quality.py --data ../shared/data/mnist.npz --quick
    python scripts/bench/search_quality.py --data ../shared/data/mnist.npz --repeats 3 \
        --schedulers fifo,asha,hyperband     # seeds 0..2: mean +- std per pair
    python scripts/bench/search_quality.py --data ../shared/data/mnist.npz --repeats 5 \
        --searchers gp,hyperopt,optuna,random --schedulers fifo --trials 10 --epochs 2 \
        --subset 4000 --chart docs/img/gp_vs_tpe.png   # the GP comparison in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--searchers", default="random,hyperopt,optuna,gp,stepwise")
    ap.add_argument("--chart", help="also draw the best-so-far curves (mean and spread) to this PNG")
    ap.add_argument("--schedulers", default="fifo,asha", help="e.g. fifo,asha,hyperband")
    args = ap.parse_args()
    searchers = ["hyperopt"] if args.quick else args.searchers.split(",")
    schedulers = ["asha"] if args.quick else args.schedulers.split(",")
    trials, epochs, subset = (2, 1, 1000) if args.quick else (args.trials, args.epochs, args.subset)
    seeds = range(1 if args.quick else args.repeats)

    import ray

    from distune.config import validate
    from distune.ops import quiet_environment
    from distune import run
    from distune.sweep import start_ray

    quiet_environment(verbose=False)
    os.environ.setdefault("RAY_ADDRESS", "local")  # a private Ray, never a `ray start` one
    start_ray(validate({}), verbose=False)  # loopback only, token required: as distune run
    rows, curves = [], {}
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
                                   # the same random phase for the two that take one
                                   **({"options": {"n_initial_points": max(2, trials // 3)}}
                                      if searcher in ("hyperopt", "gp") else {})},
                        "schedule": {"scheduler": scheduler,
                                     **({"options": {"grace_period": 1}} if scheduler == "asha" else {})},
                        "run": {"storage": storage, "name": f"{searcher}-{scheduler}-{seed}",
                                "seed": seed},
                    })
                    start = time.perf_counter()
                    s = run(exp, "bench", say=lambda _: None)
                    runs.append((s.trials, time.perf_counter() - start, s.best_score, s.test_accuracy))
                    curves.setdefault((searcher, scheduler), []).append(best_so_far(s.records, "max"))
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
    print_curves(curves, repeats)
    if args.chart:
        draw(curves, args.chart, f"{trials} trials, {epochs} epochs, {subset} images, {seed_text}")
    print_suggest_times(searchers, [5, 10] if args.quick else [10, 25, 50, 100])
    best = max(rows, key=lambda r: statistics.fmean(r[4]))
    print(f"best_searcher_scheduler_val_accuracy: {statistics.fmean(best[4]):.4f}")
    return 0


def best_so_far(records, mode: str) -> list[float]:
    """The best validation score after each trial, trials in the order they were created."""
    from distune.results import better

    out, best = [], None
    for r in sorted(records, key=lambda r: r.trial_id):
        best = r.score if better(r.score, best, mode) else best
        out.append(float("nan") if best is None else best)
    return out


def print_curves(curves: dict, repeats: int) -> None:
    length = min(len(c) for runs in curves.values() for c in runs)
    marks = sorted({1, *range(2, length + 1, max(1, length // 5)), length})
    print("\nbest validation accuracy after trial k (mean" + (" ± std" if repeats > 1 else "")
          + " over seeds)")
    print(f"{'searcher':<10} {'scheduler':<10} " + " ".join(f"{'k=' + str(k):>16}" for k in marks))
    for (searcher, scheduler), runs in curves.items():
        cells = []
        for k in marks:
            at = [c[k - 1] for c in runs]
            cells.append(f"{statistics.fmean(at):.4f}" + (f" ± {statistics.stdev(at):.4f}"
                                                          if len(at) > 1 else ""))
        print(f"{searcher:<10} {scheduler:<10} " + " ".join(f"{c:>16}" for c in cells))


def draw(curves: dict, path: str, budget: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (searcher, scheduler), runs in curves.items():
        length = min(len(c) for c in runs)
        values = np.array([c[:length] for c in runs])
        x, mean = np.arange(1, length + 1), values.mean(axis=0)
        ax.plot(x, mean, label=f"{searcher} ({scheduler})")
        if len(runs) > 1:
            sd = values.std(axis=0, ddof=1)
            ax.fill_between(x, mean - sd, mean + sd, alpha=0.15)
    ax.set(xlabel="trial", ylabel="best validation accuracy so far")
    ax.set_title(f"Best so far, mean ± std over seeds\n{budget}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"chart: {path}")


def print_suggest_times(searchers: list[str], sizes: list[int]) -> None:
    """Each model-based searcher's own seconds per suggestion once it holds a history of n
    finished trials (a synthetic score, no training: the searcher's cost alone)."""
    import math

    from distune.config import validate
    from distune.search import SEARCHERS, Context

    print("\nseconds per suggestion, by finished trials in the history (the searcher alone)")
    print(f"{'searcher':<10} " + " ".join(f"{'n=' + str(n):>8}" for n in sizes))
    for searcher in [s for s in searchers if s in ("gp", "hyperopt", "optuna")]:  # random: ~0
        exp = validate({"search": {"searcher": searcher}, "model": {"space": SPACE}})
        ctx = Context(seed=0, max_epochs=2, params=exp.model.params, space=trial_space(exp))
        algo = SEARCHERS[searcher].build(exp.searcher_options(), ctx)
        algo.set_search_properties("val_accuracy", "max", trial_space(exp))
        cells, done = [], 0
        for n in sizes:
            while done < n:  # grow the history to n finished trials
                config = algo.suggest(f"t{done}")
                value = 1 - abs(math.log10(config["learning_rate"]) + 3) / 3 - config["dropout"] / 5
                algo.on_trial_complete(f"t{done}", {"val_accuracy": value})
                done += 1
            start = time.perf_counter()
            algo.suggest(f"probe{n}")
            cells.append(time.perf_counter() - start)
            algo.on_trial_complete(f"probe{n}", None, error=True)  # not part of the history
        print(f"{searcher:<10} " + " ".join(f"{c:>8.3f}" for c in cells))


def trial_space(exp):
    from distune.config import trial_space as space

    return space(exp)


if __name__ == "__main__":
    sys.exit(main())
