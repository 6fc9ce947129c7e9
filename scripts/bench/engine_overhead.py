#!/usr/bin/env python
"""What the engine costs: one fixed list of short trials run (a) by plain Keras loops given the
same cores (one process per slot, started here, each importing Keras (and TensorFlow on that
backend), loading the data and training its share of the configs with
distune.trial.model.build_model + fit, one thread each) and (b) by distune (Ray Tune, the same configs as search.initial_points, `--slots` concurrent
trials of one CPU each, actors reused, a checkpoint every epoch).

    python scripts/bench/engine_overhead.py --data ../shared/data/mnist.npz            # 16 x 2 epochs, 10k
    python scripts/bench/engine_overhead.py --data ../shared/data/mnist.npz --quick    # 2 x 1 epoch, 1k, 1 slot

Both wall times count from nothing running to every trial done: the plain loops' from starting
their processes (interpreter, imports, data) to the last one ending; distune's from starting
its Ray to the sweep's end (the driver's data load before it, like each plain process's own,
is counted too). Figures:
- wall-time ratio distune / plain loops (same configs, epochs, backend and cores);
- whole-command ratio: the same sweep as `distune run FILE` (a new process: its imports, its
  own Ray, the winner's test, the report), start to exit, / the plain loops;
- parallel efficiency: sum of the trials' training time (Tune's time_total_s: every step, i.e.
  fit + validation) / (distune's sweep wall time x slots);
- start-up per trial: a slot becoming free (sweep start, or the previous trial on it finishing)
  -> the trial's first epoch beginning (the first result's arrival minus its time_this_iter_s).
  The first trial on each slot is "cold" (new worker: process start, TensorFlow import);
- checkpoint cost: a result's arrival -> Tune recording that epoch's checkpoint (the trial waits
  meanwhile), against the epoch's time.
Targets (#15; printed, never enforced): ratio <= 1.10, whole command <= 1.25, efficiency
>= 0.90, warm start-up <= 0.3 s.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from search_quality import SPACE  # noqa: E402  (this folder is on sys.path when run)

TARGETS = {"ratio": 1.10, "command": 1.25, "efficiency": 0.90, "startup_s": 0.3}


def sample_configs(n: int, seed: int) -> list[dict]:
    """n configs drawn once from SPACE with a seeded generator (the same list for both runs)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        out.append({
            "hidden_layers": int(rng.integers(1, 4)),
            "units": int(rng.choice([64, 128, 256, 512])),
            "activation": str(rng.choice(["relu", "elu", "tanh", "sigmoid"])),
            "dropout": round(float(rng.uniform(0.0, 0.5)), 3),
            "learning_rate": float(f"{math.exp(rng.uniform(math.log(1e-4), math.log(1e-2))):.3g}"),
            "batch_size": int(rng.choice([64, 128, 256])),
        })
    return out


def plain_share(configs: list[dict], data: str, subset: int, epochs: int, offset: int, out,
                backend: str = "tensorflow", cache: str | None = None) -> None:
    """One plain process: import Keras, load the data, train its share of the configs on one
    thread with Keras's own fit and validation; report the times through `out`. Keras's
    defaults otherwise: on JAX no persistent compilation cache unless `cache` (a directory),
    and no TensorFlow import (which `keras.utils.set_random_seed` would do), as in distune's."""
    from distune.ops.environment import backend_environment

    os.environ.update(backend_environment(backend, 1))
    import keras

    from distune.space import Hyperparams
    from distune.trial import build_model, configure_tensorflow, load_mnist
    from distune.trial.training import cache_jax_compilations, set_random_seed

    if backend == "tensorflow":  # on JAX, XLA's threads come from the environment above
        configure_tensorflow(1)
    if cache:  # as distune's trials set it, in a directory of this run's own
        cache_jax_compilations(Path(cache))
    splits = load_mnist(data, 0.1, subset, 0)  # distune's own split (run.seed 0)
    x, y = splits.x_train.reshape(-1, 784), splits.y_train
    xv, yv = splits.x_val.reshape(-1, 784), splits.y_val
    train_s, model = [], None
    for i, config in enumerate(configs):
        keras.backend.clear_session()
        hp = Hyperparams.model_validate(config)
        set_random_seed(offset + i)  # on JAX without importing TensorFlow, as distune's trials
        model = build_model(hp, math.ceil(len(x) / hp.batch_size), epochs)
        t = time.perf_counter()
        model.fit(x, y, batch_size=hp.batch_size, epochs=epochs, validation_data=(xv, yv), verbose=0)
        train_s.append(time.perf_counter() - t)
    saves = []
    with tempfile.TemporaryDirectory() as d:  # what one .keras save costs, without any engine
        for _ in range(3):
            t = time.perf_counter()
            model.save(Path(d) / "model.keras")
            saves.append(time.perf_counter() - t)
    out.put({"train": sum(train_s), "epochs": len(configs) * epochs,
             "save_s": statistics.median(saves), "images": len(x)})


