"""Config validation: good files pass, each kind of mistake names its field and the fix."""

from __future__ import annotations

import pytest

from distune.config import Experiment, load_experiment, presets, validate
from distune.errors import ConfigError, DistuneError


def problems(raw: dict) -> str:
    with pytest.raises(ConfigError) as e:
        validate(raw, "x.yaml")
    return str(e.value)


@pytest.mark.parametrize("name", sorted(presets()))
def test_every_preset_validates(name):
    exp, stem = load_experiment(name)
    assert stem == name and exp.search.num_samples >= 1 and exp.model.params


def test_default_preset_is_mnist_mlp():
    exp, stem = load_experiment(None)
    assert stem == "mnist-mlp" and exp.model.architecture == "mlp"


def test_empty_file_is_all_defaults(tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text("")
    exp, stem = load_experiment(str(f))
    assert exp == Experiment() and stem == "empty"


def test_resolved_config_round_trips():
    exp, _ = load_experiment(None)
    import yaml

    assert validate(yaml.safe_load(exp.to_yaml())) == exp


def test_unknown_key_lists_valid_keys():
    msg = problems({"train": {"epochz": 3}})
    assert "train.epochz: unknown key; valid keys: epochs, early_stopping" in msg


def test_unknown_section():
    assert "serch: unknown key; valid keys: data, model, train, search" in problems({"serch": {}})


def test_unknown_searcher_lists_names():
    msg = problems({"search": {"searcher": "tpee"}})
    assert "search.searcher: 'tpee' is not one of: random, grid, hyperopt, optuna" in msg


def test_unknown_scheduler_lists_names():
    assert "schedule.scheduler: 'ashaa' is not one of: fifo, asha" in problems({"schedule": {"scheduler": "ashaa"}})


def test_wrong_type_names_value():
    msg = problems({"train": {"epochs": "three"}})
    assert "train.epochs: 'three'" in msg and "integer" in msg


@pytest.mark.parametrize("field,value", [("epochs", 0), ("epochs", -2)])
def test_non_positive_epochs(field, value):
    assert f"train.{field}" in problems({"train": {field: value}})


def test_many_problems_reported_together():
    msg = problems({"train": {"epochs": 0}, "search": {"searcher": "nope"},
                    "model": {"space": {"dropout": {"uniform": [0.5, 0.1]}}}})
    assert "train.epochs" in msg and "search.searcher" in msg


@pytest.mark.parametrize("space,expected", [
    ({"learning_rate": {"loguniform": [0, 0.1]}}, "needs low > 0"),
    ({"learning_rate": {"loguniform": ["1e-2", "1e-4"]}}, "needs low < high"),
    ({"dropout": {"uniform": [0.5, 0.1]}}, "needs low < high"),
    ({"activation": {"choice": []}}, "needs a non-empty list"),
    ({"activation": {"choice": ["relu", "relux"]}}, "'relux' is not valid"),
    ({"optimizer": "adamm"}, "'adamm' is not valid"),
    ({"initializer": {"grid": ["he_normal", "xavier"]}}, "'xavier' is not valid"),
    ({"batch_size": 0}, "0 is not valid"),
    ({"units": {"uniform": [32, 512]}}, "units is an integer; use {int: [32, 512]}"),
    ({"units": {"int": [32, 500, 32]}}, "step 32 must be >= 1 and divide"),
    ({"units": [32, 64]}, "a bare list is ambiguous"),
    ({"unitz": 32}, "unknown hyperparameter 'unitz'"),
    ({"dropout": {"normal": [0, 1]}}, "expected one of"),
    ({"architecture": "cnn"}, "set model.architecture instead"),
    ({"units_3": 0}, "0 is not valid"),
])
def test_impossible_spaces(space, expected):
    assert expected in problems({"model": {"space": space}})


def test_yaml_scientific_notation_without_dot_is_a_number():
    exp = validate({"model": {"space": {"learning_rate": {"loguniform": ["1e-4", "1e-2"]},
                                        "l2": "1e-5"}}})
    assert exp.model.params["learning_rate"].low == pytest.approx(1e-4)
    assert exp.model.params["l2"].value == pytest.approx(1e-5)


def test_grid_rejected_for_model_based_searchers():
    msg = problems({"search": {"searcher": "hyperopt"}, "model": {"space": {"units": {"grid": [32, 64]}}}})
    assert "hyperopt cannot take grid values (model.space.units)" in msg


def test_grid_searcher_refuses_continuous_range():
    msg = problems({"search": {"searcher": "grid"}, "model": {"space": {"dropout": {"uniform": [0, 0.5]}}}})
    assert "model.space.dropout: a grid cannot enumerate" in msg


def test_grid_explosion_needs_explicit_consent():
    five = {"choice": [1, 2, 3, 4, 5]}
    space = {"hidden_layers": five, "units": {"choice": [8, 16, 32, 64, 128]}, "batch_size": five,
             "kernel_size": five, "lr_drop_every": five}
    msg = problems({"search": {"searcher": "grid", "num_samples": 1}, "model": {"space": space}})
    assert "the grid has 3125 trials" in msg and "--set search.max_grid=3125" in msg
    validate({"search": {"searcher": "grid", "num_samples": 1, "max_grid": 3125},
              "model": {"space": space}})


def test_scheduler_options_are_checked():
    msg = problems({"schedule": {"scheduler": "asha", "options": {"grace": 2}}})
    assert "schedule.options.grace: unknown option for asha; valid: max_t, grace_period" in msg
    msg = problems({"schedule": {"scheduler": "asha", "options": {"grace_period": 5, "max_t": 3}}})
    assert "grace_period (5) must be <= max_t (3)" in msg


def test_searcher_options_are_checked():
    msg = problems({"search": {"searcher": "optuna", "options": {"sampler": "bayes"}}})
    assert "search.options.sampler" in msg and "'tpe'" in msg


def test_test_metrics_cannot_be_tuned_on():
    assert "search.metric: 'test_accuracy' is not one of" in problems({"search": {"metric": "test_accuracy"}})


def test_bad_experiment_name():
    assert "run.name" in problems({"run": {"name": "../escape"}})


def test_overrides_and_flags(tmp_path):
    exp, _ = load_experiment("mnist-mlp", ["train.epochs=3", "model.space.units={choice: [8, 16]}",
                                           "run.stop={val_accuracy: 0.99}"],
                             {"samples": 5, "data": "/x.npz", "name": "n1", "storage": str(tmp_path)})
    assert exp.train.epochs == 3 and exp.search.num_samples == 5
    assert exp.model.params["units"].values == (8, 16)
    assert exp.data.path == "/x.npz" and exp.run.name == "n1" and exp.run.storage == str(tmp_path)
    assert exp.run.stop == {"val_accuracy": 0.99}


def test_switching_searcher_by_flag_drops_the_old_searchers_options(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("search: {searcher: hyperopt, options: {n_initial_points: 3}}\n")
    exp, _ = load_experiment(str(f), flags={"searcher": "random"})
    assert exp.search.searcher == "random" and exp.search.options == {}


def test_bad_override_syntax():
    with pytest.raises(DistuneError, match="expected FIELD=VALUE"):
        load_experiment(None, ["train.epochs"])


def test_malformed_yaml_names_the_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  epochs: [1, 2\nsearch: {}\n")
    with pytest.raises(DistuneError, match=r"bad.yaml: not valid YAML at line \d+"):
        load_experiment(str(f))


def test_not_a_mapping(tmp_path):
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_experiment(str(f))


def test_unknown_preset_or_file():
    with pytest.raises(DistuneError, match="no such file or preset.*Presets: mnist-cnn, mnist-mlp"):
        load_experiment("mnist-mpl")


def test_relative_paths_are_anchored_where_the_command_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yesterday").mkdir()
    exp, _ = load_experiment(None, ["search.searcher=hyperopt", "search.warm_start=yesterday"],
                             {"data": "data/mnist.npz", "storage": "results"})
    assert exp.data.path == str(tmp_path / "data" / "mnist.npz")
    assert exp.run.storage == str(tmp_path / "results")
    assert exp.search.warm_start == str(tmp_path / "yesterday")
    kept, _ = load_experiment(None, ["search.searcher=hyperopt", "search.warm_start=monday"],
                              {"data": "~/mnist.npz", "storage": "s3://bucket/x"})
    assert (kept.data.path, kept.run.storage) == ("~/mnist.npz", "s3://bucket/x")
    assert kept.search.warm_start == "monday"  # a sibling experiment's name, not a directory


@pytest.mark.parametrize("space,expected", [
    ({"hidden_layers": 3, "units_99": 8}, "model.space.units_99: the model has at most 3 dense "
                                          "layers (hidden_layers), so units_99 sets none; use units_1 .. units_3"),
    ({"units_3": 8}, "at most 2 dense layers"),  # the default
    ({"hidden_layers": {"int": [1, 4]}, "units_5": 8}, "at most 4 dense layers"),  # a searched count
    ({"hidden_layers": {"choice": [1, 2]}, "units_3": {"int": [8, 64]}}, "at most 2 dense layers"),
    ({"hidden_layers": 0, "units_1": 8}, "no dense layers (hidden_layers is 0); drop units_1"),
    ({"architecture": {"choice": ["mlp", {"value": "cnn", "space": {"conv_blocks": 3, "filters_4": 8}}]}},
     "model.space.architecture=cnn.filters_4: the model has at most 3 conv blocks (conv_blocks)"),
])
def test_per_layer_keys_for_layers_the_model_lacks(space, expected):
    assert expected in problems({"model": {"space": space}})


@pytest.mark.parametrize("space", [
    {"hidden_layers": {"int": [1, 4]}, "units_4": 8},
    {"units_2": 8},
    {"architecture": {"choice": ["mlp", {"value": "cnn", "space": {"conv_blocks": 3, "filters_3": 8}}]},
     "hidden_layers": {"grid": [1, 3]}, "units_3": 16},
])
def test_per_layer_keys_within_the_layer_count_pass(space):
    validate({"model": {"space": space}})


@pytest.mark.parametrize("metric,mode,wanted", [("val_loss", "max", "min"), ("loss", "max", "min"),
                                                ("val_accuracy", "min", "max"), ("accuracy", "min", "max")])
def test_metric_and_mode_must_agree(metric, mode, wanted):
    msg = problems({"search": {"metric": metric, "mode": mode}})
    assert f"search.mode: {metric} is" in msg and f"use mode: {wanted}" in msg
    validate({"search": {"metric": metric, "mode": wanted}})


def test_missing_warm_start_is_found_when_loading(tmp_path):
    """Before any data is read or Ray starts: a name is an experiment beside the new one."""
    (tmp_path / "monday").mkdir()
    (tmp_path / "elsewhere").mkdir()
    sets = ["search.searcher=hyperopt", f"run.storage={tmp_path}"]
    load_experiment(None, [*sets, f"search.warm_start=[monday, {tmp_path / 'elsewhere'}]"])
    with pytest.raises(ConfigError) as e:
        load_experiment(None, [*sets, "search.warm_start=[monday, tuesday]"])
    assert e.value.problems == [("search.warm_start.1", f"no experiment 'tuesday' in run.storage "
                                 f"({tmp_path}), nor a directory of that name; name an earlier "
                                 "experiment there, or give its directory")]
    with pytest.raises(ConfigError, match="search.warm_start: no experiment '/no/such'"):
        load_experiment(None, [*sets, "search.warm_start=/no/such"])
    load_experiment(None, [*sets, "search.warm_start=tuesday"], check_local=False)  # submit: checked there
