"""One validated, frozen Experiment: its schema, loading a file/preset with overrides, the
checks across sections, and reading back the config a run saved."""

from distune._lazy import exports

_NAMES = {
    "DEFAULT_STORAGE": "schema",
    "EarlyStopping": "schema",
    "Experiment": "schema",
    "FLAG_FIELDS": "load",
    "MIN_FOLD_IMAGES": "schema",
    "TrainConfig": "schema",
    "load_experiment": "load",
    "load_saved_experiment": "saved",
    "load_yaml": "yamlfile",
    "presets": "load",
    "storage_root": "schema",
    "trial_space": "schema",
    "validate": "load",
}
__all__ = sorted(_NAMES)
__getattr__ = exports(__name__, _NAMES)
