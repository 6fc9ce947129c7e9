"""report.html and its charts: from one real small sweep (conftest.reported_sweep), opened in a real headless Chromium."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distune.report import charts
from distune.results import TrialRecord, from_table
from distune.report import page as report
from distune.cli import main

CHARTS = ["confusion", "misclassified", "history", "curves", "parallel", "importance", "slices"]
SECTIONS = ["winner", "history", "curves", "parallel", "importance", "slices", "trials"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def sweep(reported_sweep):
    """conftest's reported sweep: a 2x2 grid, 3 epochs, ASHA halving."""
    summary, lines, _ = reported_sweep
    return summary, lines


class _Elements(HTMLParser):
    """Ids, and the src of every img, in an HTML document."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.images: dict[str, str] = {}
        self.body: dict[str, str] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.add(attrs.get("id", ""))
        if tag == "img":
            self.images[attrs.get("id", "")] = attrs.get("src", "")
        if tag == "body":
            self.body = attrs


@pytest.mark.slow
def test_report_is_written_at_the_end_of_a_run(sweep):
    summary, lines = sweep
    d = summary.directory
    assert summary.files["report"] == d / "report.html"
    assert not any("could not write the report" in line for line in lines)
    for key in CHARTS:
        png = d / "report" / f"{key}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", key
    page = _Elements((d / "report.html").read_text())
    assert {f"chart-{k}" for k in CHARTS} <= set(page.images)
    for key in CHARTS:  # embedded: the page needs no other file
        assert page.images[f"chart-{key}"].startswith("data:image/png;base64,")
    assert set(SECTIONS) <= page.ids and "no-winner" not in page.ids
    text = (d / "report.html").read_text()
    best = json.loads((d / "best.json").read_text())
    assert f"{best['test_accuracy']:.4g}" in text and best["trial"] in text


@pytest.mark.slow
def test_confusion_matrix_is_the_exported_winner_on_the_test_set(sweep):
    summary, _ = sweep
    exp_dir = summary.directory
    from distune.config import load_saved_experiment
    from distune.sweep import load_data

    exp = load_saved_experiment(exp_dir)
    _, y, probabilities = report.winner_predictions(exp, exp_dir, load_data(exp))
    accuracy = float(np.mean(probabilities.argmax(axis=1) == y))
    assert len(y) == 10000
    assert accuracy == pytest.approx(summary.test_accuracy, abs=1e-4)


@pytest.mark.slow
def test_stopped_trials_are_drawn_differently(sweep):
    summary, _ = sweep
    table = pd.read_csv(summary.directory / "results.csv")
    assert {"completed", "stopped"} <= set(table.status), "ASHA stopped no trial: nothing to show"
    trials = from_table(table, "val_accuracy")
    curves = report.trial_curves(summary.directory, trials)
    fig = charts.learning_curves(trials, curves, ["val_accuracy"], winner=None)
    styles = [line.get_linestyle() for line in fig.axes[0].lines]  # end markers: "None"
    assert styles.count("--") == (table.status == "stopped").sum()
    assert styles.count("-") == (table.status == "completed").sum()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install "
                    "chromium; .ci/run does this): the report cannot be opened in a browser")
def test_report_opens_in_headless_chromium(sweep, tmp_path):
    summary, _ = sweep
    # The report has no script of its own; this probe, added to a copy, counts the images the
    # browser decoded once the page has loaded, and proves console messages are captured.
    probe = ('<script>addEventListener("load", () => { const imgs = [...document.images];'
             'document.body.dataset.images = imgs.length;'
             'document.body.dataset.decoded = imgs.filter(i => i.complete && i.naturalWidth > 0)'
             '.length; console.log("probe loaded"); });</script></body>')
    page = tmp_path / "probe.html"
    page.write_text((summary.directory / "report.html").read_text().replace("</body>", probe))
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert any("probe loaded" in line for line in console), done.stderr[-2000:]
    assert [line for line in console if "probe loaded" not in line] == []  # no JS errors
    dom = _Elements(done.stdout)
    assert {f"chart-{k}" for k in CHARTS} <= set(dom.images) and set(SECTIONS) <= dom.ids
    assert int(dom.body["data-decoded"]) == int(dom.body["data-images"]) == len(CHARTS)


@pytest.mark.slow
def test_report_of_an_unfinished_sweep_says_there_is_no_winner_yet(sweep, tmp_path, capsys):
    summary, _ = sweep
    copy = tmp_path / "unfinished"
    shutil.copytree(summary.directory, copy)
    for name in ("best.json", "best_model.keras", "report.html"):
        (copy / name).unlink()
    shutil.rmtree(copy / "report")
    assert main(["report", str(copy)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = _Elements((copy / "report.html").read_text())
    assert "no-winner" in page.ids and "winner" not in page.ids
    assert {"chart-history", "chart-curves", "chart-parallel", "chart-importance",
            "chart-slices"} <= set(page.images)
    assert not (copy / "report" / "confusion.png").exists()


@pytest.mark.slow
def test_a_failing_report_only_warns(sweep, monkeypatch):
    summary, _ = sweep
    before = (summary.directory / "report.html").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(report, "from_table", broken)
    said: list[str] = []
    table = pd.read_csv(summary.directory / "results.csv")
    assert report.try_write_report(summary.experiment, summary.directory, table, summary.best,
                                   say=said.append) is None
    assert len(said) == 1 and "could not write the report" in said[0] and "disk on fire" in said[0]
    assert (summary.directory / "report.html").read_bytes() == before  # the old one is intact


def test_report_of_a_missing_experiment_is_a_user_error(tmp_path, capsys):
    assert main(["report", "nope", "--storage", str(tmp_path)]) == 2
    assert "no experiment at" in capsys.readouterr().err


def _trial(i: int, best: float, **config) -> TrialRecord:
    return TrialRecord(f"abc_{i:05d}", config, "completed", best)


def _curves(trials: list[TrialRecord]) -> charts.Curves:
    return {t.trial_id: pd.DataFrame({"training_iteration": [1, 2], "timestamp": [100 + i, 101 + i],
                                      "val_accuracy": [t.score / 2, t.score], "val_loss": [1.0, 0.5],
                                      "time_total_s": [1.0, 2.0]}) for i, t in enumerate(trials)}


def test_confusion_chart_counts_each_true_and_predicted_pair():
    y_true = np.array([0, 0, 1, 2, 2, 2, 9])
    y_pred = np.array([0, 1, 1, 2, 2, 7, 9])
    fig = charts.confusion(y_true, y_pred)
    ax = fig.axes[0]
    drawn = np.asarray(ax.images[0].get_array())
    expected = np.zeros((10, 10), int)
    for t, p in zip(y_true, y_pred):
        expected[t, p] += 1
    assert drawn.shape == (10, 10) and (drawn == expected).all()
    assert [t.get_text() for t in ax.texts] == [str(n) for n in expected.ravel()]
    assert "accuracy 0.7143" in ax.get_title() and ax.get_ylabel() == "True label"


def test_charts_explain_what_the_data_cannot_show():
    one = [_trial(0, 0.9, units=8)]
    with pytest.raises(charts.NoChart, match="at least two trials"):
        charts.parallel_coordinates(charts.study(one, "max", set()), "val_accuracy")
    constant = [_trial(i, 0.5 + i / 10, units=8, activation="relu") for i in range(3)]
    with pytest.raises(charts.NoChart, match="no hyperparameter took more than one value"):
        charts.importances(charts.study(constant, "max", set()), "val_accuracy")
    assert charts.history(one, _curves(one), "val_accuracy", "max") is not None


def test_study_handles_categorical_boolean_log_and_conditional_params():
    trials = [_trial(0, 0.90, optimizer="adam", batch_norm=True, learning_rate=1e-3, units=32),
              _trial(1, 0.95, optimizer="sgd", batch_norm=False, learning_rate=1e-2, units=64,
                     momentum=0.9),
              _trial(2, 0.80, optimizer="adam", batch_norm=True, learning_rate=1e-4, units=16),
              TrialRecord("abc_00003", {"units": 8}, "error", math.nan)]
    study = charts.study(trials, "max", {"learning_rate"})
    assert len(study.trials) == 3  # the trial without a result is left out
    with pytest.raises(charts.NoChart, match="at least 6 trials with a result for 4 varying"):
        charts.importances(study, "val_accuracy")  # 4 shared hyperparameters, 3 trials
    trials += [_trial(4 + i, 0.7 + i / 20, optimizer=("adam", "sgd")[i % 2], batch_norm=bool(i % 2),
                      learning_rate=10.0 ** -(i + 2), units=8 * (i + 1)) for i in range(3)]
    study = charts.study(trials, "max", {"learning_rate"})
    dists = study.trials[1].distributions
    assert dists["learning_rate"].log and dists["optimizer"].choices == ("adam", "sgd")
    assert "momentum" not in study.trials[0].params  # only the branch a trial took
    fig, scores = charts.importances(study, "val_accuracy")
    assert set(scores) == {"batch_norm", "learning_rate", "optimizer", "units"}  # shared ones
    assert math.isclose(sum(scores.values()), 1.0, abs_tol=1e-6)
    for draw in (charts.parallel_coordinates, charts.slices):
        assert draw(study, "val_accuracy").axes
    assert "fANOVA" in fig.axes[0].get_title(loc="left")


@pytest.mark.slow
def test_the_winner_is_tested_in_its_nodes_zygote_exactly_as_in_the_driver(sweep, monkeypatch):
    """A driver on the node it started tests the winner in a process the node's zygote forks
    (TensorFlow imported there already), and the report draws from those probabilities: the
    same loss, accuracy and probabilities as a test in the driver itself."""
    from distune.results import open_analysis
    from distune.sweep.directory import load_data
    from distune.sweep.tune import training_node
    from distune.winner import pick

    summary, _ = sweep
    exp = summary.experiment
    splits = load_data(exp)
    best = pick.pick_winner(open_analysis(summary.directory), exp)
    here = pick.evaluate_checkpoint(best, splits)
    assert here.accuracy == summary.test_accuracy

    def not_here(*args):
        raise AssertionError("the winner was tested in the driver")

    monkeypatch.setattr(pick, "test_saved_model", not_here)
    node = training_node(exp)
    assert node is not None, "no node's zygote to test in"
    there = pick.evaluate_checkpoint(best, splits, node)
    assert (there.loss, there.accuracy, there.model_file) == (here.loss, here.accuracy, here.model_file)
    np.testing.assert_array_equal(there.probabilities, here.probabilities)