def plain_loops(configs: list[dict], args) -> dict:
    """The baseline: `slots` fresh processes, each training every `slots`-th config."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # a new interpreter each: start-up and imports included
    out = ctx.Queue()
    cache = tempfile.mkdtemp(prefix="plain-jax-cache-") if args.plain_cache else None
    start = time.perf_counter()
    procs = [ctx.Process(target=plain_share, args=(configs[k::args.slots], args.data, args.subset,
                                                   args.epochs, k * 1000, out, args.backend, cache))
             for k in range(args.slots)]
    for p in procs:
        p.start()
    shares = [out.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - start
    train = sum(s["train"] for s in shares)
    return {"wall": wall, "train": train, "epoch_s": train / sum(s["epochs"] for s in shares),
            "save_s": statistics.median(s["save_s"] for s in shares), "images": shares[0]["images"]}


def experiment(configs: list[dict], args, storage: str, name: str) -> dict:
    """The sweep both distune sides run: these configs as initial points, `slots` trials of
    one CPU at a time, a checkpoint every epoch."""
    return {
        "data": {"path": args.data, "train_subset": args.subset},
        "model": {"space": SPACE},
        "train": {"epochs": args.epochs, "checkpoint_every": 1, "backend": args.backend},
        "search": {"searcher": "random", "num_samples": len(configs), "initial_points": configs},
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": args.slots},
        "run": {"storage": storage, "name": name, "seed": 0},
    }


def distune_run(configs: list[dict], args, storage: str) -> dict:
    """The same configs through Ray Tune with distune's trainable, timed from the driver."""
    import ray
    from ray import tune

    from distune.config import validate
    from distune.sweep import load_data
    from distune.sweep import build_tuner, start_ray

    exp = validate(experiment(configs, args, storage, "engine"))
    events: list[tuple] = []  # (time, kind, trial_id, result or None)

    class Clock(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            events.append((time.perf_counter(), "result", trial.trial_id, dict(result)))

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            events.append((time.perf_counter(), "checkpoint", trial.trial_id, None))

        def on_trial_complete(self, iteration, trials, trial, **info):
            events.append((time.perf_counter(), "complete", trial.trial_id, None))

    t = time.perf_counter()
    splits = load_data(exp)
    start_ray(exp, verbose=False)
    ray_start = time.perf_counter() - t  # with the driver's data load
    tuner = build_tuner(exp, splits.for_trials(), Path(storage) / "engine", say=lambda _: None,
                        callbacks=[Clock()])
    t0 = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    ray.shutdown()
    errors = sum(1 for r in grid if r.error)
    return {"wall": wall, "ray_start": ray_start, "errors": errors, **analyse(events, t0, args.slots)}


def command_run(configs: list[dict], args, storage: str) -> float:
    """The same sweep as a user runs it: `distune run FILE` from its start to its exit (its
    own Ray started, the winner picked, tested and exported, the report written)."""
    import json
    import subprocess

    file = Path(storage) / "engine.yaml"  # JSON is YAML
    file.write_text(json.dumps(experiment(configs, args, storage, "command")))
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "distune", "run", str(file)], capture_output=True,
                          text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-3000:])
    return wall


