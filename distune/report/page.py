"""`report.html`: one self-contained page (charts embedded as PNG) about an experiment, finished
or still running, plus the same charts as PNG files under `report/`. It only reads what a
sweep wrote, so it can be regenerated at any time with `distune report NAME`."""

from __future__ import annotations

import base64
import html
import io
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from distune.config.schema import Experiment
from distune.config.saved import load_saved_experiment
from distune.errors import DistuneError
from distune.report import charts
from distune.results.records import CONFIG_PREFIX, TrialRecord, from_table
from distune.sweep.directory import load_data
from distune.results.layout import BEST_FILE, BEST_MODEL_FILE, CHARTS_DIR, PROGRESS_FILE, REPORT_FILE
from distune.results.table import open_analysis, trials_table, write_atomic
from distune.trial.training import configure_tensorflow



@dataclass
class Chart:
    key: str  # element id and PNG file name
    title: str
    caption: str
    png: bytes | None = None
    note: str | None = None  # why there is no chart


def report_of(directory: Path) -> Path:
    """`distune report NAME`: the report of an experiment on disk, finished or still running."""
    exp = load_saved_experiment(directory)
    file = directory / BEST_FILE
    table = trials_table(open_analysis(directory), exp.search.metric, exp.search.mode,
                         exp.train.epochs, finished=file.is_file())
    return write_report(exp, directory, table, json.loads(file.read_text()) if file.is_file() else None)


def write_report(exp: Experiment, directory: Path, table: pd.DataFrame,
                 best: dict[str, Any] | None, splits=None, probabilities=None,
                 drawn: Future | None = None) -> Path:
    """Write report.html and report/*.png from what the caller holds: the experiment, its
    results table, best.json's content (None while no winner) and, at the end of a run, the
    data and the exported winner's test-set probabilities (saves reloading MNIST and the
    model, and importing TensorFlow), and the sweep's charts if `draw_sweep_soon` drew them."""
    sweep = drawn.result() if drawn else sweep_sections(exp, directory, table,
                                                        best["trial"] if best else None)
    sections = ([("winner", f"Winner: trial {best['trial']}",
                  _winner_charts(exp, directory, splits, probabilities),
                  _winner_table(best, exp.search.metric))] if best else []) + sweep
    page = _page(exp, directory, table, best, sections)
    try:
        _write_pngs(directory / CHARTS_DIR, [c for _, _, cs, _ in sections for c in cs])
        write_atomic(directory / REPORT_FILE, page)
    except OSError as e:
        raise DistuneError(f"cannot write the report into {directory} ({e.strerror}). Make the "
                           "experiment directory writable, or copy it somewhere that is.") from None
    return directory / REPORT_FILE


def draw_sweep_soon(exp: Experiment, directory: Path, table: pd.DataFrame,
                    winner_id: str) -> Future:
    """The sweep's charts (everything but the winner's test set), drawn in a thread while the
    caller tests the winner, which mostly waits on another process: about half a second of a
    debugging run's report (measured). Its error, if any, surfaces in `write_report`."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="distune-report")
    try:
        return pool.submit(sweep_sections, exp, directory, table, winner_id)
    finally:
        pool.shutdown(wait=False)  # the drawing goes on; the interpreter's exit awaits it


def sweep_sections(exp: Experiment, directory: Path, table: pd.DataFrame,
                   winner_id: str | None) -> list[tuple[str, str, list[Chart], str]]:
    """The report's sections about the sweep: history, curves and the hyperparameters."""
    metric, mode = exp.search.metric, exp.search.mode
    trials = from_table(table, metric)
    curves = trial_curves(directory, trials)
    log_params = {k for k, p in exp.model.params.items() if getattr(p, "log", False)}
    study = charts.study(trials, mode, log_params)
    other = "val_loss" if metric != "val_loss" else "val_accuracy"
    importance_chart, importance_html = _importance(study, metric)
    return [
        ("history", "Optimization history", [_draw(
            "history", "Optimization history",
            "Left: every epoch's result over wall time, with the best so far. Right: each "
            "trial's best (coloured by how it ended), in the order trials started.",
            lambda: charts.history(trials, curves, metric, mode))], ""),
        ("curves", "Learning curves", [_draw(
            "curves", "Learning curves",
            "Every trial, epoch by epoch. Dashed grey ending in x: stopped early by the "
            "scheduler; dash-dot orange: its own early stopping; dotted red: diverged or "
            "failed; bold black: the winner.",
            lambda: charts.learning_curves(trials, curves, [metric, other], winner_id))], ""),
        ("parallel", "Parallel coordinates", [_draw(
            "parallel", "Parallel coordinates",
            f"One line per trial through its hyperparameters, coloured by its best {metric}.",
            lambda: charts.parallel_coordinates(study, metric))], ""),
        ("importance", "Hyperparameter importance", [importance_chart], importance_html),
        ("slices", "Slice plots", [_draw(
            "slices", "Slice plots",
            f"Each trial's best {metric} against the value of one hyperparameter.",
            lambda: charts.slices(study, metric))], ""),
    ]


