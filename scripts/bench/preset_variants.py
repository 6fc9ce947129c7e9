#!/usr/bin/env python
"""The default preset's searcher and scheduler settings, measured instead of guessed (#15):
the preset as shipped against variants of its early stopping, each over several seeds, on
full MNIST, each run a whole `distune run` as a user types it, one after another.

    python scripts/bench/preset_variants.py --data ../shared/data/mnist.npz             # seeds 0,1,2
    python scripts/bench/preset_variants.py --data ../shared/data/mnist.npz --variants grace1,grace2
    python scripts/bench/preset_variants.py --quick     # one variant on a tiny slice, to keep it working

Per variant: sweep seconds (Tune's start to the last result), epochs trained in all, best
validation accuracy and the winner's test accuracy, per seed, then the median and range. Scores
are noisy (one validation image is 0.017 points): a variant wins on time at equal quality, or
on quality over every seed, not on one lucky run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

from default_preset import QUICK, run_preset  # noqa: E402  (this folder is on sys.path when run)

ASHA = "schedule.options={grace_period: %d, reduction_factor: %d}"
VARIANTS = {  # name -> --set overrides on the preset
    "shipped": [],                                             # the preset as it ships (grace 1 since 2026-12-07)
    "grace1": ["--set", ASHA % (1, 3)],                         # the suspect: cuts after one epoch
    "grace2": ["--set", ASHA % (2, 3)],                         # shipped until 2026-12-07
    "grace3": ["--set", ASHA % (3, 3)],                         # one noisy epoch less decisive
    "grace1x18": ["--set", ASHA % (1, 3), "--samples", "18"],  # the time grace 1 saves, spent on configs
    "fifo6": ["--set", "schedule.scheduler=fifo", "--set", "schedule.options={}",
              "--samples", "6"],                                 # no early stopping, half the configs
}


def summary(xs: list[float], fmt: str) -> str:
    return f"{fmt.format(statistics.median(xs))} [{fmt.format(min(xs))}-{fmt.format(max(xs))}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("DISTUNE_MNIST"), help="MNIST .npz")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", help=f"of {', '.join(VARIANTS)} (default all; quick: grace1)")
    ap.add_argument("--preset", default="mnist-mlp")
    ap.add_argument("--quick", action="store_true", help="seed 0, one variant, 2 trials, 1 epoch, 2,000 images")
    args = ap.parse_args()
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    names = (args.variants or ("grace1" if args.quick else ",".join(VARIANTS))).split(",")
    if unknown := [n for n in names if n not in VARIANTS]:
        ap.error(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    rows: dict[str, list[dict]] = {n: [] for n in names}
    for seed in seeds:  # seeds outermost: a drift in the machine's speed hits every variant alike
        for name in names:
            extra = VARIANTS[name] + ["--set", f"run.seed={seed}"] + (QUICK if args.quick else [])
            with tempfile.TemporaryDirectory() as storage:
                run = run_preset(args.preset, args.data, extra, storage)
            rows[name].append({**run, "seed": seed})
            print(f"# {name} seed {seed}: sweep {run['sweep']:.1f} s (command {run['wall']:.1f} s), "
                  f"{run['trials']} trials, "
                  f"{run['epochs']} epochs, val {run['val']:.4f}, test {run['test']:.4f}", flush=True)
    print(f"\n{'variant':<10} {'seed':>4} {'trials':>6} {'epochs':>6} {'sweep_s':>8} {'wall_s':>7} "
          f"{'val_acc':>8} {'test_acc':>9}")
    for name in names:
        for r in rows[name]:
            print(f"{name:<10} {r['seed']:>4} {r['trials']:>6} {r['epochs']:>6} {r['sweep']:>8.1f} {r['wall']:>7.1f} "
                  f"{r['val']:>8.4f} {r['test']:>9.4f}")
    print(f"\nmedian [range] over seeds {','.join(map(str, seeds))} (cpus: {os.cpu_count()}, quick: {args.quick}):")
    for name in names:
        rs = rows[name]
        print(f"{name:<10} sweep {summary([r['sweep'] for r in rs], '{:.0f}')} s  "
              f"epochs {summary([r['epochs'] for r in rs], '{:.0f}')}  "
              f"val {summary([r['val'] for r in rs], '{:.4f}')}  test {summary([r['test'] for r in rs], '{:.4f}')}")
    best = max(names, key=lambda n: statistics.median(r["test"] for r in rows[n]))
    print(f"best variant by median test accuracy: {best}")
    print(f"best_variant_median_test_accuracy: {statistics.median(r['test'] for r in rows[best]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
