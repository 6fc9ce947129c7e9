"""The gp searcher (scikit-optimize's Gaussian process with expected improvement): every kind
of dimension, no point asked twice while trials run in parallel, its JSON state restored
exactly, a clear refusal of what it cannot search, and real sweeps (interrupted and resumed)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from conftest import assert_refused_resume, experiment, interrupted_sweep
from distune import resume
from distune.config import validate
from distune.errors import ConfigError
from distune.search import SEARCHERS, Context

SPACE = {"units": {"int": [8, 64, 8]}, "hidden_layers": {"int": [1, 3]},
         "learning_rate": {"loguniform": [1e-4, 1e-1]}, "dropout": {"uniform": [0.0, 0.5]},
         "activation": {"choice": ["relu", "tanh", "elu"]}, "batch_norm": {"choice": [True, False]},
         "batch_size": {"logint": [16, 256]}, "optimizer": "adam"}


def searcher(space=SPACE, seed=0, **options):
    exp = validate({"search": {"searcher": "gp", "options": {"n_initial_points": 3, **options}},
                    "model": {"space": space}})
    ctx = Context(seed=seed, max_epochs=2, params=exp.model.params)
    algo = SEARCHERS["gp"].build(exp.searcher_options(), ctx)
    algo.set_search_properties("val_accuracy", "max", {})
    return algo


def score(config) -> float:
    """A smooth stand-in for validation accuracy, best at lr 1e-2, 32 units, relu."""
    return (1 - 0.1 * abs(math.log10(config["learning_rate"]) + 2) - abs(config["units"] - 32) / 200
            - 0.05 * (config["activation"] != "relu") - 0.1 * config["dropout"])


def drive(algo, n: int, concurrent: int = 2) -> list[dict]:
    """n trials, `concurrent` running at once, each finishing in the order it started."""
    running, asked = [], []
    for i in range(n):
        config = algo.suggest(f"t{i}")
        asked.append(config)
        running.append((f"t{i}", config))
        if len(running) == concurrent or i == n - 1:
            tid, c = running.pop(0)
            algo.on_trial_complete(tid, {"val_accuracy": score(c)})
    for tid, c in running:
        algo.on_trial_complete(tid, {"val_accuracy": score(c)})
    return asked


def test_every_kind_of_dimension_gets_valid_values():
    for config in drive(searcher(), 6):
        assert config["units"] in range(8, 65, 8) and config["hidden_layers"] in (1, 2, 3)
        assert 1e-4 <= config["learning_rate"] <= 1e-1 and 0.0 <= config["dropout"] <= 0.5
        assert 16 <= config["batch_size"] <= 256 and isinstance(config["batch_size"], int)
        assert config["activation"] in ("relu", "tanh", "elu") and config["batch_norm"] in (True, False)
        assert config["optimizer"] == "adam"  # fixed values come with every suggestion
        assert all(type(v) in (int, float, str, bool) for v in config.values()), config


def test_no_point_is_asked_twice_with_two_trials_running():
    """The GP's next point is the same until it learns something: without the constant liar,
    the second of two concurrent trials would get the first one's point."""
    asked = drive(searcher(), 9, concurrent=2)
    points = [json.dumps(c, sort_keys=True) for c in asked]
    assert len(set(points)) == len(points)


@pytest.mark.slow
def test_it_learns_seeded():
    runs = {seed: drive(searcher(seed=seed), 12) for seed in (1, 2)}
    assert drive(searcher(seed=1), 6) == runs[1][:6]  # the same seed, the same points
    assert runs[1][:6] != runs[2][:6]
    best = {seed: max(score(c) for c in asked) for seed, asked in runs.items()}
    first = {seed: max(score(c) for c in asked[:3]) for seed, asked in runs.items()}  # random
    assert all(best[s] > max(0.85, first[s]) for s in runs), (first, best)  # the GP improved on it


