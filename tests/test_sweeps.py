"""Real Ray Tune sweeps of real Keras training on small slices of real MNIST."""

from __future__ import annotations

import json
import os

import keras
import pandas as pd
import pytest

from conftest import experiment
from distune.errors import DistuneError
from distune import run

pytestmark = pytest.mark.slow


def test_random_fifo_sweep_end_to_end(ray_local, mnist_path, tmp_path):
    exp = experiment(mnist_path, tmp_path,
                     model={"space": {"hidden_layers": 1, "units": {"choice": [16, 32]},
                                      "learning_rate": {"loguniform": [1e-3, 1e-2]}}},
                     search={"searcher": "random", "num_samples": 3},
                     train={"backend": "tensorflow"})  # conftest's is JAX: TensorFlow's trials here
    lines: list[str] = []
    s = run(exp, "t", say=lines.append)
    d = tmp_path / "results" / "t"
    assert s.directory == d and s.trials == 3
    table = pd.read_csv(d / "results.csv")
    assert len(table) == 3 and set(table.status) == {"completed"} and set(table.epochs) == {2}
    assert table.best_val_accuracy.is_monotonic_decreasing  # best first
    for trial in table.trial:  # every epoch reported, checkpoints kept
        progress = pd.read_csv(d / trial / "progress.csv")
        assert list(progress.training_iteration) == [1, 2]
        assert {"val_accuracy", "val_loss", "lr", "epoch_s", "samples_per_s"} <= set(progress.columns)
        assert list((d / trial).glob("checkpoint_*/model.keras"))
    best = json.loads((d / "best.json").read_text())
    assert best["trial"] == table.trial[0] and best["val_accuracy"] == pytest.approx(table.best_val_accuracy[0])
    assert 0.5 < best["test_accuracy"] <= 1.0 and best["test_accuracy"] == s.test_accuracy
    model = keras.saving.load_model(d / "best_model.keras")
    assert model.output_shape == (None, 10)
    assert (d / "distune.yaml").is_file()
    assert any("completed after 2 epochs" in line for line in lines)


def test_grid_asha_sweep(reported_sweep):
    s, _, _ = reported_sweep
    table = pd.read_csv(s.directory / "results.csv")
    assert s.trials == 4
    pairs = set(zip(table["config/units"], table["config/learning_rate"]))
    assert pairs == {(8, 1e-4), (8, 3e-3), (32, 1e-4), (32, 3e-3)}
    assert set(table.status) <= {"completed", "stopped"} and table.epochs.max() == 3
    assert table.epochs.sum() < 12, "ASHA stopped no trial early"


def test_diverging_trial_is_marked_and_the_sweep_goes_on(ray_local, mnist_path, tmp_path):
    exp = experiment(mnist_path, tmp_path,
                     model={"space": {"activation": "linear", "optimizer": "sgd", "momentum": 0.99,
                                      "batch_size": 32, "learning_rate": {"grid": [10.0, 1e-2]}}},
                     search={"searcher": "random", "num_samples": 1},
                     # TensorFlow's loss goes NaN here (JAX's stays finite: tests/backend_check.py)
                     train={"backend": "tensorflow"})
    s = run(exp, "t", say=lambda _: None)
    table = pd.read_csv(tmp_path / "results" / "t" / "results.csv").set_index("config/learning_rate")
    assert table.loc[10.0, "status"] == "diverged" and table.loc[10.0, "epochs"] == 1
    assert table.loc[0.01, "status"] == "completed"
    assert s.best_config["learning_rate"] == 0.01


@pytest.mark.parametrize("searcher", ["random", "hyperopt"])
def test_max_concurrent_trials_holds_for_every_searcher(searcher, ray_local, mnist_path, tmp_path,
                                                        monkeypatch, capsys):
    """Ray applies max_concurrent_trials itself except to its BasicVariantGenerator (random,
    grid), which must be given it: with a limit of 1, two trials once trained at once. And no
    warning that the limit is ignored (Ray's, told it twice)."""
    from ray import tune

    from distune import pipeline
    from distune.ops import HEARD

    HEARD.seen.clear()

    class Concurrency(tune.Callback):
        running: set = set()
        most = 0

        def on_trial_start(self, iteration, trials, trial, **info):
            Concurrency.running.add(trial.trial_id)
            Concurrency.most = max(Concurrency.most, len(Concurrency.running))

        def on_trial_complete(self, iteration, trials, trial, **info):
            Concurrency.running.discard(trial.trial_id)

        on_trial_error = on_trial_complete

    build = pipeline.build_tuner
    monkeypatch.setattr(pipeline, "build_tuner", lambda *a, **k: build(
        *a, **{**k, "callbacks": [Concurrency()]}))
    exp = experiment(mnist_path, tmp_path, search={"searcher": searcher, "num_samples": 3},
                     model={"space": {"hidden_layers": 1, "units": {"choice": [8, 16, 32]}}},
                     train={"epochs": 1}, resources={"max_concurrent_trials": 1})
    assert run(exp, "t", say=lambda _: None).trials == 3
    assert Concurrency.most == 1, f"{Concurrency.most} trials trained at once under a limit of 1"
    assert "will be ignored" not in capsys.readouterr().err


