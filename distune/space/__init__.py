"""The search-space syntax (`{choice: [...]}`, `{loguniform: [a, b]}`, trees) and the typed
hyperparameters a trial trains with. Knows nothing of Ray Tune's search classes or of Keras."""

from distune._lazy import exports

_NAMES = {
    "Activation": "hyperparams",
    "Choice": "params",
    "Fixed": "params",
    "Grid": "params",
    "Hyperparams": "hyperparams",
    "Initializer": "hyperparams",
    "IntRange": "params",
    "LRSchedule": "hyperparams",
    "Optimizer": "hyperparams",
    "PER_LAYER": "hyperparams",
    "Param": "params",
    "Uniform": "params",
    "check_value": "hyperparams",
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
