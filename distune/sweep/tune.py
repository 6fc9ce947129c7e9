"""Building and fitting Ray Tune's Tuner for one Experiment: the Ray connection, the trainable
with its resources, the checkpoint policy, the target stopper, and what a fit that returned
means (finished, or interrupted with its state saved)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from distune.config.schema import Experiment, trial_space
from distune.errors import DistuneError, Interrupted
from distune.ops.environment import job_runtime_env, local_ray_environment, protect_token, surface_warnings
from distune.ops.worker_fork import forked_workers, local_raylet
from distune.ops.storage import refresh, resume_command, root_of, sibling, where
from distune.results.table import open_analysis
from distune.search.registry import Context
from distune.search.schedulers import SCHEDULERS
from distune.search.searchers import SEARCHERS
from distune.sweep.directory import experiment_dir
from distune.trial.trainable import training_environment
from distune.trial.training import warm_up_tensorflow
from distune.trial.zygote import start_here

def start_ray(exp: Experiment, verbose: bool) -> bool:
    """Connect to `run.address` (else $RAY_ADDRESS, which Ray's Jobs API sets for a job's
    driver), or start a private local Ray without a dashboard, listening on loopback only and
    asking for this user's token: never silently join a cluster that someone started with
    `ray start` on this machine. Returns whether we started it (and
    so should shut it down)."""
    address = exp.run.address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        local_ray_environment()
    import ray

    if _stopping:  # the previous sweep's Ray (stop_ray_soon)
        _stopping.join()

    if ray.is_initialized():
        return False
    # Ray's progress bars would replace builtins.print once worker output reaches the driver
    # (--verbose), and the Tuner, which pickles `print` in its callbacks, could not be saved.
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    early = early_zygote(exp) if address == "local" else None
    with forked_workers() if address == "local" else contextlib.nullcontext():
        ray.init(address=address, include_dashboard=False, log_to_driver=verbose,
                 logging_level=logging.INFO if verbose else logging.CRITICAL,
                 runtime_env=job_runtime_env(address))
    if early:
        try:
            raylet = local_raylet()
        except (AttributeError, KeyError, IndexError, LookupError):  # Ray's private layout moved on
            early.cancel()
        else:
            early.adopt(raylet)
    if address == "local":
        protect_token()
    if not verbose:  # ray.init configures Ray's loggers; quiet Tune's after it
        surface_warnings()
    return True


_stopping: threading.Thread | None = None
_release = False  # a `fit` started this process's Ray: `release_ray` stops it


def stop_ray_soon() -> None:
    """Shut down the Ray this process started, in a thread of its own: its 1.2-1.5 s go mostly
    to waiting for Ray's processes to exit (measured), which can happen while the report is
    drawn. The next `start_ray`, and the command's exit (cli.entry awaits other threads),
    wait for it."""
    global _stopping, _release
    import ray

    _release = False
    _stopping = threading.Thread(target=ray.shutdown, name="distune-ray-shutdown")
    _stopping.start()


def release_ray() -> None:
    """After the winner's test, which may run in this node's zygote: stop the Ray a finished
    `fit` started (one that a caller started itself, like a nightly sweep's, is left)."""
    if _release:
        stop_ray_soon()


def training_node(exp: Experiment) -> tuple[int, dict[str, str]] | None:
    """(raylet, the trials' environment) of this driver's node, whose zygote can test the
    winner (distune.winner.pick.evaluate_checkpoint), in a Ray it started or joined; None
    where there is none to ask: a node that hosts no trial (a cluster's head without CPUs),
    fused trials (no zygote), training processes not forked, a raylet not found."""
    import ray

    from distune.trial import zygote

    if exp.resources.fuse > 1 or not zygote.enabled():
        return None
    here = ray.get_runtime_context().get_node_id()
    if not any(n["NodeID"] == here and n["Resources"].get("CPU", 0) >= exp.resources.cpus_per_trial
               for n in ray.nodes()):  # start_zygotes started none here
        return None
    try:
        raylet = local_raylet()
    except (AttributeError, KeyError, IndexError, LookupError):  # Ray's private layout moved on
        return None
    return raylet, {**os.environ, **training_environment(exp)[1]}


def early_zygote(exp: Experiment):
    """This node's zygote, started before its Ray (distune.trial.zygote.Early); None where
    trials do not fork (fused trials, DISTUNE_ZYGOTE=0, not Linux)."""
    from distune.trial import zygote

    if exp.resources.fuse > 1 or not zygote.enabled():
        return None
    return zygote.Early(training_environment(exp)[1])


def check_resources(exp: Experiment, say: Callable[[str], None] = print) -> None:
    """A trial no node can host would wait forever: refuse it up front. On an autoscaling
    cluster, node types the autoscaler can still add count too (GPU workers may be at zero)."""
    import ray

    need_cpu, need_gpu = exp.resources.cpus_per_trial, exp.resources.gpus_per_trial
    fits = lambda r: r.get("CPU", 0) >= need_cpu and r.get("GPU", 0) >= need_gpu  # noqa: E731
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(fits(r) for r in nodes):
        return
    groups = node_types_to_add()
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


def node_types_to_add() -> list[dict[str, float]]:
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


def trial_dirname(trial) -> str:
    return trial.trial_id


def make_trainable(exp: Experiment, data: dict):
    """The Trainable with its data (shared via the object store) and resources attached."""
    from ray import tune

    from distune.trial.trainable import MnistTrainable

    res = exp.resources
    if res.fuse > 1:  # members of fused programs, each paying its share of a slot
        import ray

        from distune.trial.fuser import FusedTrainable, Placement

        _, env = training_environment(exp)
        placement = ray.remote(Placement).options(num_cpus=0).remote(res.fuse, env, fuser_slots(exp))
        cpus, gpus = res.member_share()
        return tune.with_resources(
            tune.with_parameters(FusedTrainable, experiment=exp, data=data, placement=placement),
            {"cpu": cpus, "gpu": gpus})
    return tune.with_resources(
        tune.with_parameters(MnistTrainable, experiment=exp, data=data),
        {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial},
    )


def fuser_slots(exp: Experiment) -> dict[str, int]:
    """Fusers worth starting before the first trial asks, per node: a CPU node's slots, no
    more than the sweep's trials fill (GPU fusers start with their first member, which names
    its GPUs)."""
    import ray

    res = exp.resources
    if res.gpus_per_trial > 0:
        return {}
    wanted = -(-exp.planned_trials // res.fuse)
    return {n["NodeID"]: min(wanted, int(n["Resources"].get("CPU", 0) // res.cpus_per_trial))
            for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= res.cpus_per_trial}


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


def search_context(exp: Experiment) -> Context:
    """What the searcher and scheduler are built from."""
    seed = exp.run.seed if exp.search.seed is None else exp.search.seed
    return Context(seed=seed, max_epochs=exp.max_epochs, space=trial_space(exp),
                   params=exp.model.params, points=list(exp.search.initial_points),
                   metric=exp.search.metric, mode=exp.search.mode,
                   num_samples=exp.search.num_samples,
                   max_concurrent=exp.resources.max_concurrent_trials or 0)


def build_tuner(exp: Experiment, data: dict, directory: Path, verbose: bool = False,
                say: Callable[[str], None] = print, callbacks: list = ()):
    from ray import tune
    from ray.tune.search import Searcher

    from distune.sweep.progress import ProgressLines
    from distune.sweep.gone import RestartGone
    from distune.sweep.tracking import tracking_callbacks

    space, ctx = trial_space(exp), search_context(exp)
    res = exp.resources
    if res.fuse > 1 and res.gpus_per_trial == 0:
        say("distune: fused trials on CPUs only: on 2 CPU cores they ran the default preset's "
            "space at 0.6-0.73x the trials per hour of unfused ones (docs/benchmarks.md, "
            "'Fused trials'); fusing is made for GPUs")
    search_alg = SEARCHERS[exp.search.searcher].build(exp.searcher_options(), ctx)
    if exp.search.warm_start:
        from distune.search.warmstart import WarmStarted, prior_results

        sources = exp.search.warm_start
        prior, names = [], []
        for source in [sources] if isinstance(sources, str) else sources:  # nightly: several
            earlier = Path(source).expanduser()
            earlier = earlier if earlier.is_dir() else sibling(directory, source)
            prior += prior_results(earlier, exp.model.params, exp.search.metric, exp.search.mode)
            names.append(earlier.name)
        say(f"distune: warm start from {', '.join(names)}: {len(prior)} finished trials fit this space")
        search_alg = WarmStarted(search_alg, prior)
    if isinstance(search_alg, Searcher):
        from distune.search import CaughtUp

        search_alg = CaughtUp(search_alg)
    tune_config = tune.TuneConfig(
        metric=exp.search.metric,
        mode=exp.search.mode,
        search_alg=search_alg,
        scheduler=SCHEDULERS[exp.schedule.scheduler].build(exp.scheduler_options(), ctx),
        num_samples=_tune_num_samples(exp, ctx.conditional),
        # Ray limits a Searcher through a ConcurrencyLimiter; a BasicVariantGenerator (random,
        # grid) is given the limit itself (searchers.py), and told twice Ray says it ignores it.
        max_concurrent_trials=res.max_concurrent_trials if isinstance(search_alg, Searcher) else None,
        time_budget_s=exp.run.time_budget_s,
        reuse_actors=True,
        trial_dirname_creator=trial_dirname,
    )
    stopper = _target_stopper(exp.run.stop) if exp.run.stop else None
    run_config = tune.RunConfig(
        name=directory.name,
        storage_path=root_of(directory),  # a URI: Ray writes results and checkpoints there
        checkpoint_config=checkpoint_config(exp),
        failure_config=tune.FailureConfig(max_failures=exp.run.max_failures),
        stop=stopper,
        callbacks=[ProgressLines(exp.search.metric, exp.search.mode, exp.train.epochs, say),
                   RestartGone(), *([stopper] if stopper else []),
                   *tracking_callbacks(exp, directory), *callbacks],
        verbose=1 if verbose else 0,
    )
    return tune.Tuner(make_trainable(exp, data), param_space=space,
                      tune_config=tune_config, run_config=run_config)


def fit(exp: Experiment, verbose: bool, make_tuner: Callable[[], Any],
        say: Callable[[str], None] = print, state_dir: Path | None = None):
    """Fit one Tuner; `state_dir`: where it keeps its state, if not in the experiment's
    directory itself (the select stage's subdirectory). Returns Ray's analysis of the finished
    sweep, read once, for everything after it. A Ray it started runs on, for the winner's test
    in its zygote, until `release_ray` (or at once if the sweep fails or is interrupted)."""
    global _release
    owns_ray = start_ray(exp, verbose)
    try:
        if training_node(exp) is None:
            warm_up_tensorflow()  # for finish(), which then tests the winner in this process
        check_resources(exp, say)
        start_zygotes(exp)
        _skip_callback_telemetry()
        make_tuner().fit()
        # On Ctrl-C, Tune saves its state and returns normally; the saved state (not the live
        # trial objects, which it marks stopped while cleaning up) tells that trials are unfinished.
        directory = experiment_dir(exp)
        refresh(directory)
        analysis = open_analysis(state_dir or directory)
        unfinished = [t for t in analysis.trials if t.status not in ("TERMINATED", "ERROR")]
        if unfinished and left_paused_by_hyperband(exp, unfinished) and state_dir is None:
            say(f"distune: HyperBand left {len(unfinished)} trial(s) paused in brackets it never "
                "completed; they count as stopped by the scheduler")
        elif unfinished:
            raise Interrupted(f"interrupted: the sweep's state is saved in {where(directory)}. "
                              f"Resume it with: {resume_command(directory)}")
    except BaseException:
        if owns_ray:
            stop_ray_soon()
        raise
    _release = _release or owns_ray
    return analysis


def start_zygotes(exp: Experiment) -> None:
    """Every node that can host a trial starts its zygote now, while Tune starts up, instead of
    when its first trial asks (a 6 s TensorFlow import on the critical path of a fresh Ray's
    first trial). A zero-CPU task per node (`nodes_to_start`), not waited for; where one runs,
    a no-op."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    _, env = training_environment(exp)
    task = ray.remote(num_cpus=0, max_retries=0)(start_here)
    for node in nodes_to_start(exp):
        task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                     name="distune-start-zygote").remote(env)


def nodes_to_start(exp: Experiment) -> list[str]:
    """The nodes that can host a trial, less this driver's own where its zygote listens already
    (an earlier sweep's, or the driver's `early_zygote`); none for fused trials, which train in
    their fusers and never fork."""
    import ray

    from distune.trial import zygote

    if exp.resources.fuse > 1:
        return []
    node = training_node(exp)
    here = ray.get_runtime_context().get_node_id() if node and zygote.listening(*node) else None
    return [n["NodeID"] for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here
            and n["Resources"].get("CPU", 0) >= exp.resources.cpus_per_trial]


def _skip_callback_telemetry() -> None:
    """Tune tags its usage telemetry with the sweep's callbacks, counted by importing its MLflow,
    W&B and Comet integrations, which import those packages where installed: MLflow alone is
    1.2 s of CPU in every driver, before the first trial starts, for a tag distune's own
    callbacks make meaningless. Only that tag is lost; a Ray without that private hook (moved in
    a later release) keeps its telemetry rather than failing the sweep."""
    try:
        from ray.air._internal import usage
    except ImportError:
        return
    if hasattr(usage, "tag_callbacks"):
        usage.tag_callbacks = lambda callbacks: False


def left_paused_by_hyperband(exp: Experiment, unfinished: list) -> bool:
    """Tune's HyperBand can end a sweep with trials still PAUSED in a bracket that never
    filled: nothing is running or pending, so the sweep is over, not interrupted."""
    return (exp.schedule.scheduler in ("hyperband", "hyperband_bohb")
            and all(t.status == "PAUSED" for t in unfinished))