def test_stop_target_ends_the_sweep(ray_local, mnist_path, tmp_path):
    exp = experiment(mnist_path, tmp_path, search={"num_samples": 6},
                     resources={"max_concurrent_trials": 1}, run={"stop": {"val_accuracy": 0.0}})
    s = run(exp, "t", say=lambda _: None)
    table = pd.read_csv(tmp_path / "results" / "t" / "results.csv")
    # The first epoch reaches the target; the sweep then waits for that epoch's checkpoint, and
    # on a loaded machine Tune may start the next trial meanwhile: it is stopped at its first
    # result. Without the stop, every trial would train both epochs, and all 6 would run (one
    # at a time, so the other trials are never even created).
    assert table.epochs.max() == 1 and table.epochs.sum() <= 2, "the sweep went on after the target"
    assert len(table) <= 2 and set(table.status) <= {"stopped", "not started"}
    assert s.test_accuracy > 0


def test_refit_and_an_existing_experiment_is_never_overwritten_silently(ray_local, mnist_path,
                                                                        tmp_path):
    from distune.errors import DistuneError

    exp = experiment(mnist_path, tmp_path, search={"num_samples": 1})
    earlier = tmp_path / "results" / "t"
    earlier.mkdir(parents=True)
    (earlier / "distune.yaml").write_text("an earlier run's\n")
    with pytest.raises(DistuneError, match="already exists.*--overwrite"):
        run(exp, "t", say=lambda _: None)
    assert (earlier / "distune.yaml").read_text() == "an earlier run's\n"
    s = run(exp, "t", overwrite=True, refit=True, say=lambda _: None)
    best = json.loads((earlier / "best.json").read_text())
    assert s.refit and best["refit"] and 0.5 < best["test_accuracy"] <= 1.0
    assert not list(earlier.glob(".refit-*"))
    assert (earlier / "distune.yaml").read_text() != "an earlier run's\n"  # replaced


def test_impossible_resources_are_refused(ray_local, mnist_path, tmp_path):
    from distune.errors import DistuneError

    exp = experiment(mnist_path, tmp_path, resources={"cpus_per_trial": 64})
    with pytest.raises(DistuneError, match="asks for 64 CPUs.*largest node has 2 CPUs"):
        run(exp, "t", say=lambda _: None)


def report_cluster_config(*groups: tuple[str, dict, int]) -> None:
    """What an autoscaler tells the GCS about its node types (name, resources, max count),
    through the GCS's own RPC, to the suite's real Ray."""
    import ray
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import autoscaler_pb2 as pb, autoscaler_pb2_grpc as pbg

    config = pb.ClusterConfig(node_group_configs=[
        pb.NodeGroupConfig(name=name, resources=resources, min_count=0, max_count=most)
        for name, resources, most in groups])
    with init_grpc_channel(ray.get_runtime_context().gcs_address) as channel:
        pbg.AutoscalerStateServiceStub(channel).ReportClusterConfig(
            pb.ReportClusterConfigRequest(cluster_config=config), timeout=10)


def test_gpu_trials_wait_for_an_autoscaler_that_can_add_gpu_nodes(ray_local, mnist_path, tmp_path):
    """Read from a real GCS, as an autoscaler reports it: a GPU node type scaled to zero can
    host the trials; one with max_count 0, or only CPU types, cannot (a change in Ray's API
    fails here instead of silently refusing GPU-at-zero clusters)."""
    from distune.sweep import check_resources
    from distune.sweep.tune import node_types_to_add
    from distune.errors import DistuneError

    exp = experiment(mnist_path, tmp_path, resources={"cpus_per_trial": 1, "gpus_per_trial": 0.25})
    assert node_types_to_add() == []  # a local Ray: no autoscaler
    with pytest.raises(DistuneError, match="0.25 GPUs.*largest node has 2 CPUs and 0 GPUs"):
        check_resources(exp)
    try:
        report_cluster_config(("cpu", {"CPU": 4}, 10), ("gpu", {"CPU": 8, "GPU": 1}, 4),
                              ("retired", {"CPU": 64, "GPU": 8}, 0))
        assert node_types_to_add() == [{"CPU": 4}, {"CPU": 8, "GPU": 1}]
        said: list[str] = []
        check_resources(exp, said.append)  # GPU workers scaled to zero: fine, with a note
        assert "autoscaler will add one" in said[0]
        report_cluster_config(("cpu", {"CPU": 8}, 10), ("retired", {"CPU": 64, "GPU": 8}, 0))
        with pytest.raises(DistuneError, match="largest node type has 8 CPUs and 0 GPUs"):
            check_resources(exp)
    finally:
        report_cluster_config()  # the suite's Ray has no autoscaler again
    assert node_types_to_add() == []


