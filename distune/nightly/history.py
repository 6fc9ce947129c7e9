"""A sweep's nights, one row each, in SQLite beside them; the rules that compare a night with
earlier ones; and the night's report (Markdown, plus a PNG chart when matplotlib is installed).

SQLite because it is one file in the sweep's storage, needs no server, and survives the pruning
of old nights' checkpoints. Only the run holding the sweep's lock writes it.
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from distune.results.records import TrialRecord
from distune.results.values import best_first, config_key

FINISHED = ("ok", "regression")  # a night in one of these states is never rerun
NOISE_K = 3.0       # a re-evaluation may fall this many standard deviations of earlier scores ...
NOISE_FLOOR = 0.01  # ... and never less than this (metric units: one point of accuracy)
JUDGED = ("completed", "early-stopped", "diverged")  # trials that ran their course


@dataclass
class Night:
    """One row of the history: what a night ran, found and concluded."""

    date: str
    status: str = "running"  # running, interrupted, failed, ok, regression
    config_hash: str = ""
    code_version: str = ""
    metric: str = "val_accuracy"
    mode: str = "max"
    best_config: dict[str, Any] = field(default_factory=dict)
    best_score: float | None = None
    test_accuracy: float | None = None
    trials: int = 0
    stopped_early: int = 0
    failed: int = 0
    wall_s: float = 0.0
    cpu_hours: float = 0.0
    gpu_hours: float = 0.0
    improved: bool | None = None
    regression: bool = False
    promoted: bool = False
    rebaseline: bool = False  # an intended change: later nights compare with this one onwards
    warm_from: list[str] = field(default_factory=list)
    rechecks: list[dict[str, Any]] = field(default_factory=list)


JSON_FIELDS = {"best_config", "warm_from", "rechecks"}
COLUMNS = [f.name for f in fields(Night)]


@dataclass
class Recheck:
    """A re-evaluated earlier best: its earlier scores, tonight's, and the verdict."""

    config: dict[str, Any]
    earlier: list[float]
    score: float | None
    status: str
    threshold: float | None = None
    verdict: str = "inconclusive"  # ok, regression, inconclusive, no baseline


class History:
    """The `nights` and `scores` tables of one sweep."""

    def __init__(self, path: Path):
        self.path = path
        with self._db() as db:
            cols = ", ".join(f"{c} TEXT PRIMARY KEY" if c == "date" else c for c in COLUMNS)
            db.execute(f"CREATE TABLE IF NOT EXISTS nights ({cols})")
            db.execute("CREATE TABLE IF NOT EXISTS scores (date TEXT, key TEXT, config TEXT, "
                       "score REAL, status TEXT, recheck INTEGER)")

    def _db(self):
        return _connect(self.path)

    def save(self, night: Night) -> None:
        row = {k: json.dumps(v) if k in JSON_FIELDS else v for k, v in asdict(night).items()}
        with self._db() as db:
            db.execute(f"INSERT OR REPLACE INTO nights ({', '.join(COLUMNS)}) VALUES "
                       f"({', '.join('?' * len(COLUMNS))})", [row[c] for c in COLUMNS])

    def nights(self) -> list[Night]:
        with self._db() as db:
            rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM nights ORDER BY date").fetchall()
        out = []
        for row in rows:
            values = dict(zip(COLUMNS, row))
            for k in JSON_FIELDS:
                values[k] = json.loads(values[k]) if values[k] else []
            values["improved"] = None if values["improved"] is None else bool(values["improved"])
            for k in ("regression", "promoted", "rebaseline"):
                values[k] = bool(values[k])
            out.append(Night(**values))
        return out

    def get(self, date: str) -> Night | None:
        return next((n for n in self.nights() if n.date == date), None)

    def record_scores(self, date: str, rows: Iterable[tuple[TrialRecord, bool]]) -> None:
        """Every scored trial of a night, and whether it was a recheck of an earlier winner."""
        with self._db() as db:
            db.execute("DELETE FROM scores WHERE date = ?", (date,))
            db.executemany("INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?)",
                           [(date, config_key(t.config), json.dumps(t.config), t.score, t.status,
                             int(recheck)) for t, recheck in rows])

    def comparable(self, before: str, config_hash: str) -> list[Night]:
        """Earlier finished nights a night is compared with: the same config hash, since the
        last rebaseline, and not flagged (a broken night must not become the new normal)."""
        same = [n for n in self.nights() if n.date < before and n.config_hash == config_hash]
        start = max((n.date for n in same if n.rebaseline), default="")
        return [n for n in same if n.date >= start and n.status in FINISHED and not n.regression]

    def baseline(self, config: dict, before: str, config_hash: str) -> list[float]:
        """Earlier scores of this exact config on comparable nights, from trials that ran
        their course."""
        usable = {n.date for n in self.comparable(before, config_hash)}
        with self._db() as db:
            rows = db.execute("SELECT date, score, status FROM scores WHERE key = ? AND date < ?",
                              (config_key(config), before)).fetchall()
        return [s for d, s, st in rows if d in usable and st in JUDGED and s is not None]


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    """sqlite3's own context manager commits but never closes; this does both."""
    with closing(sqlite3.connect(path, timeout=30)) as db, db:
        yield db


