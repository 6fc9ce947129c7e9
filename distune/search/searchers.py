"""Search algorithms by name. Ray imports stay inside factories so `validate` is fast."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from distune.ops import HEARD
from distune.search.registry import Context, Options, Registry

SEARCHERS = Registry("searcher")
# Capabilities (Registry.add): searchers built on Ray's BasicVariantGenerator understand
# {grid: [...]}; model-based ones (hyperopt, optuna) raise on it, so the config checks reject
# grids for them up front. The grid searcher enumerates every choice and small int range.


class NoOptions(Options):
    pass


@SEARCHERS.add("random", "random sampling; cheap, parallel, a strong baseline", NoOptions,
               can=("grid", "tree"))
def _random(opts: NoOptions, ctx: Context):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if ctx.conditional:
        from distune.search.tree import TreeSearch

        return TreeSearch(ctx.params, ctx.seed, grid=False)

    # Tune applies max_concurrent_trials to every searcher but this one: it must be told itself.
    return BasicVariantGenerator(random_state=ctx.seed, points_to_evaluate=ctx.points or None,
                                 max_concurrent=ctx.max_concurrent)


@SEARCHERS.add("grid", "every combination of choices (num_samples repeats the grid)", NoOptions,
               can=("grid", "enumerate", "tree"))
def _grid(opts: NoOptions, ctx: Context):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if ctx.conditional:
        from distune.search.tree import TreeSearch

        return TreeSearch(ctx.params, ctx.seed, grid=True, repeats=ctx.num_samples)

    # Tune applies max_concurrent_trials to every searcher but this one: it must be told itself.
    return BasicVariantGenerator(random_state=ctx.seed, points_to_evaluate=ctx.points or None,
                                 max_concurrent=ctx.max_concurrent)


class HyperOptOptions(Options):
    n_initial_points: int = Field(10, ge=1, description="random trials before TPE takes over")
    gamma: float = Field(0.25, gt=0, lt=1, description="quantile of trials TPE calls good")


@SEARCHERS.add("hyperopt", "Tree-structured Parzen Estimator (hyperopt): learns from past trials",
               HyperOptOptions, can=("tree", "warm_start"))
def _hyperopt(opts: HyperOptOptions, ctx: Context):
    from distune.search.warmstart import hyperopt_with_history

    HyperOptSearch = hyperopt_with_history()  # noqa: N806 - Ray's class, plus warm starts
    if ctx.conditional:
        from distune.search.tree import Flattened, hyperopt_space

        return Flattened(HyperOptSearch(
            hyperopt_space(ctx.params), metric=ctx.metric, mode=ctx.mode, gamma=opts.gamma,
            n_initial_points=opts.n_initial_points, random_state_seed=ctx.seed))
    return HyperOptSearch(n_initial_points=opts.n_initial_points, gamma=opts.gamma,
                          random_state_seed=ctx.seed, points_to_evaluate=ctx.points or None)


class OptunaOptions(Options):
    sampler: Literal["tpe", "gp", "cmaes", "qmc", "random"] = Field(
        "tpe", description="tpe, gp (Gaussian process + expected improvement), cmaes, qmc, random")
    n_startup_trials: int = Field(10, ge=0, description="random trials before the tpe, gp or "
                                  "cmaes sampler takes over")


@SEARCHERS.add("optuna", "Optuna with a choice of sampler (TPE by default, or GP, CMA-ES, QMC)",
               OptunaOptions, can=("tree", "warm_start"))
def _optuna(opts: OptunaOptions, ctx: Context):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=ctx.seed, n_startup_trials=opts.n_startup_trials),
        "gp": lambda: optuna.samplers.GPSampler(seed=ctx.seed, n_startup_trials=opts.n_startup_trials),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=ctx.seed, n_startup_trials=opts.n_startup_trials),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=ctx.seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=ctx.seed),
    }
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if HEARD in logging.getLogger("optuna").handlers:  # quiet: each warning one line, once
        optuna.logging.disable_default_handler()
    if opts.sampler == "gp":
        try:
            import torch  # noqa: F401  (Optuna's GP sampler is written in PyTorch)
        except ImportError:
            raise_missing("gp", "PyTorch")
    if ctx.conditional:
        from distune.search.tree import Flattened, OptunaDefineByRun

        return Flattened(OptunaSearch(OptunaDefineByRun(ctx.params), metric=ctx.metric,
                                      mode=ctx.mode, sampler=samplers[opts.sampler]()))
    return OptunaSearch(sampler=samplers[opts.sampler](), points_to_evaluate=ctx.points or None)


class GPOptions(Options):
    acq: Literal["ei", "pi", "ucb"] = Field("ei", description="acquisition: expected "
                                            "improvement, probability of improvement, or upper "
                                            "confidence bound")
    xi: float = Field(0.01, ge=0, description="exploration of ei/pi: the improvement that counts")
    kappa: float = Field(1.96, ge=0, description="exploration of ucb: standard deviations added")
    n_initial_points: int = Field(5, ge=1, description="random trials before the GP takes over")
    kernel: Literal["matern52", "matern32", "rbf"] = Field("matern52", description="GP kernel "
                                                           "(Matern 5/2, Matern 3/2, or RBF)")


@SEARCHERS.add("gp", "Gaussian process + expected improvement (scikit-optimize, no PyTorch): "
               "Bayesian optimisation over a flat space", GPOptions, can=("warm_start",))
def _gp(opts: GPOptions, ctx: Context):
    from distune.search.gp import GPSearch

    return GPSearch(ctx.params, opts, ctx.seed, ctx.points)


class BOHBOptions(Options):
    pass


@SEARCHERS.add("bohb", "BOHB: TPE-like model inside Hyperband brackets (needs scheduler "
               "hyperband_bohb)", BOHBOptions, only_with=("hyperband_bohb",))
def _bohb(opts: BOHBOptions, ctx: Context):
    try:
        from ray.tune.search.bohb import TuneBOHB
    except ImportError:
        raise_missing("bohb", "hpbandster ConfigSpace")
    return TuneBOHB(seed=ctx.seed, points_to_evaluate=ctx.points or None)


class StepwiseOptions(Options):
    order: list[str] | None = Field(None, description="hyperparameters to tune, one at a time, in "
                                    "this order (default: the space's order)")


@SEARCHERS.add("stepwise", "one hyperparameter at a time: try each value with the others at "
               "their first listed value, keep the best, move on", StepwiseOptions,
               can=("grid",))
def _stepwise(opts: StepwiseOptions, ctx: Context):
    from distune.search.stepwise import StepwiseSearch, stages

    return StepwiseSearch(*stages(ctx.params, opts.order))


def raise_missing(extra: str, packages: str):
    from distune.errors import DistuneError

    raise DistuneError(f"this searcher needs {packages}, which is not installed: "
                       f"pip install 'distune[{extra}]'")
