"""Epoch cost per Keras backend (train.backend), as a trial pays it: one fresh process per
backend and case, one thread (as a trial with cpus_per_trial 1), distune's own Training (its
model and epoch; the time is the epoch's fit, as trials report epoch_s, validation excluded).
The first epoch includes the backend's tracing or compilation; the second is the steady cost.

    python scripts/bench/backends.py --data ../shared/data/mnist.npz            # MLP + CNN, batch 128 and 32
    python scripts/bench/backends.py --data ../shared/data/mnist.npz --quick    # MLP, 2,000 images
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax")


def child(args) -> dict:
    """One backend, one case, in this process (its environment set by the parent)."""
    from distune.config import TrainConfig
    from distune.space import Hyperparams
    from distune.trial import Training, configure_tensorflow, load_mnist

    configure_tensorflow(1)
    import keras

    splits = load_mnist(args.data, 0.1, args.subset, 0)
    hp = Hyperparams(architecture=args.arch, hidden_layers=2, units=256, batch_size=args.batch,
                     conv_blocks=2, filters=16)
    t0 = time.perf_counter()
    training = Training(hp, splits.for_trials(), TrainConfig(epochs=2), seed=0)
    build_s = time.perf_counter() - t0
    epochs = [training.run_epoch() for _ in range(2)]
    return {"backend": keras.backend.backend(), "build_s": build_s,
            "first_s": epochs[0]["epoch_s"], "steady_s": epochs[1]["epoch_s"],
            "images": len(splits.x_train), "val_accuracy": epochs[1]["val_accuracy"]}


def run_case(backend: str, arch: str, batch: int, args) -> dict:
    from distune.ops import QUIET_ENV, backend_environment

    env = {**os.environ, **QUIET_ENV, **backend_environment(backend, threads=1)}
    cmd = [sys.executable, __file__, "--child", "--data", args.data, "--arch", arch,
           "--batch", str(batch)] + (["--subset", str(args.subset)] if args.subset else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("DISTUNE_MNIST"))
    ap.add_argument("--quick", action="store_true", help="MLP, batch 128, 2,000 images")
    ap.add_argument("--subset", type=int, default=None, help="training images (default: all)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--arch", default="mlp", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.quick:
        args.subset = 2000
    cases = [("mlp", 128)] if args.quick else [("mlp", 128), ("mlp", 32), ("cnn", 128)]
    print(f"{'model':<5} {'batch':>5} {'backend':<11} {'build_s':>7} {'epoch1_s':>8} {'epoch2_s':>8} "
          f"{'images/s':>9} {'val_acc':>7}")
    steady: dict[tuple, float] = {}
    for arch, batch in cases:
        for backend in BACKENDS:
            r = run_case(backend, arch, batch, args)
            assert r["backend"] == backend, r
            steady[(arch, batch, backend)] = r["steady_s"]
            print(f"{arch:<5} {batch:>5} {backend:<11} {r['build_s']:>7.2f} {r['first_s']:>8.2f} "
                  f"{r['steady_s']:>8.2f} {r['images'] / r['steady_s']:>9.0f} {r['val_accuracy']:>7.4f}")
    print(f"one thread per process (a trial with cpus_per_trial 1); MLP 784-256-256-10, CNN 2 conv "
          f"blocks of 16/32 filters + 2 x 256 dense; epoch_s = the fit of one epoch (validation "
          f"excluded), epoch1 includes tracing/compiling; "
          f"{os.cpu_count()} cores; nothing else running is assumed, not checked")
    for arch, batch in cases:
        ratio = steady[(arch, batch, "tensorflow")] / steady[(arch, batch, "jax")]
        print(f"{arch} batch {batch}: jax epoch is {ratio:.2f}x as fast as tensorflow's")
    print(f"jax_speedup_mlp_128: {steady[('mlp', 128, 'tensorflow')] / steady[('mlp', 128, 'jax')]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
