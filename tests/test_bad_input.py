"""Property test: whatever a user writes, validation answers with our error or a valid config."""

from __future__ import annotations

import io
import os
import re
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy

from conftest import fake_mnist
from distune.config import Experiment, load_experiment, validate
from distune.config import load_yaml
from distune.errors import ConfigError, DistuneError
from distune.space import enumerate_space
from distune.trial.data import read_npz

SECTIONS = list(Experiment.model_fields)
KEYS = SECTIONS + ["epochs", "searcher", "scheduler", "options", "space", "units", "learning_rate",
                   "choice", "grid", "uniform", "loguniform", "int", "logint", "path", "name",
                   "stop", "cpus_per_trial", "num_samples", "grace_period", "max_t", "sampler"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.sampled_from(["relu", "adam", "asha", "hyperopt", "grid", "1e-3", "-1", ""]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=4)),
    max_leaves=12)
configs = st.dictionaries(st.sampled_from(SECTIONS + ["bogus"]), values, max_size=5)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_validation_raises_nothing_but_our_error(raw):
    try:
        assert isinstance(validate(raw), Experiment)
    except DistuneError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["train.epochs", "search.searcher", "model.space.units",
                                           "run.stop", "schedule.options", "data", "x.y.z", ""]),
                          st.text(max_size=12)), max_size=3))
def test_overrides_raise_nothing_but_our_error(pairs):
    try:
        load_experiment("mnist-mlp", [f"{k}={v}" for k, v in pairs])
    except DistuneError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_file_text_raises_nothing_but_our_error(text):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        load_experiment(f.name)
    except DistuneError:
        pass
    finally:  # 200 examples a run: none left in the temp dir
        os.unlink(f.name)


# Files no user means to write, each refused quickly with one short paragraph naming the file
# (or field) and the fix. Bounds: the message, and for the costly ones the time: this thread's
# CPU time, which a blow-up in the parser shows and the other xdist worker's load does not (on
# the wall clock, a 0.2 s refusal once took 10.5 s in a full run from a clean clone).
SHORT = 1000  # characters of a message


def refused(path, *names, within_s: float = 3.0, **load) -> str:
    """load_experiment(path) raises DistuneError naming `names`, briefly and fast."""
    started = time.thread_time()
    with pytest.raises(DistuneError) as e:
        load_experiment(str(path), **load)
    msg = str(e.value)
    assert time.thread_time() - started < within_s
    assert len(msg) < SHORT and all(n in msg for n in names), msg
    return msg


@pytest.mark.parametrize("text", [
    "train: {epochs: " + "[" * 5000 + "]" * 5000 + "}\n",  # past libyaml's own limit
    "".join(" " * i + f"k{i}:\n" for i in range(1100)) + " " * 1100 + "1\n",  # block style
    "train: {epochs: " + "[" * 100 + "]" * 100 + "}\n",  # deep enough to hurt, short of libyaml's
], ids=["flow", "block", "100"])
def test_deeply_nested_yaml_is_refused(tmp_path, text):
    f = tmp_path / "deep.yaml"
    f.write_text(text)
    assert re.search("nesting depth|nested more than", refused(f, "deep.yaml"))


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    f = tmp_path / "latin1.yaml"
    f.write_bytes("run:\n  name: caf\xe9\n".encode("latin-1"))
    assert "must be UTF-8 text" in refused(f, "latin1.yaml", "byte 0xe9")


def test_duplicate_keys_are_refused_with_their_lines(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("train:\n  epochs: 3\n  epochs: 5\n")
    assert "'epochs' appears twice" in refused(f, "dup.yaml", "line 3", "line 2")
    # a merge key (<<) may be overridden: that is no duplicate
    assert load_yaml("base: &b {epochs: 3}\ntrain: {<<: *b, epochs: 5}\n")["train"] == {"epochs": 5}


def test_duplicate_keys_in_an_override_are_refused():
    with pytest.raises(DistuneError, match="--set search.options, line 1: key 'a' appears twice"):
        load_experiment(None, ["search.options={a: 1, a: 2}"])


def test_alias_bomb_is_refused_fast_and_briefly(tmp_path):
    bomb = "x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    bomb += "".join(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]\n" for i in range(1, 7))
    f = tmp_path / "bomb.yaml"
    f.write_text(bomb + "train: {epochs: *x6}\n")  # 9**7 values once expanded
    tracemalloc.start()
    try:
        assert "aliases (*name)" in refused(f, "bomb.yaml", within_s=1.0)
        assert tracemalloc.get_traced_memory()[1] < 20e6
    finally:
        tracemalloc.stop()
    f.write_text("train: {epochs: &a [1, *a]}\n")
    assert "refers to a value that contains it" in refused(f, "bomb.yaml")


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.integers(1, 12), st.integers(0, 300), st.booleans())
def test_aliases_nesting_and_repeats_are_answered_fast_and_briefly(levels, fanout, depth, repeat):
    """Alias chains (fanout ** levels values), nesting and a repeated key in one file."""
    import tempfile

    chain = ["&x0 [1]"] + [f"&x{i} [{', '.join([f'*x{i - 1}'] * fanout)}]" for i in range(1, levels)]
    nested = f"{'[' * depth}*x{levels - 1}{']' * depth}"
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "generated.yaml"
        f.write_text(f"train:\n  epochs: [{', '.join(chain)}, {nested}]\n" + "  epochs: 3\n" * repeat)
        refused(f, "generated.yaml", within_s=1.0)


