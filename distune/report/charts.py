"""The report's charts as matplotlib figures, from plain data (no Ray, no files).

Hyperparameter charts (parallel coordinates, importance, slices) are Optuna's, drawn from an
in-memory study of the sweep's trials; the rest are drawn here. A chart that the data cannot
support (one trial, nothing varies) raises NoChart with the reason shown instead.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from distune.results.records import TrialRecord

STYLE = "ggplot"  # Optuna's charts use it too: the report looks like one piece
# How a trial's learning curve is drawn, by status: (colour, line style, end marker).
CURVE_STYLES = {
    "completed": ("tab:blue", "-", ""),
    "stopped": ("tab:gray", "--", "x"),
    "early-stopped": ("tab:orange", "-.", "o"),
    "diverged": ("tab:red", ":", "v"),
    "error": ("tab:red", ":", "v"),
}
RUNNING_STYLE = ("tab:green", "-", ">")


class NoChart(Exception):
    """The data cannot support this chart; the message says why, for the reader."""


Curves = dict[str, pd.DataFrame]  # trial id -> one row per reported epoch (its progress.csv)
NO_EPOCHS = pd.DataFrame()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never a window, works without a display
    import matplotlib.pyplot as plt

    return plt


def _better_so_far(values, mode: str) -> np.ndarray:
    """Running best, skipping missing values (a failed trial does not reset it)."""
    series = pd.Series(values, dtype=float)
    return (series.cummax() if mode == "max" else series.cummin()).ffill().to_numpy()


def history(trials: list[TrialRecord], curves: Curves, metric: str, mode: str):
    """Best metric so far against wall time (every epoch) and against trial number."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    frames = [curves.get(t.trial_id, NO_EPOCHS) for t in trials]
    rows = [(e["timestamp"] - e.get("time_total_s", 0), e["timestamp"], e[metric])
            for e in frames if metric in e and "timestamp" in e]
    if not rows:
        raise NoChart(f"no trial has reported {metric} yet")
    start = min(float(s.min()) for s, _, _ in rows)
    points = pd.DataFrame({"t": pd.concat([t for _, t, _ in rows]) - start,
                           "v": pd.concat([v for _, _, v in rows])}).dropna().sort_values("t")
    ordered = sorted(trials, key=_creation_order)
    values = np.array([t.score for t in ordered], dtype=float)
    with plt.style.context(STYLE):
        fig, (by_time, by_trial) = plt.subplots(1, 2, figsize=(12, 4.2))
        by_time.scatter(points["t"], points["v"], s=10, alpha=0.5, color="tab:blue",
                        label="an epoch's result")
        by_time.step(points["t"], _better_so_far(points["v"], mode), where="post",
                     color="black", label="best so far")
        by_time.set(xlabel="seconds since the sweep started", ylabel=metric,
                    title=f"Best {metric} so far, over time")
        number = np.arange(1, len(ordered) + 1)
        for status in sorted({t.status for t in ordered}):
            mine = [i for i, t in enumerate(ordered) if t.status == status]
            by_trial.scatter(number[mine], values[mine], s=22, color=_status_colour(status),
                             label=f"a trial's best ({status})")
        by_trial.step(number, _better_so_far(np.where(np.isfinite(values), values, np.nan), mode),
                      where="post", color="black", label="best so far")
        by_trial.set(xlabel="trial (in the order started)", ylabel=metric,
                     title=f"Best {metric} so far, by trial")
        by_trial.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (by_time, by_trial):
            ax.legend(loc="lower right" if mode == "max" else "upper right", fontsize=8)
        fig.tight_layout()
    return fig


def _creation_order(t: TrialRecord) -> tuple[int, str]:
    suffix = t.trial_id.rsplit("_", 1)[-1]
    return (int(suffix) if suffix.isdigit() else 0, t.trial_id)


def _status_colour(status: str) -> str:
    return CURVE_STYLES.get(status, RUNNING_STYLE)[0]


