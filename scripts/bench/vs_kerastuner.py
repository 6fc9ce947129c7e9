#!/usr/bin/env python
"""distune side by side with KerasTuner: one search space, one validation split, the same data
and the same wall-clock budget per method, on this machine.

    pip install -e '.[bench]'    # keras-tuner
    python scripts/bench/vs_kerastuner.py --data ../shared/data/mnist.npz                 # 300 s each
    python scripts/bench/vs_kerastuner.py --data ../shared/data/mnist.npz --quick         # 6 s each

The space is the practitioners' guides' MLP: a first dense layer of 32-512 units (step 32),
three more of 8-64 units (step 8), activation relu/tanh/sigmoid, dropout 0-0.1 (after each
dense layer), learning rate log-uniform 1e-4-1e-2, Adam, batch 128. Both build the model with
distune.trial.model.build_model. Validation: the same held-out 10% of the training set for both
(distune's seeded split); the test set is used once per method, for its winner.

Methods: KerasTuner RandomSearch and Hyperband (one process, TensorFlow on every core;
KerasTuner has no time budget, so a trial epoch that ends past the budget stops the search);
distune random+fifo, hyperopt+asha and optuna+asha (run.time_budget_s, one CPU per trial,
as many concurrent trials as cores). Ray's own start-up is paid once before the first distune
method and is outside the budgets. Every method's best-so-far validation accuracy is recorded
against its elapsed time; the headline is the best distune method's time to reach KerasTuner
Hyperband's final best validation accuracy, divided by Hyperband's wall time (target <= 0.33).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
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
DISTUNE_METHODS = [("random", "fifo"), ("hyperopt", "asha"), ("optuna", "asha")]
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
TARGET = 0.33


def best_so_far(points: list[tuple[float, float]], budget: float) -> list[tuple[float, float]]:
    """(elapsed, val_accuracy) per epoch -> the running best, within the budget."""
    out, best = [], -math.inf
    for t, v in sorted(points):
        if t <= budget and math.isfinite(v) and v > best:
            best = v
            out.append((t, v))
    return out


def best_at(curve: list[tuple[float, float]], t: float) -> float:
    vals = [v for s, v in curve if s <= t]
    return vals[-1] if vals else math.nan


def time_to_reach(curve: list[tuple[float, float]], target: float) -> float:
    return next((t for t, v in curve if v >= target), math.inf)


def hyperparams_from_kt(hp, epochs: int):
    """The KerasTuner space, written with KerasTuner's own calls, as distune Hyperparams."""
    from distune.space import Hyperparams

    return Hyperparams.model_validate({
        "hidden_layers": 4,
        "units_1": hp.Int("units_1", 32, 512, step=32),
        "units_2": hp.Int("units_2", 8, 64, step=8),
        "units_3": hp.Int("units_3", 8, 64, step=8),
        "units_4": hp.Int("units_4", 8, 64, step=8),
        "activation": hp.Choice("activation", ["relu", "tanh", "sigmoid"]),
        "dropout": hp.Float("dropout", 0.0, 0.1),
        "learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"),
        "optimizer": "adam",
        "batch_size": 128,
        "epochs": epochs,
    })


def run_kerastuner(kind: str, splits, epochs: int, budget: float, seed: int) -> dict:
    """One KerasTuner search in this process, stopped at the budget."""
    import keras_tuner as kt

    from distune.trial import build_model

    x, y = splits.x_train.reshape(-1, 784), splits.y_train
    xv, yv = splits.x_val.reshape(-1, 784), splits.y_val
    steps = math.ceil(len(x) / 128)
    points: list[tuple[float, float]] = []
    clock = {"t0": 0.0}

    def build(hp):
        return build_model(hyperparams_from_kt(hp, epochs), steps, epochs)

    def elapsed() -> float:
        return time.perf_counter() - clock["t0"]

    class Budgeted:
        """Record every epoch; stop at the budget (no new trial, the running one stops)."""

        def on_batch_end(self, trial, model, batch, logs=None):
            if elapsed() >= budget:  # Keras checks this after every batch
                model.stop_training = True

        def on_epoch_end(self, trial, model, epoch, logs=None):
            points.append((elapsed(), float((logs or {}).get("val_accuracy", math.nan))))
            if elapsed() >= budget:
                model.stop_training = True

        def pre_create_trial(self):
            if elapsed() >= budget:
                self.oracle.populate_space = lambda trial_id: {"status": "STOPPED", "values": None}

    base = kt.RandomSearch if kind == "random" else kt.Hyperband
    cls = type(f"Budgeted{base.__name__}", (Budgeted, base), {})
    with tempfile.TemporaryDirectory() as d:
        common = dict(objective="val_accuracy", seed=seed, directory=d, project_name=kind,
                      overwrite=True)
        if kind == "random":
            tuner = cls(build, max_trials=100_000, **common)
            fit = {"epochs": epochs}
        else:  # hyperband_iterations=None: brackets until the budget runs out
            tuner = cls(build, max_epochs=epochs, factor=3, hyperband_iterations=None, **common)
            fit = {}
        with contextlib.redirect_stdout(io.StringIO()):
            clock["t0"] = time.perf_counter()
            tuner.search(x, y, validation_data=(xv, yv), batch_size=128, verbose=0, **fit)
            wall = elapsed()
            best = tuner.get_best_models(1)[0]
            _, test_acc = best.evaluate(splits.x_test.reshape(-1, 784), splits.y_test,
                                        batch_size=1024, verbose=0)
        trials = len(tuner.oracle.trials)
    import keras

    keras.backend.clear_session()
    return {"method": f"kerastuner {kind}", "wall": wall, "trials": trials,
            "curve": best_so_far(points, budget), "test": float(test_acc),
            "epochs": sum(t <= budget for t, _ in points),
            "first": min((t for t, _ in points), default=math.nan)}