def analyse(events: list[tuple], t0: float, slots: int) -> dict:
    """Training time, slot-free -> first-epoch gaps and checkpoint gaps from the event log."""
    last_result: dict[str, tuple[float, dict]] = {}
    total_s: dict[str, float] = {}
    begins: list[tuple[float, str]] = []
    frees = [t0] * slots  # slots free at the start
    timeline = []
    ckpt_s, ckpt_ratio, iter_s, epoch_s = [], [], [], []
    for t, kind, tid, result in sorted(events, key=lambda e: e[0]):
        if kind == "result":
            total_s[tid] = result.get("time_total_s", 0.0)
            iter_s.append(result.get("time_this_iter_s", math.nan))
            if "epoch_s" in result:
                epoch_s.append(result["epoch_s"])
            if result.get("training_iteration") == 1:
                begins.append((t - result.get("time_this_iter_s", 0.0), tid))
            last_result[tid] = (t, result)
        elif kind == "checkpoint" and tid in last_result:
            rt, result = last_result[tid]
            ckpt_s.append(t - rt)
            ckpt_ratio.append((t - rt) / max(result.get("time_this_iter_s", math.nan), 1e-9))
        elif kind == "complete":
            timeline.append((t, "free"))
    timeline += [(b, "begin") for b, _ in begins]
    # Match each first epoch to the earliest slot that was free before it.
    gaps = []
    for t, kind in sorted(timeline):
        if kind == "free":
            frees.append(t)
            frees.sort()
        else:
            free = frees.pop(0) if frees else t
            gaps.append(max(0.0, t - free))
    return {"train": sum(total_s.values()), "trials": len(total_s), "cold": gaps[:slots],
            "warm": gaps[slots:], "ckpt_s": ckpt_s, "ckpt_ratio": ckpt_ratio,
            "iter_s": iter_s, "epoch_s": epoch_s}


def jax_cache() -> Path:
    """distune's JAX compilation cache on this machine (trial.training)."""
    from distune.trial.training import JAX_CACHE_DIR

    return Path(tempfile.gettempdir()) / JAX_CACHE_DIR


def jax_cache_entries() -> int:
    directory = jax_cache()
    return len(list(directory.glob("*-cache"))) if directory.is_dir() else 0


