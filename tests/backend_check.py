"""Run by tests/test_backends.py under KERAS_BACKEND=jax (Keras's backend is fixed when it is
imported, so the other backend needs its own process). Prints one JSON line.

    python tests/backend_check.py MNIST_NPZ WORKDIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(mnist: str, work: str) -> dict:
    import keras

    from distune.config import TrainConfig
    from distune.space import Hyperparams
    from distune.trial import Training, load_mnist, reshape_for

    work_dir = Path(work)
    out = {"backend": keras.backend.backend()}
    data = load_mnist(mnist, validation_split=0.25, train_subset=400, seed=0).for_trials()
    x = data["x_val"][:64]

    # A model saved under TensorFlow (by the test) predicts the same here.
    tf_model = keras.saving.load_model(work_dir / "tf.keras")
    expected = np.load(work_dir / "tf_predictions.npy")
    out["tf_model_max_diff"] = float(np.abs(tf_model.predict(reshape_for(tf_model, x), verbose=0) - expected).max())

    # Exact resume on this backend: every weight and optimizer variable, then the next epoch.
    hp = Hyperparams(hidden_layers=1, units=32, dropout=0.2, batch_size=32, optimizer="adam",
                     lr_schedule="exponential")
    a = Training(hp, data, TrainConfig(epochs=2), seed=7)
    a.run_epoch()
    (work_dir / "ckpt").mkdir()
    a.save(work_dir / "ckpt")
    weights = [w.copy() for w in a.model.get_weights()]
    slots = [np.array(v) for v in a.model.optimizer.variables]
    uninterrupted = a.run_epoch()
    b = Training(hp, data, TrainConfig(epochs=2), seed=7)
    b.load(work_dir / "ckpt")
    out["weights_equal"] = all(map(np.array_equal, b.model.get_weights(), weights))
    out["optimizer_equal"] = all(map(np.array_equal, [np.array(v) for v in b.model.optimizer.variables], slots))
    resumed = b.run_epoch()
    out["epoch_diffs"] = {k: abs(resumed[k] - uninterrupted[k]) for k in ("loss", "val_loss", "val_accuracy")}

    # A blown-up trial is diverged here too: Keras on JAX clips probabilities, so its losses
    # stay finite (~15, where TensorFlow's go NaN) and only the validation loss's bound says so.
    blown = Hyperparams(activation="linear", optimizer="sgd", learning_rate=10.0, momentum=0.99, batch_size=32)
    m = Training(blown, data, TrainConfig(epochs=5), seed=0).run_epoch()
    out["blown_up"] = {k: m[k] for k in ("diverged", "done", "epoch", "loss", "val_loss")}

    # A model saved here, for the test to load under TensorFlow.
    a.model.save(work_dir / "jax.keras")
    np.save(work_dir / "jax_predictions.npy", a.model.predict(reshape_for(a.model, x), verbose=0))
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
