"""Property test: whatever a user writes, validation answers with our error or a valid config."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distune.config import Experiment, load_experiment, validate
from distune.errors import DistuneError

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
