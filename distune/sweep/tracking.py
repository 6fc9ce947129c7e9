"""Where trials are watched from outside distune: TensorBoard (always) and MLflow (run.mlflow).

Both are Tune logger callbacks, so they run in the driver and write as results arrive; both
log the same per-epoch numbers (the trial's own metrics, not Ray's bookkeeping).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

from ray.tune.logger import LoggerCallback, TBXLoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS

from distune.errors import DistuneError

# Keys of a result that are bookkeeping, not a metric of the model (and any "*pid").
_NOT_METRICS = {*AUTO_RESULT_KEYS, "done", "epoch", "trial_id", "should_checkpoint"}
WINNER_TAG = "distune.winner"
TRIAL_TAG = "distune.trial_id"


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The finite numbers a trial reported for one epoch (loss, val_accuracy, lr, ...)."""
    return {k: float(v) for k, v in result.items()
            if k not in _NOT_METRICS and not k.endswith("pid") and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def hparam_values(config: dict[str, Any]) -> dict[str, str | bool | float]:
    """A trial's config as TensorBoard/MLflow hyperparameters (scalars; anything else as text)."""
    return {k: v if isinstance(v, (str, bool, int, float)) else str(v)
            for k, v in config.items() if v is not None}


class TensorBoard(TBXLoggerCallback):
    """Per-epoch scalars and one HParams session per trial, in each trial's directory.

    It is a TBXLoggerCallback so that Tune does not add its default one, which writes Ray's
    bookkeeping as scalars, only the searched values as hparams, and only once a trial has
    ended, each trial with its own `_hparams_/experiment` summary: TensorBoard reads one of
    those arbitrarily, so its filters knew one trial's values. Here a trial writes its whole
    config when it starts (running trials show up) and its status when it ends; TensorBoard
    builds the experiment from all sessions, with every logged scalar as a metric column.
    """

    def __init__(self) -> None:
        super().__init__()
        self._writers: dict[Any, Any] = {}

    def log_trial_start(self, trial) -> None:
        from tensorboardX.summary import hparams

        self._close(trial)
        trial.init_local_path()
        writer = self._writers[trial] = self._summary_writer_cls(trial.local_path, flush_secs=30)
        _, session_start, _ = hparams(hparam_values(trial.config), {})
        writer.file_writer.add_summary(session_start)
        writer.flush()

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if trial not in self._writers:
            self.log_trial_start(trial)
        writer, step = self._writers[trial], result.get("training_iteration", iteration)
        for name, value in epoch_metrics(result).items():
            writer.add_scalar(name, value, global_step=step)
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if trial in self._writers:
            self._writers[trial].file_writer.add_summary(_session_end(failed))
            self._close(trial)

    def on_experiment_end(self, trials, **info) -> None:
        for trial in list(self._writers):
            self._close(trial)

    def _close(self, trial) -> None:
        writer = self._writers.pop(trial, None)
        if writer is not None:
            writer.close()


def _session_end(failed: bool):
    """The `_hparams_/session_end_info` summary (tensorboardX writes only 'success' ones)."""
    from tensorboardX.proto.api_pb2 import Status
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    info = SessionEndInfo(status=Status.Value("STATUS_FAILURE" if failed else "STATUS_SUCCESS"),
                          end_time_secs=time.time())
    content = HParamsPluginData(session_end_info=info, version=0).SerializeToString()
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams",
                                                                  content=content))
    return Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=meta)])


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise DistuneError("run.mlflow is set, but MLflow is not installed: "
                           "pip install 'distune[mlflow]', or remove run.mlflow.") from None
    return mlflow


