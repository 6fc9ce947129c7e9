"""The small facts every reader of results shares, each written once: which of two scores is
better under the search mode, Python values out of numpy/pandas, and a config's identity."""

from __future__ import annotations

import json
import math
from typing import Any


def better(a: float | None, b: float | None, mode: str) -> bool:
    """Is score `a` strictly better than `b` under `mode` ("max" or "min")? A missing or NaN
    score is worse than any other."""
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return False
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return True
    return a > b if mode == "max" else a < b


def best_first(score: float, mode: str) -> float:
    """A sort key that puts the best score first (NaN last: sort on (isnan, key) for that)."""
    return -score if mode == "max" else score


def plain(value: Any) -> Any:
    """A numpy or pandas scalar as the Python value it holds; anything else unchanged."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict)) else value


def missing(value: Any) -> bool:
    """None, or the NaN that pandas writes for a parameter a trial lacked (tree spaces)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def plain_config(config: dict[str, Any]) -> dict[str, Any]:
    """A trial config with Python values only, so it compares, hashes and serialises the same."""
    return {k: plain_config(v) if isinstance(v, dict) else plain(v) for k, v in config.items()}


def config_key(config: dict[str, Any]) -> str:
    """A config's identity: equal for equal configs however they were stored (32 vs 32.0,
    numpy scalars, float round-trips through a CSV file)."""
    def norm(v: Any) -> Any:
        v = plain(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(f"{float(v):.10g}")
        return v
    return json.dumps({k: norm(v) for k, v in sorted(plain_config(config).items())},
                      sort_keys=True, default=str)
