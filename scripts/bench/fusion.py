#!/usr/bin/env python
"""Trials per hour with fused trials (resources.fuse: K) against unfused ones, on the default
preset's space and scheduler (mnist-mlp: random search + ASHA), the same seed and trials.

    python scripts/bench/fusion.py --data ../shared/data/mnist.npz              # CPU arms
    python scripts/bench/fusion.py --data ../shared/data/mnist.npz --gpu        # on one GPU
    python scripts/bench/fusion.py --data ../shared/data/mnist.npz --quick      # tiny, K = 2

CPU arms (cpus_per_trial 1, every core a slot): unfused on TensorFlow (the default backend),
unfused on JAX (the fused engine's backend, so the backend's gain shows apart from fusing's),
then fused K = 2, 4, 8 on JAX. GPU arms (one GPU): one trial per GPU, fractional packing (4
per GPU), fused K = 8, 16, 32 (gpus_per_trial 1: the GPU is the slot), all on JAX.

Each arm is one `distune run` on a fresh local Ray with a temp dir of its own (so JAX's
persistent compilation cache starts empty, as on a new machine; --warm times a second run
whose cache the first filled), timed from command to prompt (Ray's and
Tune's start-up, the winner's test and the report included: what a user waits for); the sweep
time is Tune's, from the command's own summary. Trials per hour = trials / sweep seconds.
Quality: the best validation accuracy and the winner's test accuracy, so a faster arm that
found worse configs shows it. One seed per arm unless --seeds says more.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CPU_ARMS = {"unfused tensorflow": {"train.backend": "tensorflow"},
            "unfused jax": {"train.backend": "jax"},
            **{f"fused K={k}": {"train.backend": "jax", "resources.fuse": k} for k in (2, 4, 8)}}
GPU_ARMS = {"1 trial per GPU": {"train.backend": "jax", "resources.gpus_per_trial": 1},
            "4 packed per GPU": {"train.backend": "jax", "resources.gpus_per_trial": 0.25},
            **{f"fused K={k}": {"train.backend": "jax", "resources.gpus_per_trial": 1, "resources.fuse": k}
               for k in (8, 16, 32)}}


def run_arm(name: str, sets: dict, args, seed: int, storage: str) -> dict:
    overrides = {"run.seed": seed, "run.report": False, "search.num_samples": args.samples,
                 "train.epochs": args.epochs, "data.train_subset": args.subset, **sets}
    cmd = [sys.executable, "-m", "distune", "run", "--storage", storage, "--name", "arm",
           "--overwrite", "--data", args.data]
    for key, value in overrides.items():
        if value is not None:
            cmd += ["--set", f"{key}={value}"]
    # JAX's persistent compilation cache lives under the temp dir: each arm gets its own,
    # empty (a first sweep's cost), or filled by one untimed run of the same arm (--warm)
    with tempfile.TemporaryDirectory(prefix="fb-") as own:
        env = {**os.environ, "TMPDIR": own}
        if args.warm:
            subprocess.run(cmd, capture_output=True, text=True, env=env)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{name}: distune failed\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    sweep = float(re.search(r"Best of \d+ trials \((\d+(?:\.\d+)?) s\)", proc.stdout).group(1))
    best = json.loads((Path(storage) / "arm" / "best.json").read_text())
    trials = sum(1 for _ in open(Path(storage) / "arm" / "results.csv")) - 1
    return {"arm": name, "seed": seed, "trials": trials, "sweep_s": sweep, "wall_s": wall,
            "per_hour": trials / sweep * 3600, "val": best["val_accuracy"], "test": best["test_accuracy"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("DISTUNE_MNIST"), required=False, help="MNIST .npz")
    ap.add_argument("--gpu", action="store_true", help="the GPU arms (needs an NVIDIA GPU and distune[gpu])")
    ap.add_argument("--quick", action="store_true", help="2 arms, 4 trials, 1 epoch, 2,000 images")
    ap.add_argument("--samples", type=int, default=12, help="trials per arm (the preset's 12)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs a trial may reach (ASHA stops some)")
    ap.add_argument("--subset", type=int, default=20000, help="training images (before validation)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--warm", action="store_true", help="time each arm's second run, its JAX "
                    "compilation cache filled by the first (default: every arm's cache empty)")
    args = ap.parse_args()
    arms = GPU_ARMS if args.gpu else CPU_ARMS
    if args.quick:
        args.samples, args.epochs, args.subset = 4, 1, 2000
        arms = {k: v for k, v in CPU_ARMS.items() if k in ("unfused jax", "fused K=2")}
    rows = []
    with tempfile.TemporaryDirectory() as storage:
        for seed in range(args.seeds):
            for name, sets in arms.items():
                rows.append(run_arm(name, sets, args, seed, storage))
                r = rows[-1]
                print(f"{r['arm']:<20} seed {seed}  {r['trials']:>3} trials  sweep {r['sweep_s']:>7.1f} s  "
                      f"command {r['wall_s']:>7.1f} s  {r['per_hour']:>7.0f} trials/h  "
                      f"val {r['val']:.4f}  test {r['test']:.4f}", flush=True)
    print()
    print(f"{'arm':<20} {'trials/h (median)':>18} {'range':>16} {'vs first':>9} {'val':>7} {'test':>7}")
    base = None
    for name in arms:
        mine = [r for r in rows if r["arm"] == name]
        rate = statistics.median(r["per_hour"] for r in mine)
        base = base or rate
        lo, hi = min(r["per_hour"] for r in mine), max(r["per_hour"] for r in mine)
        print(f"{name:<20} {rate:>18.0f} {f'{lo:.0f}-{hi:.0f}':>16} {rate / base:>8.2f}x "
              f"{statistics.median(r['val'] for r in mine):>7.4f} {statistics.median(r['test'] for r in mine):>7.4f}")
    print(f"cpus: {os.cpu_count()}  gpu: {args.gpu}  samples: {args.samples}  epochs: {args.epochs}  "
          f"images: {args.subset}  seeds: {args.seeds}  jax cache: {'warm' if args.warm else 'cold'}")
    fused = [statistics.median(r["per_hour"] for r in rows if r["arm"] == n) for n in arms if n.startswith("fused")]
    unfused_same_backend = statistics.median(
        r["per_hour"] for r in rows if r["arm"] == ("1 trial per GPU" if args.gpu else "unfused jax"))
    print(f"fused_speedup_best: {max(fused) / unfused_same_backend:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