def learning_curves(trials: list[TrialRecord], curves: Curves, metrics: list[str],
                    winner: str | None):
    """Every trial's curve per metric; the style says how it ended, the winner is bold."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    if not any(m in curves.get(t.trial_id, NO_EPOCHS) for t in trials for m in metrics):
        raise NoChart("no trial has finished an epoch yet")
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            for t in trials:
                epochs = curves.get(t.trial_id, NO_EPOCHS)
                if metric not in epochs or epochs.empty:
                    continue
                colour, line, marker = CURVE_STYLES.get(t.status, RUNNING_STYLE)
                x, y = epochs["training_iteration"], epochs[metric]
                bold = t.trial_id == winner
                ax.plot(x, y, line, color="black" if bold else colour,
                        lw=2.5 if bold else 1.2, alpha=1 if bold else 0.7, zorder=3 if bold else 2)
                if marker:
                    ax.plot(x.iloc[-1:], y.iloc[-1:], marker, color=colour, ms=7)
            ax.set(xlabel="epoch", ylabel=metric, title=metric)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        seen = sorted({t.status for t in trials})
        handles = [Line2D([], [], color=c, linestyle=ls, marker=m, label=s)
                   for s in seen for c, ls, m in [CURVE_STYLES.get(s, RUNNING_STYLE)]]
        if winner:
            handles.append(Line2D([], [], color="black", lw=2.5, label=f"winner {winner}"))
        axes[0][-1].legend(handles=handles, fontsize=8, loc="best")
        fig.tight_layout()
    return fig


def study(trials: list[TrialRecord], mode: str, log_params: set[str]):
    """An in-memory Optuna study with one complete trial per trial that has a value. Stopped
    trials count with the best value they reached. Distributions come from the values seen."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scored = [t for t in trials if math.isfinite(t.score)]
    distributions = _distributions([t.config for t in scored], log_params)
    result = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for t in scored:
        params = {k: v for k, v in t.config.items() if k in distributions}
        result.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: distributions[k] for k in params}, value=t.score,
            user_attrs={"trial_id": t.trial_id}))
    return result


def _distributions(configs: list[dict[str, Any]], log_params: set[str]) -> dict[str, Any]:
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    values: dict[str, list] = {}
    for config in configs:
        for k, v in config.items():
            if v is not None:
                values.setdefault(k, []).append(v)
    out = {}
    for name, seen in values.items():
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen)
        if not numbers:
            choices = sorted({v if isinstance(v, (str, bool)) else str(v) for v in seen}, key=str)
            out[name] = CategoricalDistribution(choices)
            continue
        low, high = min(seen), max(seen)
        log = name in log_params and low > 0
        if all(isinstance(v, int) for v in seen):
            out[name] = IntDistribution(int(low), int(high), log=log)
        else:
            out[name] = FloatDistribution(float(low), float(high), log=log)
    return out


def varying(study) -> list[str]:
    """Hyperparameters that took more than one value among the scored trials."""
    names = {k for t in study.trials for k in t.params}
    return sorted(k for k in names if len({str(t.params.get(k)) for t in study.trials}) > 1)


def _need(study, what: str) -> list[str]:
    if len(study.trials) < 2:
        raise NoChart(f"{what} needs at least two trials with a result "
                      f"({len(study.trials)} so far)")
    params = varying(study)
    if not params:
        raise NoChart(f"{what}: no hyperparameter took more than one value")
    return params


def _optuna_figure(draw):
    """Run one of Optuna's matplotlib plots quietly (they are 'experimental') and return its
    figure, without letting its global style change leak into other charts."""
    plt = _pyplot()
    with warnings.catch_warnings(), plt.rc_context():
        warnings.simplefilter("ignore")
        axes = draw()
    ax = axes.flat[0] if isinstance(axes, np.ndarray) else axes
    return ax.figure


def parallel_coordinates(study, metric: str):
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    params = _need(study, "A parallel-coordinates chart")
    fig = _optuna_figure(lambda: plot_parallel_coordinate(study, params=params,
                                                          target_name=metric))
    fig.set_size_inches(max(8, 1.6 * len(params) + 3), 5)
    fig.axes[0].set_title(f"Hyperparameters, coloured by best {metric}")
    fig.tight_layout()
    return fig


