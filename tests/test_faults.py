"""Faults, for real: Ctrl-C, a SIGKILLed driver, a killed trial worker, a corrupt checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, within
from distune.ops import launcher_of
from test_cli import distune

pytestmark = pytest.mark.slow

SPACE = "{hidden_layers: 1, units: {choice: [16, 32, 64]}, learning_rate: {loguniform: [1.0e-3, 1.0e-2]}}"
ASHA_SPACE = "{hidden_layers: 1, units: 32, learning_rate: {grid: [0.003, 0.005, 0.01, 1.0e-6]}}"
# HyperBand with max_t 3, eta 2: trials 1-3 fill a bracket that runs all 3 epochs, trials 4-6
# one that halves after epoch 1 (the hopeless 1e-6 stops there) and ends the rest at epoch 2.
HB_SPACE = "{hidden_layers: 1, units: 32, learning_rate: {grid: [0.003, 0.005, 0.01, 0.004, 0.006, 1.0e-6]}}"


def start_run(mnist_path, storage: Path, name: str, samples: int, epochs: int, *extra: str,
              env: dict | None = None):
    """A `distune run` in its own session; `env`: added to the environment (joined_ray)."""
    cmd = [sys.executable, "-m", "distune", "run", "--data", str(mnist_path), "--storage", str(storage),
           "--name", name, "--samples", str(samples), "--scheduler", "fifo",
           "--set", f"train.epochs={epochs}", "--set", "data.train_subset=1500",
           "--set", f"model.space={SPACE}", "--set", "resources.max_concurrent_trials=2",
           "--set", "run.report=false",
           # TensorFlow, not the default preset's JAX: these faults' timings (a trial still
           # running at the kill, at Ctrl-C) were measured on it; on JAX ten epochs of these
           # slices end before `show` does
           "--set", "train.backend=tensorflow", *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})})
    guard = threading.Timer(300, lambda: proc.poll() is None and os.killpg(proc.pid, signal.SIGKILL))
    guard.daemon = True
    guard.start()
    return proc


def wait_for_lines(proc, predicate) -> list[str]:
    """Read the run's progress lines until `predicate(lines)` holds."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if predicate(lines):
            return lines
    raise AssertionError("the run ended first:\n" + "".join(lines) + proc.stderr.read())


