"""From a finished sweep to one config: the best trial by the search metric, and the
re-evaluation of the top configs over several seeds (select.top_k)."""

from distune._lazy import exports

_NAMES = {
    "Selection": "select",
    "evaluate_checkpoint": "pick",
    "export_model": "pick",
    "gather": "select",
    "pick_winner": "pick",
    "ranked": "pick",
    "reevaluate": "select",
    "refit": "pick",
    "top_configs": "select",
}
__all__ = sorted(_NAMES)
__getattr__ = exports(__name__, _NAMES)
