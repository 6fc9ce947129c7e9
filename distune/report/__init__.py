"""report.html: one self-contained page (charts embedded) about an experiment."""

from distune._lazy import exports

_NAMES = {
    "draw_sweep_soon": "page",
    "report_of": "page",
    "try_write_report": "page",
    "write_report": "page",
}
__all__ = sorted(_NAMES)
__getattr__ = exports(__name__, _NAMES)
