"""Tree-structured spaces: sub-spaces that exist only under one option of a choice."""

from __future__ import annotations

import math

import keras
import numpy as np
import pandas as pd
import pytest

from conftest import experiment
from distune.config import validate
from distune.errors import ConfigError
from distune.space import Hyperparams
from distune.trial import build_model, input_shape
from distune import run
from distune.space import enumerate_space, sample

TREE = {
    "architecture": {"choice": ["mlp", {"value": "cnn", "space": {"filters": {"choice": [4, 8]},
                                                                   "conv_blocks": 1}}]},
    "optimizer": {"choice": ["adam", {"value": "sgd", "space": {
        "momentum": {"uniform": [0.0, 0.9]}, "nesterov": {"choice": [True, False]}}}]},
    "units": {"choice": [16, 32]},
    "hidden_layers": 1,
}
ENUMERABLE = {**TREE, "optimizer": {"choice": ["adam", {"value": "sgd", "space": {
    "momentum": {"choice": [0.0, 0.9]}, "nesterov": {"choice": [True, False]}}}]}}


def only_live_keys(config: dict) -> None:
    assert ("momentum" in config) == ("nesterov" in config) == (config["optimizer"] == "sgd")
    assert ("filters" in config) == ("conv_blocks" in config) == (config["architecture"] == "cnn")


def test_samples_hold_only_the_branches_taken():
    params = validate({"model": {"space": TREE}}).model.params
    rng = np.random.default_rng(0)
    configs = [sample(params, rng) for _ in range(50)]
    for c in configs:
        only_live_keys(c)
    assert {c["optimizer"] for c in configs} == {"adam", "sgd"}


@pytest.mark.slow  # 8 models trained: the full suite's
def test_every_branch_builds_and_trains(small_splits):
    exp = validate({"search": {"searcher": "grid", "num_samples": 1}, "model": {"space": ENUMERABLE}})
    configs = enumerate_space(exp.model.params)
    assert len(configs) == exp.planned_trials == 3 * 5 * 2  # (mlp, cnn x2) x (adam, sgd x4) x units
    for c in configs:
        only_live_keys(c)
        Hyperparams.model_validate(c)
    # Build and train the configs that between them take every branch and every value, and
    # every architecture with every optimizer (8 of the 30: builds cost ~1.3 s each).
    seen, covering = set(), []
    for c in configs:
        facts = {(k, repr(v)) for k, v in c.items()} | {(c["architecture"], c["optimizer"])}
        if facts - seen:
            seen |= facts
            covering.append(c)
    assert len(covering) < 10 and {(c["architecture"], c["optimizer"]) for c in covering} == {
        (a, o) for a in ("mlp", "cnn") for o in ("adam", "sgd")}
    for c in covering:
        hp = Hyperparams.model_validate(c)
        model = build_model(hp, 10, 1)
        x = small_splits.x_train[:32].reshape((-1, *input_shape(hp.architecture)))
        assert np.isfinite(model.train_on_batch(x, small_splits.y_train[:32])[0])
        keras.backend.clear_session()


@pytest.mark.parametrize("searcher", ["bohb", "stepwise"])
def test_searchers_without_tree_support_say_so(searcher):
    scheduler = "hyperband_bohb" if searcher == "bohb" else "fifo"
    with pytest.raises(ConfigError, match=f"{searcher} cannot search a tree-structured space"):
        validate({"search": {"searcher": searcher}, "schedule": {"scheduler": scheduler},
                  "model": {"space": ENUMERABLE}})


def test_malformed_branch():
    with pytest.raises(ConfigError, match="written {value: V, space"):
        validate({"model": {"space": {"optimizer": {"choice": [{"val": "sgd"}]}}}})
    with pytest.raises(ConfigError, match="'sgd' -> momentum: 2.0 is not valid"):
        validate({"model": {"space": {"optimizer": {"choice": [
            {"value": "sgd", "space": {"momentum": 2.0}}]}}}})


@pytest.mark.slow
@pytest.mark.parametrize("searcher", ["random", "grid", "hyperopt", "optuna"])
def test_real_sweep_over_a_tree(searcher, ray_local, mnist_path, tmp_path):
    """Also each of these searchers' real sweep with the fifo scheduler (see
    test_search_algorithms.PAIRS)."""
    space = ENUMERABLE if searcher == "grid" else TREE
    if searcher == "grid":  # keep it small: one filter count, one momentum (6 trials, not 30)
        space = {**space, "architecture": {"choice": ["mlp", {"value": "cnn", "space": {
            "filters": 4, "conv_blocks": 1}}]}, "units": 16,
                 "optimizer": {"choice": ["adam", {"value": "sgd", "space": {
                     "momentum": 0.9, "nesterov": {"choice": [True, False]}}}]}}
    # TensorFlow: every trial a new shape (MLP and CNN, two optimizers), which JAX compiles
    # anew: from an empty JAX cache (CI's) these four took 44.2 s on JAX, 39.8 s on TensorFlow
    exp = experiment(mnist_path, tmp_path, model={"space": space}, data={"train_subset": 600},
                     train={"epochs": 1, "backend": "tensorflow"},
                     search={"searcher": searcher, "num_samples": 4 if searcher != "grid" else 1})
    s = run(exp, "t", say=lambda _: None)
    table = pd.read_csv(tmp_path / "results" / "t" / "results.csv")
    assert len(table) == exp.planned_trials == s.trials
    for _, row in table.iterrows():
        config = {k.removeprefix("config/"): v for k, v in row.items()
                  if k.startswith("config/") and not pd.isna(v)}
        only_live_keys(config)
    assert set(table.status) == {"completed"} and set(table.epochs) == {1}
    # both branches of each choice taken (4 seeded samples do, for each searcher), so the
    # live-keys check above saw each sub-space present and absent
    assert set(table["config/architecture"]) == {"mlp", "cnn"}, searcher
    assert set(table["config/optimizer"]) == {"adam", "sgd"}, searcher
    assert math.isfinite(s.test_accuracy) and s.best_config["architecture"] in ("mlp", "cnn")
