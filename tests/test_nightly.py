"""`distune nightly` and `distune history`: dated nights that warm-start from earlier ones, a
history with one row per night, regressions with their own exit status, the lock, resuming."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from distune.ops import lock
from conftest import interrupt_once
from distune.cli import main
from distune.nightly import NOISE_FLOOR, History, Night, judge
from distune.results import TrialRecord

SWEEP = """\
data: {{path: {data}, validation_split: 0.2}}
model:
  architecture: mlp
  space: {{hidden_layers: 1, units: {{choice: [16, 32]}}, learning_rate: {{loguniform: [1.0e-3, 1.0e-2]}}}}
train: {{epochs: {epochs}}}
search: {{searcher: hyperopt, num_samples: 2}}
resources: {{cpus_per_trial: 1, max_concurrent_trials: 1}}  # trials in creation order
"""


@pytest.fixture(scope="module")
def data_files(mnist_path, tmp_path_factory) -> tuple[Path, Path]:
    """A small slice of real MNIST, and the same slice with its training labels shuffled
    (what a broken data pipeline would deliver)."""
    root = tmp_path_factory.mktemp("nightly-data")
    with np.load(mnist_path) as f:
        arrays = {"x_train": f["x_train"][:1500], "y_train": f["y_train"][:1500],
                  "x_test": f["x_test"][:500], "y_test": f["y_test"][:500]}
    np.savez(root / "small.npz", **arrays)
    arrays["y_train"] = np.random.default_rng(0).permutation(arrays["y_train"])
    np.savez(root / "shuffled.npz", **arrays)
    return root / "small.npz", root / "shuffled.npz"


def sweep_file(tmp_path: Path, data: Path, epochs: int = 1) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(data=data, epochs=epochs))
    return str(path)


def nightly(capsys, config: str, storage: Path, date: str, *extra: str) -> tuple[int, str, str]:
    code = main(["nightly", config, "--storage", str(storage), "--date", date, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class Inbox(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        Inbox.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_three_nights(ray_local, data_files, tmp_path, capsys, monkeypatch):
    """Night 1 clears a stale lock; night 2 is interrupted, resumed, and warm-started from
    night 1; night 3 runs on shuffled labels and is flagged as a regression."""
    from distune import pipeline
    from distune.results import open_analysis

    data = tmp_path / "mnist.npz"
    shutil.copy(data_files[0], data)
    config, storage = sweep_file(tmp_path, data), tmp_path / "store"
    sweep = storage / "sweep"
    sweep.mkdir(parents=True)
    (sweep / "nightly.lock").write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))

    code, out, err = nightly(capsys, config, storage, "2026-11-01", "--notify", "http://127.0.0.1:9/")
    assert code == 0, out + err
    assert "cleared a stale lock" in out and "could not notify" in err  # both only warn
    first = json.loads((sweep / "nights" / "2026-11-01" / "best.json").read_text())
    assert os.readlink(sweep / "best") == "promoted/2026-11-01"
    assert json.loads((sweep / "best" / "promoted.json").read_text())["score"] == first["val_accuracy"]
    assert (sweep / "best" / "best_model.keras").is_file() and not (sweep / "nightly.lock").exists()

    build = pipeline.build_tuner
    monkeypatch.setattr(pipeline, "build_tuner", lambda *a, **k: build(
        *a, **{**k, "callbacks": [interrupt_once(tmp_path / "interrupted")]}))
    code, out, err = nightly(capsys, config, storage, "2026-11-02")
    assert code == 130, out + err
    assert "warm start from 2026-11-01: 2 finished trials" in out
    assert "--date 2026-11-02 to resume it" in err
    assert History(sweep / "history.sqlite").get("2026-11-02").status == "interrupted"
    monkeypatch.undo()
    code, out, err = nightly(capsys, config, storage, "2026-11-02")
    assert code == 0, out + err
    assert "resuming 2026-11-02" in out
    searched = lambda c: (c["units"], c["learning_rate"])  # noqa: E731
    tonight = [searched(t.config) for t in open_analysis(sweep / "nights" / "2026-11-02").trials]
    assert tonight[0] == searched(first["config"]), "the earlier best was not re-evaluated first"
    earlier = {searched(t.config) for t in open_analysis(sweep / "nights" / "2026-11-01").trials}
    assert set(tonight[1:]) - earlier, "tonight's searcher repeated last night's configs"
    second = History(sweep / "history.sqlite").get("2026-11-02")
    assert second.warm_from == ["2026-11-01"] and second.trials == 3  # 2 searched + 1 re-evaluated
    assert second.stopped_early == second.failed == 0  # the resumed trials ran to the end
    assert [c["verdict"] for c in second.rechecks] == ["ok"]

    shutil.copy(data_files[1], data)  # tonight's data refresh delivers shuffled labels
    server = HTTPServer(("127.0.0.1", 0), Inbox)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code, out, err = nightly(capsys, config, storage, "2026-11-03", "--keep-nights", "2",
                                 "--notify", f"http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
    assert code == 3, out + err
    assert "REGRESSION: earlier best" in out
    assert Inbox.received[-1]["regression"] is True and Inbox.received[-1]["night"] == "2026-11-03"
    assert os.readlink(sweep / "best") == "promoted/2026-11-01", "a regressed night was promoted"
    nights = History(sweep / "history.sqlite").nights()
    assert [(n.date, n.status) for n in nights] == [
        ("2026-11-01", "ok"), ("2026-11-02", "ok"), ("2026-11-03", "regression")]
    assert all(n.best_score is not None and n.test_accuracy is not None and n.cpu_hours > 0
               and n.code_version.startswith("0.") and n.config_hash for n in nights)
    assert len({n.config_hash for n in nights}) == 1  # same config: the data changed underneath
    assert not list((sweep / "nights" / "2026-11-01").glob("*/checkpoint_*")), "not pruned"
    assert list((sweep / "nights" / "2026-11-03").glob("*/checkpoint_*"))
    report = (sweep / "nights" / "2026-11-03" / "nightly-report.md").read_text()
    assert report.startswith("# sweep: night 2026-11-03: REGRESSION") and "| regression |" in report
    assert (sweep / "nights" / "2026-11-03" / "best-per-night.png").stat().st_size > 1000

    code, out, _ = nightly(capsys, config, storage, "2026-11-03")  # cron fired twice
    assert code == 0 and "already ran (regression)" in out
    assert main(["history", "sweep", "--storage", str(storage)]) == 0
    listing = capsys.readouterr().out
    assert "3 nights" in listing and all(d in listing for d in ("2026-11-01", "2026-11-02", "2026-11-03"))


def test_a_second_run_is_refused_by_the_lock(tmp_path, capsys, mnist_path):
    config = sweep_file(tmp_path, mnist_path)
    with lock.held(tmp_path / "store" / "sweep" / "nightly.lock"):
        code, _, err = nightly(capsys, config, tmp_path / "store", "2026-11-01")
    assert code == 4 and f"pid {os.getpid()} on {socket.gethostname()}" in err
    assert "in progress" in err and "Traceback" not in err


def test_stale_and_foreign_locks(tmp_path):
    path, said = tmp_path / "nightly.lock", []
    path.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "started": 0}))
    lock.acquire(path, say=said.append)
    assert "stale lock" in said[0] and json.loads(path.read_text())["pid"] == os.getpid()
    lock.release(path)
    assert not path.exists()

    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0, "expires": None}))
    with pytest.raises(lock.Locked, match="on elsewhere"):
        lock.acquire(path)  # another machine's pid cannot be checked: wait, or delete by hand
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0, "expires": 1.0}))
    lock.acquire(path, say=said.append)
    assert "expired" in said[-1]


def test_regression_rule():
    # One earlier score: the floor decides.
    assert judge({}, [0.90], 0.895, "completed", "max").verdict == "ok"
    assert judge({}, [0.90], 0.885, "completed", "max").verdict == "regression"
    # Noisy earlier scores widen the allowance to 3 standard deviations.
    noisy = judge({}, [0.90, 0.92, 0.88], 0.86, "completed", "max")
    assert noisy.threshold == pytest.approx(0.06) and noisy.verdict == "ok"
    assert judge({}, [0.30], 0.35, "completed", "min").verdict == "regression"
    # A re-evaluation cut short by the scheduler, or without history, proves nothing.
    assert judge({}, [0.90], 0.10, "stopped", "max").verdict == "inconclusive"
    assert judge({}, [], 0.10, "completed", "max").verdict == "no baseline"
    assert NOISE_FLOOR == 0.01


def test_what_a_night_is_compared_with(tmp_path):
    history = History(tmp_path / "history.sqlite")
    config = {"units": 32, "learning_rate": 0.001}
    for date, score, status, config_hash, rebaseline in [
            ("2026-11-01", 0.90, "ok", "a", False), ("2026-11-02", 0.91, "ok", "a", False),
            ("2026-11-03", 0.50, "regression", "a", False),  # broken: never the new normal
            ("2026-11-04", 0.70, "ok", "b", False)]:        # another config: not comparable
        history.save(Night(date, status=status, config_hash=config_hash, rebaseline=rebaseline,
                           regression=status == "regression", best_score=score))
        history.record_scores(date, [(TrialRecord("t", config, "completed", score), True)])
    assert history.baseline({"learning_rate": 0.001, "units": 32.0}, "2026-11-05", "a") == [0.90, 0.91]
    assert history.baseline(config, "2026-11-05", "b") == [0.70]
    history.save(Night("2026-11-02", status="ok", config_hash="a", rebaseline=True, best_score=0.91))
    assert [n.date for n in history.comparable("2026-11-05", "a")] == ["2026-11-02"]


@pytest.mark.parametrize("args,message", [
    (["--date", "2026-13-01"], "expected YYYY-MM-DD"),
    (["--time-budget", "6 hours"], "expected a duration like 6h"),
    (["--keep-nights", "0"], "keep at least 1 night"),
    (["--notify", "example.com/hook"], "expected an http:// or https:// URL"),
])
def test_nightly_mistakes_exit_2(args, message, tmp_path, capsys, mnist_path):
    code = main(["nightly", sweep_file(tmp_path, mnist_path), "--storage", str(tmp_path), *args])
    assert code == 2 and message in capsys.readouterr().err


def test_durations():
    from distune.nightly import parse_duration

    assert [parse_duration(t) for t in ("6h", "90m", "1h30m", "45s", "3600", "1.5h")] == \
        [21600, 5400, 5400, 45, 3600, 5400]


def test_history_of_an_unknown_sweep(tmp_path, capsys):
    assert main(["history", "never", "--storage", str(tmp_path)]) == 2
    assert "no nightly history" in capsys.readouterr().err