def run_distune(searcher: str, scheduler: str, args, splits, storage: str) -> dict:
    from ray import tune

    from distune.config import validate
    from distune.errors import DistuneError
    from distune import finish
    from distune.results import open_analysis
    from distune.sweep import build_tuner

    exp = validate({
        "data": {"path": args.data, "train_subset": args.subset, "validation_split": 0.1},
        "model": {"space": SPACE},
        "train": {"epochs": args.epochs},
        "search": {"searcher": searcher, "num_samples": 100_000},
        "schedule": {"scheduler": scheduler,
                     **({"options": {"grace_period": 1, "reduction_factor": 3}} if scheduler == "asha" else {})},
        "resources": {"cpus_per_trial": 1},
        "run": {"storage": storage, "name": f"{searcher}-{scheduler}", "seed": args.seed,
                "time_budget_s": args.budget_s, "report": False},  # outside the budget anyway
    })
    points: list[tuple[float, float]] = []
    clock = {"t0": 0.0}

    started: set[str] = set()

    class Curve(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            points.append((time.perf_counter() - clock["t0"], float(result.get("val_accuracy", math.nan))))
            started.add(trial.trial_id)

    directory = Path(storage) / exp.run.name
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
            "curve": best_so_far(points, args.budget_s), "test": test,
            "epochs": sum(t <= args.budget_s for t, _ in points),
            "first": min((t for t, _ in points), default=math.nan)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("DISTUNE_MNIST"))
    ap.add_argument("--quick", action="store_true", help="6 s per method, 1,000 images, 2 epochs, distune hyperopt+asha only")
    ap.add_argument("--budget-s", type=float, help="wall-clock budget per method (default 300; quick 6)")
    ap.add_argument("--epochs", type=int, help="max epochs per trial; fifo and random run all (default 10; quick 2)")
    ap.add_argument("--subset", type=int, help="training images (default: all 60,000; quick 1,000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for name, full, quick in (("budget_s", 300.0, 6.0), ("epochs", 10, 2), ("subset", None, 1000)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)

    import importlib.util

    if importlib.util.find_spec("keras_tuner") is None:
        print("keras-tuner is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    from distune.ops import quiet_environment
    from distune.sweep import load_data
    from distune.sweep import start_ray

    quiet_environment(verbose=False)
    # A private Ray even when a `ray start` cluster runs on this machine (ray.init() with no
    # address would join it).
    os.environ.setdefault("RAY_ADDRESS", "local")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from distune.config import validate
    from distune.trial import configure_tensorflow

    configure_tensorflow(os.cpu_count() or 1)  # KerasTuner trains here, on every core
    exp = validate({"data": {"path": args.data, "train_subset": args.subset}, "run": {"seed": args.seed}})
    splits = load_data(exp)  # the same split distune's trials get (run.seed)

    rows = [run_kerastuner("random", splits, args.epochs, args.budget_s, args.seed),
            run_kerastuner("hyperband", splits, args.epochs, args.budget_s, args.seed)]
    t = time.perf_counter()
    start_ray(exp, verbose=False)
    ray_start = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as storage:
        for searcher, scheduler in DISTUNE_METHODS[1:2] if args.quick else DISTUNE_METHODS:
            rows.append(run_distune(searcher, scheduler, args, splits, storage))
    import ray

    ray.shutdown()

    budget = args.budget_s
    hb = rows[1]
    hb_final = hb["curve"][-1][1] if hb["curve"] else math.nan
    cols = " ".join(f"{f'val@{int(f * 100)}%':>8}" for f in FRACTIONS)
    print(f"{'method':<26} {'trials':>6} {'epochs':>6} {'wall_s':>7} {'first_s':>7} {cols} "
          f"{'test':>7} {'t_reach_kt_hb':>13}")
    for r in rows:
        vals = " ".join(f"{best_at(r['curve'], f * budget):>8.4f}" for f in FRACTIONS)
        reach = time_to_reach(r["curve"], hb_final)
        print(f"{r['method']:<26} {r['trials']:>6} {r['epochs']:>6} {r['wall']:>7.1f} "
              f"{r['first']:>7.1f} {vals} {r['test']:>7.4f} {reach:>13.1f}")
    print(f"budget {budget:.0f} s per method; {len(splits.x_train)} train / {len(splits.x_val)} "
          f"validation images; up to {args.epochs} epochs per trial; {os.cpu_count()} cores; "
          f"Ray start-up {ray_start:.1f} s (outside the budgets)")
    print(f"val@N% = best validation accuracy found within N% of the budget; first_s = first epoch "
          f"scored (distune: includes starting its workers); trials = started (distune: "
          f"that scored an epoch), epochs = scored within the budget; test = the winner's test "
          f"accuracy (evaluated once); t_reach_kt_hb = seconds to reach KerasTuner Hyperband's "
          f"final best validation accuracy ({hb_final:.4f})")
    distune_rows = rows[2:]
    fastest = min(distune_rows, key=lambda r: time_to_reach(r["curve"], hb_final))
    ratio = time_to_reach(fastest["curve"], hb_final) / hb["wall"]
    met = "met" if ratio <= TARGET else "NOT met"
    print(f"fastest distune method to KerasTuner Hyperband's final validation accuracy: "
          f"{fastest['method']}; target ratio <= {TARGET}: {met}")
    print(f"time_ratio_to_kt_hyperband: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
