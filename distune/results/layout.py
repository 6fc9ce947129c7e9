"""Every file name distune writes, each once: an experiment directory, a trial checkpoint, a
nightly sweep. Readers and writers import the name from here, never spell it."""

# An experiment directory (distune run/resume)
CONFIG_FILE = "distune.yaml"        # the resolved, validated config the run used
TABLE_FILE = "results.csv"          # one row per trial
BEST_FILE = "best.json"             # the winner: config, scores, test accuracy
BEST_MODEL_FILE = "best_model.keras"
REPORT_FILE = "report.html"
CHARTS_DIR = "report"               # the report's charts as PNG files
SELECT_DIR = "select"               # the re-evaluation's own Tune run
SELECT_TABLE = "select.csv"
PROGRESS_FILE = "progress.csv"      # Ray Tune's per-trial epoch log (Ray writes it)
RESULTS_LOG_FILE = "result.json"    # the same epochs as JSON lines (Ray writes it)

# A trial's checkpoint directory (distune.trial.training)
CHECKPOINT_MODEL_FILE = "model.keras"
STATE_FILE = "state.json"
BEST_WEIGHTS_FILE = "best_weights.npz"
CV_FILE = "cv.json"                 # a cross-validated trial: the folds' shared state

# A nightly sweep directory (distune.nightly)
HISTORY_FILE = "history.sqlite"
PROMOTED_FILE = "promoted.json"
NIGHTS_DIR = "nights"               # one ordinary experiment per night
BEST_DIR = "best"                   # the promoted winner of all nights
PROMOTED_DIR = "promoted"
LOCK_FILE = "nightly.lock"
NIGHT_REPORT_FILE = "nightly-report.md"
NIGHT_CHART_FILE = "best-per-night.png"
