"""What pydantic cannot check alone: searcher and scheduler options against their registries,
pairings, tree spaces, grids, initial points, PBT's mutations, selection and folds; and the
one format every problem is reported in (a dotted path and what to fix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from distune.config.schema import MIN_FOLD_IMAGES, Experiment, storage_root
from distune.errors import shown
from distune.search.schedulers import MUTABLE, SCHEDULERS
from distune.search.searchers import SEARCHERS
from distune.space.hyperparams import PER_LAYER, Hyperparams, check_value
from distune.space.params import (Choice, Fixed, Grid, IntRange, Param, grid_points, grid_values,
                                  is_conditional, parse_param)

Problems = list[tuple[str, str]]


def describe(err: dict) -> tuple[str, str]:
    loc = [str(p) for p in err["loc"]]
    path = ".".join(loc)
    if err["type"] == "extra_forbidden":
        fields = _fields_at(loc[:-1])
        return path, f"unknown key{'; valid keys: ' + ', '.join(fields) if fields else ''}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("missing",):
        msg = "required"
    elif "input" in err and err["type"] not in ("value_error", "assertion_error"):
        msg = f"{shown(err['input'])}: {msg[0].lower() + msg[1:]}"
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


def semantic_problems(exp: Experiment) -> Problems:
    """Every cross-section problem of a structurally valid experiment, in a stable order.
    Later checks run only where earlier ones leave something they can judge."""
    params, problems = _parsed_space(exp)
    free = exp.model.code is not None  # a user's function: its own names are its business
    problems += ([] if free else _layer_problems(params)) + _mode_problems(exp)
    problems += _option_problems(exp) + _pairing_problems(exp)
    complete = len(params) == len(exp.model.space)  # every space entry parsed
    searcher = exp.search.searcher
    if searcher == "stepwise" and complete and not problems:
        problems += _stepwise_problems(exp, params)
    if searcher == "gp" and complete and not problems and not is_conditional(params):
        problems += _gp_problems(params)
    problems += _tree_problems(exp, params)
    problems += _point_problems(exp.search.initial_points, params, searcher, free)
    if exp.schedule.scheduler == "pbt" and not problems:
        problems += _pbt_problems(exp, params)
    grids = [k for k, p in params.items() if isinstance(p, Grid)]
    if grids and not SEARCHERS[searcher].can("grid"):
        problems.append(("search.searcher", f"{searcher} cannot take grid values "
                         f"({', '.join('model.space.' + g for g in grids)}); use choice, or searcher random/grid"))
    if SEARCHERS[searcher].can("enumerate") and complete:
        problems += _grid_problems(params, "model.space")
        if not problems and (n := exp.planned_trials) > exp.search.max_grid:
            problems.append(("search.max_grid", f"the grid has {n} trials, more than max_grid "
                             f"({exp.search.max_grid}); raise it (--set search.max_grid={n}) "
                             "if you mean it, or search with random/hyperopt/optuna"))
    return problems + _selection_problems(exp, not problems and complete) + _fuse_problems(exp)


def _parsed_space(exp: Experiment) -> tuple[dict[str, Param], Problems]:
    """model.space parsed entry by entry; the entries that failed are left out."""
    problems: Problems = []
    params: dict[str, Param] = {}
    for name, raw in exp.model.space.items():
        if name == "architecture" and not isinstance(raw, dict):
            problems.append(("model.space.architecture", "set model.architecture instead "
                             "(or search it: {choice: [mlp, {value: cnn, space: {...}}]})"))
            continue
        try:
            params[name] = parse_param(name, raw, free=exp.model.code is not None)
        except ValueError as e:
            problems.append((f"model.space.{name}", str(e)))
    return params, problems


def _layer_problems(params: dict[str, Param]) -> Problems:
    """units_N / filters_N for a layer the model never has: N above the most hidden_layers /
    conv_blocks any branch of the space can set (a searched count: its highest value)."""
    counts = {"units": ("hidden_layers", "dense layers"), "filters": ("conv_blocks", "conv blocks")}
    entries = list(_entries(params, "model.space"))
    problems = []
    for path, name, _ in entries:
        m = PER_LAYER.match(name)
        if m is None:
            continue
        field, what = counts[m.group(1)]
        most = _most(field, [p for _, n, p in entries if n == field], field in params)
        if int(m.group(2)) > most:
            problems.append((path, f"the model has at most {most} {what} ({field}), so "
                             f"{name} sets none; use {m.group(1)}_1 .. {m.group(1)}_{most} "
                             f"or raise {field}" if most else
                             f"the model has no {what} ({field} is 0); drop {name}"))
    return problems


def _entries(params: dict[str, Param], path: str):
    """(dotted path, name, param) of every space entry, those of sub-spaces included."""
    for name, p in params.items():
        yield f"{path}.{name}", name, p
        if isinstance(p, Choice) and p.conditional:
            for value, branch in zip(p.values, p.branches):
                yield from _entries(branch, f"{path}.{name}={value}")


def _most(field: str, params: list[Param], set_at_top: bool) -> int:
    """The highest value `field` can take: over every place the space sets it, and its
    default wherever the top level leaves it unset."""
    highest = [p.value if isinstance(p, Fixed) else p.high if isinstance(p, IntRange) else max(p.values)
               for p in params]
    default = [] if set_at_top else [Hyperparams.model_fields[field].default]
    return int(max(highest + default))


def _mode_problems(exp: Experiment) -> Problems:
    """A loss ranked highest-first (or accuracy lowest-first) picks the worst trial as winner."""
    metric, mode = exp.search.metric, exp.search.mode
    wanted = "min" if metric.endswith("loss") else "max"
    if mode == wanted:
        return []
    return [("search.mode", f"{metric} is {'a loss' if wanted == 'min' else 'an accuracy'}, "
             f"better when {'lower' if wanted == 'min' else 'higher'}: use mode: {wanted} "
             f"(mode {mode} would pick the worst trial)")]


def warm_start_problems(exp: Experiment) -> Problems:
    """search.warm_start experiments that are not there, found before any data is read or Ray
    starts. Cheap: directories only. A name is a sibling experiment under run.storage (as the
    sweep resolves it); under a URI storage it is fetched, and checked, when the sweep starts."""
    sources = exp.search.warm_start
    listed = isinstance(sources, list)
    root = storage_root(exp)
    problems = []
    for i, source in enumerate(sources if listed else [sources] if sources else []):
        if "://" in source or "://" in root or Path(source).expanduser().is_dir():
            continue
        if not (Path(root) / source).is_dir():
            problems.append((f"search.warm_start{f'.{i}' if listed else ''}",
                             f"no experiment {shown(source)} in run.storage ({root}), nor a "
                             "directory of that name; name an earlier experiment there, or give its directory"))
    return problems


def _option_problems(exp: Experiment) -> Problems:
    """search.options and schedule.options against the chosen entry's own options model."""
    problems: Problems = []
    for section, registry, name, options in (
        ("search", SEARCHERS, exp.search.searcher, exp.search.options),
        ("schedule", SCHEDULERS, exp.schedule.scheduler, exp.schedule.options),
    ):
        try:
            registry[name].options(**options)
        except ValidationError as e:
            for err in e.errors():
                path, msg = describe(err)
                if err["type"] == "extra_forbidden":
                    known = list(registry[name].options.model_fields)
                    msg = f"unknown option for {name}; valid: {', '.join(known) or 'none'}"
                problems.append((f"{section}.options{'.' + path if path else ''}", msg))
    return problems


