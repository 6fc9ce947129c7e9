"""Choosing trials: the registries of searchers and schedulers (name -> factory, options, and
capabilities on the entry), the tree and stepwise searchers, warm starts."""

from distune._lazy import exports

_NAMES = {
    "CaughtUp": "wrapped",
    "Context": "registry",
    "MUTABLE": "schedulers",
    "SCHEDULERS": "schedulers",
    "SEARCHERS": "searchers",
    "StepwiseSearch": "stepwise",
    "WarmStarted": "warmstart",
    "dimensions": "gp",
    "fits": "warmstart",
    "prior_results": "warmstart",
    "stages": "stepwise",
}
__all__ = sorted(_NAMES)
__getattr__ = exports(__name__, _NAMES)
