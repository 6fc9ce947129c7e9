"""One shape of a trial for every stage after the sweep: the results table's rows, the winner,
the report's charts and a night's scores are all `TrialRecord`s, read from Ray's analysis or
from results.csv by the functions here and nowhere else."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from distune.results.layout import TABLE_FILE
from distune.results.values import best_first, missing, plain, plain_config

CONFIG_PREFIX = "config/"  # results.csv: one column per hyperparameter


@dataclass(frozen=True)
class TrialRecord:
    trial_id: str
    config: dict[str, Any]           # Python values; a tree space's trial lacks other branches
    status: str = ""                 # completed, early-stopped, stopped, diverged, error, ...
    score: float = math.nan          # the search metric at `epoch` (its best epoch)
    epoch: int = 0                   # for a winner: its best *checkpointed* epoch
    epochs: int = 0                  # epochs it ran
    checkpoint: Path | None = None   # for a winner: the checkpoint of `epoch`
    last: dict[str, Any] = field(default_factory=dict)  # last val_accuracy, val_loss, time_s

    def but(self, **changes: Any) -> "TrialRecord":
        return replace(self, **changes)


def trial_status(trial, last: dict[str, Any], target_epochs: int, finished: bool = False) -> str:
    """A trial's outcome in distune's words: error, diverged, early-stopped (its own rule),
    completed (all epochs), stopped (cut short by the scheduler, or the sweep's stop target),
    not started, or Ray's state while it runs."""
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


def sort_best_first(records: list[TrialRecord], mode: str) -> list[TrialRecord]:
    """Best score first, unscored last; ties keep their order."""
    return sorted(records, key=lambda r: (math.isnan(r.score),
                                          0.0 if math.isnan(r.score) else best_first(r.score, mode)))


def from_analysis(analysis, metric: str, mode: str, default_epochs: int,
                  finished: bool = False) -> list[TrialRecord]:
    """Every trial of Ray's analysis, best first, its score the best epoch's metric.
    `finished`: the sweep is over, so a trial HyperBand left paused was stopped by it."""
    records = []
    frames = analysis.trial_dataframes
    for trial in analysis.trials:
        last = trial.last_result or {}
        frame = frames.get(trial.trial_id)
        score, epoch = math.nan, 0
        if frame is not None and metric in frame and frame[metric].notna().any():
            at = frame[metric].idxmax() if mode == "max" else frame[metric].idxmin()
            score = float(frame[metric][at])
            epoch = int(frame["training_iteration"][at]) if "training_iteration" in frame else 0
        target = trial.config.get("epochs") or default_epochs
        records.append(TrialRecord(
            trial.trial_id, plain_config(dict(trial.config)), trial_status(trial, last, target, finished),
            score, epoch, int(last.get("training_iteration", 0)),
            last={"val_accuracy": last.get("val_accuracy"), "val_loss": last.get("val_loss"),
                  "time_s": round(last.get("time_total_s", 0.0), 1)}))
    return sort_best_first(records, mode)


def to_table(records: list[TrialRecord], metric: str) -> pd.DataFrame:
    """results.csv: one row per trial, in the records' order."""
    rows = [{"trial": r.trial_id, "status": r.status, "epochs": r.epochs, f"best_{metric}": r.score,
             **{k: r.last.get(k) for k in ("val_accuracy", "val_loss", "time_s")},
             **{CONFIG_PREFIX + k: v for k, v in r.config.items()}} for r in records]
    return pd.DataFrame(rows)


def from_table(table: pd.DataFrame, metric: str) -> list[TrialRecord]:
    """The records results.csv holds: configs without the parameters a trial lacked (NaN), and
    ints where a gap (a tree space) made pandas read an int column as floats."""
    gapped_ints = {c for c in table.columns if c.startswith(CONFIG_PREFIX)
                   and table[c].dtype.kind == "f" and table[c].isna().any()
                   and (table[c].dropna() % 1 == 0).all()}
    out = []
    for row in table.to_dict("records"):
        config = {k.removeprefix(CONFIG_PREFIX): int(v) if k in gapped_ints else plain(v)
                  for k, v in row.items() if k.startswith(CONFIG_PREFIX) and not missing(v)}
        last = {k: plain(row[k]) for k in ("val_accuracy", "val_loss", "time_s") if k in row}
        out.append(TrialRecord(str(row["trial"]), config, str(row["status"]),
                               float(row[f"best_{metric}"]), epochs=int(row.get("epochs", 0)), last=last))
    return out


def read_records(directory: Path, metric: str) -> list[TrialRecord]:
    """The records of a finished experiment, from its results.csv."""
    return from_table(pd.read_csv(directory / TABLE_FILE), metric)
