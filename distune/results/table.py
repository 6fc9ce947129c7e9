"""Reading an experiment back from its directory (finished or still running) and writing
the result files atomically, so a reader never sees a half-written table."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from distune.errors import DistuneError


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
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    return str(o)


def open_analysis(exp_dir: str | Path):
    """Ray's view of an experiment directory; a clear error if there is none."""
    from ray.tune import ExperimentAnalysis

    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise DistuneError(f"no experiment at {exp_dir}. Check the name and --storage "
                           "(`distune show` lists nothing until a run has started).")
    try:
        return ExperimentAnalysis(str(exp_dir))
    except ValueError:
        raise DistuneError(f"{exp_dir} holds no Ray Tune experiment state yet (not started, or "
                           "not a distune experiment directory).") from None


def trial_status(trial, last: dict[str, Any], target_epochs: int, finished: bool = False) -> str:
    """error, diverged, early-stopped (its own patience), completed, stopped (by the scheduler
    or the sweep's stop target), not started, or Ray's state while it runs."""
    if trial.status == "ERROR":
        return "error"
    if last.get("diverged"):
        return "diverged"
    if last.get("early_stopped"):
        return "early-stopped"
    if finished or trial.status == "TERMINATED":
        if not last.get("training_iteration"):
            return "not started"  # the sweep ended (stop target, time budget) before it ran
        return "completed" if last.get("training_iteration", 0) >= target_epochs else "stopped"
    return trial.status.lower()


def trials_table(analysis, metric: str, mode: str, default_epochs: int) -> pd.DataFrame:
    """One row per trial, best first: status, epochs, best and last metrics, config."""
    rows = []
    frames = analysis.trial_dataframes
    for trial in analysis.trials:
        last = trial.last_result or {}
        frame = frames.get(trial.trial_id)
        best = math.nan
        if frame is not None and metric in frame and frame[metric].notna().any():
            best = frame[metric].max() if mode == "max" else frame[metric].min()
        target = trial.config.get("epochs") or default_epochs
        row = {
            "trial": trial.trial_id,
            "status": trial_status(trial, last, target),
            "epochs": last.get("training_iteration", 0),
            f"best_{metric}": best,
            "val_accuracy": last.get("val_accuracy"),
            "val_loss": last.get("val_loss"),
            "time_s": round(last.get("time_total_s", 0.0), 1),
        }
        row.update({f"config/{k}": v for k, v in trial.config.items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values(f"best_{metric}", ascending=(mode == "min"), na_position="last")
    return table.reset_index(drop=True)


def format_table(table: pd.DataFrame, limit: int | None = None) -> str:
    if table.empty:
        return "(no trials yet)"
    shown = table.head(limit) if limit else table
    shown = shown.rename(columns=lambda c: c.removeprefix("config/"))
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", lambda v: f"{v:.4g}"):
        return shown.to_string(index=False)
