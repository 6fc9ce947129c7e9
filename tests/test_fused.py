"""Fused trials (resources.fuse): members trained as one JAX program stay ordinary trials.
The engine's exactness and isolation run under JAX in their own process (tests/fused_check.py);
the sweep runs from the CLI on the suite's Ray."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pandas as pd
import pytest

from distune.config import validate
from distune.errors import ConfigError
from conftest import run_under_jax
from test_cli import distune


@pytest.mark.slow
def test_fused_members_train_exactly_as_alone_and_apart(mnist_path, tmp_path):
    """A member fused with three others (of other batch sizes too, one whose batches leave
    rows out) ends each epoch with the very weights and metrics that Keras's own fit gives the
    same config alone (tolerance: none, on CPU), though one partner diverges (NaN weights) and
    another raises; the raising one gets its error, and a member resumed from its checkpoint
    in a new group continues exactly."""
    out = run_under_jax("fused_check.py", mnist_path, tmp_path)
    assert out["curves_equal"] == {"a": True, "c": True}, out
    assert out["weights_equal"] == {"a": True, "c": True}, out
    assert out["fused"] == [4, 4, 3]  # one program for all, also while b is NaN and d raises
    assert out["b_diverged"] == [True, True, True] and out["b_loss_is_nan"]
    assert out["d_first_epoch"] == 1 and out["d_error"] == "member d's own failure"
    assert out["resume_equal"]


FUSED = {"resources": {"cpus_per_trial": 1, "fuse": 4}, "train": {"backend": "jax"}}


@pytest.mark.parametrize("change, where, says", [
    ({"train": {"backend": "tensorflow"}}, "train.backend", "set train.backend: jax"),
    ({"resources": {"max_concurrent_trials": 2}}, "resources.max_concurrent_trials", "never fill"),
    ({"resources": {"cpus_per_trial": 0.0002}}, "resources.fuse", "smallest share"),
    ({"search": {"cv_folds": 3}}, "resources.fuse", "cross-validated"),
])
def test_what_cannot_be_fused_is_refused_before_anything_runs(change, where, says):
    raw = {**FUSED, "model": {"space": {"batch_size": {"choice": [32, 64]}}}}
    for section, values in change.items():
        raw[section] = {**raw.get(section, {}), **values}
    with pytest.raises(ConfigError) as e:
        validate(raw, "fused")
    assert f"{where}:" in str(e.value) and says in str(e.value), str(e.value)
    validate({**FUSED, "model": {"space": {"batch_size": {"choice": [32, 64]}}}}, "fused")  # the base is fine


def test_members_ask_ray_for_a_share_of_a_slot():
    exp = validate({"resources": {"cpus_per_trial": 1, "gpus_per_trial": 1, "fuse": 3},
                    "train": {"backend": "jax"}}, "fused")
    assert exp.resources.member_share() == (0.3333, 0.3333)  # three fit in one slot


def _kill_a_fuser_after_a_checkpoint(results: Path, killed: dict, done: threading.Event) -> None:
    """What a crashed fused process does to its members: SIGKILL the fuser of the first
    unfinished hopeless member (learning rate 1e-6) that has a checkpoint in storage (its
    process id is in the member's results)."""
    while not done.wait(0.05):
        for checkpoint in results.glob("*/checkpoint_*"):
            try:
                last = json.loads((checkpoint.parent / "result.json").read_text().strip().splitlines()[-1])
                pid = last["training_pid"]
            except (OSError, IndexError, ValueError, KeyError):
                continue
            if last.get("done") or last["config"]["learning_rate"] > 1e-4:  # none left to fail; a good one
                continue
            os.kill(pid, signal.SIGKILL)
            killed.update(pid=pid, trial=checkpoint.parent.name)
            return


@pytest.mark.slow
def test_a_fused_asha_sweep_from_the_cli(joined_ray, mnist_path, tmp_path):
    """The issue's end-to-end run: a fused sweep with ASHA from the CLI whose table shows
    ordinary per-member trials, some stopped early while others finished; members trained
    together (several per fused epoch, in one process); a fuser killed mid-sweep costs its
    members a retry each from their own last checkpoint, not their epochs."""
    file = tmp_path / "fused.yaml"
    file.write_text(json.dumps({
        "data": {"train_subset": 3200, "validation_split": 0.25},
        # three hopeless members and three good ones, each three in one fuser (batch sizes vary
        # fastest). ASHA's rungs are asynchronous, and members of one fused step report in any
        # order: when the hopeless reached the rung first, in rising order of their (seeded)
        # scores, none was stopped (seen in CI, about one run in six). So the kill takes the
        # hopeless fuser: its members are retried and reach the rung after the good ones,
        # below their cutoff, and are stopped; the first good one to report goes on
        "model": {"space": {"hidden_layers": 1, "units": 32,
                            "learning_rate": {"grid": [3e-3, 1e-6]},
                            "batch_size": {"grid": [32, 64, 128]}}},
        "train": {"epochs": 4, "backend": "jax"},
        "search": {"searcher": "grid", "num_samples": 1},
        # ASHA's one rung at epoch 3 of 4: no member is stopped before the first checkpoint's
        # owner (the kill's victim) asks for its second epoch, so the kill always meets it
        # running, and seldom a rung result: a stop decided on a result that a kill then cut
        # short is lost, as Ray's ASHA records the rung and lets the retried trial go on (seen
        # in a full run with the rung at epoch 2 of 3); a stop before the last epoch shows as
        # stopped, not completed
        "schedule": {"scheduler": "asha", "options": {"grace_period": 3, "reduction_factor": 3}},
        "resources": {"cpus_per_trial": 1, "fuse": 3},
        "run": {"storage": str(tmp_path), "name": "fused", "seed": 0, "report": False,
                "max_failures": 2}}))
    killed, done = {}, threading.Event()
    watcher = threading.Thread(target=_kill_a_fuser_after_a_checkpoint,
                               args=(tmp_path / "fused", killed, done), daemon=True)
    watcher.start()
    try:
        # on this worker's Ray (joined_ray), as a driver on a cluster: its tests run one at a
        # time, so no other test's trials wait for its places
        r = distune("run", str(file), "--data", str(mnist_path), env=joined_ray)
    finally:
        done.set()
        watcher.join()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "test accuracy: 0." in r.stdout
    table = pd.read_csv(tmp_path / "fused" / "results.csv")
    assert len(table) == 6 and set(table["status"]) == {"completed", "stopped"}, table
    progress = {t: pd.read_csv(tmp_path / "fused" / t / "progress.csv") for t in table["trial"]}
    assert all(len(p) for p in progress.values())
    assert max(p["fused"].max() for p in progress.values()) >= 2  # trained together
    pids = {pid for p in progress.values() for pid in p["training_pid"]}
    assert len(pids) < len(progress)  # fewer processes than trials
    assert killed, "no member had a checkpoint while its fuser ran"
    victim = progress[killed["trial"]]
    assert (tmp_path / "fused" / killed["trial"] / "error.txt").exists()  # it failed, and
    # was retried from its checkpoint, in a new fuser: its first epoch is reported once
    assert list(victim["training_iteration"]).count(1) == 1, victim
    assert victim["training_pid"].iloc[-1] != killed["pid"]


@pytest.mark.slow
def test_pbt_exploits_into_fused_members(ray_local, mnist_path, tmp_path):
    """PBT copies a better member's checkpoint into a worse one and mutates its learning rate:
    the member leaves its fuser, joins again with its new config and loads the donor's state.
    (In-process, on the suite's Ray.)"""
    from conftest import experiment
    from distune import run

    exp = experiment(mnist_path, tmp_path, model={"space": {
                         "hidden_layers": 1, "units": 16, "batch_size": 32,
                         "learning_rate": {"loguniform": [1e-4, 3e-2]}}},
                     data={"train_subset": 800}, train={"epochs": 4, "backend": "jax"},
                     search={"num_samples": 4},
                     schedule={"scheduler": "pbt", "options": {"perturbation_interval": 1,
                                                               "quantile_fraction": 0.5}},
                     # one fuser of two: half the suite's Ray, the other half for the other worker
                     resources={"max_concurrent_trials": 2, "fuse": 2},
                     # a donor's checkpoint must outlive the exploit that loads it (Ray's PBT
                     # warns at 2 or fewer: epochs here are hundredths of a second)
                     run={"keep_checkpoints": 8})
    run(exp, "t", say=lambda _: None)
    directory = tmp_path / "results" / "t"
    table = pd.read_csv(directory / "results.csv")
    assert list(table["status"]) == ["completed"] * 4 and set(table["epochs"]) == {4}
    progress = [pd.read_csv(directory / t / "progress.csv") for t in table["trial"]]
    # an exploited member trains on with its new (mutated) learning rate, from the donor's state
    exploited = [p for p in progress if p["lr"].nunique() > 1]
    assert exploited, "PBT exploited no member"
    assert list(directory.glob("pbt_policy_*.txt"))
    # from the donor's epoch on (PBT reports that epoch again), never from the first
    assert all(list(p["training_iteration"]).count(1) == 1 for p in exploited)
    assert max(p["fused"].max() for p in progress) == 2