def _pairing_problems(exp: Experiment) -> Problems:
    """A scheduler that works with some searchers only, and the other way round."""
    searcher, scheduler = exp.search.searcher, exp.schedule.scheduler
    problems: Problems = []
    only_with = SCHEDULERS[scheduler].only_with
    if only_with and searcher not in only_with:
        problems.append(("schedule.scheduler", f"{scheduler} works only with searcher "
                         f"{' or '.join(only_with)}, not {searcher}"))
    needs = SEARCHERS[searcher].only_with
    if needs and scheduler not in needs:
        problems.append(("search.searcher", f"{searcher} works only with scheduler "
                         f"{' or '.join(needs)}, not {scheduler}"))
    return problems


def _stepwise_problems(exp: Experiment, params: dict[str, Param]) -> Problems:
    from distune.search.stepwise import stages  # Ray's Searcher class

    try:
        stages(params, exp.searcher_options().order)
    except ValueError as e:
        return [("search.options.order" if str(e).startswith("order") else
                 f"model.space.{str(e).split(':')[0]}", str(e).split(": ", 1)[-1])]
    return []


def _gp_problems(params: dict[str, Param]) -> Problems:
    from distune.search.gp import dimensions  # Ray's Searcher class

    try:
        dimensions(params)
    except ValueError as e:
        return [("model.space", str(e))]
    return []


