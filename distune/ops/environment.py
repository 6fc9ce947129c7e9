"""The quiet environment distune's processes and Ray workers share: set before TensorFlow or Ray
is imported, handed to workers through Ray's runtime_env."""

from __future__ import annotations

import logging
import os

# Quiet by default: TensorFlow's C++ logs, Ray's migration notes and snapshot warnings.
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "60",
    "PYTHONWARNINGS": "ignore",
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0, the legacy engine prints nothing of its own
}


def quiet_environment(verbose: bool) -> None:
    """Set before TF/Ray are imported in this process; workers get the same via runtime_env."""
    if not verbose:
        for k, v in QUIET_ENV.items():
            os.environ.setdefault(k, v)
        # Trial failures are reported in one line by ProgressLines (and kept in each trial's
        # error.txt); Ray's own tracebacks for them would bury the progress view.
        logging.getLogger("ray").setLevel(logging.CRITICAL)
        import warnings

        warnings.filterwarnings("ignore")
