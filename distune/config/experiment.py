"""YAML file or preset + CLI overrides -> one validated `Experiment`. Nothing else reads raw dicts.

Validation happens in two passes with one error format: pydantic checks structure and types
(unknown keys are errors), then `_semantic_problems` checks what needs the registries and the
search space (a searcher's options, a grid given to hyperopt, ...). Every problem is reported
at once, each with its dotted path.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from distune.errors import ConfigError, DistuneError
from distune.search.schedulers import SCHEDULERS
from distune.search.searchers import ENUMERATING, GRID_CAPABLE, SEARCHERS, TREE_CAPABLE
from distune.space.params import (Fixed, Grid, IntRange, Param, enumerate_space, grid_points, grid_values,
                           is_conditional, parse_param)

DEFAULT_PRESET = "mnist-mlp"
DEFAULT_STORAGE = "~/distune-results"
MAX_FOLDS = 20  # more folds cost more compute and barely sharpen the estimate
MIN_FOLD_IMAGES = 50  # a fold's validation part below this scores too coarsely to rank configs


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    path: str | None = Field(None, description="MNIST .npz; else $DISTUNE_MNIST, Keras's cache, download")
    validation_split: float = Field(0.1, gt=0, lt=1, description="share of train held out for scoring")
    train_subset: int | None = Field(None, ge=100, description="use only the first N training images")


class ModelConfig(Section):
    architecture: Literal["mlp", "cnn"] = "mlp"
    space: dict[str, Any] = Field(default_factory=dict, description="hyperparameter -> value or range")

    @cached_property
    def params(self) -> dict[str, Param]:
        """The parsed space (validated by Experiment, so parsing cannot fail here)."""
        return {k: parse_param(k, v) for k, v in self.space.items()}


class EarlyStopping(Section):
    patience: int = Field(3, ge=1, description="epochs without val_loss improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="smallest val_loss drop that counts")


class TrainConfig(Section):
    epochs: int = Field(10, ge=1, le=10000, description="epochs per trial (unless the space sets epochs)")
    early_stopping: EarlyStopping | None = Field(None, description="stop a trial that stops improving; keeps best weights")
    max_loss: float = Field(1e3, gt=0, description="a trial whose loss exceeds this (or is NaN) has diverged")
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints")


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
            raise ValueError(f"{v!r} is not one of: {', '.join(METRICS)}")
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
            raise ValueError(f"{v!r}: use letters, digits, '.', '_' and '-' only")
        return v

    @field_validator("stop")
    @classmethod
    def _stop_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        for k in v:
            if k not in METRICS:
                raise ValueError(f"{k!r} is not one of: {', '.join(METRICS)}")
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
        if self.search.searcher in ENUMERATING and is_conditional(self.model.params):
            return len(enumerate_space(self.model.params)) * self.search.num_samples
        points = grid_points(self.model.params, self.search.searcher in ENUMERATING)
        return points * self.search.num_samples

    def searcher_options(self):
        return SEARCHERS[self.search.searcher].options(**self.search.options)

    def scheduler_options(self):
        return SCHEDULERS[self.schedule.scheduler].options(**self.schedule.options)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, default_flow_style=None)


# What a trial reports that can rank trials or stop a sweep. Test metrics are deliberately absent.
METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")

# Short CLI flags -> the field they set.
FLAG_FIELDS = {
    "searcher": "search.searcher",
    "scheduler": "schedule.scheduler",
    "samples": "search.num_samples",
    "data": "data.path",
    "storage": "run.storage",
    "name": "run.name",
    "address": "run.address",
}


def presets() -> dict[str, str]:
    """Shipped presets: name -> first comment line of the file."""
    out = {}
    for f in sorted(resources.files("distune.presets").iterdir(), key=lambda f: f.name):
        if f.name.endswith(".yaml"):
            first = f.read_text().splitlines()[0] if f.read_text() else ""
            out[f.name[:-5]] = first.lstrip("# ").strip()
    return out


def resolve_source(source: str | None) -> tuple[str, str, str]:
    """(label, stem, YAML text) for a file path or a preset name; None is the default preset."""
    source = source or DEFAULT_PRESET
    path = Path(source).expanduser()
    if path.is_file():
        return str(path), path.stem, path.read_text()
    if source in presets():
        return f"preset {source}", source, (resources.files("distune.presets") / f"{source}.yaml").read_text()
    hint = "a YAML file" if source.endswith((".yaml", ".yml")) or "/" in source else "a preset"
    raise DistuneError(f"{source}: no such file or preset ({hint} was expected). "
                       f"Presets: {', '.join(presets())}; or pass the path of your own YAML file.")


def load_experiment(source: str | None = None, overrides: list[str] = (),
                    flags: dict[str, Any] | None = None) -> tuple[Experiment, str]:
    """Load, override and validate. Returns the experiment and its stem (for default names)."""
    label, stem, text = resolve_source(source)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DistuneError(f"{label}: not valid YAML{where}: {problem}. Fix the file's syntax.") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(label, [("", f"the file must be a mapping of sections "
                                        f"({', '.join(Experiment.model_fields)}), got {type(raw).__name__}")])
    for key, value in (flags or {}).items():
        if value is not None:
            _switch_entry(raw, key, value)
            _set_path(raw, FLAG_FIELDS[key], value)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DistuneError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set train.epochs=3")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        _set_path(raw, key.strip(), parsed)
    _anchor_paths(raw)
    return validate(raw, label), stem


def local_path(value: str) -> bool:
    """A path on this machine (not a URI), written relative to the current directory."""
    return "://" not in value and not value.startswith("~") and not os.path.isabs(value)


def _anchor_paths(raw: dict) -> None:
    """Relative data.path, run.storage and warm-start directories, anchored to the caller's directory now: the saved
    config (distune.yaml, a submitted job's file) then means the same from any directory or
    process. `~` stays as written, so it names the home of the machine that runs the job."""
    for section, key in (("data", "path"), ("run", "storage")):
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str) and node[key] and local_path(node[key]):
            node[key] = os.path.abspath(node[key])
    search = raw.get("search")
    sources = search.get("warm_start") if isinstance(search, dict) else None
    if isinstance(sources, (str, list)):  # a directory here, not a sibling experiment's name
        anchored = [os.path.abspath(s) if isinstance(s, str) and local_path(s) and os.path.isdir(s)
                    else s for s in ([sources] if isinstance(sources, str) else sources)]
        search["warm_start"] = anchored[0] if isinstance(sources, str) else anchored


def validate(raw: dict, label: str = "experiment") -> Experiment:
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(label, [_describe(err) for err in e.errors()]) from None
    problems = _semantic_problems(exp)
    if problems:
        raise ConfigError(label, problems)
    return exp


def _switch_entry(raw: dict, flag: str, value: Any) -> None:
    """--searcher/--scheduler to another name drops the file's options for the old one."""
    section, key = {"searcher": ("search", "searcher"), "scheduler": ("schedule", "scheduler")}.get(flag, (None, None))
    if section and isinstance(raw.get(section), dict) and raw[section].get(key) not in (None, value):
        raw[section].pop("options", None)


def _set_path(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _describe(err: dict) -> tuple[str, str]:
    loc = [str(p) for p in err["loc"]]
    path = ".".join(loc)
    if err["type"] == "extra_forbidden":
        fields = _fields_at(loc[:-1])
        return path, f"unknown key{'; valid keys: ' + ', '.join(fields) if fields else ''}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("missing",):
        msg = "required"
    elif "input" in err and err["type"] not in ("value_error", "assertion_error"):
        msg = f"{err['input']!r}: {msg[0].lower() + msg[1:]}"
    return path, msg


def _fields_at(loc: list[str]) -> list[str]:
    """Field names of the section at `loc`, for 'unknown key' messages."""
    model: Any = Experiment
    for part in loc:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return []
        model = fields[part].annotation
        if get_origin(model) is not None:  # X | None
            model = next((a for a in get_args(model) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return list(getattr(model, "model_fields", {}))


def _semantic_problems(exp: Experiment) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    params: dict[str, Param] = {}
    for name, raw in exp.model.space.items():
        if name == "architecture" and not isinstance(raw, dict):
            problems.append(("model.space.architecture", "set model.architecture instead "
                             "(or search it: {choice: [mlp, {value: cnn, space: {...}}]})"))
            continue
        try:
            params[name] = parse_param(name, raw)
        except ValueError as e:
            problems.append((f"model.space.{name}", str(e)))
    for section, registry, name, options in (
        ("search", SEARCHERS, exp.search.searcher, exp.search.options),
        ("schedule", SCHEDULERS, exp.schedule.scheduler, exp.schedule.options),
    ):
        try:
            registry[name].options(**options)
        except ValidationError as e:
            for err in e.errors():
                path, msg = _describe(err)
                if err["type"] == "extra_forbidden":
                    known = list(registry[name].options.model_fields)
                    msg = f"unknown option for {name}; valid: {', '.join(known) or 'none'}"
                problems.append((f"{section}.options{'.' + path if path else ''}", msg))
    searcher, scheduler = exp.search.searcher, exp.schedule.scheduler
    only_with = SCHEDULERS[scheduler].only_with
    if only_with and searcher not in only_with:
        problems.append(("schedule.scheduler", f"{scheduler} works only with searcher "
                         f"{' or '.join(only_with)}, not {searcher}"))
    needs = SEARCHERS[searcher].only_with
    if needs and scheduler not in needs:
        problems.append(("search.searcher", f"{searcher} works only with scheduler "
                         f"{' or '.join(needs)}, not {scheduler}"))
    if searcher == "stepwise" and len(params) == len(exp.model.space) and not problems:
        from distune.search.stepwise import stages

        try:
            stages(params, exp.searcher_options().order)
        except ValueError as e:
            problems.append(("search.options.order" if str(e).startswith("order") else
                             f"model.space.{str(e).split(':')[0]}", str(e).split(": ", 1)[-1]))
    if is_conditional(params):
        if searcher not in TREE_CAPABLE:
            problems.append(("search.searcher", f"{searcher} cannot search a tree-structured space "
                             f"(choices with sub-spaces); use {', '.join(sorted(TREE_CAPABLE))}"))
        if exp.search.initial_points:
            problems.append(("search.initial_points", "not supported with a tree-structured "
                             "space yet; remove them or flatten the space"))
        if scheduler == "pbt":
            problems.append(("schedule.scheduler", "pbt cannot mutate a tree-structured space"))
    if exp.search.warm_start is not None:
        from distune.search.warmstart import WARM_CAPABLE

        if searcher not in WARM_CAPABLE or is_conditional(params):
            problems.append(("search.warm_start", "needs searcher hyperopt or optuna over a flat "
                             "space (random, grid and stepwise do not learn from past trials)"))
    problems += _point_problems(exp.search.initial_points, params, searcher)
    if scheduler == "pbt" and not problems:
        from distune.search.schedulers import MUTABLE

        opts = exp.scheduler_options()
        searched = [k for k, p in params.items() if not isinstance(p, Fixed) and k in MUTABLE]
        wanted = opts.mutate if opts.mutate is not None else searched
        missing = [m for m in wanted if m not in searched]
        if not wanted or missing:
            problems.append(("schedule.options.mutate", "pbt needs mutable hyperparameters that "
                             "the space searches (e.g. learning_rate: {loguniform: [...]}); "
                             f"{'not searched: ' + ', '.join(missing) if missing else 'none found'}"))
    grids = [k for k, p in params.items() if isinstance(p, Grid)]
    if grids and searcher not in GRID_CAPABLE:
        problems.append(("search.searcher", f"{searcher} cannot take grid values "
                         f"({', '.join('model.space.' + g for g in grids)}); use choice, or searcher random/grid"))
    if searcher in ENUMERATING and len(params) == len(exp.model.space):
        problems += _grid_problems(params, "model.space")
        if not problems:
            n = exp.planned_trials
            if n > exp.search.max_grid:
                problems.append(("search.max_grid", f"the grid has {n} trials, more than max_grid "
                                 f"({exp.search.max_grid}); raise it (--set search.max_grid={n}) "
                                 "if you mean it, or search with random/hyperopt/optuna"))
    countable = not problems and len(params) == len(exp.model.space)
    return problems + _selection_problems(exp, countable)


def _selection_problems(exp: Experiment, countable: bool) -> list[tuple[str, str]]:
    """select.top_k within the configs the sweep tries, and without pbt; cv folds big enough to score."""
    problems = []
    top_k, folds, images = exp.select.top_k, exp.search.cv_folds, exp.data.train_subset
    if top_k > 1 and exp.schedule.scheduler == "pbt":
        problems.append(("select.top_k", "pbt trials change their config as they train; a "
                         "config retrained from scratch is not what scored. Use 0 with pbt"))
    elif top_k > 1 and countable and top_k > (n := _distinct_configs(exp)):
        problems.append(("select.top_k", f"{top_k} is more than the {n} distinct config"
                         f"{'s' if n != 1 else ''} the sweep can try; lower it, or widen the "
                         "search (search.num_samples, model.space)"))
    if folds > 1 and images is not None and images // folds < MIN_FOLD_IMAGES:
        problems.append(("search.cv_folds", f"{folds} folds of data.train_subset={images} images "
                         f"leave fewer than {MIN_FOLD_IMAGES} per fold; use at most "
                         f"{max(1, images // MIN_FOLD_IMAGES)} folds or more images"))
    return problems


def _distinct_configs(exp: Experiment) -> int:
    """At most how many different configs the sweep tries: its trials, or fewer when the
    space is discrete (a grid repeated num_samples times still has one config per point)."""
    params = exp.model.params
    try:
        points = len(enumerate_space(params)) if is_conditional(params) else grid_points(params, True)
    except ValueError:  # a continuous range: every trial may differ
        return exp.planned_trials
    return min(points, exp.planned_trials)


def _grid_problems(params: dict[str, Param], path: str) -> list[tuple[str, str]]:
    """Every hyperparameter the grid cannot enumerate, branches included."""
    from distune.space.params import Choice

    problems = []
    for k, p in params.items():
        try:
            grid_values(p)
        except ValueError as e:
            problems.append((f"{path}.{k}", str(e)))
        if isinstance(p, Choice) and p.conditional:
            for value, branch in zip(p.values, p.branches):
                problems += _grid_problems(branch, f"{path}.{k}={value}")
    return problems


def _point_problems(points: list[dict], params: dict[str, Param], searcher: str) -> list[tuple[str, str]]:
    """initial_points must set every searched hyperparameter, each to a valid value."""
    from distune.space.hyperparams import check_value

    if points and searcher == "stepwise":
        return [("search.initial_points", "stepwise walks its own order; drop initial_points")]
    searched = {k for k, p in params.items() if not isinstance(p, Fixed)}
    problems = []
    for i, point in enumerate(points):
        path = f"search.initial_points.{i}"
        missing, extra = sorted(searched - set(point)), sorted(set(point) - searched)
        if missing or extra:
            problems.append((path, (f"missing {', '.join(missing)}" if missing else "") +
                             ("; " if missing and extra else "") +
                             (f"{', '.join(extra)} not searched by model.space" if extra else "")))
        for k, v in point.items():
            try:
                check_value(k, v)
            except ValueError as e:
                problems.append((f"{path}.{k}", str(e)))
    return problems


def trial_space(exp: Experiment) -> dict[str, Any]:
    """Ray Tune param_space: architecture + every space entry as a Ray domain or fixed value."""
    from distune.space.params import to_ray

    enumerate_choices = exp.search.searcher in ENUMERATING
    space = {"architecture": exp.model.architecture}
    space.update({k: to_ray(p, enumerate_choices) for k, p in exp.model.params.items()})
    return space


def storage_root(exp: Experiment) -> str:
    """Local storage as an absolute path; URIs as given."""
    if "://" in exp.run.storage:
        return exp.run.storage
    return os.path.abspath(os.path.expanduser(exp.run.storage))


