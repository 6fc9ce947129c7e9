"""Multi-node behaviour proven on one machine: a real Ray cluster of a head and worker nodes
(two declaring a GPU each) from ray.cluster_utils, real distune sweeps on it (tests/multinode.py,
run in its own process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster_run(mnist_path, tmp_path_factory) -> dict:
    storage = tmp_path_factory.mktemp("shared-storage")
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("multinode.py")),
                           str(mnist_path), str(storage)],
                          capture_output=True, text=True, timeout=600, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_trials_spread_across_nodes(cluster_run):
    packing = cluster_run["packing"]
    assert set(packing["statuses"]) == {"TERMINATED"}
    assert set(packing["nodes_used"]) == set(cluster_run["nodes"])  # both worker nodes, not one


def test_a_user_builder_runs_on_every_node(cluster_run):
    """The packing sweep's model is a user's builder whose file was deleted after validation:
    the trials on both worker nodes built it from the source distune carries."""
    packing = cluster_run["packing"]
    assert not packing["builder_file_exists"] and set(packing["statuses"]) == {"TERMINATED"}
    assert len(set(packing["nodes_used"])) == 2 and packing["units"] == [16, 32]
    assert all(a > 0.2 for a in packing["val_accuracy"]), packing["val_accuracy"]  # it trained (chance: 0.1)


def test_half_a_gpu_per_trial_packs_two_trials_per_declared_gpu(cluster_run):
    # 2 nodes x 1 GPU, 0.5 GPU per trial, CPUs to spare: 4 hold a share at once, never more.
    packing = cluster_run["packing"]
    assert packing["most_holding_gpu"] == 4
    assert 1 <= packing["most_running"] <= 4


def test_lost_node_trials_resume_elsewhere_from_checkpoints(cluster_run):
    loss = cluster_run["node_loss"]
    assert loss["removed"]
    assert set(loss["statuses"]) == {"TERMINATED"} and loss["epochs"] == [3, 3, 3]
    assert loss["victim_failures"] >= 1
    # Continued on another node, from its checkpoint: epochs never restart from 1.
    assert loss["victim_iterations"].count(1) == 1 and max(loss["victim_iterations"]) == 3
    assert loss["victim"] in cluster_run["victim_nodes"] and len(cluster_run["victim_nodes"]) == 2
