#!/usr/bin/env python
"""Trials per hour with k trials sharing one GPU (resources.gpus_per_trial = 1/k, k = 1, 2, 4,
8), and the GPU's utilisation meanwhile (nvidia-smi sampled every 0.5 s, when present).

    python scripts/bench/gpu_packing.py --data ../shared/data/mnist.npz            # 16 trials per k
    python scripts/bench/gpu_packing.py --data ../shared/data/mnist.npz --quick    # 2 trials, k = 2

Each k is one distune sweep of the same random configs (seed 0), `--epochs` epochs each, with
k concurrent trials, cpus_per_trial = cores / k (at most `--max-cpus-per-trial`) and GPU
memory growth on, timed from Tuner.fit() start to end (worker start-up included).
Without a GPU (none that Ray and TensorFlow both see) it says so and runs the same code path on
the CPU with gpus_per_trial = 0 and k = 1, 2 concurrent trials of one CPU each, so the script
keeps working; the headline is then `gpu_trials_per_hour_best: n/a (no GPU)`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SPACE = {
    "hidden_layers": {"int": [1, 3]},
    "units": {"choice": [128, 256, 512]},
    "activation": {"choice": ["relu", "elu"]},
    "dropout": {"uniform": [0.0, 0.3]},
    "learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
    "batch_size": {"choice": [64, 128, 256]},
}


class GpuSampler:
    """nvidia-smi's utilisation and memory of GPU 0, sampled in a thread."""

    def __init__(self, period_s: float = 0.5) -> None:
        self.period_s, self.samples = period_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits", "--id=0"],
                                     capture_output=True, text=True, timeout=5).stdout
                util, mem = (float(v) for v in out.strip().splitlines()[0].split(","))
                self.samples.append((util, mem))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            self._stop.wait(self.period_s)

    def __enter__(self) -> "GpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> tuple[float, float, float]:
        """(mean utilisation %, max utilisation %, peak memory MiB), NaN without samples."""
        if not self.samples:
            return (float("nan"),) * 3
        utils = [u for u, _ in self.samples]
        return statistics.fmean(utils), max(utils), max(m for _, m in self.samples)


def gpus_seen() -> tuple[int, int]:
    """(GPUs Ray sees, GPUs TensorFlow sees) in this process."""
    import ray
    import tensorflow as tf

    return int(ray.cluster_resources().get("GPU", 0)), len(tf.config.list_physical_devices("GPU"))


def sweep(k: int, gpu: bool, args, storage: str) -> dict:
    from ray import tune

    from distune.config import validate
    from distune.sweep import load_data
    from distune.sweep import build_tuner

    cores = os.cpu_count() or 1
    cpus = min(args.max_cpus_per_trial, cores / k) if gpu else 1
    cpus = float(int(cpus)) if cpus >= 1 else round(cpus, 3)
    exp = validate({
        "data": {"path": args.data, "train_subset": args.subset},
        "model": {"space": SPACE},
        "train": {"epochs": args.epochs},
        "search": {"searcher": "random", "num_samples": args.trials},
        "resources": {"cpus_per_trial": cpus, "gpus_per_trial": round(1 / k, 6) if gpu else 0,
                      "max_concurrent_trials": k},
        "run": {"storage": storage, "name": f"pack-{k}", "seed": 0},
    })
    epoch_s: list[float] = []

    class Epochs(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            epoch_s.append(result.get("time_this_iter_s", float("nan")))

    tuner = build_tuner(exp, load_data(exp).for_trials(), Path(storage) / exp.run.name,
                        say=lambda _: None, callbacks=[Epochs()])
    sampler = GpuSampler() if gpu and shutil.which("nvidia-smi") else None
    start = time.perf_counter()
    if sampler:
        with sampler:
            grid = tuner.fit()
    else:
        grid = tuner.fit()
    wall = time.perf_counter() - start
    done = sum(1 for r in grid if not r.error)
    util = sampler.summary() if sampler else (float("nan"),) * 3
    return {"k": k, "cpus": cpus, "gpus": exp.resources.gpus_per_trial, "trials": done,
            "wall": wall, "per_hour": done / wall * 3600, "epoch_s": statistics.fmean(epoch_s) if epoch_s else float("nan"),
            "util_mean": util[0], "util_max": util[1], "mem_mib": util[2]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("DISTUNE_MNIST"))
    ap.add_argument("--quick", action="store_true", help="2 trials, 1 epoch, 1,000 images, k = 2")
    ap.add_argument("--packing", default="1,2,4,8", help="trials per GPU to compare")
    ap.add_argument("--trials", type=int, default=16, help="trials per sweep")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--subset", type=int, default=None, help="training images (default: all)")
    ap.add_argument("--max-cpus-per-trial", type=float, default=4.0)
    args = ap.parse_args()
    packing = [int(k) for k in args.packing.split(",")]
    if args.quick:
        args.trials, args.epochs, args.subset, packing = 2, 1, 1000, [2]

    from distune.config import validate
    from distune.ops import quiet_environment
    from distune.sweep import start_ray
    from distune.trial import configure_tensorflow

    quiet_environment(verbose=False)
    # A private Ray even when a `ray start` cluster runs on this machine (ray.init() with no
    # address would join it).
    os.environ.setdefault("RAY_ADDRESS", "local")
    configure_tensorflow()
    start_ray(validate({}), verbose=False)
    ray_gpus, tf_gpus = gpus_seen()
    gpu = ray_gpus > 0 and tf_gpus > 0
    if not gpu:
        why = ("no GPU on this machine" if ray_gpus == 0 and tf_gpus == 0 else
               f"Ray sees {ray_gpus} GPU(s), TensorFlow {tf_gpus} (install distune[gpu])")
        print(f"no GPU: {why}; running the same sweeps on the CPU, gpus_per_trial = 0, k = 1, 2 "
              "concurrent trials of one CPU each")
        packing = [k for k in packing if k <= min(2, os.cpu_count() or 1)] or [1]
    rows = []
    with tempfile.TemporaryDirectory() as storage:
        for k in packing:
            rows.append(sweep(k, gpu, args, storage))
    import ray

    ray.shutdown()
    print(f"{'k':>3} {'gpus/trial':>10} {'cpus/trial':>10} {'trials':>6} {'wall_s':>7} "
          f"{'trials/h':>9} {'epoch_s':>8} {'gpu_util%':>9} {'util_max%':>9} {'gpu_mem_mib':>11}")
    for r in rows:
        print(f"{r['k']:>3} {r['gpus']:>10.3f} {r['cpus']:>10g} {r['trials']:>6} {r['wall']:>7.1f} "
              f"{r['per_hour']:>9.0f} {r['epoch_s']:>8.2f} {r['util_mean']:>9.0f} "
              f"{r['util_max']:>9.0f} {r['mem_mib']:>11.0f}")
    subset = args.subset or "all"
    print(f"{args.trials} trials x {args.epochs} epochs per sweep, training images: {subset}; "
          f"{os.cpu_count()} cores; device: {'GPU' if gpu else 'CPU only'}; "
          f"gpu_util% = mean of nvidia-smi samples every 0.5 s (n/a: nan)")
    best = max(rows, key=lambda r: r["per_hour"])
    if gpu:
        print(f"best packing: {best['k']} trials per GPU")
        print(f"gpu_trials_per_hour_best: {best['per_hour']:.0f}")
    else:
        print(f"cpu_trials_per_hour_best: {best['per_hour']:.0f} (k = {best['k']})")
        print("gpu_trials_per_hour_best: n/a (no GPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
