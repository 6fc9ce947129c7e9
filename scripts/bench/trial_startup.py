#!/usr/bin/env python
"""How long a trial slot takes to start: from Tuner.fit() to each trial's first epoch, over
several small sweeps on one Ray, with the training process forked by the node's zygote
(distune/trial/zygote.py) and spawned as before (DISTUNE_ZYGOTE=0). The first sweep on a fresh Ray
pays TensorFlow's import either way; later sweeps (the select stage, nightly, a test suite)
show the difference. Also, per trial, the seconds from Ray's placing it (its actor's process
started) to its first epoch's start: #15's "a slot's first epoch begins <= 2 s after Ray places
the trial".

    python scripts/bench/trial_startup.py --data ../shared/data/mnist.npz            # 4 sweeps each
    python scripts/bench/trial_startup.py --data ../shared/data/mnist.npz --quick    # forked only, 2 sweeps
    python scripts/bench/trial_startup.py --data ../shared/data/mnist.npz --backend jax    # the default preset's
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


BEGIN_TARGET_S = 2.0


def process_started(pid: int) -> float | None:
    """When process `pid` started, in epoch seconds (Linux /proc); None elsewhere or if gone."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def sweeps(data: str, count: int, backend: str) -> list[dict]:
    """In this process: `count` sweeps of 2 trials x 1 epoch on one Ray, timed."""
    import ray
    from ray import tune

    from distune.config import validate
    from distune.ops import forked_workers, job_runtime_env, local_ray_environment, quiet_environment
    from distune.ops.worker_fork import launcher_of
    from distune.sweep import build_tuner, load_data, prepare_directory, start_zygotes

    quiet_environment(verbose=False)
    # A fresh Ray of 2 slots, as the figures assume; $RAY_ADDRESS joins a running one instead
    # (the test suite's: its zygote is warm, so every sweep is a later one).
    address = os.environ.get("RAY_ADDRESS", "local")
    if address == "local":
        local_ray_environment()  # loopback only, token required: as distune run starts it
    with forked_workers() if address == "local" else contextlib.nullcontext():
        ray.init(address=address, **({"num_cpus": 2} if address == "local" else {}),
                 include_dashboard=False, log_to_driver=False,
                 runtime_env=job_runtime_env(address))
    firsts: dict[str, float] = {}
    begun: dict[str, float] = {}  # seconds from Ray's placing the trial to its first epoch's start

    class FirstEpoch(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if trial.trial_id not in firsts:
                firsts[trial.trial_id] = time.perf_counter()
                # Placed: the actor's process exists (Ray starts it once the trial's resources
                # are reserved, ~0.06 s after fit() here). Begun: the result's arrival less
                # the step's own time (the epoch, its validation, the report).
                # A forked worker's own start is later than Ray's placing: its launcher's
                # (the process the raylet started) is when Ray placed it.
                placed = process_started(launcher_of(result["pid"]) or result["pid"])
                if placed is not None:
                    begun[trial.trial_id] = time.time() - result["time_this_iter_s"] - placed

    out = []
    with tempfile.TemporaryDirectory() as storage:
        for i in range(count):
            exp = validate({"data": {"path": data, "train_subset": 1000},
                            "model": {"space": {"hidden_layers": 1, "units": {"choice": [16, 32]}}},
                            "train": {"epochs": 1, "backend": backend}, "search": {"num_samples": 2},
                            "run": {"storage": storage, "name": f"s{i}", "report": False}})
            directory = Path(storage) / f"s{i}"
            prepare_directory(directory, overwrite=False)
            tuner = build_tuner(exp, load_data(exp).for_trials(), directory, say=lambda _: None,
                                callbacks=[FirstEpoch()])
            firsts.clear()
            start = time.perf_counter()
            start_zygotes(exp)  # as distune's sweeps do, right before Tuner.fit()
            tuner.fit()
            wall = time.perf_counter() - start
            out.append({"first_epoch_s": sorted(t - start for t in firsts.values()), "fit_s": wall,
                        "placed_to_begun_s": sorted(begun.values())})
            begun.clear()
    ray.shutdown()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("DISTUNE_MNIST"))
    ap.add_argument("--quick", action="store_true", help="2 sweeps, forked only (keeps the script working)")
    ap.add_argument("--sweeps", type=int, default=4)
    ap.add_argument("--backend", choices=["tensorflow", "jax"], default="tensorflow",
                    help="Keras's backend in the trials (the default preset's is jax)")
    ap.add_argument("--child", choices=["forked", "spawned"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    count = 2 if args.quick else args.sweeps
    if args.child:
        print(json.dumps(sweeps(args.data, count, args.backend)))
        return 0
    results = {}
    for i, mode in enumerate(("forked",) if args.quick else ("spawned", "forked")):
        if i:
            time.sleep(10)  # the last Ray's processes finish exiting before the next one starts
        env = {**os.environ, "DISTUNE_ZYGOTE": "0" if mode == "spawned" else "1"}
        proc = subprocess.run([sys.executable, __file__, "--data", args.data, "--sweeps", str(count),
                               "--backend", args.backend, "--child", mode], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            return proc.returncode
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{'process':<8} {'sweep':>5} {'first epochs s (2 trials)':>26} {'fit s':>6} {'placed to begun s':>18}")
    for mode, rows in results.items():
        for i, r in enumerate(rows, 1):
            firsts = " ".join(f"{t:5.1f}" for t in r["first_epoch_s"])
            begins = " ".join(f"{t:5.2f}" for t in r["placed_to_begun_s"])
            print(f"{mode:<8} {i:>5} {firsts:>26} {r['fit_s']:>6.1f} {begins:>18}")
    later = {m: statistics.median(t for r in rows[1:] for t in r["first_epoch_s"]) for m, rows in results.items()}
    begun = {m: [t for r in rows[1:] for t in r["placed_to_begun_s"]] for m, rows in results.items()}
    print(f"sweeps of 2 trials x 1 epoch on 900 images, 2 slots, {os.cpu_count()} cores, Keras on "
          f"{args.backend}; first epoch "
          "= seconds from Tuner.fit() to the trial's first result (worker start, training process, "
          "model build, one epoch); the median is over sweeps after the first")
    print("median first epoch after the first sweep: " +
          ", ".join(f"{mode} {t:.1f} s" for mode, t in later.items()))
    print("placed (the trial's actor process started) to its first epoch begun, sweeps after the "
          "first: " + ", ".join(f"{mode} median {statistics.median(ts):.2f} s (range {min(ts):.2f}-"
                                f"{max(ts):.2f})" for mode, ts in begun.items() if ts)
          + f"; target (#15) <= {BEGIN_TARGET_S} s")
    print(f"trial_first_epoch_forked_s: {later['forked']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