def table(storage: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(storage / name / "results.csv")


def test_ctrl_c_saves_state_then_resume_refuses_a_corrupt_checkpoint_and_finishes(joined_ray, mnist_path,
                                                                                 tmp_path):
    """One interrupted driver for two faults: Ctrl-C (state saved, exit 130, the resume
    command printed), then a checkpoint corrupted before the resume (refused with its name;
    --skip-corrupt resumes anyway, that trial an error, every other finished in full), and
    another trial's checkpoint superseded as a driver killed between Tune's deletion of it and
    its next state save leaves it (that trial restarts from epoch 1, the same curve). The
    driver runs its own local Ray, which Ctrl-C shuts down; the resume joins the suite's."""
    from distune.results import open_analysis
    from distune.sweep import check_checkpoints

    storage = tmp_path / "store"
    # max_failures 0: the corrupt trial fails at once on resume, instead of three retries.
    proc = start_run(mnist_path, storage, "sigint", 3, 10, "--set", "data.train_subset=3000",
                     "--set", "run.max_failures=0")
    wait_for_lines(proc, lambda ls: sum("epoch   1/10" in line for line in ls) >= 2)
    show = distune("show", "sigint", "--storage", str(storage))  # works while it runs
    # the trials created so far: 2 at a time (max_concurrent_trials), the third once one ends
    assert show.returncode == 0 and any(f"{n} trials" in show.stdout for n in (2, 3)), show.stderr
    # Ctrl-C at once: two trials have a checkpoint and most of their 10 epochs to go. (Lines read
    # after `show` may be seconds old, so nothing here waits on them.)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the driver
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"distune resume sigint --storage {storage}" in err and "Traceback" not in err

    assert check_checkpoints(storage / "sigint") == ([], [])
    unfinished = [t for t in open_analysis(storage / "sigint").trials if t.status != "TERMINATED"
                  and t.run_metadata.checkpoint_manager.latest_checkpoint_result]
    assert len(unfinished) >= 2, "fewer than two unfinished trials with a checkpoint"
    victim, restarted = unfinished[:2]
    ckpt = Path(victim.run_metadata.checkpoint_manager.latest_checkpoint_result.checkpoint.path)
    (ckpt / "model.keras").write_bytes(b"garbage")
    ckpt = Path(restarted.run_metadata.checkpoint_manager.latest_checkpoint_result.checkpoint.path)
    index = int(ckpt.name.split("_")[1])
    ckpt.rename(ckpt.with_name(f"checkpoint_{index + 2:06d}"))  # gone, a newer one beside it
    before = trial_results(storage / "sigint")[restarted.trial_id]

    r = distune("resume", "sigint", "--storage", str(storage))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"trial {victim.trial_id}: checkpoint" in r.stderr and "--skip-corrupt" in r.stderr
    assert f"trial {restarted.trial_id}" not in r.stderr  # not a problem: it restarts

    r = distune("resume", "sigint", "--storage", str(storage), "--skip-corrupt", env=joined_ray)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test accuracy" in r.stdout
    assert f"trial {restarted.trial_id} restarts from epoch 1" in r.stdout
    t = table(storage, "sigint").set_index("trial")
    assert len(t) == 3 and t.loc[victim.trial_id, "status"] == "error"
    rest = t.drop(victim.trial_id)
    assert set(rest.status) == {"completed"} and set(rest.epochs) == {10}
    after = trial_results(storage / "sigint")[restarted.trial_id]
    assert [r["training_iteration"] for r in after] == list(range(1, 11))  # its log begins anew
    assert before and after[0]["pid"] != before[0]["pid"]
    metrics = ("loss", "val_loss", "val_accuracy")
    assert [{m: r[m] for m in metrics} for r in after[:len(before)]] == \
        [{m: r[m] for m in metrics} for r in before]  # the same seed: the same curve, exactly


def trial_results(directory: Path) -> dict[str, list[dict]]:
    """Each trial's reported epochs (Ray's result.json lines), by trial id."""
    return {f.parent.name: [json.loads(r) for r in f.read_text().splitlines() if r.strip()]
            for f in directory.glob("*/result.json")}


def val_curves(directory: Path) -> dict[str, list[float]]:
    """Each trial's val_accuracy by epoch, by trial id: its result log, or, where the fault cut
    that short (Ray rewrites each file as it copies it to storage: once a finished trial's log
    was empty after the kill), the values Tune saved with the trial (its last 10 of each metric)."""
    from distune.results import open_analysis

    logged = trial_results(directory)
    curves = {}
    for trial in open_analysis(directory).trials:
        rows, epochs = logged.get(trial.trial_id, []), trial.last_result.get("training_iteration", 0)
        saved = trial.metric_n_steps.get("training_iteration", {}).get("10", [])
        if [r["training_iteration"] for r in rows] != list(range(1, epochs + 1)) and \
                list(saved) == list(range(1, epochs + 1)):
            curves[trial.trial_id] = list(trial.metric_n_steps["val_accuracy"]["10"])
        else:
            curves[trial.trial_id] = [r["val_accuracy"] for r in rows]
    return curves


def metrics(rows: list[dict]) -> list[tuple]:
    return [(r["training_iteration"], r["loss"], r["val_loss"], r["val_accuracy"]) for r in rows]


def created_order(directory: Path) -> list[str]:
    """Trial ids in the order the sweep created them (Tune's experiment tags count them)."""
    from distune.results import open_analysis

    trials = open_analysis(directory).trials
    return [t.trial_id for t in sorted(trials, key=lambda t: int(t.experiment_tag.split("_")[0]))]


def replayed_suggestions(directory: Path, results: dict[str, list[dict]]) -> list[dict]:
    """What the same searcher, never interrupted, suggests given the sweep's own history: a
    fresh one, built as the sweep built it, told each trial's final result in turn (one
    trial at a time, so that order is the sweep's order)."""
    from distune.config import load_saved_experiment, trial_space
    from distune.search import SEARCHERS
    from distune.sweep import search_context

    exp = load_saved_experiment(directory)
    algo = SEARCHERS[exp.search.searcher].build(exp.searcher_options(), search_context(exp))
    algo.set_search_properties(exp.search.metric, exp.search.mode, trial_space(exp))
    suggested = []
    for tid in created_order(directory):
        suggested.append(algo.suggest(tid))
        algo.on_trial_complete(tid, results[tid][-1])
    return suggested


def asha_epochs(curves: list[list[float]], rungs: tuple[int, ...], reduction_factor: int,
                max_epochs: int) -> list[int]:
    """The epochs Ray's ASHA rule gives trials that run one at a time, in this order, with these
    curves: at each rung a trial stops below the (1 - 1/rf) percentile of the earlier trials'
    values there, and its own value joins them either way."""
    import numpy as np

    records: dict[int, list[float]] = {r: [] for r in rungs}
    epochs = []
    for curve in curves:
        stop = max_epochs
        for rung in rungs:
            value, earlier = curve[rung - 1], records[rung]
            records[rung] = earlier + [value]
            if earlier and value < np.nanpercentile(earlier, (1 - 1 / reduction_factor) * 100):
                stop = rung
                break
        epochs.append(stop)
    return epochs


def resume_within(seconds: float, directory: Path):
    """`distune.resume`, failed (naming each trial's state) if it runs past `seconds`."""
    from distune import resume
    from distune.results import open_analysis

    def trials() -> str:
        return ", ".join(f"{t.trial_id} {t.status} at {t.last_result.get('training_iteration')}"
                         for t in open_analysis(directory).trials)

    with within(seconds, f"the resume of {directory}", trials):
        return resume(directory, say=lambda _: None)


def test_sigkilled_driver_resumes_with_the_same_number_of_trials(joined_ray, mnist_path, tmp_path):
    """Drivers SIGKILLed mid-sweep, then resumed: per model-based searcher past its random phase
    (Ray saves their states, each its own way), and for ASHA's records and HyperBand's brackets
    (Ray does not save schedulers). They run side by side, as users' sweeps would: ASHA's with
    its own local Ray, killed with it as in a reboot; the others joined the suite's Ray, as
    drivers on a cluster do, which outlives them. The resumes run here, on the suite's Ray,
    through the same `resume` that `distune resume` calls (the Ctrl-C test runs that command;
    it also covers the random searcher)."""
    # ASHA's records across the fault: one trial at a time, three good learning rates, then
    # a hopeless one, which ASHA stops at its first rung (epoch 1) given the three records
    # there; the good ones go as far as their curves earn (asha_epochs). Ray does not save the scheduler: without distune's replay, the resumed ASHA has
    # no epoch-1 records and lets the fourth trial train on. It starts first, alone: its own
    # Ray's raylet must register within Ray's fixed 30 s, which the other drivers' start-up
    # beside it (and another test's cluster) once made it miss (seen in a full run). Alone it is
    # quick: Tune saves its state every second, not every 10 s or more, so that its three
    # trials are on storage when it is killed (once they were not, in CI).
    # Each sweep its own name: Ray stages a driver's results in its node's session directory
    # under the experiment's name and the second it started, so two drivers of one name that
    # start in the same second write each other's trials (seen: HyperBand's in optuna's)
    runs = {"asha": (start_run(mnist_path, tmp_path / "asha", "asha", 1, 3, "--searcher", "grid",
                               "--scheduler", "asha", "--set", f"model.space={ASHA_SPACE}",
                               "--set", "schedule.options={grace_period: 1, reduction_factor: 2}",
                               "--set", "resources.max_concurrent_trials=1",
                               env={"TUNE_GLOBAL_CHECKPOINT_S": "1"}), tmp_path / "asha")}
    wait_for_lines(runs["asha"][0], lambda ls: any(" epoch " in line for line in ls))
    phase = {"hyperopt": "n_initial_points", "optuna": "n_startup_trials"}
    runs.update({s: (start_run(mnist_path, tmp_path / s, s, 4, 2, "--searcher", s,
                               "--set", f"search.options.{option}=2",
                               "--set", "resources.max_concurrent_trials=1", env=joined_ray),
                     tmp_path / s) for s, option in phase.items()})
    # HyperBand's brackets across the fault. Ray re-adds restored trials most recent first and
    # saves no scheduler: without distune's placement and replay, finished trials sit in new
    # brackets without results, rungs never close, and trials end paused or ungraded. (No
    # concurrency limit: HyperBand's paused trials would hold the grid generator's slots.)
    runs["hyperband"] = (start_run(mnist_path, tmp_path / "hyperband", "hyperband", 1, 3, "--searcher", "grid",
                                   "--scheduler", "hyperband", "--set", f"model.space={HB_SPACE}",
                                   "--set", "schedule.options={reduction_factor: 2}",
                                   "--set", "resources.max_concurrent_trials=null", env=joined_ray),
                         tmp_path / "hyperband")

    missed: dict[str, str] = {}  # why a driver was not killed, in the thread that watched it

    def kill_after_three(name, proc) -> None:  # each at its own moment, while its sweep still runs
        try:
            wait_for_lines(proc, lambda ls: sum(" after " in line for line in ls) >= 3)
        except AssertionError as e:  # the run ended first: its output says why
            missed[name] = str(e)[-3000:]
            return
        os.killpg(proc.pid, signal.SIGKILL)

    faults = [threading.Thread(target=kill_after_three, args=(name, p)) for name, (p, _) in runs.items()]
    for thread in faults:
        thread.start()
    for thread, (name, (proc, _)) in zip(faults, runs.items()):
        thread.join(timeout=300)
        assert proc.wait(timeout=60) == -signal.SIGKILL, f"the {name} driver was not killed: {missed.get(name)}"
    for searcher, (_, storage) in runs.items():
        directory = storage / searcher
        before = trial_results(directory)  # as the fault left them
        summary = resume_within(240, directory)
        t = table(storage, searcher)
        assert json.loads((directory / "best.json").read_text())["trial"] in set(t.trial)
        if searcher in ("asha", "hyperband"):
            continue
        after = trial_results(directory)
        assert len(t) == 4 == summary.trials and set(t.status) == {"completed"}, searcher
        assert set(t.epochs) == {2}, searcher
        configs = t[[c for c in t.columns if c.startswith("config/")]].astype(str)
        assert not configs.duplicated().any(), f"{searcher} ran a config twice"
        # What storage held at the kill: Ray writes results on the driver and copies them to
        # storage in the background, so the last trial the console saw end may not be there
        # yet (seen in CI), and a trial killed before its first epoch has an empty result.json.
        finished = [tid for tid, rows in before.items() if rows and rows[-1]["training_iteration"] == 2]
        assert finished, before  # what ended before the kill keeps its id and results
        # (Its metrics: a trial the saved state had not seen end trains again from epoch 1,
        # the same seed giving the same results, at other times in another process.)
        assert all(metrics(after[tid]) == metrics(before[tid]) for tid in finished), searcher
        for tid, rows in after.items():  # an unfinished trial continued: epoch 1 once
            assert [r["training_iteration"] for r in rows].count(1) == 1, (searcher, tid, rows)
        # The resumed searcher suggested what an uninterrupted one would have.
        ran = [after[tid][0]["config"] for tid in created_order(directory)]
        replayed = replayed_suggestions(directory, after)
        assert [{k: c[k] for k in r} for c, r in zip(ran, replayed)] == replayed, searcher
    t = table(tmp_path / "asha", "asha").set_index("trial").loc[created_order(tmp_path / "asha" / "asha")]
    curves = val_curves(tmp_path / "asha" / "asha")
    curves = [curves[tid] for tid in t.index]
    expected = asha_epochs(curves, rungs=(1, 2), reduction_factor=2, max_epochs=3)
    assert expected[-1] == 1, expected  # the hopeless one: stopped at its first rung
    assert list(t.epochs) == expected, ("ASHA decided otherwise after the resume", t, curves)
    assert list(t.status) == ["completed" if n == 3 else "stopped" for n in expected], t
    t = table(tmp_path / "hyperband", "hyperband").sort_values("trial")
    order = sorted(t.trial, key=lambda tid: created_order(tmp_path / "hyperband" / "hyperband").index(tid))
    t = t.set_index("trial").loc[order]
    assert list(t.epochs) == [3, 3, 3, 2, 2, 1], ("HyperBand decided otherwise after the resume", t)
    assert list(t.status) == ["completed"] * 3 + ["stopped"] * 3, t


def test_killed_worker_is_retried_from_its_checkpoint(joined_ray, mnist_path, tmp_path):
    """SIGKILL a trial's worker in the middle of an epoch: the trial continues in a new
    process from its checkpoint (at most one epoch again, never from epoch 1), the console
    names the checkpoint it restarts from, and the other trial is untouched."""
    storage = tmp_path / "store"
    proc = start_run(mnist_path, storage, "worker", 2, 5, "--set", "data.train_subset=3000", env=joined_ray)
    lines = wait_for_lines(proc, lambda ls: any("epoch   2/5" in line for line in ls))
    line = next(line for line in lines if "epoch   2/5" in line)
    trial, epoch_s = line.split()[2], float(line.split("s/epoch")[0].split()[-1])
    result_file = storage / "worker" / trial / "result.json"
    for _ in range(100):  # Tune's logger writes it shortly after the result
        if result_file.is_file() and result_file.read_text().strip():
            break
        time.sleep(0.1)
    pid = json.loads(result_file.read_text().splitlines()[-1])["pid"]
    # a worker the fork server made for this joined driver's job (distune/ops/worker_fork.py)
    assert launcher_of(pid) is not None
    time.sleep(epoch_s / 2)  # into epoch 3: mid-epoch, not between epochs
    os.kill(pid, signal.SIGKILL)  # the trial's worker process, mid-sweep
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out + err
    retried = [line for line in out.splitlines() if f"{trial} failed (worker lost or crashed)" in line]
    assert len(retried) == 1 and "retrying from its checkpoint of epoch " in retried[0], out
    assert "Traceback" not in err
    t = table(storage, "worker")
    assert set(t.status) == {"completed"} and set(t.epochs) == {5}
    runs = {}
    for tid in t.trial:
        rows = [json.loads(r) for r in (storage / "worker" / tid / "result.json").read_text().splitlines()]
        runs[tid] = ([r["training_iteration"] for r in rows], [r["pid"] for r in rows])
    epochs, pids = runs.pop(trial)
    assert epochs.count(1) == 1 and sorted(set(epochs)) == list(range(1, 6)), epochs
    assert len(epochs) - 5 <= 1, f"more than one epoch trained again: {epochs}"
    assert pids[0] == pid and pids[-1] != pid and len(set(pids)) == 2, pids  # a new process
    checkpoint = int(retried[0].rsplit("epoch ", 1)[1])
    assert epochs[pids.index(pids[-1])] == checkpoint + 1, (epochs, pids)  # from that checkpoint
    (other_epochs, other_pids), = runs.values()
    assert other_epochs == [1, 2, 3, 4, 5] and len(set(other_pids)) == 1  # untouched


def test_resume_unknown_experiment(tmp_path):
    r = distune("resume", "nothing", "--storage", str(tmp_path))
    assert r.returncode == 2 and "no experiment at" in r.stderr and "Traceback" not in r.stderr
