"""An experiment directory on disk: every file name in it (layout), the results table and
atomic writes (table), and the small value helpers every reader shares (values)."""

from distune._lazy import exports

_NAMES = {
    "BEST_DIR": "layout",
    "BEST_FILE": "layout",
    "BEST_MODEL_FILE": "layout",
    "BEST_WEIGHTS_FILE": "layout",
    "CHARTS_DIR": "layout",
    "CHECKPOINT_MODEL_FILE": "layout",
    "CONFIG_FILE": "layout",
    "CONFIG_PREFIX": "records",
    "CV_FILE": "layout",
    "HISTORY_FILE": "layout",
    "LOCK_FILE": "layout",
    "NIGHTS_DIR": "layout",
    "NIGHT_CHART_FILE": "layout",
    "NIGHT_REPORT_FILE": "layout",
    "PROGRESS_FILE": "layout",
    "RESULTS_LOG_FILE": "layout",
    "PROMOTED_DIR": "layout",
    "PROMOTED_FILE": "layout",
    "REPORT_FILE": "layout",
    "SELECT_DIR": "layout",
    "SELECT_TABLE": "layout",
    "STATE_FILE": "layout",
    "TABLE_FILE": "layout",
    "TrialRecord": "records",
    "best_first": "values",
    "better": "values",
    "config_key": "values",
    "format_table": "table",
    "from_analysis": "records",
    "from_table": "records",
    "open_analysis": "table",
    "plain": "values",
    "plain_config": "values",
    "sort_best_first": "records",
    "to_table": "records",
    "trial_status": "records",
    "trials_table": "table",
    "write_atomic": "table",
    "write_json": "table",
}
__all__ = sorted(_NAMES)
__getattr__ = exports(__name__, _NAMES)
