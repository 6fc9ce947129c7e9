"""The zygote that forks training processes (distune/trial/zygote.py), without Ray: a stand-in
"raylet" process starts a stand-in "actor", exactly the parent/child shape Ray gives them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, process_gone
from distune.errors import DistuneError
from distune.ops.private import NotPrivate, private_dir
from distune.trial import share_arrays, zygote

# The "actor": asks for a forked training process, trains one epoch in it, prints what it saw,
# then waits for a line on stdin (or, given "busy", queues 50 more epochs and waits to be
# killed while its child is training).
ACTOR = """
import json, os, sys
from distune.config import TrainConfig
from distune.space import Hyperparams
from distune.trial import Forked, Spawned, share_arrays
from distune.trial import load_mnist
mode, mnist = sys.argv[1], sys.argv[2]
busy = sys.argv[3:] == ["busy"]  # epochs of seconds, not tenths
data = load_mnist(mnist, 0.2, 20000 if busy else 600, 0).for_trials()
process = (Forked if mode == "forked" else Spawned)(str(share_arrays(data)), 1)
process.conn.send(("start", (Hyperparams(hidden_layers=1, units=16, batch_size=16 if busy else 32), TrainConfig(epochs=100), 3, 1, 0)))
assert process.conn.recv()[0] == "ok"
process.conn.send(("run_epoch", ()))
status, metrics = process.conn.recv()
print(json.dumps({"pid": process.pid, "actor": os.getpid(), "raylet": os.getppid(),
                  "loss": metrics["loss"], "val_accuracy": metrics["val_accuracy"]}), flush=True)
if busy:
    for _ in range(50):
        process.conn.send(("run_epoch", ()))
sys.stdin.readline()
"""
# The "raylet": runs one actor per line it reads, in turn, and prints what each printed.
RAYLET = """
import subprocess, sys
for line in sys.stdin:
    mode, _, hold = line.strip().partition(" ")
    if not mode:
        break
    actor = subprocess.Popen([sys.executable, "-c", sys.argv[1], mode, sys.argv[2], *hold.split()],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    print(actor.pid, actor.stdout.readline().strip(), flush=True)
    if not hold:  # else it runs until it is killed
        actor.stdin.write("\\n"); actor.stdin.flush()
    actor.wait()
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the zygote is Linux-only (others spawn)")
def test_forked_children_train_exactly_as_spawned_ones_and_end_with_their_actor(mnist_path):
    # The zygote a driver starts before its Ray (zygote.Early), importing while the "raylet"
    # starts, then adopted by it: the actors' children come from it; a second one for the
    # same raylet stands down.
    early = zygote.Early({})
    raylet = subprocess.Popen([sys.executable, "-c", RAYLET, ACTOR, str(mnist_path)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert early.adopt(raylet.pid)
        spare = zygote.Early({})
        assert not spare.adopt(raylet.pid) and spare.process.returncode is not None
        seen = {}
        for mode in ("spawned", "forked", "forked"):
            raylet.stdin.write(mode + "\n")
            raylet.stdin.flush()
            actor_pid, line = raylet.stdout.readline().split(" ", 1)
            seen.setdefault(mode, []).append(json.loads(line))
        spawned, (first, second) = seen["spawned"][0], seen["forked"]
        # Exact: the same weights' loss and accuracy, whichever way the process started.
        assert (first["loss"], first["val_accuracy"]) == (spawned["loss"], spawned["val_accuracy"])
        assert (second["loss"], second["val_accuracy"]) == (first["loss"], first["val_accuracy"])
        home = zygote.home_of(raylet.pid)
        log = (home / "zygote.log").read_text()
        assert log.count("ready for raylet") == 1, log  # one import, two forks
        zygote_pid = int(log.split("zygote ")[1].split()[0])
        assert zygote_pid == early.process.pid, "the actors' zygote was not the early one"
        assert first["pid"] != second["pid"] and first["raylet"] == second["raylet"] == raylet.pid
        for child in (first, second):
            assert process_gone(child["pid"], 5), "a forked child outlived its actor"

        # An actor killed while its child is mid-epoch (50 queued): the child goes too, at once,
        # not when it next reads from the actor.
        raylet.stdin.write("forked busy\n")
        raylet.stdin.flush()
        actor_pid, line = raylet.stdout.readline().split(" ", 1)
        child = json.loads(line)["pid"]
        assert not process_gone(child, 0)
        time.sleep(0.5)  # the child is training the queued epochs
        os.kill(int(actor_pid), signal.SIGKILL)
        assert process_gone(child, 1), "the child outlived a killed actor (it was mid-epoch)"
    finally:
        raylet.stdin.close()
        raylet.wait(timeout=30)
    assert process_gone(zygote_pid, 5), "the zygote outlived its raylet"
    assert not home.exists(), "the zygote left its directory behind"


def test_a_directory_others_can_enter_is_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    (tmp_path / "shared").mkdir(mode=0o777)
    os.chmod(tmp_path / "shared", 0o777)
    with pytest.raises(NotPrivate, match="not a private directory"):
        private_dir("shared")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(NotPrivate, match="not a private directory"):
        private_dir("link")
    made = private_dir("mine")
    assert made.is_dir() and (made.stat().st_mode & 0o777) == 0o700
    assert private_dir("mine") == made  # its own, made earlier: trusted
    os.chown(tmp_path / "elsewhere", 12345, 12345)  # as root here: another user's directory
    os.chmod(tmp_path / "elsewhere", 0o700)
    (tmp_path / "elsewhere").rename(tmp_path / "theirs")
    with pytest.raises(NotPrivate):
        private_dir("theirs")
    # Both users of it: a zygote falls back to spawning, the data cache refuses and says why.
    monkeypatch.setattr(zygote, "_flavour", lambda environ=None: "x")
    os.mkdir(tmp_path / f"distune-zygote-{os.getuid()}-1-x", 0o777)
    os.chmod(tmp_path / f"distune-zygote-{os.getuid()}-1-x", 0o777)
    with pytest.raises(zygote.Unavailable, match="not a private directory"):
        zygote.home_of(1)
    os.mkdir(tmp_path / f"distune-data-{os.getuid()}", 0o777)
    os.chmod(tmp_path / f"distune-data-{os.getuid()}", 0o777)
    with pytest.raises(DistuneError, match="TMPDIR"):
        share_arrays({"x": np.zeros(3)})


def test_the_spawn_fallback_says_why(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(zygote.Unavailable, match="Linux"):
        zygote.fork_child("/nowhere", 1)
