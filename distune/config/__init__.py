"""One validated, frozen Experiment: its schema, loading a file/preset with overrides, the
checks across sections, and reading back the config a run saved."""

from distune._lazy import exports

_NAMES = {
    "DEFAULT_STORAGE": "experiment",
    "EarlyStopping": "experiment",
    "Experiment": "experiment",
    "FLAG_FIELDS": "experiment",
    "MIN_FOLD_IMAGES": "experiment",
    "TrainConfig": "experiment",
    "load_experiment": "experiment",
    "load_saved_experiment": "saved",
    "presets": "experiment",
    "storage_root": "experiment",
    "trial_space": "experiment",
    "validate": "experiment",
}
__all__ = sorted(_NAMES)
__getattr__ = exports(__name__, _NAMES)