def _tree_problems(exp: Experiment, params: dict[str, Param]) -> Problems:
    """What a tree-structured space rules out; warm starts need a flat one too."""
    searcher, problems = exp.search.searcher, []
    if is_conditional(params):
        if not SEARCHERS[searcher].can("tree"):
            problems.append(("search.searcher", f"{searcher} cannot search a tree-structured space "
                             f"(choices with sub-spaces); use {', '.join(SEARCHERS.able('tree'))}"))
        if exp.search.initial_points:
            problems.append(("search.initial_points", "not supported with a tree-structured "
                             "space yet; remove them or flatten the space"))
        if exp.schedule.scheduler == "pbt":
            problems.append(("schedule.scheduler", "pbt cannot mutate a tree-structured space"))
    if exp.search.warm_start is not None and (not SEARCHERS[searcher].can("warm_start")
                                              or is_conditional(params)):
        problems.append(("search.warm_start", f"needs searcher "
                         f"{' or '.join(SEARCHERS.able('warm_start'))} over a flat space "
                         "(random, grid and stepwise do not learn from past trials)"))
    return problems


def _pbt_problems(exp: Experiment, params: dict[str, Param]) -> Problems:
    opts = exp.scheduler_options()
    searched = [k for k, p in params.items() if not isinstance(p, Fixed) and k in MUTABLE]
    wanted = opts.mutate if opts.mutate is not None else searched
    missing = [m for m in wanted if m not in searched]
    if not wanted or missing:
        return [("schedule.options.mutate", "pbt needs mutable hyperparameters that the space "
                 "searches (e.g. learning_rate: {loguniform: [...]}); "
                 f"{'not searched: ' + ', '.join(missing) if missing else 'none found'}")]
    return []


def _fuse_problems(exp: Experiment) -> Problems:
    """resources.fuse: what can share one fused JAX program (distune.trial.fused), and a slot
    that can hold its members."""
    res, k = exp.resources, exp.resources.fuse
    if k == 1:
        return []
    problems: Problems = []
    if exp.train.backend != "jax":
        problems.append(("train.backend", f"resources.fuse: {k} trains its members as one JAX "
                         "program: set train.backend: jax (or resources.fuse: 1)"))
    if exp.model.code is not None:
        problems.append(("resources.fuse", "fuses distune's own models (model.architecture); "
                         "your model.builder or model.keras_tuner model trains unfused: drop "
                         "resources.fuse"))
    if exp.search.cv_folds > 1:
        problems.append(("resources.fuse", "a cross-validated trial (search.cv_folds > 1) trains "
                         "its folds itself and is not fused: use one of the two"))
    if res.max_concurrent_trials is not None and res.max_concurrent_trials < k:
        problems.append(("resources.max_concurrent_trials", f"{res.max_concurrent_trials} trials "
                         f"at once never fill a fused program of {k}: raise it to at least {k}, "
                         "or lower resources.fuse"))
    cpus, gpus = res.member_share()
    if cpus == 0 or (res.gpus_per_trial > 0 and gpus == 0):
        problems.append(("resources.fuse", f"{k} members of a slot of {res.cpus_per_trial:g} CPUs "
                         f"and {res.gpus_per_trial:g} GPUs would each ask Ray for less than its "
                         "smallest share (0.0001): lower resources.fuse or raise the slot"))
    return problems


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
    try:
        points = grid_points(exp.model.params, True)
    except ValueError:  # a continuous range: every trial may differ
        return exp.planned_trials
    return min(points, exp.planned_trials)


def _grid_problems(params: dict[str, Param], path: str) -> list[tuple[str, str]]:
    """Every hyperparameter the grid cannot enumerate, branches included."""
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


def _point_problems(points: list[dict], params: dict[str, Param], searcher: str,
                    free: bool = False) -> list[tuple[str, str]]:
    """initial_points must set every searched hyperparameter, each to a valid value."""
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
                check_value(k, v, free)
            except ValueError as e:
                problems.append((f"{path}.{k}", str(e)))
    return problems
