"""The search-space syntax (`{choice: [...]}`, `{loguniform: [a, b]}`, trees) and the typed
hyperparameters a trial trains with, and a KerasTuner build_model's space in that syntax.
Knows nothing of Ray Tune's search classes."""

from distune._lazy import exports

_NAMES = {
    "Activation": "hyperparams",
    "COMPILE_KEYS": "hyperparams",
    "Choice": "params",
    "Fixed": "params",
    "Grid": "params",
    "Hyperparams": "hyperparams",
    "Initializer": "hyperparams",
    "IntRange": "params",
    "LOOP_KEYS": "hyperparams",
    "LRSchedule": "hyperparams",
    "Optimizer": "hyperparams",
    "PER_LAYER": "hyperparams",
    "Param": "params",
    "Uniform": "params",
    "Untranslatable": "keras_tuner",
    "check_value": "hyperparams",
    "discover": "keras_tuner",
    "values_hp": "keras_tuner",
    "enumerate_space": "params",
    "grid_points": "params",
    "grid_values": "params",
    "is_conditional": "params",
    "parse_param": "params",
    "sample": "params",
    "to_ray": "params",
}
__all__ = sorted(_NAMES)
__getattr__ = exports(__name__, _NAMES)