def try_write_report(exp: Experiment, directory: Path, table: pd.DataFrame,
                     best: dict[str, Any] | None, splits=None,
                     say: Callable[[str], None] = print, probabilities=None,
                     drawn: Future | None = None) -> Path | None:
    """The end of a run: a report that cannot be written is a warning, never a lost result."""
    try:
        return write_report(exp, directory, table, best, splits, probabilities, drawn)
    except Exception as e:  # noqa: BLE001  (any failure here must not lose the sweep's results)
        say(f"distune: warning: could not write the report ({type(e).__name__}: {e}); the "
            f"results are saved. Try again with `distune report {directory.name} --storage "
            f"{directory.parent}`.")
        return None


def trial_curves(directory: Path, trials: list[TrialRecord]) -> charts.Curves:
    """Each trial's epochs, from the progress.csv Ray Tune keeps beside its checkpoints."""
    out = {}
    for t in trials:
        progress = directory / t.trial_id / PROGRESS_FILE
        if progress.is_file() and progress.stat().st_size:
            out[t.trial_id] = pd.read_csv(progress)
    return out


def _draw(key: str, title: str, caption: str, make: Callable[[], Any]) -> Chart:
    chart = Chart(key, title, caption)
    try:
        chart.png = _png(make())
    except charts.NoChart as e:
        chart.note = str(e)
    return chart


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _importance(study, metric: str) -> tuple[Chart, str]:
    chart = Chart("importance", "Hyperparameter importance",
                  f"fANOVA: how much of the variation in {metric} across trials each "
                  "hyperparameter explains (stopped trials count with the best value they "
                  "reached; only hyperparameters present in every trial are assessed). With few "
                  "trials, treat it as a hint.")
    try:
        fig, scores = charts.importances(study, metric)
    except charts.NoChart as e:
        chart.note = str(e)
        return chart, ""
    chart.png = _png(fig)
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td></tr>" for k, v in scores.items())
    return chart, f'<table class="small"><tr><th>hyperparameter</th><th>importance</th></tr>{rows}</table>'


def _winner_charts(exp, directory: Path, splits, probabilities=None) -> list[Chart]:
    """Confusion matrix and misclassified digits of the exported winner on the test set."""
    confusion = Chart("confusion", "Confusion matrix",
                      "The winner's predictions on the test set (rows: true digit).")
    mistakes = Chart("misclassified", "Misclassified test digits",
                     "The winner's most confident mistakes, titled true→predicted.")
    try:
        if probabilities is None:
            x, y, probabilities = winner_predictions(exp, directory, splits)
        else:
            x, y = splits.x_test, splits.y_test
    except Exception as e:  # noqa: BLE001  (a missing model or data file: say so, keep the rest)
        confusion.note = mistakes.note = f"test-set charts unavailable: {e}"
        return [confusion, mistakes]
    confusion.png = _png(charts.confusion(y, probabilities.argmax(axis=1)))
    try:
        mistakes.png = _png(charts.misclassified(x, y, probabilities))
    except charts.NoChart as e:
        mistakes.note = str(e)
    return [confusion, mistakes]


