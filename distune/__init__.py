"""distune: distributed hyperparameter tuning of Keras MNIST models on Ray Tune.

    from distune import load_experiment, run
    exp, stem = load_experiment("mnist-mlp", ["train.epochs=3"])
    summary = run(exp, stem)

The public API. Names load on first use, so `import distune` imports neither Ray nor Keras.
"""

from distune._lazy import exports

_NAMES = {
    # an experiment: load a file or preset with overrides, or validate a dict
    "Experiment": "config.schema", "load_experiment": "config.load",
    "validate": "config.load", "presets": "config.load",
    "load_saved_experiment": "config.saved",
    # the pipeline
    "run": "pipeline", "resume": "pipeline", "finish": "pipeline", "Summary": "pipeline",
    "write_report": "report.page",
    # the registries: name -> searcher / scheduler
    "SEARCHERS": "search.searchers", "SCHEDULERS": "search.schedulers",
    # the errors
    "DistuneError": "errors", "ConfigError": "errors", "Interrupted": "errors",
}
__all__ = sorted(_NAMES)
__getattr__ = exports(__name__, _NAMES)


def __dir__() -> list[str]:
    return [*__all__, "__version__"]


from importlib.metadata import version as _version  # noqa: E402

__version__ = _version("distune")  # pyproject.toml's, the one place it is written