def judge(config: dict, earlier: list[float], score: float | None, status: str, mode: str) -> Recheck:
    """The regression rule: tonight's score of an earlier best is worse than the mean of its
    earlier scores by more than max(NOISE_K x their standard deviation, NOISE_FLOOR)."""
    check = Recheck(config, earlier, score, status)
    if not earlier:
        check.verdict = "no baseline"
        return check
    spread = statistics.stdev(earlier) if len(earlier) >= 2 else 0.0
    check.threshold = max(NOISE_K * spread, NOISE_FLOOR)
    if score is None or not math.isfinite(score) or status not in JUDGED:
        return check  # cut short (scheduler, time budget, error): no evidence either way
    drop = best_first(score, mode) - best_first(statistics.fmean(earlier), mode)
    check.verdict = "regression" if drop > check.threshold else "ok"
    return check


def _fmt(v: float | None, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def table(nights: list[Night]) -> str:
    """The nights as a Markdown table (also readable as plain text)."""
    head = ("| night | status | best val | test acc | trials (stopped early, failed) | wall | "
            "CPU-h | GPU-h | config | code | promoted |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for n in nights:
        lines.append(f"| {n.date} | {n.status} | {_fmt(n.best_score)} | {_fmt(n.test_accuracy)} | "
                     f"{n.trials} ({n.stopped_early}, {n.failed}) | {n.wall_s / 60:.1f} min | "
                     f"{n.cpu_hours:.3f} | {n.gpu_hours:.3f} | {n.config_hash} | {n.code_version} | "
                     f"{'yes' if n.promoted else ''} |")
    return "\n".join(lines)


def chart(nights: list[Night], path: Path) -> bool:
    """Best score per night as a PNG; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scored = [n for n in nights if n.best_score is not None]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([n.date for n in scored], [n.best_score for n in scored], marker="o")
    for n in scored:
        if n.regression:
            ax.plot(n.date, n.best_score, marker="x", color="red", markersize=12)
    ax.set_ylabel(f"best {scored[0].metric if scored else 'score'}")
    ax.set_title("best per night (x: regression)")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def report(sweep: str, night: Night, earlier_best: Night | None, nights: list[Night],
           chart_file: str | None) -> str:
    """The night's Markdown report: the verdict first, then the evidence."""
    verdict = ("REGRESSION" if night.regression else "new baseline" if night.rebaseline else
               "improved" if night.improved else "no improvement")
    delta = ""
    if earlier_best is not None and night.best_score is not None and earlier_best.best_score is not None:
        delta = (f" ({night.best_score - earlier_best.best_score:+.4f} vs the best comparable "
                 f"earlier night, {earlier_best.date}: {earlier_best.best_score:.4f})")
    out = [f"# {sweep}: night {night.date}: {verdict}", "",
           f"- best {night.metric}: {_fmt(night.best_score)}{delta}",
           f"- winner's test accuracy: {_fmt(night.test_accuracy)}",
           f"- best config: `{json.dumps(night.best_config)}`",
           f"- trials: {night.trials} ({night.stopped_early} stopped early, {night.failed} failed); "
           f"wall {night.wall_s / 60:.1f} min; {night.cpu_hours:.3f} CPU-h, {night.gpu_hours:.3f} GPU-h",
           f"- config {night.config_hash}, code {night.code_version}",
           f"- warm start from: "
           f"{', '.join(night.warm_from) or 'nothing (first night, or a searcher that does not learn)'}",
           f"- promoted to best/: {'yes' if night.promoted else 'no'}", ""]
    if night.rechecks:
        out += ["## Earlier bests, re-evaluated", "",
                f"Regression when tonight's score is below the mean of its earlier scores by more "
                f"than max({NOISE_K:g} × their std, {NOISE_FLOOR}).", "",
                "| config | earlier (n) | tonight | threshold | verdict |",
                "| --- | --- | --- | --- | --- |"]
        for c in night.rechecks:
            mean = statistics.fmean(c["earlier"]) if c["earlier"] else None
            out.append(f"| `{json.dumps(c['config'])}` | {_fmt(mean)} ({len(c['earlier'])}) | "
                       f"{_fmt(c['score'])} ({c['status']}) | {_fmt(c['threshold'])} | {c['verdict']} |")
        out.append("")
    out += ["## All nights", "", table(nights), ""]
    if chart_file:
        out += [f"![best per night]({chart_file})", ""]
    return "\n".join(out)
