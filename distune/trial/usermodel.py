"""A user's own model function under distune (model.builder, model.keras_tuner): what a
trial hands it, and the checks that what it returns can train on MNIST. Imports Keras only
when building, so the Ray actors and the driver that carry a `UserModel` stay light."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distune.errors import DistuneError, shown
from distune.ops.usercode import UserCode
from distune.space.hyperparams import COMPILE_KEYS, LOOP_KEYS, Hyperparams

if TYPE_CHECKING:
    import keras


class UserModelError(DistuneError):
    """A user's model function built something distune cannot train on MNIST."""


@dataclass(frozen=True)
class UserModel:
    """A user's model function (model.builder or model.keras_tuner) and one trial's values."""

    code: UserCode
    keras_tuner: bool
    values: dict[str, Any]

    def build(self, hp: Hyperparams, steps_per_epoch: int, epochs: int) -> keras.Model:
        """The user's model, checked; compiled by distune from the optimizer settings if the
        function returned it uncompiled."""
        import keras

        from distune.trial.model import compile_model

        function = self.code.load()
        if self.keras_tuner:
            from distune.space.keras_tuner import values_hp

            model = function(values_hp(self.values))
        else:
            model = function(dict(self.values))
        where = f"{self.code.origin}:{self.code.function}"
        if not isinstance(model, keras.Model):
            raise UserModelError(f"{where} returned {type(model).__name__}, not a keras.Model")
        if not model.built:  # a Sequential without keras.Input: built for 28 x 28 images
            model.build((None, 28, 28))
        try:
            out = model.output_shape
        except (AttributeError, ValueError):
            out = None
        if out is None or tuple(out)[1:] != (10,):
            raise UserModelError(f"{where} built a model whose output is {out}; MNIST needs 10 "
                                 "classes: end it with Dense(10, activation='softmax')")
        if math.prod(model.input_shape[1:]) != 784:
            raise UserModelError(f"{where} built a model for inputs {model.input_shape[1:]}; MNIST "
                                 "images are 28 x 28: use keras.Input((28, 28)), (28, 28, 1) or (784,)")
        if not model.compiled:
            compile_hp = Hyperparams.model_validate(
                {k: v for k, v in self.values.items() if k in LOOP_KEYS + COMPILE_KEYS})
            compile_model(model, compile_hp, steps_per_epoch, epochs)
        return model


def make_model(hp: Hyperparams, user: UserModel | None, steps_per_epoch: int, epochs: int) -> keras.Model:
    """distune's own model for these hyperparameters, or the user's."""
    from distune.trial.model import build_model

    return build_model(hp, steps_per_epoch, epochs) if user is None else user.build(hp, steps_per_epoch, epochs)


def trial_inputs(code: UserCode | None, keras_tuner: bool, values: dict[str, Any]) -> tuple[Hyperparams, UserModel | None]:
    """A trial's sampled values as what trains it: distune's hyperparameters (for a user's
    model only how it trains: batch size, epochs) and the user's model function, if any."""
    if code is None:
        return Hyperparams.model_validate(values), None
    loop = {k: v for k, v in values.items() if k in LOOP_KEYS}
    return Hyperparams.model_validate(loop), UserModel(code, keras_tuner, dict(values))


def dry_build(exp) -> None:
    """Build the user's model once, on one point of the space, before anything trains: the
    function runs, returns a keras.Model for 28 x 28 inputs with 10 outputs, and compiles; or
    one UserModelError that names the file and what is wrong."""
    import numpy as np

    from distune.space.params import sample

    code = exp.model.code
    if code is None:
        return
    from distune.ops.environment import quiet_tensorflow

    quiet_tensorflow(initialise=True)  # before the function's Keras starts TensorFlow, noisily
    field = "model.keras_tuner" if exp.model.keras_tuner else "model.builder"
    point = sample(exp.model.params, np.random.default_rng(0))
    try:
        hp, user = trial_inputs(code, bool(exp.model.keras_tuner), point)
        user.build(hp, 1, hp.epochs or exp.train.epochs)
    except UserModelError as e:
        raise UserModelError(f"{field}: {e}. Fix the function, then run again.") from None
    except Exception as e:  # noqa: BLE001 - the user's function failed
        raise UserModelError(f"{field}: {code.origin}:{code.function} failed on the hyperparameters "
                             f"{shown(point)}: {type(e).__name__}: {shown(str(e))}. Fix the "
                             "function, then run again.") from None
    finally:
        import keras

        keras.backend.clear_session()
