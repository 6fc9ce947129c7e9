"""Scheduled sweeps that build on yesterday: one experiment per night, the history of
nights in SQLite, judging regressions and promoting the best."""

from distune._lazy import exports

_NAMES = {
    "EXIT_LOCKED": "night",
    "History": "history",
    "NOISE_FLOOR": "history",
    "Night": "history",
    "NightOptions": "night",
    "history_text": "night",
    "judge": "history",
    "night_date": "night",
    "nightly": "night",
    "parse_duration": "night",
}
__all__ = sorted(_NAMES)
__getattr__ = exports(__name__, _NAMES)
