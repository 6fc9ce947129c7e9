"""One validated Experiment -> a Ray Tuner -> the sweep -> the winner's test score and files."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from distune.config import Experiment, storage_root, trial_space
from distune.errors import DistuneError, Interrupted
from distune.storage import (checkpoint_path, is_uri, join, local_copy, mirror, prepare_remote,
                             publish, refresh, remote_of, resume_command, root_of, sibling,
                             taken_error, where)
from distune.results import (BEST_FILE, CONFIG_FILE, MODEL_FILE, TABLE_FILE, open_analysis,
                             trials_table, write_atomic, write_json)

# Quiet by default: TensorFlow's C++ logs, Ray's migration notes and snapshot warnings.
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "60",
    "PYTHONWARNINGS": "ignore",
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0, the legacy engine prints nothing of its own
}


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


def quiet_environment(verbose: bool) -> None:
    """Set before TF/Ray are imported in this process; workers get the same via runtime_env."""
    if not verbose:
        for k, v in QUIET_ENV.items():
            os.environ.setdefault(k, v)
        # Trial failures are reported in one line by ProgressLines (and kept in each trial's
        # error.txt); Ray's own tracebacks for them would bury the progress view.
        logging.getLogger("ray").setLevel(logging.CRITICAL)
        import warnings

        warnings.filterwarnings("ignore")


def experiment_dir(exp: Experiment) -> Path:
    """The directory distune reads and writes: the experiment's own for a local or NFS
    storage, a local mirror of it for a URI (distune.storage)."""
    root = storage_root(exp)
    if is_uri(root):
        return mirror(join(root, exp.run.name))
    return Path(root) / exp.run.name


def check_writable(directory: Path) -> None:
    """Fail before a sweep, not after it, when results could not be written."""
    parent = directory
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise DistuneError(f"run.storage: cannot write to {directory} ({parent} is not a writable "
                           "directory). Choose a writable --storage path.")


def prepare_directory(directory: Path, overwrite: bool) -> None:
    if remote_of(directory):
        return prepare_remote(directory, overwrite)
    check_writable(directory)
    if directory.exists() and any(directory.iterdir()):
        if not overwrite:
            raise taken_error(directory)
        shutil.rmtree(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise DistuneError(f"run.storage: cannot write to {directory} ({e.strerror}). Choose a "
                           "writable --storage path.") from None


def start_ray(exp: Experiment, verbose: bool) -> bool:
    """Connect to `run.address` (else $RAY_ADDRESS, which Ray's Jobs API sets for a job's
    driver), or start a private local Ray without a dashboard: never silently join a cluster
    that someone started with `ray start` on this machine. Returns whether we started it (and
    so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in QUIET_ENV if k in os.environ}
    address = exp.run.address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, include_dashboard=False, log_to_driver=verbose,
             logging_level=logging.INFO if verbose else logging.CRITICAL,
             runtime_env={"env_vars": env} if env else None)
    if not verbose:  # ray.init configures Ray's loggers; quiet Tune's after it
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    return True


def check_resources(exp: Experiment, say: Callable[[str], None] = print) -> None:
    """A trial no node can host would wait forever: refuse it up front. On an autoscaling
    cluster, node types the autoscaler can still add count too (GPU workers may be at zero)."""
    import ray

    need_cpu, need_gpu = exp.resources.cpus_per_trial, exp.resources.gpus_per_trial
    fits = lambda r: r.get("CPU", 0) >= need_cpu and r.get("GPU", 0) >= need_gpu  # noqa: E731
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(fits(r) for r in nodes):
        return
    groups = _node_types_to_add()
    if any(fits(g) for g in groups or ()):
        say(f"distune: no node can host a trial yet ({need_cpu:g} CPUs, {need_gpu:g} GPUs); "
            "the autoscaler will add one")
        return
    largest = max(nodes + list(groups or ()), key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)),
                  default={})
    raise DistuneError(f"resources: a trial asks for {need_cpu:g} CPUs and {need_gpu:g} GPUs, but "
                       f"the largest node{' type' if groups else ''} has "
                       f"{largest.get('CPU', 0):g} CPUs and {largest.get('GPU', 0):g} GPUs. "
                       "Lower resources.cpus_per_trial / gpus_per_trial, or add bigger nodes.")


