"""A real multi-node Ray cluster on one machine (ray.cluster_utils.Cluster: a head and worker
nodes, two declaring one GPU each), driven by distune. Run by tests/test_multinode.py in its own
process, so its Ray never meets the suite's local one. Prints one JSON line of what happened.

    python tests/multinode.py MNIST_NPZ STORAGE_DIR
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path


USER_BUILDER = """
import keras


def build(hp):  # uncompiled: distune compiles it from the optimizer settings
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(hp["units"], activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])
"""


def main(mnist: str, storage: str) -> dict:
    import ray
    from ray import tune
    from ray.cluster_utils import Cluster

    from distune import sweep as runner
    from distune.config import validate
    from distune.ops import forked_workers, local_ray_environment
    from distune.results import open_analysis

    # Its nodes as distune's local Ray runs: on loopback, no workers ahead of need, each worker
    # of the nodes started here forked by this process's server, not importing Ray anew (a
    # real cluster's `ray start` uses Ray's own)
    local_ray_environment()
    with forked_workers():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        gpu_nodes = [cluster.add_node(num_cpus=4, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    out: dict = {"nodes": {n.node_id: "gpu" for n in gpu_nodes}}

    def experiment(name: str, **sections) -> object:
        raw = {
            "data": {"path": mnist, "train_subset": 800, "validation_split": 0.25},
            "model": {"space": {"hidden_layers": 1, "units": {"choice": [16, 32]}}},
            "train": {"epochs": 1},
            "search": {"searcher": "random", "num_samples": 6},
            "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.5},
            "run": {"storage": storage, "name": name, "seed": 0, "max_failures": 3},
        }
        for section, values in sections.items():
            raw[section] = {**raw.get(section, {}), **values}
        return validate(raw, name)

    class Concurrency(tune.Callback):
        """Most trials running at once, seen from the driver."""

        def __init__(self) -> None:
            self.running: set[str] = set()
            self.most = 0

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running.add(trial.trial_id)
            self.most = max(self.most, len(self.running))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.running.discard(trial.trial_id)

        on_trial_error = on_trial_complete

    def held_gpu_reservations() -> int:
        """Trials holding a GPU share now: Tune's placement groups that are placed (a trial
        holds its share from placement, through its worker's start-up, to its end)."""
        return sum(1 for pg in ray.util.placement_group_table().values()
                   if pg["state"] == "CREATED" and any(b.get("GPU") for b in pg["bundles"].values()))

    def poll(most: list, done: threading.Event) -> None:
        while not done.wait(0.2):
            most[0] = max(most[0], held_gpu_reservations())

    # 1. Spread and packing: 0.5 GPU per trial, two 1-GPU nodes -> at most 4 trials at once.
    # Counted from Ray's placement groups, not from trial start events: those depend on how
    # fast four workers start on two cores, so a short trial can end before the fourth starts.
    # The model is a user's builder in a file no node can import: validated here, then deleted
    # before the sweep, so the trials on both nodes build it from the source distune carries.
    seen, held, done = Concurrency(), [0], threading.Event()
    poller = threading.Thread(target=poll, args=(held, done), daemon=True)
    poller.start()
    builder = Path(storage).parent / "user_model.py"
    builder.write_text(USER_BUILDER)
    # 6 trials, more than the two GPUs hold at half a GPU each: with 4, a node whose first
    # worker started late could see every trial run on the other's reused actors (seen in CI)
    exp = experiment("packing",
                     model={"builder": f"{builder}:build", "space": {
                         "units": {"choice": [16, 32]}, "learning_rate": 0.01, "batch_size": 32}})
    builder.unlink()
    directory = runner.experiment_dir(exp)
    runner.prepare_directory(directory, overwrite=False)
    runner.build_tuner(exp, runner.load_data(exp).for_trials(), directory, say=lambda _: None,
                       callbacks=[seen]).fit()
    done.set()
    poller.join()
    trials = open_analysis(directory).trials
    out["packing"] = {"most_holding_gpu": held[0], "most_running": seen.most,
                      "statuses": [t.status for t in trials],
                      "nodes_used": sorted({t.last_result.get("node_id") for t in trials}),
                      "builder_file_exists": builder.exists(),
                      "val_accuracy": [t.last_result.get("val_accuracy") for t in trials],
                      "units": sorted({t.config["units"] for t in trials})}

    # 2. A worker node lost mid-sweep: its trials continue elsewhere from their checkpoints.
    spare = cluster.add_node(num_cpus=4, num_gpus=1)
    cluster.wait_for_nodes()
    # The victim is the node of the first trial to checkpoint, whichever that is: with a fixed
    # victim, a loaded machine let the trials of the other two nodes' reused actors take all
    # three configs before the victim's worker started (seen in CI: nothing to remove)
    workers = {n.node_id: n for n in (*gpu_nodes, spare)}
    # 2,250 training images: epochs of a few tenths of a second, so that the victim's trial is
    # still running when its node goes (on 600 a quiet machine finished it first). A whole GPU
    # per trial: three trials on three one-GPU nodes, so a lost node leaves fewer places than
    # trials and its trial waits for one (with half a GPU each, Ray packed all three on two nodes)
    exp = experiment("node-loss", train={"epochs": 3}, search={"searcher": "random", "num_samples": 3},
                     data={"train_subset": 3000}, resources={"gpus_per_trial": 1})
    directory = runner.experiment_dir(exp)
    runner.prepare_directory(directory, overwrite=False)
    removed = threading.Event()

    class RemoveNode(tune.Callback):
        """After a trial has checkpointed its first epoch, take its node away.
        (Tune pickles its callbacks with its state: this one keeps its references out of it.)"""

        def __init__(self, **refs) -> None:
            self.refs = refs

        def __getstate__(self) -> dict:
            return {}

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            r = self.refs
            result = trial.last_result or {}
            victim = r["workers"].get(result.get("node_id"))
            if not r["removed"].is_set() and victim is not None and result.get("training_iteration") == 1:
                r["removed"].set()
                r["out"]["victim_trial"], r["out"]["victim"] = trial.trial_id, victim.node_id
                threading.Thread(target=r["cluster"].remove_node, args=(victim, False)).start()

    runner.build_tuner(exp, runner.load_data(exp).for_trials(), directory, say=lambda _: None,
                       callbacks=[RemoveNode(removed=removed, workers=workers, out=out, cluster=cluster)]).fit()
    time.sleep(1)
    trials = open_analysis(directory).trials
    victim_trial = next((t for t in trials if t.trial_id == out.get("victim_trial")), None)
    iterations = []
    if victim_trial is not None:
        progress = Path(victim_trial.local_path) / "progress.csv"
        import pandas as pd

        frame = pd.read_csv(progress)
        iterations = frame["training_iteration"].tolist()
        out["victim_nodes"] = sorted(set(frame["node_id"]))
    out["node_loss"] = {"removed": removed.is_set(), "statuses": [t.status for t in trials],
                        "epochs": [t.last_result.get("epoch") for t in trials],
                        "victim_iterations": iterations,
                        "victim_failures": victim_trial.run_metadata.num_failures if victim_trial else None,
                        "spare": spare.node_id, "victim": out.pop("victim", None)}
    ray.shutdown()
    cluster.shutdown()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
