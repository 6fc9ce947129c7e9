"""A resume that Ray Tune could not restore stops before anything runs. Tune logs the failure
("Failed to restore the run state.") and goes on as a new experiment in the same directory, so
the earlier trials would drop out of the sweep's record (seen in CI: a SIGKILLed sweep's resume
ran its one config left, alone). `watching` hears that line during a resume; the sweep's
callbacks, which Tune sets up after its restore and before its first step, call `refuse`, and
so does the resume when the fit raises (Tune's fallback trips over a model-based searcher it
restored already before any callback is set up)."""

from __future__ import annotations

import logging
from contextlib import contextmanager

from distune.errors import DistuneError
from distune.ops.environment import cause_of

TUNE_LOGGER = "ray.tune.execution.tune_controller"
_failures: list[str] = []


class _Heard(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Failed to restore the run state"):
            error = record.exc_info[1] if record.exc_info else None
            _failures.append(cause_of(error) if error else record.getMessage())


@contextmanager
def watching():
    """During a resume: remember Tune's failure to restore, for `refuse`."""
    logger, handler = logging.getLogger(TUNE_LOGGER), _Heard(logging.ERROR)
    _failures.clear()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        _failures.clear()


def refuse() -> None:
    """Raise if Tune could not restore the sweep being resumed (before it runs anything)."""
    if _failures:
        raise DistuneError(
            f"cannot resume: Ray Tune could not restore the sweep's saved state ({_failures[0]}), "
            "and would have started it anew. Nothing was run; its files are as they were "
            "(`distune show NAME` lists its trials). This is a bug in distune or Ray, not in "
            "your input: please report it with that cause.")
