"""Trial schedulers (early stopping) by name. Time is counted in epochs (training_iteration)."""

from __future__ import annotations

from pydantic import Field, model_validator

from distune.registry import Context, Options, Registry

SCHEDULERS = Registry("scheduler")
EPOCHS = "training_iteration"  # one step() of the trainable is one epoch


class NoOptions(Options):
    pass


@SCHEDULERS.add("fifo", "no early stopping: every trial runs all its epochs", NoOptions)
def _fifo(opts: NoOptions, ctx: Context):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


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
    from ray.tune.schedulers import ASHAScheduler

    max_t = opts.max_t or ctx.max_epochs
    # With max_t taken from train.epochs (a short debugging run, say), the grace period is
    # capped at it; an explicit max_t below grace_period is a config error instead.
    return ASHAScheduler(time_attr=EPOCHS, max_t=max_t, grace_period=min(opts.grace_period, max_t),
                         reduction_factor=opts.reduction_factor, brackets=opts.brackets)


class HyperbandOptions(Options):
    max_t: int | None = Field(None, ge=1, description="epochs a trial may reach; default train.epochs")
    reduction_factor: float = Field(3, gt=1)


@SCHEDULERS.add("hyperband", "synchronous Hyperband: brackets of successive halving",
                HyperbandOptions)
def _hyperband(opts: HyperbandOptions, ctx: Context):
    from ray.tune.schedulers import HyperBandScheduler

    return HyperBandScheduler(time_attr=EPOCHS, max_t=opts.max_t or ctx.max_epochs,
                              reduction_factor=opts.reduction_factor)


class MedianOptions(Options):
    grace_period: int = Field(1, ge=1, description="epochs before a trial can be stopped")
    min_samples_required: int = Field(3, ge=1, description="trials to compare against")


@SCHEDULERS.add("median", "median stopping rule: stop a trial below the median of others "
                "at the same epoch", MedianOptions)
def _median(opts: MedianOptions, ctx: Context):
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule(time_attr=EPOCHS, grace_period=opts.grace_period,
                              min_samples_required=opts.min_samples_required)
