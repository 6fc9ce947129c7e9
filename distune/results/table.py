"""Reading an experiment back from its directory (finished or still running) and writing
the result files atomically, so a reader never sees a half-written table."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from distune.errors import DistuneError
from distune.ops import check_trusted
from distune.results.records import CONFIG_PREFIX, from_analysis, to_table
from distune.results.values import plain


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write to a temporary file beside `path`, then rename over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(o: Any) -> Any:
    value = plain(o)
    return value if value is not o else str(o)


def open_analysis(exp_dir: str | Path):
    """Ray's view of an experiment directory; a clear error if there is none."""
    from ray.tune import ExperimentAnalysis

    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise DistuneError(f"no experiment at {exp_dir}. Check the name and --storage "
                           "(`distune show` lists nothing until a run has started).")
    check_trusted(exp_dir)
    try:
        return ExperimentAnalysis(str(exp_dir))
    except ValueError:
        raise DistuneError(f"{exp_dir} holds no Ray Tune experiment state yet (not started, or "
                           "not a distune experiment directory).") from None


def trials_table(analysis, metric: str, mode: str, default_epochs: int,
                 finished: bool = False) -> pd.DataFrame:
    """One row per trial, best first: status, epochs, best and last metrics, config.
    `finished`: the sweep is over (its winner is written)."""
    return to_table(from_analysis(analysis, metric, mode, default_epochs, finished), metric)


def format_table(table: pd.DataFrame, limit: int | None = None) -> str:
    if table.empty:
        return "(no trials yet)"
    shown = table.head(limit) if limit else table
    shown = shown.rename(columns=lambda c: c.removeprefix(CONFIG_PREFIX))
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", lambda v: f"{v:.4g}"):
        return shown.to_string(index=False)