def _is_local(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


class MLflow(LoggerCallback):
    """One MLflow run per trial (tagged with its trial id): its config as params and each
    epoch's metrics in one batch. A resumed sweep continues the trial's run rather than
    starting a second one. Unlike Ray's MLflowLoggerCallback it logs no Ray bookkeeping and
    no config values as metrics, and local stores keep their artifacts in the experiment
    directory instead of the current directory."""

    def __init__(self, tracking_uri: str, experiment: str, directory: Path) -> None:
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.artifacts = (directory / "mlflow").as_uri() if _is_local(tracking_uri) else None
        self._client = None
        self._experiment_id: str | None = None
        self._runs: dict[str, str] = {}

    def __getstate__(self) -> dict:  # pickled with the tuner: no live client
        return {**self.__dict__, "_client": None, "_runs": {}}

    def setup(self, **info) -> None:
        self._client, self._experiment_id = experiment_client(self.tracking_uri, self.experiment,
                                                              self.artifacts)

    def _run_id(self, trial) -> str:
        if trial.trial_id not in self._runs:
            found = find_run(self._client, self._experiment_id, trial.trial_id)
            if found is None:
                run = self._client.create_run(self._experiment_id, run_name=trial.trial_id,
                                              tags={TRIAL_TAG: trial.trial_id})
                found = run.info.run_id
                self._log_params(found, trial.config)
            self._runs[trial.trial_id] = found
        return self._runs[trial.trial_id]

    def _log_params(self, run_id: str, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)) for k, v in hparam_values(config).items()]
        self._client.log_batch(run_id, params=params)

    def log_trial_start(self, trial) -> None:
        self._run_id(trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        from mlflow.entities import Metric

        step, stamp = result.get("training_iteration", iteration), int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, step) for k, v in epoch_metrics(result).items()]
        self._client.log_batch(self._run_id(trial), metrics=metrics)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        self._client.set_terminated(self._run_id(trial), "FAILED" if failed else "FINISHED")


def experiment_client(tracking_uri: str, name: str, artifacts: str | None):
    """(MlflowClient, experiment id) for the MLflow experiment named after the sweep."""
    mlflow = _mlflow()
    try:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(name)
        return client, (found.experiment_id if found else
                        client.create_experiment(name, artifact_location=artifacts))
    except mlflow.exceptions.MlflowException as e:
        raise DistuneError(f"run.mlflow: cannot use the MLflow tracking store {tracking_uri!r} "
                           f"({e.message.splitlines()[0]}). Use a database URI such as "
                           "sqlite:///path/mlflow.db or a tracking server's http:// address."
                           ) from None


def find_run(client, experiment_id: str, trial_id: str) -> str | None:
    runs = client.search_runs([experiment_id], f"tags.`{TRIAL_TAG}` = '{trial_id}'",
                              max_results=1)
    return runs[0].info.run_id if runs else None


def tracking_callbacks(exp, directory: Path) -> list:
    """TensorBoard always; MLflow when `run.mlflow` is set, checked before the sweep starts
    (a bad URI or a missing package fails now, not after the first trial)."""
    if not exp.run.mlflow:
        return [TensorBoard()]
    callback = MLflow(exp.run.mlflow, exp.run.name, directory)
    callback.setup()
    return [TensorBoard(), callback]


def try_log_winner(exp, directory: Path, trial_id: str, summary: dict[str, Any],
                   say: Callable[[str], None]) -> None:
    """log_winner at the end of a run with run.mlflow; a failure only warns."""
    if not exp.run.mlflow:
        return
    from distune.results.layout import BEST_FILE, BEST_MODEL_FILE, REPORT_FILE

    try:
        log_winner(exp, directory, trial_id, summary,
                   [directory / f for f in (BEST_MODEL_FILE, BEST_FILE, REPORT_FILE)])
    except Exception as e:  # noqa: BLE001  (the results are saved; MLflow is a copy)
        say(f"distune: warning: could not log the winner to MLflow at {exp.run.mlflow} "
            f"({type(e).__name__}: {e}); the results in {directory} are complete.")


def log_winner(exp, directory: Path, trial_id: str, summary: dict[str, Any],
               files: list[Path]) -> None:
    """Tag the winner's MLflow run and attach its exported model (and the report)."""
    client, experiment_id = experiment_client(
        exp.run.mlflow, exp.run.name, MLflow(exp.run.mlflow, exp.run.name, directory).artifacts)
    run_id = find_run(client, experiment_id, trial_id)
    if run_id is None:
        raise DistuneError(f"no MLflow run for the winner {trial_id} in experiment "
                           f"{exp.run.name!r} at {exp.run.mlflow}")
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in summary.items()])
    client.set_tag(run_id, WINNER_TAG, "true")
    for file in files:
        if file.is_file():
            client.log_artifact(run_id, str(file))
