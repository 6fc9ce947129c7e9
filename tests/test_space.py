"""The search space, declared once, becomes the right Ray Tune domains for every searcher."""

from __future__ import annotations

import numpy as np
import pytest
from ray.tune.search.sample import Categorical, Float, Integer

from distune.config import trial_space, validate
from distune.space import IntRange, grid_points, parse_param, to_ray

SPACE = {
    "hidden_layers": {"int": [1, 3]},
    "units": {"int": [32, 512, 32]},
    "units_2": {"logint": [8, 64]},
    "activation": {"choice": ["relu", "tanh"]},
    "dropout": {"uniform": [0.0, 0.5]},
    "learning_rate": {"loguniform": [1e-4, 1e-2]},
    "optimizer": "adam",
}


def samples(domain, n=400):
    rng = np.random.default_rng(0)
    return [domain.sample(random_state=rng) for _ in range(n)]


def test_each_kind_becomes_its_domain():
    exp = validate({"model": {"space": SPACE}})
    space = trial_space(exp)
    assert space["architecture"] == "mlp" and space["optimizer"] == "adam"
    assert isinstance(space["activation"], Categorical)
    assert isinstance(space["dropout"], Float) and isinstance(space["learning_rate"], Float)
    assert isinstance(space["units"], Integer) and isinstance(space["hidden_layers"], Integer)


def test_int_ranges_include_both_ends():
    layers = samples(to_ray(parse_param("hidden_layers", {"int": [1, 3]})))
    assert set(layers) == {1, 2, 3}
    units = samples(to_ray(parse_param("units", {"int": [32, 128, 32]})))
    assert set(units) == {32, 64, 96, 128}
    logs = samples(to_ray(parse_param("units", {"logint": [8, 64]})))
    assert min(logs) == 8 and max(logs) <= 64 and np.median(logs) < 36  # log-scaled: skewed low


def test_loguniform_is_log_scaled():
    lrs = samples(to_ray(parse_param("learning_rate", {"loguniform": [1e-4, 1e-2]})))
    assert 1e-4 <= min(lrs) and max(lrs) <= 1e-2
    assert 0.3 < np.mean(np.array(lrs) < 1e-3) < 0.7  # half the mass below the geometric middle


def test_grid_searcher_enumerates_choices_and_small_int_ranges():
    exp = validate({"search": {"searcher": "grid", "num_samples": 1},
                    "model": {"space": {"activation": {"choice": ["relu", "tanh"]},
                                        "hidden_layers": {"int": [1, 3]}, "units": 64}}})
    space = trial_space(exp)
    assert space["activation"] == {"grid_search": ["relu", "tanh"]}
    assert space["hidden_layers"] == {"grid_search": [1, 2, 3]}
    assert grid_points(exp.model.params, enumerate_choices=True) == 6


def test_random_searcher_keeps_grid_entries_as_grids():
    exp = validate({"model": {"space": {"units": {"grid": [32, 64]}, "activation": {"choice": ["relu", "elu"]}}}})
    space = trial_space(exp)
    assert space["units"] == {"grid_search": [32, 64]} and isinstance(space["activation"], Categorical)
    assert grid_points(exp.model.params, enumerate_choices=False) == 2


@pytest.mark.parametrize("searcher", ["hyperopt", "optuna"])
def test_model_based_searchers_accept_the_translated_space(searcher):
    from distune.search import Context
    from distune.search import SEARCHERS

    exp = validate({"search": {"searcher": searcher}, "model": {"space": SPACE}})
    algo = SEARCHERS[searcher].build(exp.searcher_options(), Context(seed=1, max_epochs=2))
    assert algo.set_search_properties("val_accuracy", "max", trial_space(exp))
    configs = [algo.suggest(f"t{i}") for i in range(5)]
    for c in configs:
        assert c.get("optimizer", "adam") == "adam" and c["units"] % 32 == 0 and 32 <= c["units"] <= 512
        assert 1e-4 <= c["learning_rate"] <= 1e-2 and c["activation"] in ("relu", "tanh")


def test_intrange_values():
    assert IntRange(8, 64, 8).values() == [8, 16, 24, 32, 40, 48, 56, 64]