def test_trials_hyperband_leaves_paused_end_the_sweep_not_interrupt_it(mnist_path, tmp_path):
    # Seen with random + hyperband, 12 trials: Tune ended the sweep with two trials PAUSED in a
    # bracket that never filled. That is a finished sweep; PAUSED beside RUNNING/PENDING, or
    # under another scheduler, is an interrupted one.
    from types import SimpleNamespace as T

    from distune.sweep import left_paused_by_hyperband

    hb = experiment(mnist_path, tmp_path, schedule={"scheduler": "hyperband"})
    asha = experiment(mnist_path, tmp_path, schedule={"scheduler": "asha"})
    assert left_paused_by_hyperband(hb, [T(status="PAUSED"), T(status="PAUSED")])
    assert not left_paused_by_hyperband(hb, [T(status="PAUSED"), T(status="RUNNING")])
    assert not left_paused_by_hyperband(hb, [T(status="PENDING")])
    assert not left_paused_by_hyperband(asha, [T(status="PAUSED")])


def test_experiments_others_could_write_are_never_unpickled(reported_sweep, tmp_path):
    """Ray's sweep state is pickles: show, report, warm starts (open_analysis) and resume read
    an experiment only if no other user can have written it."""
    import shutil
    import stat

    from distune import resume
    from distune.cli import main
    from distune.results import open_analysis

    s, _, _ = reported_sweep
    copy = tmp_path / "store" / s.directory.name
    shutil.copytree(s.directory, copy)
    assert len(open_analysis(copy).trials) == 4  # this user's own: read
    state = next(copy.glob("experiment_state-*.json"))
    trial_file = next(copy.glob("*/params.pkl"))
    for path, mode in ((copy, 0o777), (state, 0o666), (trial_file, 0o646)):
        before = stat.S_IMODE(path.stat().st_mode)
        path.chmod(mode)
        with pytest.raises(DistuneError, match=f"{path.name} can be written by other users"):
            open_analysis(copy)
        with pytest.raises(DistuneError, match="could run code as you"):
            resume(copy, say=lambda _: None)
        path.chmod(before)
    (tmp_path / "store").chmod(0o777)  # a shared parent: others could swap the directory
    assert main(["show", copy.name, "--storage", str(tmp_path / "store")]) == 2
    (tmp_path / "store").chmod(0o777 | stat.S_ISVTX)  # as /tmp: they cannot
    assert main(["show", copy.name, "--storage", str(tmp_path / "store")]) == 0
    if os.getuid() == 0:  # a file of another user
        os.chown(trial_file, 65534, 65534)
        with pytest.raises(DistuneError, match="belongs to another user"):
            open_analysis(copy)


def test_a_corrupt_checkpoint_never_wins(reported_sweep, tmp_path):
    """A trial that failed on a corrupt checkpoint (`resume --skip-corrupt`) leaves it behind,
    and it may be that trial's best: the winner is then the best checkpoint that loads."""
    import shutil

    from distune.results import open_analysis
    from distune.winner.pick import ranked

    s, _, _ = reported_sweep
    copy = tmp_path / s.directory.name
    shutil.copytree(s.directory, copy)
    before = ranked(open_analysis(copy).trials, "val_accuracy", "max")
    (before[0].checkpoint / "model.keras").write_bytes(b"garbage")
    after = ranked(open_analysis(copy).trials, "val_accuracy", "max")
    assert before[0].checkpoint.is_relative_to(copy)
    assert [(w.trial_id, w.epoch) for w in after][0] != (before[0].trial_id, before[0].epoch)
    assert before[0].checkpoint not in [w.checkpoint for w in after]


def test_a_retry_is_announced_from_where_it_restarts(reported_sweep):
    """The console's retry line names the checkpoint a failed trial restarts from, and says
    so when there is none yet (the killed-worker test sees the first case for real)."""
    import copy

    from distune.results import open_analysis
    from distune.sweep.progress import retry_point

    s, _, _ = reported_sweep
    trial = next(t for t in open_analysis(s.directory).trials
                 if t.run_metadata.checkpoint_manager.latest_checkpoint_result)
    epoch = trial.run_metadata.checkpoint_manager.latest_checkpoint_result.metrics["training_iteration"]
    assert retry_point(trial) == f"from its checkpoint of epoch {epoch}"
    fresh = copy.deepcopy(trial)
    fresh.run_metadata.checkpoint_manager._latest_checkpoint_result = None
    assert retry_point(fresh) == "from the start (no checkpoint yet)"