def test_echoed_values_are_cut_short(tmp_path):
    f = tmp_path / "long.yaml"
    f.write_text(f"train: {{epochs: [{', '.join(['123456789'] * 20000)}]}}\n"
                 f"search: {{metric: {'m' * 50000}}}\nrun: {{name: {'n' * 50000}}}\n")
    refused(f, "train.epochs", "search.metric", "run.name")


def test_many_problems_are_counted_not_all_listed():
    with pytest.raises(ConfigError) as e:
        validate({"search": {"initial_points": [{"units": 8}] * 500}})
    assert len(e.value.problems) == 500 and "... and 480 more problems" in str(e.value)
    assert len(str(e.value)) < 5000


def test_huge_experiment_file_is_refused_at_once(tmp_path):
    f = tmp_path / "huge.yaml"
    f.write_text("search:\n  initial_points:\n" + "  - {units: 8, learning_rate: 0.001}\n" * 140000)
    assert f.stat().st_size > 5e6
    assert "far too big" in refused(f, "huge.yaml", "1000 kB", within_s=1.0)


def test_a_large_file_parses_with_libyaml(tmp_path):
    """0.9 MB, mostly comments: libyaml reads it in ~0.01 s, the pure-Python parser in ~1 s."""
    f = tmp_path / "notes.yaml"
    f.write_text("train: {epochs: 3}\n" + f"# {'note ' * 16}\n" * 11000)
    assert 0.8e6 < f.stat().st_size < 1e6
    started = time.thread_time()
    exp, _ = load_experiment(str(f))
    assert exp.train.epochs == 3 and time.thread_time() - started < 0.3


def test_a_tree_grid_is_counted_not_built():
    """5 x 8 x (1 + 9 x 50) x 8 x 3 configs: 433,000, counted in well under a MB."""
    sgd = {"value": "sgd", "space": {"momentum": {"choice": [i / 10 for i in range(9)]},
                                     "units": {"choice": list(range(8, 408, 8))}}}
    space = {"activation": {"choice": ["relu", "tanh", "elu", "selu", "gelu"]},
             "dropout": {"choice": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]},
             "optimizer": {"choice": ["adam", sgd]},
             "batch_size": {"choice": [32, 64, 128, 256, 512, 1024, 2048, 4096]},
             "l2": {"choice": [0.0, 1e-5, 1e-4]}}
    tracemalloc.start()
    try:
        exp = validate({"search": {"searcher": "grid", "num_samples": 1, "max_grid": 10**6},
                        "model": {"space": space}})
        assert exp.planned_trials == 5 * 8 * (1 + 9 * 50) * 8 * 3
        assert tracemalloc.get_traced_memory()[1] < 5e6
    finally:
        tracemalloc.stop()


branches = st.fixed_dictionaries({}, optional={
    "momentum": st.sampled_from([0.5, {"choice": [0.0, 0.9]}, {"choice": [0.1, 0.5, 0.9]}]),
    "units": st.sampled_from([16, {"choice": [8, 16]}, {"int": [8, 32, 8]}])})
options = st.lists(st.one_of(st.sampled_from(["adam", "rmsprop"]),
                             branches.map(lambda b: {"value": "sgd", "space": b})),
                   min_size=1, max_size=3, unique_by=lambda o: o if isinstance(o, str) else "sgd")


@settings(max_examples=60, deadline=None)
@given(options, st.sampled_from([1, {"choice": [1, 2]}, {"int": [1, 3]}]))
def test_counting_a_tree_grid_agrees_with_enumerating_it(optimizer, layers):
    exp = validate({"search": {"searcher": "grid", "num_samples": 1},
                    "model": {"space": {"optimizer": {"choice": optimizer}, "hidden_layers": layers}}})
    assert exp.planned_trials == len(enumerate_space(exp.model.params))


