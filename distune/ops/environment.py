"""The environment distune's processes and Ray workers share: quiet (set before TensorFlow or
Ray is imported, handed to workers through Ray's runtime_env), and, for the private local Ray
distune starts, locked down to this machine and this user."""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

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


# Whoever reaches a Ray's GCS, dashboard or Jobs API can run code there (CVE-2023-48022). For
# the private local Ray, Ray binds every server to its node IP, which this makes 127.0.0.1 (the
# switch Ray itself uses on macOS and Windows). Token authentication is Ray's own default for a
# local ray.init() since 2.60 (with RAY_AUTH_MODE unset): setting RAY_AUTH_MODE here instead
# would reach the servers but not a driver that imported Ray before, which then cannot connect.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def local_ray_environment() -> None:
    """Before a private local Ray starts in this process: every server on loopback only."""
    os.environ.update(LOCAL_RAY_ENV)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # Ray read the switch when it was imported: set what it read
        constants.ENABLE_RAY_CLUSTER = False


def protect_token() -> None:
    """Ray writes ~/.ray/auth_token readable by everyone (0644): make it this user's alone."""
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    file = Path(named).expanduser() if named else Path.home() / ".ray" / "auth_token"
    try:
        st = file.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            file.chmod(stat.S_IMODE(st.st_mode) & 0o700)
    except OSError:
        pass  # no token file (RAY_AUTH_TOKEN in the environment), or not ours to change
