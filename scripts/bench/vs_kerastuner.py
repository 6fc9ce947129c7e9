#!/usr/bin/env python
"""distune against KerasTuner, each run as its users run it, on one search space, the same
data and the same validation split, on this machine's cores.

    pip install -e '.[bench]'    # keras-tuner
    python scripts/bench/vs_kerastuner.py --data ../shared/data/mnist.npz              # 3 seeds
    python scripts/bench/vs_kerastuner.py --data ../shared/data/mnist.npz --quick      # 1 seed, tiny

The space is the practitioners' guides' MLP: a first dense layer of 32-512 units (step 32),
three more of 8-64 units (step 8), activation relu/tanh/sigmoid, dropout 0-0.1 (after each
dense layer), learning rate log-uniform 1e-4-1e-2, Adam. Validation: the same held-out 10 % of
the training set for both (distune's seeded split); the test set is used once per method, for
its winner.

KerasTuner as its guides use it: its own `build_model(hp)` in plain Keras, Keras's default
batch size (32), RandomSearch with its default max_trials (10) and Hyperband with its defaults
(factor 3, one iteration), `--epochs` as the epochs per trial / Hyperband's max_epochs; one
process, TensorFlow on every core, run to its own end. distune: hyperopt + ASHA (random + FIFO
too with `--distune hyperopt+asha,random+fifo`) on the same space (batch 128, its own default;
`--batch 32`: KerasTuner's), with the default preset's Keras backend and ASHA settings, one CPU
per trial and as many trials at once as cores, for the longest KerasTuner wall time of that seed
(an equal budget, so the winners' test scores compare), its time to each target read from its
curve; Ray's start-up is outside.

A method's time to a target is the first moment its best validation accuracy reaches it. Each
KerasTuner method's target is its own final best, and the ratio is distune's time to it over
that KerasTuner method's own time to it (not its whole run). Ratios are given per seed, then
the median and range over seeds; a target distune never reaches is reported as not reached.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SPACE = {
    "hidden_layers": 4,
    "units_1": {"int": [32, 512, 32]},
    "units_2": {"int": [8, 64, 8]},
    "units_3": {"int": [8, 64, 8]},
    "units_4": {"int": [8, 64, 8]},
    "activation": {"choice": ["relu", "tanh", "sigmoid"]},
    "dropout": {"uniform": [0.0, 0.1]},
    "learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
    "optimizer": "adam",
    "batch_size": 128,
}
KT_METHODS = ("random", "hyperband")
DISTUNE_METHODS = {"hyperopt+asha": ("hyperopt", "asha"), "random+fifo": ("random", "fifo")}
TARGET = 0.33


def best_so_far(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(elapsed, val_accuracy) per epoch -> the running best, one point per improvement."""
    out, best = [], -math.inf
    for t, v in sorted(points):
        if math.isfinite(v) and v > best:
            best = v
            out.append((t, v))
    return out


def time_to_reach(curve: list[tuple[float, float]], target: float) -> float:
    return next((t for t, v in curve if v >= target), math.inf)


def build_model(hp):
    """A KerasTuner user's own model function, as the guides write it."""
    import keras

    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten()])
    activation = hp.Choice("activation", ["relu", "tanh", "sigmoid"])
    dropout = hp.Float("dropout", 0.0, 0.1)
    model.add(keras.layers.Dense(hp.Int("units_1", 32, 512, step=32), activation=activation))
    model.add(keras.layers.Dropout(dropout))
    for i in (2, 3, 4):
        model.add(keras.layers.Dense(hp.Int(f"units_{i}", 8, 64, step=8), activation=activation))
        model.add(keras.layers.Dropout(dropout))
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def run_kerastuner(kind: str, splits, args, seed: int) -> dict:
    """One KerasTuner search in this process, with its defaults, to its own end."""
    import keras
    import keras_tuner as kt

    points: list[tuple[float, float]] = []
    clock = {"t0": 0.0}

    class Clock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            points.append((time.perf_counter() - clock["t0"], float((logs or {}).get("val_accuracy", math.nan))))

    with tempfile.TemporaryDirectory() as d:
        common = dict(objective="val_accuracy", seed=seed, directory=d, project_name=kind)
        clock["t0"] = time.perf_counter()
        if kind == "random":
            tuner = kt.RandomSearch(build_model, max_trials=args.kt_trials, **common)
            fit = {"epochs": args.epochs}
        else:
            tuner = kt.Hyperband(build_model, max_epochs=args.epochs, **common)
            fit = {}
        with contextlib.redirect_stdout(io.StringIO()):
            tuner.search(splits.x_train, splits.y_train, validation_data=(splits.x_val, splits.y_val),
                         verbose=0, callbacks=[Clock()], **fit)
            wall = time.perf_counter() - clock["t0"]
            best = tuner.get_best_models(1)[0]
            _, test_acc = best.evaluate(splits.x_test, splits.y_test, batch_size=1024, verbose=0)
        trials = len(tuner.oracle.trials)
    keras.backend.clear_session()
    return {"method": f"kerastuner {kind}", "wall": wall, "trials": trials,
            "curve": best_so_far(points), "test": float(test_acc), "epochs": len(points)}