def winner_predictions(exp, directory: Path, splits):
    configure_tensorflow()  # before Keras imports TensorFlow: quiet, and its thread settings
    import keras

    splits = splits if splits is not None else load_data(exp)
    from distune.trial.model import reshape_for

    model = keras.saving.load_model(directory / BEST_MODEL_FILE)
    return splits.x_test, splits.y_test, model.predict(reshape_for(model, splits.x_test),
                                                       batch_size=1024, verbose=0)


def _winner_table(best: dict[str, Any], metric: str) -> str:
    facts = {"trial": best["trial"], "best epoch": best.get("epoch"),
             f"validation {metric}": best.get(metric),
             "test accuracy" + (" (refit on train+validation)" if best.get("refit") else ""):
                 best.get("test_accuracy"),
             "test loss": best.get("test_loss"), "model file": best.get("model", BEST_MODEL_FILE)}
    facts.update(best.get("config", {}))
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in facts.items())
    return f'<table class="small" id="winner-config">{rows}</table>'


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _write_pngs(folder: Path, all_charts: list[Chart]) -> None:
    folder.mkdir(exist_ok=True)
    for chart in all_charts:
        file = folder / f"{chart.key}.png"
        if chart.png:
            write_atomic(file, chart.png)
        else:
            file.unlink(missing_ok=True)  # no stale chart from an earlier report


def _figure(chart: Chart) -> str:
    if chart.png is None:
        return f'<p class="note" id="chart-{chart.key}-note">{html.escape(chart.note or "")}</p>'
    data = base64.b64encode(chart.png).decode()
    return (f'<figure id="fig-{chart.key}"><img id="chart-{chart.key}" alt="{html.escape(chart.title)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(chart.caption)} '
            f'(<code>{CHARTS_DIR}/{chart.key}.png</code>)</figcaption></figure>')


def _page(exp, directory: Path, table: pd.DataFrame, best, sections) -> str:
    counts = table["status"].value_counts().to_dict() if not table.empty else {}
    status = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no trials yet"
    notice = "" if best else (
        '<p class="notice" id="no-winner">No winner yet: the sweep is still running or was '
        "interrupted. The winner (its test accuracy, confusion matrix and mistakes) is added "
        f"when <code>distune run</code> or <code>distune resume</code> finishes; run "
        f"<code>distune report {html.escape(directory.name)}</code> to refresh this page.</p>")
    body = "".join(
        f'<section id="{key}"><h2>{html.escape(title)}</h2>{extra}'
        f'{"".join(_figure(c) for c in cs)}</section>' for key, title, cs, extra in sections)
    shown = table.rename(columns=lambda c: c.removeprefix(CONFIG_PREFIX))
    trials_html = shown.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}",
                                classes="small", table_id="trials-table", border=0)
    name = html.escape(directory.name)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>distune report: {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }} figcaption {{ color: #555; font-size: 90%; }}
table.small {{ border-collapse: collapse; font-size: 85%; margin: 0.5em 0; }}
table.small td, table.small th {{ border: 1px solid #ddd; padding: 2px 8px; text-align: left; }}
.notice {{ background: #fff4d6; padding: 0.8em; border-left: 4px solid #e0a800; }}
.note {{ color: #777; font-style: italic; }}
</style></head><body>
<h1>distune report: {name}</h1>
<p id="summary">{len(table)} trials ({html.escape(status)}); searcher
<b>{html.escape(exp.search.searcher)}</b>, scheduler <b>{html.escape(exp.schedule.scheduler)}</b>;
trials ranked by {html.escape(exp.search.metric)} ({exp.search.mode}). Written
{time.strftime('%Y-%m-%d %H:%M:%S')} from <code>{html.escape(str(directory))}</code>.</p>
{notice}{body}
<section id="trials"><h2>Trials, best first</h2>{trials_html}</section>
</body></html>
"""
