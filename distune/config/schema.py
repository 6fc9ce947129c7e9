"""The experiment's schema: one frozen, validated `Experiment` of typed sections. Pydantic
checks structure and types here (unknown keys are errors); what needs the registries and the
search space across sections is distune.config.checks."""

from __future__ import annotations

import math
import os
import re
from functools import cached_property
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from distune.errors import shown
from distune.ops.usercode import UserCode, UserCodeError, read_code
from distune.search.schedulers import SCHEDULERS
from distune.search.searchers import SEARCHERS
from distune.space.params import IntRange, Param, grid_points, grid_values, parse_param, to_ray


DEFAULT_PRESET = "mnist-mlp"


DEFAULT_STORAGE = "~/distune-results"


MAX_FOLDS = 20  # more folds cost more compute and barely sharpen the estimate


MIN_FOLD_IMAGES = 50  # a fold's validation part below this scores too coarsely to rank configs


MAX_FUSE = 64  # members per fused program


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    path: str | None = Field(None, description="MNIST .npz; else $DISTUNE_MNIST, Keras's cache, download")
    validation_split: float = Field(0.1, gt=0, lt=1, description="share of train held out for scoring")
    train_subset: int | None = Field(None, ge=100, description="use only the first N training images")


class ModelConfig(Section):
    architecture: Literal["mlp", "cnn"] = "mlp"
    builder: str | None = Field(None, description="your own model: 'module:function' or "
                                "'file.py:function' (beside the experiment file), called with "
                                "the trial's hyperparameters (a dict) and returning a keras.Model; "
                                "uncompiled, distune compiles it from the optimizer settings")
    keras_tuner: str | None = Field(None, description="a KerasTuner build_model(hp), unchanged "
                                    "('module:function' or 'file.py:function'); the space is "
                                    "discovered from it, and model.space adds to or overrides it")
    space: dict[str, Any] = Field(default_factory=dict, description="hyperparameter -> value or range")
    _code: UserCode | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _discover(cls, raw: Any) -> Any:
        """A KerasTuner function's own space first; the file's model.space on top."""
        if not isinstance(raw, dict) or not isinstance(raw.get("keras_tuner"), str):
            return raw
        import importlib.util

        from distune.space.keras_tuner import Untranslatable, discover

        if importlib.util.find_spec("keras_tuner") is None:
            raise ValueError("model.keras_tuner needs the keras-tuner package: "
                             "pip install 'distune[keras-tuner]'")
        build_model = _read_code(raw["keras_tuner"]).load()
        try:
            found = discover(build_model)
        except Untranslatable as e:
            raise ValueError(f"model.keras_tuner: {e}") from None
        except Exception as e:  # noqa: BLE001 - the user's function failed
            raise ValueError(f"model.keras_tuner: build_model(hp) raised {type(e).__name__}: "
                             f"{shown(str(e))}") from None
        space = raw.get("space") if isinstance(raw.get("space"), dict) else {}
        return {**raw, "space": {**found, **space}}

    @model_validator(mode="after")
    def _read(self) -> "ModelConfig":
        if self.builder and self.keras_tuner:
            raise ValueError("set model.builder or model.keras_tuner, not both")
        spec = self.builder or self.keras_tuner
        if spec and self.architecture != "mlp":  # (the default, which a saved experiment writes)
            raise ValueError("model.architecture is for distune's own models; your function "
                             "builds its own: drop model.architecture")
        if spec:
            self._code = _read_code(spec)
        return self

    @property
    def code(self) -> UserCode | None:
        """The user's model function's module (model.builder or model.keras_tuner)."""
        return self._code

    @cached_property
    def params(self) -> dict[str, Param]:
        """The parsed space (validated by Experiment, so parsing cannot fail here)."""
        return {k: parse_param(k, v, free=self.code is not None) for k, v in self.space.items()}


def _read_code(spec: str) -> UserCode:
    try:
        return read_code(spec)
    except UserCodeError as e:
        raise ValueError(str(e)) from None


