"""Trial schedulers (early stopping) by name. Time is counted in epochs (training_iteration)."""

from __future__ import annotations

from pydantic import Field, model_validator

from distune.search.registry import Context, Options, Registry

SCHEDULERS = Registry("scheduler")
EPOCHS = "training_iteration"  # one step() of the trainable is one epoch


class NoOptions(Options):
    pass


@SCHEDULERS.add("fifo", "no early stopping: every trial runs all its epochs", NoOptions)
def _fifo(opts: NoOptions, ctx: Context):
    from distune.search.replayed import ResumableFIFO

    return ResumableFIFO()


class ASHAOptions(Options):
    max_t: int | None = Field(None, ge=1, description="epochs a trial may reach; default train.epochs")
    grace_period: int = Field(1, ge=1, description="epochs before a trial can be stopped "
                              "(capped at max_t when max_t defaults to train.epochs)")
    reduction_factor: float = Field(3, gt=1, description="keep 1/reduction_factor at each rung")
    brackets: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _grace(self) -> "ASHAOptions":
        if self.max_t is not None and self.grace_period > self.max_t:
            raise ValueError(f"grace_period ({self.grace_period}) must be <= max_t ({self.max_t})")
        return self


@SCHEDULERS.add("asha", "asynchronous successive halving: stops weak trials at rungs, "
                "no idle workers", ASHAOptions)
def _asha(opts: ASHAOptions, ctx: Context):
    from distune.search.replayed import ResumableASHA

    max_t = opts.max_t or ctx.max_epochs
    # With max_t taken from train.epochs (a short debugging run, say), the grace period is
    # capped at it; an explicit max_t below grace_period is a config error instead.
    return ResumableASHA(time_attr=EPOCHS, max_t=max_t, grace_period=min(opts.grace_period, max_t),
                         reduction_factor=opts.reduction_factor, brackets=opts.brackets)


class HyperbandOptions(Options):
    max_t: int | None = Field(None, ge=1, description="epochs a trial may reach; default train.epochs")
    reduction_factor: float = Field(3, gt=1)


@SCHEDULERS.add("hyperband", "synchronous Hyperband: brackets of successive halving",
                HyperbandOptions)
def _hyperband(opts: HyperbandOptions, ctx: Context):
    from distune.search.replayed import ResumableHyperBand

    return ResumableHyperBand(time_attr=EPOCHS, max_t=opts.max_t or ctx.max_epochs,
                              reduction_factor=opts.reduction_factor)


class MedianOptions(Options):
    grace_period: int = Field(1, ge=1, description="epochs before a trial can be stopped")
    min_samples_required: int = Field(3, ge=1, description="trials to compare against")


@SCHEDULERS.add("median", "median stopping rule: stop a trial below the median of others "
                "at the same epoch", MedianOptions)
def _median(opts: MedianOptions, ctx: Context):
    from distune.search.replayed import ResumableMedian

    return ResumableMedian(time_attr=EPOCHS, grace_period=opts.grace_period,
                              min_samples_required=opts.min_samples_required)


# Hyperparameters PBT may change in a running trial: none of them changes the shapes of the
# weights or the optimizer's state, so a trial can continue from another trial's checkpoint.
MUTABLE = ("learning_rate", "dropout", "l2", "max_norm", "momentum", "batch_size")


class PBTOptions(Options):
    perturbation_interval: int = Field(2, ge=1, description="epochs between exploit/explore steps")
    mutate: list[str] | None = Field(None, description="hyperparameters to mutate; default: every "
                                     f"searched one of {', '.join(MUTABLE)}")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="bottom share that copies the top")
    resample_probability: float = Field(0.25, ge=0, le=1)

    @model_validator(mode="after")
    def _mutable(self) -> "PBTOptions":
        bad = [m for m in self.mutate or () if m not in MUTABLE]
        if bad:
            raise ValueError(f"cannot mutate {', '.join(bad)} in a running trial; mutable: {', '.join(MUTABLE)}")
        return self


def pbt_mutations(opts: PBTOptions, space: dict) -> dict:
    """The searched entries of the space PBT may mutate (Ray domains or grid lists)."""
    from ray.tune.search.sample import Domain

    names = opts.mutate if opts.mutate is not None else MUTABLE
    out = {}
    for name in names:
        value = space.get(name)
        if isinstance(value, Domain):
            out[name] = value
        elif isinstance(value, dict) and "grid_search" in value:
            out[name] = list(value["grid_search"])
    return out


@SCHEDULERS.add("pbt", "population-based training: poor trials copy better ones' weights "
                "and continue with mutated learning rate, dropout, ...", PBTOptions,
                only_with=("random", "grid"))
def _pbt(opts: PBTOptions, ctx: Context):
    from distune.search.replayed import ResumablePBT

    return ResumablePBT(
        time_attr=EPOCHS, perturbation_interval=opts.perturbation_interval,
        hyperparam_mutations=pbt_mutations(opts, ctx.space), quantile_fraction=opts.quantile_fraction,
        resample_probability=opts.resample_probability, synch=False)


class HyperbandBOHBOptions(Options):
    max_t: int | None = Field(None, ge=1, description="epochs a trial may reach; default train.epochs")
    reduction_factor: float = Field(3, gt=1)


@SCHEDULERS.add("hyperband_bohb", "Hyperband as BOHB needs it (pair with searcher bohb)",
                HyperbandBOHBOptions, only_with=("bohb",))
def _hyperband_bohb(opts: HyperbandBOHBOptions, ctx: Context):
    from distune.search.replayed import StoppingBOHB

    return StoppingBOHB(time_attr=EPOCHS, max_t=opts.max_t or ctx.max_epochs,
                        reduction_factor=opts.reduction_factor)
