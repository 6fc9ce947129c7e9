"""The pipeline the CLI and nightly run: a validated Experiment -> its sweep -> the winner
picked on validation, tested once, exported; the report and the tracking at the end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from distune.config.schema import Experiment
from distune.config.saved import load_saved_experiment
from distune.errors import DistuneError
from distune.ops.environment import quiet_environment
from distune.ops.private import check_trusted
from distune.ops.storage import publish, root_of, where
from distune.results.layout import BEST_FILE, BEST_MODEL_FILE, CONFIG_FILE, TABLE_FILE
from distune.results.records import TrialRecord, from_analysis, to_table
from distune.results.table import write_atomic, write_json
from distune.report.page import draw_sweep_soon, try_write_report
from distune.search.searchers import SEARCHERS
from distune.space.params import grid_points
from distune.sweep.directory import check_checkpoints, experiment_dir, load_data, prepare_directory
from distune.sweep.tune import build_tuner, fit, make_trainable, release_ray, training_node
from distune.sweep.unrestored import refuse, watching
from distune.trial.usermodel import dry_build
from distune.winner import pick as W
from distune.winner.select import reevaluate

@dataclass
class Summary:
    name: str
    directory: Path
    trials: int
    best_config: dict[str, Any]
    best_score: float
    test_accuracy: float
    test_loss: float
    refit: bool
    metric: str
    files: dict[str, Path] = field(default_factory=dict)
    wall_s: float = 0.0
    experiment: Experiment | None = None  # as it ran (its name and storage filled in)
    records: list[TrialRecord] = field(default_factory=list)  # every trial, best first
    best: dict[str, Any] = field(default_factory=dict)  # what best.json holds


def run(exp: Experiment, stem: str, *, overwrite: bool = False, refit: bool = False,
        verbose: bool = False, say: Callable[[str], None] = print) -> Summary:
    """The whole job: sweep, pick the winner on validation, test it once, export it."""
    started = time.time()
    if exp.run.name is None:
        name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        exp = exp.model_copy(update={"run": exp.run.model_copy(update={"name": name})})
    quiet_environment(verbose)
    dry_build(exp)  # a user's model function: checked before anything is created
    directory = experiment_dir(exp)
    splits = load_data(exp)
    prepare_directory(directory, overwrite)
    write_atomic(directory / CONFIG_FILE, exp.to_yaml())
    publish(directory)
    say(_plan(exp, splits, directory))
    analysis = fit(exp, verbose, lambda: build_tuner(exp, splits.for_trials(), directory, verbose, say), say)
    return finish(exp, directory, splits, analysis, refit=refit, started=started, say=say,
                  verbose=verbose)


def resume(directory: Path, *, refit: bool = False, skip_corrupt: bool = False,
           verbose: bool = False, say: Callable[[str], None] = print) -> Summary:
    """Continue an interrupted sweep from its storage: finished trials keep their results,
    unfinished ones restart from their latest checkpoints, the searcher from its saved state."""
    from ray import tune

    started = time.time()
    quiet_environment(verbose)
    exp = load_saved_experiment(directory)
    exp = exp.model_copy(update={"run": exp.run.model_copy(update={  # where it is now
        "storage": root_of(directory), "name": directory.name})})
    if directory.is_dir():  # what Tuner.restore unpickles (a bucket's own rights guard a URI)
        check_trusted(directory)
    if not tune.Tuner.can_restore(where(directory)):
        raise DistuneError(f"{directory} has no sweep state to resume (it never started). Run it "
                           f"again with `distune run {directory / CONFIG_FILE} --overwrite`.")
    check = check_checkpoints(directory)
    if check.corrupt and not skip_corrupt:
        raise DistuneError("cannot resume: " + "; ".join(check.corrupt) + ". Restore those files (for "
                           "example from your shared storage), or pass --skip-corrupt to resume "
                           "anyway: those trials fail and are recorded as errors, all other "
                           "results are kept.")
    splits = load_data(exp)
    say(f"distune: resuming {directory.name} from {where(directory)}")
    for tid in check.restarting:
        say(f"distune: trial {tid} restarts from epoch 1 (same seed, same curve): the latest "
            "checkpoint the sweep's saved state names is not on storage (the driver stopped "
            "between Tune's checkpoint and its next state save)")
    with watching():  # a state Tune cannot restore is refused, not run anew
        try:
            analysis = fit(exp, verbose, lambda: tune.Tuner.restore(
                where(directory), trainable=make_trainable(exp, splits.for_trials()),
                resume_unfinished=True, resume_errored=True), say)
        except Exception:
            refuse()  # what Tune's fallback then tripped on (a searcher restored twice) is not the cause
            raise
    return finish(exp, directory, splits, analysis, refit=refit, started=started, say=say,
                  verbose=verbose)


def finish(exp: Experiment, directory: Path, splits, analysis, *, refit: bool, started: float,
           say: Callable[[str], None], verbose: bool = False) -> Summary:
    """From the finished sweep's `analysis`: write the results table, re-evaluate the top
    configs (select.top_k > 1), test the winner once and export it; then the report (and the
    winner's MLflow artifacts), whose failure only warns."""
    from distune.sweep.tracking import try_log_winner  # Ray's logger classes

    records = from_analysis(analysis, exp.search.metric, exp.search.mode, exp.train.epochs,
                            finished=True)  # fit returned: the sweep is over
    table = to_table(records, exp.search.metric)
    write_atomic(directory / TABLE_FILE, table.to_csv(index=False))
    try:
        best, selection = W.pick_winner(analysis, exp), None
        if exp.select.top_k > 1:
            selection = reevaluate(exp, directory, splits, analysis, verbose, say)
            best = selection.winner
        drawn = draw_sweep_soon(exp, directory, table, best.trial_id) if exp.run.report else None
        if refit:
            say(f"Refitting the winner on train + validation for {best.epoch} epochs ...")
            tested = W.refit(best, exp, splits, directory)
        elif selection:  # its seed models are tested already, this one among them
            tested = selection.tests[selection.exported]
        else:
            tested = W.evaluate_checkpoint(best, splits, training_node(exp))
    finally:
        release_ray()  # shut down while the rest is written
    test_loss, test_acc = tested.loss, tested.accuracy
    W.export_model(tested.model_file, directory / BEST_MODEL_FILE)
    if refit:
        tested.model_file.unlink(missing_ok=True)
    facts = {
        "trial": best.trial_id, "config": best.config, "epoch": best.epoch,
        exp.search.metric: best.score, "test_accuracy": test_acc, "test_loss": test_loss,
        "refit": refit, "checkpoint": where(best.checkpoint), "model": BEST_MODEL_FILE,
        **(selection.summary(exp.search.metric) if selection else {}),
    }
    write_json(directory / BEST_FILE, facts)
    report = (try_write_report(exp, directory, table, facts, splits, say, tested.probabilities,
                               drawn) if exp.run.report else None)
    try_log_winner(exp, directory, best.trial_id, {"test_accuracy": test_acc,
                                                   "test_loss": test_loss}, say)
    publish(directory)  # for a URI: every file written here since the sweep
    return Summary(exp.run.name, directory, len(table), best.config, best.score, test_acc,
                   test_loss, refit, exp.search.metric, {"table": directory / TABLE_FILE, "best": directory / BEST_FILE,
                                      "model": directory / BEST_MODEL_FILE,
                                      "config": directory / CONFIG_FILE,
                                      **({"report": report} if report else {}),
                                      **({"select": selection.table} if selection else {})},
                   wall_s=time.time() - started, experiment=exp, records=records, best=facts)


def _plan(exp: Experiment, splits, directory: Path) -> str:
    points = grid_points(exp.model.params, SEARCHERS[exp.search.searcher].can("enumerate"))
    trials = exp.planned_trials
    grid = f" ({points} grid points x {exp.search.num_samples})" if points > 1 else ""
    folds, n_val = exp.search.cv_folds, len(splits.x_val)
    data = (f"{len(splits.x_train) + n_val} images in {folds} cross-validation folds" if folds > 1
            else f"{len(splits.x_train)} train / {n_val} validation images")
    select = (f"; then the top {exp.select.top_k} configs retrained with {exp.select.seeds} seeds "
              "each" if exp.select.top_k > 1 else "")
    return (f"distune: {exp.run.name}: {trials} trials{grid}, searcher {exp.search.searcher}, "
            f"scheduler {exp.schedule.scheduler}, up to {exp.max_epochs} epochs each on "
            f"{data}{select}\n"
            f"distune: results in {where(directory)}")