class EarlyStopping(Section):
    patience: int = Field(3, ge=1, description="epochs without val_loss improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="smallest val_loss drop that counts")


class TrainConfig(Section):
    epochs: int = Field(10, ge=1, le=10000, description="epochs per trial (unless the space sets epochs)")
    early_stopping: EarlyStopping | None = Field(None, description="stop a trial that stops improving; keeps best weights")
    max_loss: float = Field(10.0, gt=0, description="a trial whose validation loss exceeds this at an "
                            "epoch's end (or whose loss is NaN/inf) has diverged; a uniform guess scores 2.3")
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints")
    backend: Literal["tensorflow", "jax"] = Field("tensorflow", description="Keras's backend in "
                                                  "the trials (scripts/bench/backends.py measures both)")


class SearchConfig(Section):
    searcher: str = "random"
    options: dict[str, Any] = Field(default_factory=dict, description="the searcher's own options")
    num_samples: int = Field(8, ge=1, description="trials (with grid entries: repeats of the grid)")
    metric: str = Field("val_accuracy", description="what trials are ranked by (never a test metric)")
    mode: Literal["max", "min"] = "max"
    max_grid: int = Field(256, ge=1, description="refuse grids with more trials than this")
    initial_points: list[dict[str, Any]] = Field(default_factory=list, description="configs to evaluate first")
    warm_start: str | list[str] | None = Field(None, description="earlier experiment(s) whose trials the searcher learns from")
    seed: int | None = Field(None, ge=0, description="the searcher's and scheduler's seed; default run.seed")
    cv_folds: int = Field(1, ge=1, le=MAX_FOLDS, description="score each trial by k-fold cross-validation on train+validation (k x the compute); 1: one validation split")

    @field_validator("searcher")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SEARCHERS:
            raise ValueError(SEARCHERS.unknown(v))
        return v

    @field_validator("metric")
    @classmethod
    def _not_test(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"{shown(v)} is not one of: {', '.join(METRICS)}")
        return v


class SelectConfig(Section):
    """After the search: retrain the best configs with fresh seeds and pick the best mean."""

    top_k: int = Field(0, ge=0, description="configs to retrain (the search's best distinct ones); 0 or 1: keep the search's winner")
    seeds: int = Field(3, ge=1, le=100, description="retrains (seeds) per config; the winner has the best mean")


class ScheduleConfig(Section):
    scheduler: str = "fifo"
    options: dict[str, Any] = Field(default_factory=dict, description="the scheduler's own options")

    @field_validator("scheduler")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SCHEDULERS:
            raise ValueError(SCHEDULERS.unknown(v))
        return v


class ResourcesConfig(Section):
    cpus_per_trial: float = Field(1, gt=0)
    gpus_per_trial: float = Field(0, ge=0, description="fractions pack several trials on one GPU")
    max_concurrent_trials: int | None = Field(None, ge=1, description="default: as many as fit")
    fuse: int = Field(1, ge=1, le=MAX_FUSE, description="train up to this many trials as one "
                      "JAX program per slot (each stays its own trial; needs train.backend: "
                      "jax); 1: off")

    def member_share(self) -> tuple[float, float]:
        """(CPUs, GPUs) one trial asks Ray for: a slot's, split among its `fuse` members (down
        to Ray's 0.0001 steps, so that `fuse` of them fit in a slot)."""
        share = lambda amount: math.floor(amount / self.fuse * 1e4) / 1e4  # noqa: E731
        return share(self.cpus_per_trial), share(self.gpus_per_trial)


class RunSection(Section):
    name: str | None = Field(None, description="experiment name; default <preset>-<timestamp>")
    storage: str = Field(DEFAULT_STORAGE, description="where experiments live: path or URI")
    address: str | None = Field(None, description="Ray cluster to join; default: start a local one")
    keep_checkpoints: int = Field(2, ge=1, description="best checkpoints kept per trial (latest always kept)")
    seed: int = Field(0, ge=0)
    max_failures: int = Field(2, ge=0, description="retries of a failed trial, from its last checkpoint")
    stop: dict[str, float] = Field(default_factory=dict, description="end the sweep once metric >= value (<= for *loss)")
    time_budget_s: float | None = Field(None, gt=0, description="end the sweep after this many seconds")
    report: bool = Field(True, description="write report.html at the end (`distune report` writes it any time)")
    mlflow: str | None = Field(None, description="MLflow tracking URI (sqlite:///path/mlflow.db, http://host:5000): one MLflow run per trial; needs distune[mlflow]")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", v):
            raise ValueError(f"{shown(v)}: use letters, digits, '.', '_' and '-' only")
        return v

    @field_validator("stop")
    @classmethod
    def _stop_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        for k in v:
            if k not in METRICS:
                raise ValueError(f"{shown(k)} is not one of: {', '.join(METRICS)}")
        return v


class Experiment(Section):
    """One experiment: what to train, how to search, where it runs and where results go."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    search: SearchConfig = SearchConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    select: SelectConfig = SelectConfig()
    resources: ResourcesConfig = ResourcesConfig()
    run: RunSection = RunSection()

    @property
    def max_epochs(self) -> int:
        """The most epochs any trial can run (schedulers' max_t)."""
        epochs = self.model.params.get("epochs")
        if epochs is None:
            return self.train.epochs
        return epochs.high if isinstance(epochs, IntRange) else max(grid_values(epochs))

    @property
    def planned_trials(self) -> int:
        """Trials the sweep will run (before any stop target or time budget ends it)."""
        if self.search.searcher == "stepwise":
            from distune.search.stepwise import StepwiseSearch, stages

            return StepwiseSearch(*stages(self.model.params, self.searcher_options().order)).total_trials()
        points = grid_points(self.model.params, SEARCHERS[self.search.searcher].can("enumerate"))
        return points * self.search.num_samples

    def searcher_options(self):
        return SEARCHERS[self.search.searcher].options(**self.search.options)

    def scheduler_options(self):
        return SCHEDULERS[self.schedule.scheduler].options(**self.schedule.options)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, default_flow_style=None)


# What a trial reports that can rank trials or stop a sweep. Test metrics are deliberately absent.
METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")


def trial_space(exp: Experiment) -> dict[str, Any]:
    """Ray Tune param_space: architecture + every space entry as a Ray domain or fixed value."""
    enumerate_choices = SEARCHERS[exp.search.searcher].can("enumerate")
    space = {} if exp.model.code else {"architecture": exp.model.architecture}
    space.update({k: to_ray(p, enumerate_choices) for k, p in exp.model.params.items()})
    return space


def storage_root(exp: Experiment) -> str:
    """Local storage as an absolute path; URIs as given."""
    if "://" in exp.run.storage:
        return exp.run.storage
    return os.path.abspath(os.path.expanduser(exp.run.storage))