def _node_types_to_add() -> list[dict[str, float]]:
    """Resources of each node type the cluster's autoscaler may still start (none on a local
    Ray or a fixed-size cluster)."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - a private API: without it, judge by live nodes only
        return []
    if config is None:
        return []
    return [dict(g.resources) for g in config.node_group_configs if g.max_count != 0]


def _target_stopper(targets: dict[str, float], wait_s: float = 30.0):
    """(stopper, callback) for run.stop: end the sweep once a trial reaches every target."""
    from ray import tune

    class TargetReached(tune.Stopper, tune.Callback):
        """The reaching trial stops at once (and is checkpointed); the whole sweep stops as
        soon as that checkpoint is recorded, so the winner always has one to be tested from."""

        def __init__(self) -> None:
            self.trial_id: str | None = None
            self.reached_at = 0.0
            self.saved = False

        def __call__(self, trial_id: str, result: dict) -> bool:
            ok = all(k in result and (result[k] <= v if k.endswith("loss") else result[k] >= v)
                     for k, v in targets.items())
            if ok and self.trial_id is None:
                self.trial_id, self.reached_at = trial_id, time.monotonic()
            return self.trial_id is not None

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            self.saved = self.saved or trial.trial_id == self.trial_id

        def stop_all(self) -> bool:
            return self.trial_id is not None and (
                self.saved or time.monotonic() - self.reached_at > wait_s)

    return TargetReached()


def _trial_dirname(trial) -> str:
    return trial.trial_id


def make_trainable(exp: Experiment, data: dict):
    """The Trainable with its data (shared via the object store) and resources attached."""
    from ray import tune

    from distune.trainable import MnistTrainable

    return tune.with_resources(
        tune.with_parameters(MnistTrainable, experiment=exp, data=data),
        {"cpu": exp.resources.cpus_per_trial, "gpu": exp.resources.gpus_per_trial},
    )


def _tune_num_samples(exp: Experiment, conditional: bool) -> int:
    """Ray's num_samples: repeats of the grid for its variant generator, but the total trial
    count for searchers that enumerate themselves (stepwise, grid over a tree space)."""
    if exp.search.searcher == "stepwise" or (conditional and exp.search.searcher == "grid"):
        return exp.planned_trials
    return exp.search.num_samples


def checkpoint_config(exp: Experiment):
    """The best `keep_checkpoints` by the search metric (the latest is kept too)."""
    from ray import tune

    return tune.CheckpointConfig(
        num_to_keep=exp.run.keep_checkpoints,
        checkpoint_score_attribute=exp.search.metric,
        checkpoint_score_order=exp.search.mode,
        checkpoint_frequency=exp.train.checkpoint_every,
        checkpoint_at_end=exp.train.checkpoint_every > 1,
    )


def build_tuner(exp: Experiment, data: dict, directory: Path, verbose: bool = False,
                say: Callable[[str], None] = print, callbacks: list = ()):
    from ray import tune

    from distune.progress import ProgressLines
    from distune.registry import Context
    from distune.tracking import tracking_callbacks
    from distune.schedulers import SCHEDULERS
    from distune.searchers import SEARCHERS

    space = trial_space(exp)
    seed = exp.run.seed if exp.search.seed is None else exp.search.seed
    ctx = Context(seed=seed, max_epochs=exp.max_epochs, space=space,
                  params=exp.model.params, points=list(exp.search.initial_points),
                  metric=exp.search.metric, mode=exp.search.mode,
                  num_samples=exp.search.num_samples)
    res = exp.resources
    search_alg = SEARCHERS[exp.search.searcher].build(exp.searcher_options(), ctx)
    if exp.search.warm_start:
        from distune.warmstart import WarmStarted, prior_results

        sources = exp.search.warm_start
        prior, names = [], []
        for source in [sources] if isinstance(sources, str) else sources:  # nightly: several
            earlier = Path(source).expanduser()
            earlier = earlier if earlier.is_dir() else sibling(directory, source)
            prior += prior_results(earlier, exp.model.params, exp.search.metric, exp.search.mode)
            names.append(earlier.name)
        say(f"distune: warm start from {', '.join(names)}: {len(prior)} finished trials fit this space")
        search_alg = WarmStarted(search_alg, prior)
    tune_config = tune.TuneConfig(
        metric=exp.search.metric,
        mode=exp.search.mode,
        search_alg=search_alg,
        scheduler=SCHEDULERS[exp.schedule.scheduler].build(exp.scheduler_options(), ctx),
        num_samples=_tune_num_samples(exp, ctx.conditional),
        max_concurrent_trials=res.max_concurrent_trials,
        time_budget_s=exp.run.time_budget_s,
        reuse_actors=True,
        trial_dirname_creator=_trial_dirname,
    )
    stopper = _target_stopper(exp.run.stop) if exp.run.stop else None
    run_config = tune.RunConfig(
        name=directory.name,
        storage_path=root_of(directory),  # a URI: Ray writes results and checkpoints there
        checkpoint_config=checkpoint_config(exp),
        failure_config=tune.FailureConfig(max_failures=exp.run.max_failures),
        stop=stopper,
        callbacks=[ProgressLines(exp.search.metric, exp.search.mode, exp.train.epochs, say),
                   *([stopper] if stopper else []), *tracking_callbacks(exp, directory),
                   *callbacks],
        verbose=1 if verbose else 0,
    )
    return tune.Tuner(make_trainable(exp, data), param_space=space,
                      tune_config=tune_config, run_config=run_config)


def run(exp: Experiment, stem: str, *, overwrite: bool = False, refit: bool = False,
        verbose: bool = False, say: Callable[[str], None] = print) -> Summary:
    """The whole job: sweep, pick the winner on validation, test it once, export it."""
    started = time.time()
    if exp.run.name is None:
        name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        exp = exp.model_copy(update={"run": exp.run.model_copy(update={"name": name})})
    quiet_environment(verbose)
    directory = experiment_dir(exp)
    splits = load_data(exp)
    prepare_directory(directory, overwrite)
    write_atomic(directory / CONFIG_FILE, exp.to_yaml())
    publish(directory)
    say(_plan(exp, splits, directory))
    _sweep(exp, verbose, lambda: build_tuner(exp, splits.for_trials(), directory, verbose, say), say)
    return finish(exp, directory, splits, refit=refit, started=started, say=say, verbose=verbose)


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
    if not tune.Tuner.can_restore(where(directory)):
        raise DistuneError(f"{directory} has no sweep state to resume (it never started). Run it "
                           f"again with `distune run {directory / CONFIG_FILE} --overwrite`.")
    problems = corrupt_checkpoints(directory)
    if problems and not skip_corrupt:
        raise DistuneError("cannot resume: " + "; ".join(problems) + ". Restore those files (for "
                           "example from your shared storage), or pass --skip-corrupt to resume "
                           "anyway: those trials fail and are recorded as errors, all other "
                           "results are kept.")
    splits = load_data(exp)
    say(f"distune: resuming {directory.name} from {where(directory)}")
    _sweep(exp, verbose, lambda: tune.Tuner.restore(
        where(directory), trainable=make_trainable(exp, splits.for_trials()),
        resume_unfinished=True, resume_errored=True), say)
    return finish(exp, directory, splits, refit=refit, started=started, say=say, verbose=verbose)


def _sweep(exp: Experiment, verbose: bool, make_tuner: Callable[[], Any],
           say: Callable[[str], None] = print, state_dir: Path | None = None) -> None:
    """Fit one Tuner; `state_dir`: where it keeps its state, if not in the experiment's
    directory itself (the select stage's subdirectory)."""
    import ray

    from distune.training import warm_up_tensorflow

    owns_ray = start_ray(exp, verbose)
    warm_up_tensorflow()  # for finish(), which tests the winner
    try:
        check_resources(exp, say)
        make_tuner().fit()
    finally:
        if owns_ray:
            ray.shutdown()
    # On Ctrl-C, Tune saves its state and returns normally; the saved state (not the live
    # trial objects, which it marks stopped while cleaning up) tells that trials are unfinished.
    directory = experiment_dir(exp)
    refresh(directory)
    trials = open_analysis(state_dir or directory).trials
    unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
    if unfinished and _left_paused_by_hyperband(exp, unfinished) and state_dir is None:
        say(f"distune: HyperBand left {len(unfinished)} trial(s) paused in brackets it never "
            "completed; they count as stopped by the scheduler")
    elif unfinished:
        raise Interrupted(f"interrupted: the sweep's state is saved in {where(directory)}. Resume "
                          f"it with: {resume_command(directory)}")


def _left_paused_by_hyperband(exp: Experiment, unfinished: list) -> bool:
    """Tune's HyperBand can end a sweep with trials still PAUSED in a bracket that never
    filled: nothing is running or pending, so the sweep is over, not interrupted."""
    return (exp.schedule.scheduler in ("hyperband", "hyperband_bohb")
            and all(t.status == "PAUSED" for t in unfinished))


def load_data(exp: Experiment):
    from distune.data import load_mnist

    return load_mnist(exp.data.path, exp.data.validation_split, exp.data.train_subset, exp.run.seed)


def load_saved_experiment(directory: Path) -> Experiment:
    """The resolved config a run saved in its directory."""
    import yaml

    from distune.config import validate

    config_file = directory / CONFIG_FILE
    if not directory.is_dir():
        raise DistuneError(f"no experiment at {directory}. Check the name and --storage.")
    if not config_file.is_file():
        raise DistuneError(f"{where(directory)} is not a distune experiment (no {CONFIG_FILE}).")
    return validate(yaml.safe_load(config_file.read_text()), str(config_file))


def corrupt_checkpoints(directory: Path) -> list[str]:
    """Unfinished trials whose latest checkpoint is missing or unreadable."""
    from distune.training import checkpoint_problem

    problems = []
    for trial in open_analysis(directory).trials:
        if trial.status in ("TERMINATED",):
            continue
        latest = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
        if latest is not None:
            problem = checkpoint_problem(local_copy(checkpoint_path(trial, latest.checkpoint)))
            if problem:
                problems.append(f"trial {trial.trial_id}: {problem}")
    return problems


def finish(exp: Experiment, directory: Path, splits, *, refit: bool, started: float,
           say: Callable[[str], None], verbose: bool = False) -> Summary:
    """Write the results table, re-evaluate the top configs (select.top_k > 1), test the
    winner once and export it; then the report (and the winner's MLflow artifacts), whose
    failure only warns."""
    from distune import winner as W
    from distune.report import try_write_report
    from distune.tracking import try_log_winner
    from distune.training import configure_tensorflow

    configure_tensorflow()
    analysis = open_analysis(directory)
    table = trials_table(analysis, exp.search.metric, exp.search.mode, exp.train.epochs)
    write_atomic(directory / TABLE_FILE, table.to_csv(index=False))
    best, selection = W.pick_winner(analysis, exp), None
    if exp.select.top_k > 1:
        from distune.selection import reevaluate

        selection = reevaluate(exp, directory, splits, analysis, verbose, say)
        best = selection.winner
    if refit:
        say(f"Refitting the winner on train + validation for {best.epoch} epochs ...")
        test_loss, test_acc, model_file = W.refit(best, exp, splits, directory)
    elif selection:  # its seed models are tested already, this one among them
        test_loss, test_acc, model_file = selection.tests[selection.exported]
    else:
        test_loss, test_acc, model_file = W.evaluate_checkpoint(best, splits)
    W.export_model(model_file, directory / MODEL_FILE)
    if refit:
        model_file.unlink(missing_ok=True)
    write_json(directory / BEST_FILE, {
        "trial": best.trial_id, "config": best.config, "epoch": best.epoch,
        exp.search.metric: best.score, "test_accuracy": test_acc, "test_loss": test_loss,
        "refit": refit, "checkpoint": where(best.checkpoint_dir), "model": MODEL_FILE,
        **(selection.summary(exp.search.metric) if selection else {}),
    })
    report = try_write_report(directory, splits, say) if exp.run.report else None
    try_log_winner(exp, directory, best.trial_id, {"test_accuracy": test_acc,
                                                   "test_loss": test_loss}, say)
    publish(directory)  # for a URI: every file written here since the sweep
    return Summary(exp.run.name, directory, len(table), best.config, best.score, test_acc,
                   test_loss, refit, exp.search.metric, {"table": directory / TABLE_FILE, "best": directory / BEST_FILE,
                                      "model": directory / MODEL_FILE,
                                      "config": directory / CONFIG_FILE,
                                      **({"report": report} if report else {}),
                                      **({"select": selection.table} if selection else {})},
                   wall_s=time.time() - started)


def _plan(exp: Experiment, splits, directory: Path) -> str:
    from distune.searchers import ENUMERATING
    from distune.space import grid_points

    points = grid_points(exp.model.params, exp.search.searcher in ENUMERATING)
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