def importances(study, metric: str) -> tuple[Any, dict[str, float]]:
    """fANOVA importances (a random forest of the metric over the hyperparameters), with the
    figure. Only hyperparameters present in every scored trial are assessed, and only with
    at least two trials more than there are of them: fewer cannot apportion the variation (a
    forest over two trials credits whichever hyperparameter it splits on first). Imported
    here, when drawn: Optuna's importance module imports scikit-learn (1.7 s, measured)."""
    shared = set.intersection(*(set(t.params) for t in study.trials))
    params = [p for p in _need(study, "Importance") if p in shared]
    if not params:
        raise NoChart("Importance: no varying hyperparameter is present in every trial")
    if len(study.trials) < len(params) + 2:
        raise NoChart(f"Importance needs at least {len(params) + 2} trials with a result for "
                      f"{len(params)} varying hyperparameters ({len(study.trials)} so far)")
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                       params=params)
    plt = _pyplot()
    with plt.style.context(STYLE):  # drawn from `scores`: Optuna's plot would fit fANOVA again
        fig, ax = plt.subplots(figsize=(8, max(3, 0.45 * len(scores) + 1.5)))
        names = list(scores)[::-1]  # most important on top
        ax.barh(names, [scores[n] for n in names], color="tab:blue")
        for y, n in enumerate(names):
            ax.text(scores[n], y, f" {scores[n]:.2f}", va="center", fontsize=8)
        ax.set(xlabel=f"importance for {metric}", xlim=(0, max(1e-9, max(scores.values())) * 1.15))
        ax.set_title(f"Hyperparameter importance for {metric} (fANOVA)", loc="left")
        fig.tight_layout()
    return fig, scores


def slices(study, metric: str):
    """One panel per varying hyperparameter: each trial's best metric against its value."""
    from optuna.visualization.matplotlib import plot_slice

    params = _need(study, "A slice plot")
    return _optuna_figure(lambda: plot_slice(study, params=params, target_name=metric))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: int = 10):
    """Counts of (true, predicted) digits, drawn here: scikit-learn's display of the same
    cost 1.7 s of import in every run's report (measured), most of a debugging run's report."""
    plt = _pyplot()
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    with plt.style.context("default"):
        fig, ax = plt.subplots(figsize=(6.5, 6))
        ax.imshow(counts, cmap="Blues", interpolation="nearest")
        light = counts.max() / 2 if counts.max() else 1
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=8,
                    color="white" if n > light else "black")
        ax.set_xticks(range(classes))
        ax.set_yticks(range(classes))
        ax.set_xlabel("Predicted label")
        ax.set_ylabel("True label")
        accuracy = float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))
        ax.set_title(f"Test set: {len(y_true)} digits, accuracy {accuracy:.4f}")
        fig.tight_layout()
    return fig


def misclassified(images: np.ndarray, y_true: np.ndarray, probabilities: np.ndarray,
                  limit: int = 40):
    """The most confident mistakes first, titled true -> predicted (confidence)."""
    plt = _pyplot()
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    if wrong.size == 0:
        raise NoChart("the winner classifies every test digit correctly")
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:limit]
    cols = 10
    rows = math.ceil(len(wrong) / cols)
    # One mosaic in one axes, titles as text: 40 axes of their own took ~1 s of every report
    cell, pad, title = 28, 6, 10  # pixels: a digit, the gap, the title's strip above it
    mosaic = np.full((rows * (cell + pad + title), cols * (cell + pad)), np.nan)
    with plt.style.context("default"):
        fig = plt.figure(figsize=(cols * 1.2, rows * 1.45 + 0.4))
        ax = fig.add_axes((0.0, 0.0, 1.0, 1 - 0.4 / (rows * 1.45 + 0.4)))
        for n, i in enumerate(wrong):
            top, left = (n // cols) * (cell + pad + title) + title, (n % cols) * (cell + pad) + pad // 2
            mosaic[top:top + cell, left:left + cell] = images[i].reshape(28, 28)
            ax.text(left + cell / 2, top - 1.5, f"{y_true[i]}→{predicted[i]} "
                    f"({probabilities[i, predicted[i]]:.0%})", ha="center", va="bottom", fontsize=8)
        ax.imshow(np.ma.masked_invalid(mosaic), cmap="gray_r", interpolation="nearest")
        ax.axis("off")
        fig.suptitle(f"{len(wrong)} of {int((predicted != y_true).sum())} misclassified test "
                     "digits, most confident first (true→predicted)", fontsize=10)
    return fig