def header_only_npz(path, shapes: dict[str, tuple], descr: str = "|u1"):
    """An .npz whose arrays have .npy headers claiming `shapes`, and no data at all."""
    with zipfile.ZipFile(path, "w") as z:
        for name, shape in shapes.items():
            header = io.BytesIO()
            npy.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
            z.writestr(f"{name}.npy", header.getvalue())
    return path


def test_npz_headers_are_checked_before_any_data_is_read(tmp_path):
    huge = {"x_train": (10**12, 28, 28), "y_train": (10**12,), "x_test": (1, 28, 28), "y_test": (1,)}
    with pytest.raises(DistuneError, match="x_train claims 1000000000000 images, more than 10000000"):
        read_npz(header_only_npz(tmp_path / "huge.npz", huge))
    short = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (1, 28, 28), "y_test": (1,)}
    with pytest.raises(DistuneError, match="x_train is cut short: its header claims 47040000 bytes"):
        read_npz(header_only_npz(tmp_path / "short.npz", short))
    with pytest.raises(DistuneError, match="x_train must hold numbers, not object") as e:
        read_npz(header_only_npz(tmp_path / "objects.npz", short, descr="|O"))
    assert "pickle" not in str(e.value)


def tiny_npz() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez_compressed(buf, x_train=rng.integers(0, 255, (3, 28, 28), np.uint8),
                        y_train=np.array([1, 2, 3], np.uint8), x_test=np.zeros((1, 28, 28), np.uint8),
                        y_test=np.array([0], np.uint8))
    return buf.getvalue()


TINY = tiny_npz()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, len(TINY) - 1), st.integers(0, 255)), max_size=4),
       st.integers(1, len(TINY)))
def test_a_damaged_npz_raises_nothing_but_our_error(tmp_path, changes, keep):
    data = bytearray(TINY[:keep])
    for at, byte in changes:
        if at < len(data):
            data[at] = byte
    f = tmp_path / "damaged.npz"
    f.write_bytes(bytes(data))
    try:
        arrays = read_npz(f)
        assert arrays["x_train"].shape[1:] == (28, 28)
    except DistuneError as e:
        assert len(str(e)) < SHORT and "pickle" not in str(e)


@pytest.fixture
def cli_storage(tmp_path, monkeypatch):
    """Storage to validate against, and no $DISTUNE_MNIST: these tests never read MNIST."""
    monkeypatch.delenv("DISTUNE_MNIST", raising=False)
    (tmp_path / "results" / "monday").mkdir(parents=True)
    return tmp_path / "results"


def test_cli_validate_says_it_in_one_paragraph(tmp_path, cli_storage, capsys):
    """`distune validate` on each kind of bad file: exit 2, a short paragraph, no traceback."""
    from distune.cli import main

    files = {
        "deep.yaml": ("train: {epochs: " + "[" * 5000 + "]" * 5000 + "}\n").encode(),
        "latin1.yaml": "run: {name: caf\xe9}\n".encode("latin-1"),
        "dup.yaml": b"train:\n  epochs: 3\n  epochs: 5\n",
        "huge.yaml": b"# padding\n" * 600000,
        "warm.yaml": b"search: {searcher: hyperopt, warm_start: [monday, tuesday]}\n",
        "layers.yaml": b"model: {space: {hidden_layers: 3, units_99: 8}}\n",
        "mode.yaml": b"search: {metric: val_loss, mode: max}\n",
        "bomb.yaml": b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
            b"%c: &%c [%s]\n" % (c, c, b", ".join([b"*%c" % (c - 1)] * 10)) for c in b"bcdef"),
    }
    named = {"deep.yaml": "nest", "bomb.yaml": "aliases (*name)", "latin1.yaml": "UTF-8", "dup.yaml": "'epochs' appears twice",
             "huge.yaml": "far too big", "warm.yaml": "search.warm_start.1: no experiment 'tuesday'",
             "layers.yaml": "model.space.units_99", "mode.yaml": "search.mode"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        assert main(["validate", str(tmp_path / name), "--storage", str(cli_storage)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and name in err and named[name] in err and len(err) < SHORT, err
    (tmp_path / "mnist.npz").write_text("hello\n")
    assert main(["validate", "--data", str(tmp_path / "mnist.npz"), "--storage", str(cli_storage)]) == 2
    err = capsys.readouterr().err
    assert "not a zip of .npy arrays" in err and "pickle" not in err and "Traceback" not in err
    # A subset bigger than the file: refused by validate too, before any run would start.
    small = fake_mnist(tmp_path / "small.npz", 100)
    assert main(["validate", "--data", str(small), "--storage", str(cli_storage),
                 "--set", "data.train_subset=500"]) == 2
    err = capsys.readouterr().err
    assert "data.train_subset: 500" in err and "has 100" in err and "Traceback" not in err
