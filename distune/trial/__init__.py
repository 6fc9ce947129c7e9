"""One trial's work in its own process: the MNIST data, the Keras model, the training loop
and its explicit checkpoint state, the Ray Trainable and the per-node zygote that forks it;
or, fused, several trials' epochs in one JAX program served by a per-slot fuser."""

from distune._lazy import exports

_NAMES = {
    "CrossValidated": "training",
    "Forked": "worker",
    "FusedGroup": "fused",
    "FusedTrainable": "fuser",
    "Fuser": "fuser",
    "MnistTrainable": "trainable",
    "Placement": "fuser",
    "Spawned": "worker",
    "Splits": "data",
    "Training": "training",
    "Unavailable": "zygote",
    "UserModel": "usermodel",
    "UserModelError": "usermodel",
    "build_model": "model",
    "check_subset": "data",
    "checkpoint_problem": "training",
    "configure_tensorflow": "training",
    "current_learning_rate": "model",
    "find_mnist": "data",
    "input_shape": "model",
    "labels_for": "model",
    "make_model": "usermodel",
    "reshape_for": "model",
    "load_mnist": "data",
    "make_training": "training",
    "read_npz": "data",
    "share_arrays": "worker",
    "start_here": "zygote",
    "test_in_child": "worker",
    "test_model": "training",
    "test_saved_model": "training",
    "training_environment": "trainable",
    "trial_hyperparams": "training",
    "dry_build": "usermodel",
    "trial_inputs": "usermodel",
    "trial_seed": "training",
    "warm_up_tensorflow": "training",
}
__all__ = sorted(_NAMES)
__getattr__ = exports(__name__, _NAMES)