def run_distune(searcher: str, scheduler: str, args, seed: int, splits, storage: str,
                budget_s: float, preset) -> dict:
    """One distune sweep, stopped after `budget_s` (the times to targets come from its curve), with
    `preset`'s (the default preset's) Keras backend and its scheduler's settings."""
    from ray import tune

    from distune import finish
    from distune.config import validate
    from distune.errors import DistuneError
    from distune.results import open_analysis
    from distune.sweep import build_tuner

    name = f"{searcher}-{scheduler}-{seed}"
    exp = validate({
        "data": {"path": args.data, "train_subset": args.subset, "validation_split": 0.1},
        "model": {"space": {**SPACE, "batch_size": args.batch}},
        "train": {"epochs": args.epochs, "backend": preset.train.backend},
        "search": {"searcher": searcher, "num_samples": 100_000},
        "schedule": {"scheduler": scheduler,
                     **({"options": preset.schedule.options} if scheduler == preset.schedule.scheduler else {})},
        "resources": {"cpus_per_trial": 1},
        "run": {"storage": storage, "name": name, "seed": seed, "time_budget_s": budget_s,
                "report": False},
    })
    points: list[tuple[float, float]] = []
    clock = {"t0": 0.0}
    started: set[str] = set()

    class Curve(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            points.append((time.perf_counter() - clock["t0"], float(result.get("val_accuracy", math.nan))))
            started.add(trial.trial_id)

    directory = Path(storage) / name
    tuner = build_tuner(exp, splits.for_trials(), directory, say=lambda _: None, callbacks=[Curve()])
    clock["t0"] = time.perf_counter()
    tuner.fit()
    wall = time.perf_counter() - clock["t0"]
    try:
        test = finish(exp, directory, splits, open_analysis(directory), refit=False, started=time.time(),
                      say=lambda _: None).test_accuracy
    except DistuneError:  # no epoch finished (and was checkpointed) within the budget
        test = math.nan
    return {"method": f"distune {searcher}+{scheduler}", "wall": wall, "trials": len(started),
            "curve": best_so_far(points), "test": test, "epochs": len(points)}


def spread(xs: list[float]) -> str:
    """Median and range over seeds; not-reached seeds counted, not dropped."""
    done = [x for x in xs if math.isfinite(x)]
    missed = len(xs) - len(done)
    if not done:
        return f"not reached ({missed}/{len(xs)} seeds)"
    text = f"{statistics.median(done):.2f} [{min(done):.2f}-{max(done):.2f}]" if len(done) > 1 \
        else f"{done[0]:.2f}"
    return text + (f", not reached in {missed}/{len(xs)} seeds" if missed else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("DISTUNE_MNIST"))
    ap.add_argument("--quick", action="store_true", help="1 seed, 1,000 images, 2 epochs, "
                    "KerasTuner RandomSearch of 2 trials")
    ap.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2; quick 0)")
    ap.add_argument("--epochs", type=int, help="epochs per trial, Hyperband's max_epochs (default 10; quick 2)")
    ap.add_argument("--subset", type=int, help="training images (default: all 60,000; quick 1,000)")
    ap.add_argument("--kt-trials", type=int, help="RandomSearch max_trials (default 10, its own; quick 2)")
    ap.add_argument("--kt", default=",".join(KT_METHODS), help="KerasTuner methods to run")
    ap.add_argument("--batch", type=int, default=SPACE["batch_size"],
                    help=f"distune's batch size (default {SPACE['batch_size']}, its own; 32 is KerasTuner's)")
    ap.add_argument("--distune", default="hyperopt+asha",
                    help=f"distune methods to run, of {', '.join(DISTUNE_METHODS)}")
    args = ap.parse_args()
    for name, full, quick in (("seeds", "0,1,2", "0"), ("epochs", 10, 2), ("subset", None, 1000),
                              ("kt_trials", 10, 2)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    seeds = [int(s) for s in args.seeds.split(",")]
    kt_methods = [m for m in args.kt.split(",") if m]

    import importlib.util

    if importlib.util.find_spec("keras_tuner") is None:
        print("keras-tuner is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    from distune.config import load_experiment, validate
    from distune.ops import quiet_environment
    from distune.sweep import load_data, start_ray
    from distune.trial import configure_tensorflow

    quiet_environment(verbose=False)
    os.environ.setdefault("RAY_ADDRESS", "local")  # a private Ray, never a `ray start` one
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    configure_tensorflow(os.cpu_count() or 1)  # KerasTuner trains here, on every core
    methods = [DISTUNE_METHODS[m] for m in args.distune.split(",") if m]
    preset, preset_name = load_experiment()  # distune's settings as a user gets them
    ratios: dict[tuple[str, str], list[float]] = {}
    wins: dict[str, list[bool]] = {}  # winner's test above KerasTuner's best, per seed
    ray_start = None
    print(f"{'seed':>4} {'method':<26} {'trials':>6} {'epochs':>6} {'wall_s':>7} {'best_val':>8} "
          f"{'test':>7} " + " ".join(f"{'t_to_kt_' + m:>15}" for m in kt_methods))
    for seed in seeds:
        exp = validate({"data": {"path": args.data, "train_subset": args.subset}, "run": {"seed": seed}})
        splits = load_data(exp)  # the split distune's trials get for this seed
        kt_rows = [run_kerastuner(kind, splits, args, seed) for kind in kt_methods]
        targets = {r["method"]: r["curve"][-1][1] for r in kt_rows}
        if ray_start is None:
            t = time.perf_counter()
            start_ray(exp, verbose=False)
            ray_start = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as storage:
            d_rows = [run_distune(s, sch, args, seed, splits, storage, max(r["wall"] for r in kt_rows), preset)
                      for s, sch in methods]
        for r in kt_rows + d_rows:
            reach = [time_to_reach(r["curve"], targets[k["method"]]) for k in kt_rows]
            print(f"{seed:>4} {r['method']:<26} {r['trials']:>6} {r['epochs']:>6} {r['wall']:>7.1f} "
                  f"{r['curve'][-1][1] if r['curve'] else math.nan:>8.4f} {r['test']:>7.4f} "
                  + " ".join(f"{t:>15.1f}" if math.isfinite(t) else f"{'not reached':>15}" for t in reach))
        best_kt = max(r["test"] for r in kt_rows)
        for r in d_rows:
            wins.setdefault(r["method"], []).append(r["test"] > best_kt)
            for k in kt_rows:
                own = time_to_reach(k["curve"], targets[k["method"]])
                ratios.setdefault((r["method"], k["method"]), []).append(
                    time_to_reach(r["curve"], targets[k["method"]]) / own)
    import ray

    ray.shutdown()
    print(f"{len(splits.x_train)} train / {len(splits.x_val)} validation images; up to {args.epochs} "
          f"epochs per trial; {os.cpu_count()} cores; Ray start-up {ray_start:.1f} s (outside); "
          f"seeds {args.seeds}")
    print(f"distune: batch {args.batch}, Keras backend {preset.train.backend}, {preset.schedule.scheduler} options "
          f"{preset.schedule.options} (preset {preset_name})")
    print("t_to_kt_M = seconds to first reach KerasTuner M's final best validation accuracy of "
          "that seed (KerasTuner M's own row: its own time to it); distune runs for the longest "
          "KerasTuner wall time of the seed (an equal budget)")
    for (d, k), xs in ratios.items():
        print(f"ratio {d} / {k}: {spread(xs)}  (per seed: "
              + ", ".join(f"{x:.2f}" if math.isfinite(x) else "not reached" for x in xs) + ")")
    for d, won in wins.items():
        print(f"{d}: winner's test above KerasTuner's best at an equal budget in {sum(won)} of "
              f"{len(won)} seeds (target: 2 of 3)")
    head = ratios.get((f"distune {methods[0][0]}+{methods[0][1]}", "kerastuner hyperband"), [])
    done = [x for x in head if math.isfinite(x)]
    median = statistics.median(done) if len(done) == len(head) and head else math.inf
    print(f"target ratio <= {TARGET} against Hyperband: {'met' if median <= TARGET else 'NOT met'}")
    print(f"time_ratio_to_kt_hyperband: {median:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
