"""distune: distributed hyperparameter tuning of Keras MNIST models on Ray Tune.

    from distune import load_experiment, run
    exp, stem = load_experiment("mnist-mlp", ["train.epochs=3"])
    summary = run(exp, stem)
"""

from distune.config import Experiment, load_experiment, presets
from distune.errors import ConfigError, DistuneError


def run(*args, **kwargs):
    """`distune.runner.run`, imported lazily (it pulls in Ray)."""
    from distune.runner import run as _run

    return _run(*args, **kwargs)


__all__ = ["Experiment", "load_experiment", "presets", "run", "DistuneError", "ConfigError"]
__version__ = "0.1.0"
