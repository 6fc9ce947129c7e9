"""A user's own model: a builder function (model.builder) and a KerasTuner build_model(hp),
unchanged (model.keras_tuner; examples/keras_tuner holds the guide's). The multi-node test
(tests/multinode.py) runs a builder whose file no node can import."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from distune.config import TrainConfig, load_experiment, validate
from distune.errors import ConfigError
from distune.ops import read_code
from distune.trial import Training, trial_inputs

EXAMPLE = REPO / "examples" / "keras_tuner" / "experiment.yaml"

BUILDER = '''
import keras


def build(hp):  # uncompiled: distune compiles it from optimizer and learning_rate
    x = inputs = keras.Input((28, 28))
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(hp["width"], activation=hp.get("act", "relu"))(x)
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
'''

CONDITIONAL = '''
import keras


def build_model(hp):
    model = keras.Sequential([keras.Input((784,))])
    kind = hp.Choice("kind", ["wide", "deep"])
    with hp.conditional_scope("kind", ["wide"]):
        if kind == "wide":
            model.add(keras.layers.Dense(hp.Int("wide_units", 64, 256, step=2, sampling="log")))
    with hp.conditional_scope("kind", ["deep"]):
        if kind == "deep":
            for i in range(hp.Int("depth", 2, 3)):
                model.add(keras.layers.Dense(32, activation="relu"))
            if hp.Boolean("norm"):
                with hp.conditional_scope("norm", [True]):
                    hp.Float("momentum", 0.5, 0.9, step=0.2)
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
'''


@pytest.fixture(scope="module")
def tiny(mnist_path):
    from distune.trial import load_mnist

    return load_mnist(str(mnist_path), validation_split=0.25, train_subset=400, seed=0).for_trials()


@pytest.mark.slow
def test_the_guides_build_model_gives_its_space():
    """The space KerasTuner itself would find, units_1 and units_2 included (they appear only
    when num_layers is 2 or 3), in distune's syntax; model.space adds to and overrides it."""
    exp, _ = load_experiment(str(EXAMPLE), ["model.space.lr=0.001", "model.space.batch_size={choice: [32, 64]}"])
    unit = {"int": [32, 512, 32]}
    assert exp.model.space == {
        "num_layers": {"int": [1, 3, 1]}, "units_0": unit, "activation": {"choice": ["relu", "tanh"]},
        "dropout": {"choice": [False, True]}, "lr": 0.001, "units_1": unit, "units_2": unit,
        "batch_size": {"choice": [32, 64]}}
    assert exp.model.code.origin == str(EXAMPLE.with_name("model.py"))


@pytest.mark.slow
def test_conditional_scopes_become_a_tree(tmp_path):
    (tmp_path / "cond.py").write_text(CONDITIONAL)
    exp = validate({"model": {"keras_tuner": f"{tmp_path}/cond.py:build_model"}})
    assert exp.model.space == {"kind": {"choice": [
        {"value": "wide", "space": {"wide_units": {"choice": [64, 128, 256]}}},
        {"value": "deep", "space": {"depth": {"int": [2, 3, 1]}, "norm": {"choice": [
            False, {"value": True, "space": {"momentum": {"choice": [0.5, 0.7, 0.9]}}}]}}}]}}


@pytest.mark.slow
@pytest.mark.parametrize("keras_tuner", [False, True])
def test_a_user_model_checkpoints_and_resumes_exactly(tiny, tmp_path, keras_tuner):
    """Weights and optimizer state restored exactly into a fresh build; the next epoch equals
    the uninterrupted one (dropout included). The KerasTuner model compiles itself, with
    categorical cross-entropy: its labels are one-hot; the builder's is compiled by distune."""
    if keras_tuner:
        spec, values = f"{EXAMPLE.with_name('model.py')}:build_model", {
            "num_layers": 2, "units_0": 32, "units_1": 64, "activation": "relu", "dropout": True,
            "lr": 3e-3, "batch_size": 32}
    else:
        (tmp_path / "b.py").write_text(BUILDER)
        spec, values = f"{tmp_path}/b.py:build", {"width": 24, "learning_rate": 3e-3, "batch_size": 32}
    hp, user = trial_inputs(read_code(spec), keras_tuner, values)  # (validation: tests above)
    a = Training(hp, tiny, TrainConfig(epochs=2), seed=7, user=user)
    assert a.y.ndim == (2 if keras_tuner else 1)
    assert float(a.model.optimizer.learning_rate) == pytest.approx(3e-3)
    a.run_epoch()
    a.save(tmp_path)
    saved = [w.copy() for w in a.model.get_weights()], [np.array(v) for v in a.model.optimizer.variables]
    uninterrupted = a.run_epoch()
    b = Training(hp, tiny, TrainConfig(epochs=2), seed=7, user=user)
    b.load(tmp_path)
    assert all(map(np.array_equal, b.model.get_weights(), saved[0]))
    assert all(map(np.array_equal, [np.array(v) for v in b.model.optimizer.variables], saved[1]))
    resumed = b.run_epoch()
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-5, abs=1e-5), key


