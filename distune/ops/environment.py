"""The environment distune's processes and Ray workers share: quiet (set before TensorFlow or
Ray is imported; a local Ray's workers inherit it from the raylet, a joined cluster's get it as
the job's runtime_env), and, for the private local Ray distune starts, locked down to this
machine and this user, its workers started without a second import of Ray."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import stat
import sys
from pathlib import Path

from distune.errors import clip

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
    """Set before TF/Ray are imported in this process; workers get the same (job_runtime_env)."""
    if not verbose:
        for k, v in QUIET_ENV.items():
            os.environ.setdefault(k, v)
        # Trial failures are reported in one line by ProgressLines (and kept in each trial's
        # error.txt); Ray's own tracebacks for them would bury the progress view.
        logging.getLogger("ray").setLevel(logging.CRITICAL)
        surface_warnings()


# Warnings that are no news to a user: Tune's timing notes, its Ctrl-C notes (distune says
# what to do next itself), its note on trials that have no result yet.
NOISE = ("may be a performance bottleneck", "may become a bottleneck", "Stop signal received",
         "Experiment has been interrupted", "Failed to fetch metrics for")


class OneLine(logging.Handler):
    """Quiet is not blind: a library's warning (a setting ignored or changed, say) reaches
    the console as one line, each distinct one once."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message, error = _first_line(record.getMessage()), record.exc_info and record.exc_info[1]
        if error:  # what went wrong, not only that it did (Tune's failed restore)
            message = f"{message} ({cause_of(error)})"
        self.say(message, record.name)

    def say(self, message: str, origin: str) -> None:
        text = _first_line(message)
        kind = re.sub(r"`[^`]*`|'[^']*'|\d+", "_", text)  # the same warning for another trial
        if text and kind not in self.seen and not any(n in text for n in NOISE):
            self.seen.add(kind)
            print(f"distune: warning from {origin}: {clip(text)} (shown once)", file=sys.stderr)


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def cause_of(error: BaseException) -> str:
    """An exception in one line: its type and its message's first line."""
    cause = _first_line(str(error))
    return f"{type(error).__name__}{': ' + cause if cause else ''}"


HEARD = OneLine()


def surface_warnings() -> None:
    """The searchers' and Tune's logged warnings and Python's UserWarnings through HEARD;
    other warnings (deprecations, resource notes) and Ray's own info stay quiet. Again after
    ray.init, which resets Ray's loggers, and after Optuna installs its handler."""
    import warnings

    for name in ("ray.tune", "optuna", "hyperopt", "skopt"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        logger.handlers, logger.propagate = [HEARD], False
    warnings.simplefilter("ignore")
    warnings.filterwarnings("always", category=UserWarning)  # HEARD keeps each one once
    warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: \
        HEARD.say(str(message), f"{category.__name__} in {Path(filename).name}")


# Whoever reaches a Ray's GCS, dashboard or Jobs API can run code there (CVE-2023-48022). For
# the private local Ray, Ray binds every server to its node IP, which this makes 127.0.0.1 (the
# switch Ray itself uses on macOS and Windows). Token authentication is Ray's own default for a
# local ray.init() since 2.60 (with RAY_AUTH_MODE unset): setting RAY_AUTH_MODE here instead
# would reach the servers but not a driver that imported Ray before, which then cannot connect.
# The raylet would also start a worker per CPU for the first driver's job, ahead of need: trials'
# actors do take them, but they start beside the driver's own start-up and the zygote's import
# on the same cores; a 2-trial `distune run` took 13.8 s with them against 12.4 s without
# (scripts/bench/command_cost.py, 4 runs each, 2026-12-07).
# Ray's log monitor lists the log directory ten times a second while it holds under this many
# files; at 0, every 0.5 s (its LOG_NAME_UPDATE_INTERVAL_S): 1.1 -> 0.6 s of CPU a minute, idle
# with 20 workers' logs (2026-12-07), for output a quiet driver does not even read.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_prestart_worker_first_driver": "0",
                 "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0"}


def job_runtime_env(address: str) -> dict | None:
    """What a driver hands its Ray job's workers: the quiet settings where it joins a cluster.
    A local Ray's raylet, started from this process, passes its environment to every worker
    already; a runtime environment there would only route each worker's start through Ray's
    runtime-env agent (0.4 s of CPU and 0.3 s of wait an actor, measured)."""
    env = {k: os.environ[k] for k in QUIET_ENV if k in os.environ}
    return {"env_vars": env} if env and address != "local" else None


def local_ray_environment() -> None:
    """Before a private local Ray starts in this process: every server on loopback only, no
    workers started ahead of need, a log monitor that lists its directory every 0.5 s, not
    ten times a second, each worker started without a second import of Ray
    (start_worker.py: 0.5 s of CPU a worker). Ray's layout, read from its source (2.52-2.60):
    the node joins `workers/` and this file name, which as an absolute path replaces both."""
    os.environ.update(LOCAL_RAY_ENV)
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # what Ray read of the switch, if imported before
    if hasattr(ray_constants, "SETUP_WORKER_FILENAME"):
        ray_constants.SETUP_WORKER_FILENAME = str(Path(__file__).with_name("start_worker.py"))


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


def backend_environment(backend: str, threads: int, gpu_share: float = 0.0) -> dict[str, str]:
    """What a trial's training process needs set before Keras is imported: the backend, and
    for JAX its CPU thread count (XLA's Eigen pool ignores TensorFlow's settings) and its GPU
    memory: JAX would otherwise take 75 % of the device, so fractional GPUs could not pack."""
    env = {"KERAS_BACKEND": backend}
    if backend == "jax":
        env["XLA_FLAGS"] = (f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                            f"intra_op_parallelism_threads={threads}")
        if 0 < gpu_share < 1:
            env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 * gpu_share:.3f}"
    return env


def quiet_tensorflow(initialise: bool = False):
    """TensorFlow and Keras imported without TF's C++ start-up lines, which ignore
    TF_CPP_MIN_LOG_LEVEL (the fd is silenced while it loads); no op run, unless `initialise`:
    then its runtime is started too, silenced (a driver about to run a user's model code;
    never the zygote, which must fork before any TF thread exists)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    with stderr_silenced(os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"):
        import tensorflow as tf

        importlib.import_module("keras")
        if initialise:
            tf.config.list_physical_devices("GPU")
    return tf


@contextlib.contextmanager
def stderr_silenced(active: bool):
    if not active:
        yield
        return
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
