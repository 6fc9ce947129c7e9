#!/usr/bin/env python
"""The foundation's promise, measured: the default preset on full MNIST, wall time and the
winner's test accuracy (target: >= 0.975 in under 10 minutes on a 2-core CPU machine).

    python scripts/bench/default_preset.py --data ../shared/data/mnist.npz
    python scripts/bench/default_preset.py --quick    # a tiny slice, to keep the script working

distune's own output is passed through; --storage keeps the experiment (default: a temp dir).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("DISTUNE_MNIST"), help="MNIST .npz")
    ap.add_argument("--quick", action="store_true", help="2 trials, 1 epoch, 2,000 images")
    ap.add_argument("--storage", help="keep the experiment here, as 'bench' (default: a temp dir)")
    args = ap.parse_args()
    quick = ["--samples", "2", "--set", "train.epochs=1", "--set", "data.train_subset=2000"] if args.quick else []
    with tempfile.TemporaryDirectory() as temp:
        storage = args.storage or temp
        cmd = [sys.executable, "-m", "distune", "run", "--storage", storage, "--name", "bench", *quick]
        if args.data:
            cmd += ["--data", args.data]
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            return proc.returncode
        best = json.loads((Path(storage) / "bench" / "best.json").read_text())
        trials = sum(1 for _ in open(Path(storage) / "bench" / "results.csv")) - 1
    print(f"{'preset':<12} {'trials':>6} {'wall_s':>8} {'val_acc':>8} {'test_acc':>9}")
    print(f"{'mnist-mlp':<12} {trials:>6} {wall:>8.1f} {best['val_accuracy']:>8.4f} {best['test_accuracy']:>9.4f}")
    print(f"cpus: {os.cpu_count()}  quick: {args.quick}")
    print(f"default_preset_test_accuracy: {best['test_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