def test_state_is_versioned_json_and_restores_exactly(tmp_path):
    algo = searcher()
    drive(algo, 5)
    running = algo.suggest("r1")  # one still running when the driver stops
    file = tmp_path / "searcher-state.json"
    algo.save(str(file))
    state = json.loads(file.read_text())
    assert state["version"] == 1 and state["searcher"] == "GPSearch" and len(state["state"]["X"]) == 5
    again = searcher()
    again.restore(str(file))
    assert again.suggest("r2") == algo.suggest("r2")  # the next point, exactly
    again.on_trial_complete("r1", {"val_accuracy": score(running)})
    algo.on_trial_complete("r1", {"val_accuracy": score(running)})
    assert again.suggest("r3") == algo.suggest("r3")
    file.write_text(json.dumps({**state, "version": 99}))
    with pytest.raises(ValueError, match="version 1"):
        searcher().restore(str(file))


def test_warm_start_and_initial_points_enter_the_history():
    algo = searcher()
    first = {"units": 32, "hidden_layers": 1, "learning_rate": 0.01, "dropout": 0.1,
             "activation": "relu", "batch_norm": False, "batch_size": 64}
    algo.add_evaluated_point(first, 0.97)
    assert algo.X and algo.y == [-0.97]  # skopt minimises
    exp = validate({"search": {"searcher": "gp", "initial_points": [first]}, "model": {"space": SPACE}})
    ctx = Context(seed=0, max_epochs=2, params=exp.model.params, points=list(exp.search.initial_points))
    seeded = SEARCHERS["gp"].build(exp.searcher_options(), ctx)
    seeded.set_search_properties("val_accuracy", "max", {})
    assert seeded.suggest("t0") == {**first, "optimizer": "adam"}


@pytest.mark.parametrize("space,message", [
    ({"optimizer": {"choice": ["adam", {"value": "sgd", "space": {"momentum": {"uniform": [0.5, 0.9]}}}]}},
     "gp cannot search a tree-structured space.*hyperopt, optuna"),
    ({"units": {"grid": [16, 32]}}, "gp cannot take grid values"),
    ({"units": 32}, "gp needs at least one searched hyperparameter"),
])
def test_what_it_cannot_search_is_refused_before_anything_runs(space, message):
    with pytest.raises(ConfigError, match=message):
        validate({"search": {"searcher": "gp"}, "model": {"space": space}})


def test_bad_options_name_the_option():
    with pytest.raises(ConfigError, match="search.options.acq"):
        validate({"search": {"searcher": "gp", "options": {"acq": "thompson"}},
                  "model": {"space": {"units": {"int": [8, 64]}}}})


@pytest.mark.slow
def test_a_gp_sweep_interrupted_and_resumed(ray_local, mnist_path, tmp_path, monkeypatch):
    """A real gp x ASHA sweep (the GP past its random phase), stopped after its first epoch as
    Ctrl-C stops it, then resumed: every trial once, every config different, the searcher's
    saved state JSON; and before that, a resume whose restore fails inside Tune, refused."""

    exp = experiment(mnist_path, tmp_path, data={"train_subset": 800}, train={"epochs": 2},
                     model={"space": {"hidden_layers": 1, "units": {"int": [8, 64, 8]},
                                      "learning_rate": {"loguniform": [1e-3, 3e-2]}}},
                     search={"searcher": "gp", "num_samples": 5,
                             "options": {"n_initial_points": 2}},
                     schedule={"scheduler": "asha", "options": {"grace_period": 1}})
    d = interrupted_sweep(exp, tmp_path, monkeypatch)
    (state,) = d.glob("searcher-state-*")
    assert json.loads(state.read_text())["searcher"] == "GPSearch"  # plain data, not a pickle
    # A restore that fails inside Tune (here: the schedulers' replay) is refused, nothing run
    # or written; Tune itself would log it and start the sweep anew (seen in CI)
    assert_refused_resume(d, monkeypatch)
    summary = resume(d, say=lambda _: None)
    table = pd.read_csv(d / "results.csv")
    assert summary.trials == len(table) == 5 and set(table.status) <= {"completed", "stopped"}
    configs = table[["config/units", "config/learning_rate"]].apply(tuple, axis=1)
    assert configs.is_unique and math.isfinite(summary.test_accuracy)
