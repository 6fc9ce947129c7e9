"""TensorBoard event files and MLflow runs, from one real small sweep, read back with each
tool's own reader (and TensorBoard's own HParams server)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from types import SimpleNamespace

import pandas as pd
import pytest

from distune.sweep import tracking
from distune.errors import DistuneError


@pytest.fixture(scope="module")
def sweep(reported_sweep):
    """conftest's reported sweep: a 2x2 grid over units {8, 32}, 3 epochs, ASHA halving, one
    MLflow run per trial."""
    summary, _, uri = reported_sweep
    return summary, uri


def _trials(summary) -> list[str]:
    return list(pd.read_csv(summary.directory / "results.csv").trial)


def _epochs(summary) -> dict[str, list[int]]:
    """Each trial's reported epochs (ASHA stopped some after 1 or 2 of 3)."""
    table = pd.read_csv(summary.directory / "results.csv")
    return {t: list(range(1, e + 1)) for t, e in zip(table.trial, table.epochs)}


@pytest.mark.slow
def test_every_trial_writes_epoch_scalars_and_an_hparams_session(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    summary, _ = sweep
    epochs = _epochs(summary)
    assert len(set(map(len, epochs.values()))) > 1, "ASHA stopped no trial: a weaker test"
    for trial in _trials(summary):
        events = EventAccumulator(str(summary.directory / trial))
        events.Reload()
        scalars = events.Tags()["scalars"]
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(scalars)
        assert not [t for t in scalars if t.startswith("ray/") or t.endswith("pid")]
        assert [e.step for e in events.Scalars("val_accuracy")] == epochs[trial]
        content = events.PluginTagToContent("hparams")
        # Sessions only: TensorBoard builds the experiment from all of them.
        assert set(content) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}
        start = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_start_info"]).session_start_info
        config = json.loads((summary.directory / trial / "params.json").read_text())
        assert set(start.hparams) == set(config)
        assert start.hparams["units"].number_value == config["units"]
        end = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_end_info"]).session_end_info
        assert end.status == 1  # STATUS_SUCCESS


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_tensorboard_hparams_dashboard_lists_every_trial(sweep, tmp_path):
    """What `tensorboard --logdir <experiment>` shows, asked of TensorBoard itself."""
    summary, _ = sweep
    log = open(tmp_path / "tensorboard.log", "w+")
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir",
                               str(summary.directory), "--host", "127.0.0.1", "--port", "0"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, url = time.monotonic() + 120, None
        while url is None and time.monotonic() < deadline and server.poll() is None:
            time.sleep(1)
            found = re.search(r"http://127\.0\.0\.1:\d+/", (tmp_path / "tensorboard.log").read_text())
            url = found and found.group(0)
        assert url, (tmp_path / "tensorboard.log").read_text()[-2000:]
        # TensorBoard loads event files in the background: ask until every trial is there.
        while True:
            groups = _post(url + "data/plugin/hparams/session_groups", {
                "experimentName": "", "startIndex": 0, "sliceSize": 100,
                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                    "STATUS_RUNNING"], "colParams": []})["sessionGroups"]
            if len(groups) == len(_trials(summary)) or time.monotonic() > deadline:
                break
            time.sleep(2)
        experiment_ = _post(url + "data/plugin/hparams/experiment", {"experimentName": ""})
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert sorted(g["name"] for g in groups) == sorted(_trials(summary))
    assert {g["hparams"]["units"] for g in groups} == {8, 32}
    metrics = {m["name"]["tag"] for m in experiment_["metricInfos"]}
    assert {"val_accuracy", "val_loss", "loss", "accuracy"} <= metrics
    units = next(h for h in experiment_["hparamInfos"] if h["name"] == "units")
    assert units["domainInterval"] == {"minValue": 8.0, "maxValue": 32.0}
    for group in groups:
        assert "val_accuracy" in {m["name"]["tag"] for m in group["metricValues"]}


def _runs(uri: str, experiment_name: str) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment_name])


@pytest.mark.slow
def test_mlflow_has_one_run_per_trial_and_the_winners_model(sweep):
    import mlflow

    summary, uri = sweep
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = _runs(uri, "t")
    epochs = _epochs(summary)
    assert sorted(runs[f"tags.{tracking.TRIAL_TAG}"]) == sorted(_trials(summary))
    assert set(runs.status) == {"FINISHED"}
    assert {"params.units", "params.hidden_layers", "metrics.val_accuracy"} <= set(runs.columns)
    assert not [c for c in runs.columns if "pid" in c or c.startswith("metrics.config")]
    for run_id, trial in zip(runs.run_id, runs[f"tags.{tracking.TRIAL_TAG}"]):
        history = client.get_metric_history(run_id, "val_accuracy")
        assert sorted(m.step for m in history) == epochs[trial]
    best = json.loads((summary.directory / "best.json").read_text())
    winner = runs[runs[f"tags.{tracking.WINNER_TAG}"] == "true"]
    assert list(winner[f"tags.{tracking.TRIAL_TAG}"]) == [best["trial"]]
    assert winner["metrics.test_accuracy"].iloc[0] == pytest.approx(best["test_accuracy"])
    artifacts = {a.path for a in client.list_artifacts(winner.run_id.iloc[0])}
    assert {"best_model.keras", "best.json", "report.html"} <= artifacts
    # A local store keeps its artifacts in the experiment directory, not the working directory.
    assert winner.artifact_uri.iloc[0].startswith((summary.directory / "mlflow").as_uri())


def test_a_resumed_trial_continues_its_mlflow_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    trial = SimpleNamespace(trial_id="abc_00000", config={"units": 8, "optimizer": "adam"})
    first = tracking.MLflow(uri, "exp", tmp_path)
    first.setup()
    first.log_trial_start(trial)
    first.log_trial_result(1, trial, {"training_iteration": 1, "val_accuracy": 0.5, "pid": 7,
                                      "done": False, "config": {"units": 8}})
    again = tracking.MLflow(uri, "exp", tmp_path)  # a new driver after a resume
    again.setup()
    again.log_trial_result(2, trial, {"training_iteration": 2, "val_accuracy": 0.6})
    again.log_trial_end(trial)
    import mlflow

    runs = _runs(uri, "exp")
    assert len(runs) == 1 and runs.status[0] == "FINISHED"
    assert runs["params.optimizer"][0] == "adam" and "metrics.pid" not in runs
    history = mlflow.MlflowClient(uri).get_metric_history(runs.run_id[0], "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.6)]


def test_mlflow_problems_are_user_errors_before_the_sweep(tmp_path, monkeypatch):
    exp = SimpleNamespace(run=SimpleNamespace(mlflow=f"file://{tmp_path}/mlruns", name="x"))
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(DistuneError, match="run.mlflow: .*sqlite:///"):
        tracking.tracking_callbacks(exp, tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(DistuneError, match=r"pip install 'distune\[mlflow\]'"):
        tracking.tracking_callbacks(exp, tmp_path)
    assert [type(c) for c in tracking.tracking_callbacks(
        SimpleNamespace(run=SimpleNamespace(mlflow=None)), tmp_path)] == [tracking.TensorBoard]


def test_epoch_metrics_keep_the_models_numbers_only():
    result = {"loss": 0.3, "val_accuracy": 0.9, "lr": 1e-3, "diverged": False, "done": True,
              "training_iteration": 3, "time_total_s": 4.0, "pid": 12, "training_pid": 13,
              "trial_id": "a", "config": {"units": 8}, "val_loss": float("nan")}
    assert tracking.epoch_metrics(result) == {"loss": 0.3, "val_accuracy": 0.9, "lr": 1e-3}