def mean(xs) -> float:
    return statistics.fmean(xs) if xs else math.nan


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("DISTUNE_MNIST"))
    ap.add_argument("--quick", action="store_true", help="2 trials, 1 epoch, 1,000 images, 1 slot")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--subset", type=int, default=10000, help="training images (10%% held out)")
    ap.add_argument("--slots", type=int, default=2, help="concurrent distune trials, 1 CPU each")
    ap.add_argument("--seed", type=int, default=0, help="seeds the list of configs")
    ap.add_argument("--backend", choices=["tensorflow", "jax"], default="tensorflow",
                    help="Keras's backend on both sides (train.backend)")
    ap.add_argument("--plain-cache", action="store_true", help="JAX: the plain loops use a "
                    "persistent compilation cache too (new and empty), as distune does")
    args = ap.parse_args()
    if args.quick:  # one slot: its second trial is the warm one
        args.trials, args.epochs, args.subset, args.slots = 2, 1, 1000, 1

    from distune.ops import quiet_environment

    quiet_environment(verbose=False)
    # A private Ray even when a `ray start` cluster runs on this machine (ray.init() with no
    # address would join it).
    os.environ.setdefault("RAY_ADDRESS", "local")
    configs = sample_configs(args.trials, args.seed)
    cache = jax_cache_entries() if args.backend == "jax" else None
    plain = plain_loops(configs, args)
    with tempfile.TemporaryDirectory() as storage:
        d = distune_run(configs, args, storage)
        if cache == 0:  # the command starts as cold as the sweep did, not from its programs
            shutil.rmtree(jax_cache(), ignore_errors=True)
        command = command_run(configs, args, storage)

    total = d["ray_start"] + d["wall"]
    ratio = total / plain["wall"]
    command_ratio = command / plain["wall"]
    efficiency = d["train"] / (d["wall"] * args.slots)
    warm = mean(d["warm"])
    print(f"{'engine':<14} {'trials':>6} {'wall_s':>7} {'train_s':>8} {'efficiency':>10} "
          f"{'startup_s':>10} {'cold_s':>7} {'ckpt_s':>7} {'ckpt/epoch':>10}")
    print(f"{'plain keras':<14} {len(configs):>6} {plain['wall']:>7.1f} {plain['train']:>8.1f} "
          f"{plain['train'] / (plain['wall'] * args.slots):>10.2f} {'-':>10} {'-':>7} {'-':>7} {'-':>10}")
    print(f"{'distune':<14} {d['trials']:>6} {total:>7.1f} {d['train']:>8.1f} "
          f"{efficiency:>10.2f} {warm:>10.2f} {mean(d['cold']):>7.2f} "
          f"{mean(d['ckpt_s']):>7.2f} {mean(d['ckpt_ratio']):>10.2f}")
    print(f"setup: {len(configs)} trials x {args.epochs} epochs on {plain['images']} train images "
          f"(10% of {args.subset} held out); plain: {args.slots} processes x 1 thread, started "
          f"here; distune: {args.slots} slots x 1 CPU, actors reused, checkpoint every epoch; "
          f"{os.cpu_count()} cores; {d['errors']} errors; backend {args.backend}"
          + ("; plain loops with a persistent compilation cache" if args.plain_cache else "")
          + ("" if cache is None else f"; distune's JAX compilation cache held {cache} programs "
             "at the start (0: cold, as on a new node)"))
    print("wall_s: from nothing running to every trial done (plain: process start, imports, "
          f"data; distune: data, Ray start-up {d['ray_start']:.1f} s, then the sweep "
          f"{d['wall']:.1f} s); efficiency = training time / (wall x {args.slots}) (distune: "
          "the sweep's wall); startup_s = mean of warm trials, cold_s = first trial per slot")
    print(f"whole command: `distune run` of the same sweep {command:.1f} s from its start to its "
          f"exit (its Ray started, the winner tested, the report written): {command_ratio:.2f}x "
          "the plain loops" + ("" if cache is None else "; its JAX compilation cache as the "
                               "sweep's was at the start"))
    if d["warm"]:
        print(f"distune warm start-up: median {statistics.median(d['warm']):.2f} s, max "
              f"{max(d['warm']):.2f} s over {len(d['warm'])} trials (a recycled training "
              "process shows up as the max)")
    print(f"per epoch on 1 thread: plain fit + validation {plain['epoch_s']:.2f} s; distune step "
          f"(fit + validation) {mean(d['iter_s']):.2f} s, fit alone {mean(d['epoch_s']):.2f} s; "
          f"a bare .keras save {plain['save_s']:.3f} s")
    checks = [
        (f"wall-time ratio {ratio:.2f} <= {TARGETS['ratio']:.2f}", ratio <= TARGETS["ratio"]),
        (f"whole-command ratio {command_ratio:.2f} <= {TARGETS['command']:.2f}",
         command_ratio <= TARGETS["command"]),
        (f"parallel efficiency {efficiency:.2f} >= {TARGETS['efficiency']:.2f}",
         efficiency >= TARGETS["efficiency"]),
        (f"warm start-up {warm:.2f} s <= {TARGETS['startup_s']:.1f} s",
         bool(d["warm"]) and warm <= TARGETS["startup_s"]),
    ]
    for text, ok in checks:
        print(f"target {text}: {'met' if ok else 'NOT met'}")
    print(f"engine_wall_ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