def test_pbt_carries_a_user_models_weights_into_a_mutated_config(tiny, tmp_path):
    """A PBT exploit: a trial built from a mutated config takes the donor's weights and
    optimizer state, and keeps its own learning rate."""
    (tmp_path / "b.py").write_text(BUILDER)
    code = read_code(f"{tmp_path}/b.py:build")
    donor_hp, donor = trial_inputs(code, False, {"width": 16, "learning_rate": 1e-3})
    t = Training(donor_hp, tiny, TrainConfig(epochs=2), seed=1, user=donor)
    t.run_epoch()
    t.save(tmp_path)
    hp, mutated = trial_inputs(code, False, {"width": 16, "learning_rate": 5e-3})
    copy = Training(hp, tiny, TrainConfig(epochs=2), seed=2, user=mutated)
    copy.load(tmp_path)
    assert all(map(np.array_equal, copy.model.get_weights(), t.model.get_weights()))
    assert int(copy.model.optimizer.iterations) == int(t.model.optimizer.iterations)
    assert float(copy.model.optimizer.learning_rate) == pytest.approx(5e-3)


BAD = {
    "missing": ("model: {builder: nowhere.py:build}", "no such file"),
    "module": ("model: {builder: 'no_such_package.models:build'}", "cannot import no_such_package.models"),
    "function": ("model: {builder: 'bad.py:other'}", "defines no function 'other'"),
    "syntax": ("model: {builder: 'broken.py:build'}", "importing"),
    "raises": ("model: {builder: 'bad.py:raises'}", "ZeroDivisionError"),
    "shape": ("model: {builder: 'bad.py:five'}", "output is (None, 5)"),
    "inputs": ("model: {builder: 'bad.py:wide'}", "inputs (100,)"),
    "nomodel": ("model: {builder: 'bad.py:nothing'}", "returned NoneType, not a keras.Model"),
    "both": ("model: {builder: 'bad.py:five', keras_tuner: 'bad.py:five'}", "not both"),
    "arch": ("model: {builder: 'bad.py:five', architecture: cnn}", "drop model.architecture"),
    "float_parent": ("model: {keras_tuner: 'bad.py:float_parent'}", "parent must be a Choice"),
    "kt_raises": ("model: {keras_tuner: 'bad.py:raises'}", "build_model(hp) raised ZeroDivisionError"),
    "batch": ("model: {builder: 'bad.py:five', space: {batch_size: {choice: [0, 32]}}}", "batch_size"),
}
BAD_MODULE = '''
import keras


def raises(hp):
    return 1 / 0


def five(hp):
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(5)])


def wide(hp):
    return keras.Sequential([keras.Input((100,)), keras.layers.Dense(10)])


def nothing(hp):
    return None


def float_parent(hp):
    rate = hp.Float("rate", 0.0, 0.5)
    with hp.conditional_scope("rate", [0.1]):
        hp.Int("units", 8, 16)
    return five(hp)
'''


@pytest.mark.slow
def test_a_bad_model_function_gets_one_paragraph_before_anything_trains(tmp_path, capsys):
    """Not there, not importable, no such function, raising, the wrong shape, no model, an
    untranslatable KerasTuner space: `distune validate` and `distune run` say what to fix,
    exit 2, no traceback, nothing created."""
    from distune.cli import main

    (tmp_path / "bad.py").write_text(BAD_MODULE)
    (tmp_path / "broken.py").write_text("def build(hp):\n  return (\n")
    storage = tmp_path / "results"
    for name, (text, says) in BAD.items():
        (tmp_path / f"{name}.yaml").write_text(text + "\n")
        for command in ("validate", "run"):
            code = main([command, str(tmp_path / f"{name}.yaml"), "--storage", str(storage),
                         "--data", "/nonexistent/mnist.npz"] + (["--samples", "1"] if command == "run" else []))
            err = capsys.readouterr().err
            assert code == 2 and "Traceback" not in err and says in err, (name, command, err)
    assert not storage.exists()  # nothing was created


@pytest.mark.slow
def test_the_guides_keras_tuner_model_sweeps_with_hyperopt_and_asha(ray_local, mnist_path, tmp_path):
    """examples/keras_tuner as shipped, on a small slice: ordinary trials with the function's
    own hyperparameters in the results, the winner tested once and exported, the report
    written (its confusion matrix from the exported model's predictions)."""
    from distune import run

    exp, stem = load_experiment(str(EXAMPLE), [
        "search.num_samples=4", "train.epochs=2", "data.train_subset=2000",
        "resources.max_concurrent_trials=1"],  # one actor: see conftest.experiment
        {"data": str(mnist_path), "storage": str(tmp_path), "name": "kt"})
    summary = run(exp, stem, say=lambda _: None)
    table = pd.read_csv(summary.directory / "results.csv")
    assert len(table) == 4 and set(table.status) <= {"completed", "stopped"}
    assert {"config/num_layers", "config/units_0", "config/lr", "config/dropout"} <= set(table.columns)
    assert "config/architecture" not in table.columns
    assert summary.test_accuracy > 0.8 and (summary.directory / "best_model.keras").is_file()
    assert set(summary.best_config) >= {"num_layers", "units_0", "activation", "dropout", "lr"}
    report = (summary.directory / "report.html").read_text()
    assert "num_layers" in report and "confusion" in report.lower()


def test_a_builders_own_names_are_its_business(tmp_path):
    """distune checks only the names it reads itself (batch size, epochs) for a user's model;
    the same space for distune's own model is refused (it has no `width`)."""
    (tmp_path / "b.py").write_text(BUILDER)
    exp = validate({"model": {"builder": f"{tmp_path}/b.py:build", "space": {"width": {"choice": [8, 16]}}}})
    assert exp.model.params["width"].values == (8, 16) and exp.model.code.function == "build"
    with pytest.raises(ConfigError, match="unknown hyperparameter 'width'"):
        validate({"model": {"space": {"width": {"choice": [8, 16]}}}})
