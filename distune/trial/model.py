"""Hyperparameters -> a compiled Keras model (architecture, initialisation, optimizer, LR schedule)."""

from __future__ import annotations

import math
import keras

from distune.space.hyperparams import Hyperparams

INITIALIZERS = {
    "uniform": lambda: keras.initializers.RandomUniform(-0.05, 0.05),
    "normal": lambda: keras.initializers.RandomNormal(stddev=0.05),
    "zeros": keras.initializers.Zeros,
    "lecun_uniform": keras.initializers.LecunUniform,
    "lecun_normal": keras.initializers.LecunNormal,
    "glorot_uniform": keras.initializers.GlorotUniform,
    "glorot_normal": keras.initializers.GlorotNormal,
    "he_uniform": keras.initializers.HeUniform,
    "he_normal": keras.initializers.HeNormal,
}

OPTIMIZERS = {
    "sgd": lambda hp, lr: keras.optimizers.SGD(lr, momentum=hp.momentum, nesterov=hp.nesterov),
    "rmsprop": lambda hp, lr: keras.optimizers.RMSprop(lr, momentum=hp.momentum),
    "adam": lambda hp, lr: keras.optimizers.Adam(lr),
    "adamw": lambda hp, lr: keras.optimizers.AdamW(lr),
    "nadam": lambda hp, lr: keras.optimizers.Nadam(lr),
    "adamax": lambda hp, lr: keras.optimizers.Adamax(lr),
    "adagrad": lambda hp, lr: keras.optimizers.Adagrad(lr),
    "adadelta": lambda hp, lr: keras.optimizers.Adadelta(lr),
}


def input_shape(architecture: str) -> tuple[int, ...]:
    return (784,) if architecture == "mlp" else (28, 28, 1)


def learning_rate(hp: Hyperparams, steps_per_epoch: int, epochs: int):
    """A per-step schedule whose position is the optimizer's iteration counter, so it is saved
    and restored with the optimizer and a resumed trial continues on the same curve."""
    lr0, spe = hp.learning_rate, steps_per_epoch
    S = keras.optimizers.schedules
    if hp.lr_schedule == "exponential":  # lr0 * exp(-k * epoch), smoothly per step
        return S.ExponentialDecay(lr0, decay_steps=spe, decay_rate=math.exp(-hp.lr_decay))
    if hp.lr_schedule == "step":
        return S.ExponentialDecay(lr0, decay_steps=spe * hp.lr_drop_every, decay_rate=hp.lr_drop,
                                  staircase=True)
    if hp.lr_schedule == "cosine":
        return S.CosineDecay(lr0, decay_steps=spe * epochs)
    if hp.lr_schedule == "cosine_restarts":  # warm restarts, cycles doubling in length
        return S.CosineDecayRestarts(lr0, first_decay_steps=spe * hp.lr_cycle_epochs, t_mul=2.0)
    return lr0


def build_model(hp: Hyperparams, steps_per_epoch: int, epochs: int) -> keras.Model:
    init = INITIALIZERS[hp.initializer]
    kernel = lambda: dict(  # noqa: E731 - fresh objects per layer
        kernel_initializer=init(),
        kernel_regularizer=keras.regularizers.L2(hp.l2) if hp.l2 > 0 else None,
        kernel_constraint=keras.constraints.MaxNorm(hp.max_norm) if hp.max_norm > 0 else None,
        use_bias=not hp.batch_norm,  # batch norm's beta replaces the bias
    )

    def normalise_and_activate(x):
        if hp.batch_norm:
            x = keras.layers.BatchNormalization()(x)
        return keras.layers.Activation(hp.activation)(x)

    inputs = keras.Input(input_shape(hp.architecture))
    x = inputs
    if hp.architecture == "cnn":
        for b in range(1, hp.conv_blocks + 1):
            x = keras.layers.Conv2D(hp.block_filters(b), hp.kernel_size, padding="same", **kernel())(x)
            x = normalise_and_activate(x)
            if hp.pooling != "none":
                pool = keras.layers.MaxPooling2D if hp.pooling == "max" else keras.layers.AveragePooling2D
                x = pool(2)(x)
        x = keras.layers.Flatten()(x)
    for i in range(1, hp.hidden_layers + 1):
        x = keras.layers.Dense(hp.layer_units(i), **kernel())(x)
        x = normalise_and_activate(x)
        if hp.dropout > 0:
            x = keras.layers.Dropout(hp.dropout)(x)
    outputs = keras.layers.Dense(10, activation="softmax", kernel_initializer=init())(x)
    return compile_model(keras.Model(inputs, outputs), hp, steps_per_epoch, epochs)


def compile_model(model: keras.Model, hp: Hyperparams, steps_per_epoch: int, epochs: int) -> keras.Model:
    """The optimizer and LR schedule of `hp`, on integer labels: distune's models, and a
    user's builder that returns its model uncompiled."""
    model.compile(optimizer=OPTIMIZERS[hp.optimizer](hp, learning_rate(hp, steps_per_epoch, epochs)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def current_learning_rate(model: keras.Model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def reshape_for(model: keras.Model, x):
    """Images in the shape the model takes: (784,), (28, 28), (28, 28, 1), ..."""
    return x.reshape((-1, *model.input_shape[1:]))


def wants_one_hot(model: keras.Model) -> bool:
    """A user's model compiled with categorical cross-entropy trains on one-hot labels (as in
    KerasTuner's guides, which call to_categorical); distune's own use integer labels."""
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else type(loss).__name__
    return name in ("categorical_crossentropy", "CategoricalCrossentropy")


def labels_for(model: keras.Model, y):
    return keras.utils.to_categorical(y, 10) if wants_one_hot(model) else y
