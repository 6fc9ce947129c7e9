"""One Ray Tune run for an Experiment: its directory, the Tuner (trainable, resources,
checkpoints, stopper), fitting it, and the callbacks that print progress and track trials."""

from distune._lazy import exports

_NAMES = {
    "ProgressLines": "progress",
    "build_tuner": "tune",
    "search_context": "tune",
    "check_resources": "tune",
    "check_writable": "directory",
    "checkpoint_config": "tune",
    "check_checkpoints": "directory",
    "experiment_dir": "directory",
    "fit": "tune",
    "left_paused_by_hyperband": "tune",
    "load_data": "directory",
    "make_trainable": "tune",
    "node_types_to_add": "tune",
    "prepare_directory": "directory",
    "refuse": "unrestored",
    "release_ray": "tune",
    "start_ray": "tune",
    "start_zygotes": "tune",
    "trial_dirname": "tune",
    "training_node": "tune",
    "try_log_winner": "tracking",
    "watching": "unrestored",
}
__all__ = sorted(_NAMES)
__getattr__ = exports(__name__, _NAMES)
