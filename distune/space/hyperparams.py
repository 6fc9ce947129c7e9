"""Every hyperparameter a trial can take, with its type, range and default.

One typed model serves two readers: the config validator checks each value a search space
can produce against it, and a trial turns its sampled dict into it before building a model.
Per-layer overrides (`units_2`, `filters_1`, ...) are the only keys not declared as fields.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

Activation = Literal[
    "relu", "tanh", "sigmoid", "elu", "selu", "leaky_relu", "gelu", "swish", "softplus",
    "hard_sigmoid", "linear",
]
Initializer = Literal[
    "uniform", "normal", "zeros", "lecun_uniform", "lecun_normal", "glorot_uniform",
    "glorot_normal", "he_uniform", "he_normal",
]
Optimizer = Literal["sgd", "adam", "adamw", "nadam", "adamax", "rmsprop", "adagrad", "adadelta"]
LRSchedule = Literal["constant", "exponential", "step", "cosine", "cosine_restarts"]

# `units_3` sets layer 3's width, `filters_2` conv block 2's filters; unset layers use the base.
PER_LAYER = re.compile(r"^(units|filters)_([1-9][0-9]?)$")


class Hyperparams(BaseModel):
    """One trial's hyperparameters. Field docs are shown by `distune validate --explain`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    architecture: Literal["mlp", "cnn"] = Field("mlp", description="mlp, or a small cnn")
    # Dense part (the whole mlp; the head of the cnn).
    hidden_layers: int = Field(2, ge=0, le=16, description="dense hidden layers")
    units: int = Field(256, ge=1, le=8192, description="units per dense layer (units_N: layer N)")
    activation: Activation = "relu"
    initializer: Initializer = Field("glorot_uniform", description="kernel initializer")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after each hidden layer")
    max_norm: float = Field(0.0, ge=0.0, description="max-norm kernel constraint; 0 = none")
    l2: float = Field(0.0, ge=0.0, description="L2 weight decay on kernels")
    batch_norm: bool = False
    # Convolutional part (cnn only).
    conv_blocks: int = Field(2, ge=1, le=4, description="conv blocks (conv, activation, pool)")
    filters: int = Field(32, ge=1, le=1024, description="filters of block 1, doubled per block")
    kernel_size: int = Field(3, ge=1, le=7)
    pooling: Literal["max", "avg", "none"] = "max"
    # Optimisation.
    optimizer: Optimizer = "adam"
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd and rmsprop only")
    nesterov: bool = Field(False, description="sgd only")
    lr_schedule: LRSchedule = "constant"
    lr_decay: float = Field(0.1, ge=0.0, description="exponential: k in lr0*exp(-k*epoch)")
    lr_drop: float = Field(0.5, gt=0.0, le=1.0, description="step: factor applied every lr_drop_every epochs")
    lr_drop_every: int = Field(5, ge=1, description="step: epochs between drops")
    lr_cycle_epochs: int = Field(2, ge=1, description="cosine_restarts: first cycle length (doubles)")
    batch_size: int = Field(128, ge=1, le=65536)
    epochs: int | None = Field(None, ge=1, le=10000, description="defaults to train.epochs")

    @model_validator(mode="after")
    def _check_per_layer(self) -> "Hyperparams":
        for key, value in (self.model_extra or {}).items():
            check_value(key, value)
        return self

    def layer_units(self, i: int) -> int:
        """Width of dense layer i (1-based)."""
        return int((self.model_extra or {}).get(f"units_{i}", self.units))

    def block_filters(self, i: int) -> int:
        """Filters of conv block i (1-based): `filters_i`, else `filters` doubled per block."""
        return int((self.model_extra or {}).get(f"filters_{i}", self.filters * 2 ** (i - 1)))


def field_for(name: str) -> str | None:
    """The declared field a key is checked against (`units_3` -> `units`), or None if unknown."""
    if name in Hyperparams.model_fields:
        return name
    m = PER_LAYER.match(name)
    return m.group(1) if m else None


_adapters: dict[str, TypeAdapter] = {}


# What distune itself reads from a trial whose model a user's function builds (model.builder,
# model.keras_tuner): how it trains, and, for a model that comes uncompiled, its optimizer.
LOOP_KEYS = ("batch_size", "epochs")
COMPILE_KEYS = ("optimizer", "learning_rate", "momentum", "nesterov", "lr_schedule", "lr_decay",
                "lr_drop", "lr_drop_every", "lr_cycle_epochs")


def check_value(name: str, value: Any, free: bool = False) -> Any:
    """Validate one value for hyperparameter `name`; raises ValueError saying what is wrong.
    `free`: the model is a user's function, whose own names (any but LOOP_KEYS) are its
    business; the dry build checks them."""
    if free and name not in LOOP_KEYS:
        return value
    field = field_for(name)
    if field is None:
        raise ValueError(f"unknown hyperparameter {name!r}; known: {', '.join(known_names())}")
    if field not in _adapters:
        info = Hyperparams.model_fields[field]
        annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        _adapters[field] = TypeAdapter(annotation)
    try:
        return _adapters[field].validate_python(value)
    except ValidationError as e:
        raise ValueError(f"{value!r} is not valid: {e.errors()[0]['msg']}") from None


def is_integer(name: str) -> bool:
    field = field_for(name)
    return field is not None and Hyperparams.model_fields[field].annotation in (int, int | None)


def known_names() -> list[str]:
    return [n for n in Hyperparams.model_fields] + ["units_N", "filters_N"]
