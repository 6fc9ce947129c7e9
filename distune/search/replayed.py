"""Schedulers that survive a resume. Ray saves the searcher with the experiment but not the
scheduler (ray-project/ray#30838): after `Tuner.restore`, ASHA's rungs, the median rule's
histories and HyperBand's brackets start empty, and trials an uninterrupted sweep would stop
train on. Tune re-adds
every restored trial through `on_trial_add`; each such trial's reported epochs (Ray's JSON
lines beside its checkpoints) are replayed into the scheduler there, so its records are what
they were before the fault and its later decisions the same."""

from __future__ import annotations

import json

from ray.tune.experiment import Trial
from ray.tune.schedulers import (AsyncHyperBandScheduler, FIFOScheduler, HyperBandForBOHB, HyperBandScheduler,
                                 MedianStoppingRule, PopulationBasedTraining)

from distune.ops import checkpoint_gone
from distune.results import RESULTS_LOG_FILE


def earlier_results(trial: Trial, time_attr: str) -> list[dict]:
    """What a restored trial reported before the fault, as far as it stands: all of it for a
    trial that ended; for an unfinished one, up to the checkpoint it resumes from (what it
    reports after that it reports again, and the scheduler decides on it again; [] if it
    restarts). The saved state is the authority (the latest result, the checkpoint's own);
    Ray's result log on storage, copied there in the background, may lag or lead it. [] for a
    new trial."""
    last = trial.last_result or {}
    if time_attr not in last:  # a new trial: nothing on storage to read
        return []
    rows = _logged(trial)
    seen = {r.get(time_attr) for r in rows}
    rows = sorted(rows + [r for r in _remembered(trial, time_attr) if r[time_attr] not in seen],
                  key=lambda r: r.get(time_attr, 0))
    if trial.status in (Trial.TERMINATED, Trial.ERROR):
        return [r for r in rows if r.get(time_attr, 0) < last[time_attr]] + [last]
    manager = trial.run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result if manager else None
    if latest is None or time_attr not in latest.metrics or checkpoint_gone(trial, latest.checkpoint):
        return []
    at = latest.metrics[time_attr]
    return [r for r in rows if r.get(time_attr, 0) < at] + [latest.metrics]


def _remembered(trial: Trial, time_attr: str) -> list[dict]:
    """A trial's last epochs as its saved state keeps them, for epochs its log on storage lacks:
    Ray copies each file to storage by rewriting it, so a driver killed mid-copy can leave a
    log cut short or empty (seen in CI: a finished trial's log empty on resume). Tune saves each
    metric's last 10 values with the trial (`metric_n_steps`); an epoch is one step, so these
    are the epochs up to the latest result's, all of them for a trial of up to 10 epochs."""
    last = trial.last_result.get(time_attr)
    if time_attr != "training_iteration" or not isinstance(last, int):
        return []
    depth = min(last, 10)
    recent = {m: list(windows.get("10", ())) for m, windows in (trial.metric_n_steps or {}).items()}
    recent = {m: values for m, values in recent.items() if len(values) == depth}  # one per epoch
    if recent.get(time_attr) != list(range(last - depth + 1, last + 1)):
        return []  # not one value per epoch up to the latest: nothing to align them by
    return [{time_attr: last - back, **{m: values[-1 - back] for m, values in recent.items()}}
            for back in reversed(range(depth))]


def _logged(trial: Trial) -> list[dict]:
    """The trial's result log (Ray's JSON lines beside its checkpoints) on storage, without a
    line the fault cut off: a driver killed while writing or copying it can leave half a line,
    which would fail Tune's restore here (one cause that fits a failed restore seen in CI;
    not confirmed)."""
    storage = trial.storage
    path = f"{storage.trial_fs_path}/{RESULTS_LOG_FILE}"
    try:
        with storage.storage_filesystem.open_input_stream(path) as f:
            text = f.readall().decode(errors="replace")
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # cut off (or blank)
            continue
    return rows


def reconcile_search(tune_controller) -> None:
    """Make the search algorithm's bookkeeping agree with the trials Tune holds. Ray saves the
    search algorithm's state and the trials' in separate files, copied to storage one after the
    other (ray-project/ray#19113): a driver killed in between resumes with a concurrency
    limiter that counts a finished or never-saved trial as running, which holds its slot
    forever (with one slot, the resumed sweep waits forever: seen in CI), and a trial counter
    off by one (a trial too many or too few). Every trial Tune holds came from the search
    algorithm, and each unfinished one is running for it. Called as trials are added (the
    restored ones before the first step), where Ray lets a scheduler reach the searcher; in
    a sweep that was never interrupted it changes nothing."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchGenerator

    trials = tune_controller.get_trials()
    running = {t.trial_id for t in trials if t.status not in (Trial.TERMINATED, Trial.ERROR)}
    algorithm = tune_controller.search_alg
    if isinstance(algorithm, BasicVariantGenerator):  # random, grid: limited themselves
        algorithm._live_trials = running
    elif isinstance(algorithm, SearchGenerator):
        algorithm._counter = len(trials)
        if isinstance(algorithm.searcher, ConcurrencyLimiter):
            algorithm.searcher.live_trials = set(running)
            algorithm.searcher.num_unfinished_live_trials = len(running)


class Reconciled:
    """Mixin for every scheduler distune builds: `reconcile_search` as each trial is added."""

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        reconcile_search(tune_controller)


class ResumableFIFO(Reconciled, FIFOScheduler):
    pass


class ResumablePBT(Reconciled, PopulationBasedTraining):
    pass


class Replayed(Reconciled):
    """Mixin: replay a restored trial's history into the scheduler as it is re-added."""

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        history = earlier_results(trial, self._time_attr)
        for result in history:
            super().on_trial_result(tune_controller, trial, result)
        if history and trial.status == Trial.TERMINATED:
            super().on_trial_complete(tune_controller, trial, history[-1])


class ResumableASHA(Replayed, AsyncHyperBandScheduler):
    pass


class ResumableMedian(Replayed, MedianStoppingRule):
    pass


def creation_index(trial: Trial) -> int:
    """The order Tune created a trial in: its experiment tag starts with that counter (both
    Tune's generators write it, and it is restored with the trial)."""
    head = str(trial.experiment_tag or "").split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 30


class NoneLeftPausing:
    """Mixin for synchronous HyperBand: when a bracket ends, stop the trials still pausing at
    its last rung. Ray's `cleanup_full` stops only trials already PAUSED; one whose PAUSE
    still waits for its checkpoint save (RUNNING, saving) when the bracket's last trial
    reports becomes PAUSED a moment later and waits forever: the sweep never ends (seen in
    the fault tests, two trials of a bracket at its last rung together)."""

    def on_trial_result(self, tune_controller, trial: Trial, result: dict):
        action = super().on_trial_result(tune_controller, trial, result)
        self._stop_pausing(tune_controller, trial)
        return action

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        super().on_trial_remove(tune_controller, trial)
        self._stop_pausing(tune_controller, trial)

    def _stop_pausing(self, tune_controller, trial: Trial) -> None:
        bracket = self._trial_info[trial][0]
        if bracket.finished():
            for other in bracket.current_trials():
                if other is not trial and other.status == Trial.RUNNING and other.is_saving:
                    tune_controller.stop_trial(other)  # Tune applies it once the save is done


class StoppingBOHB(Reconciled, NoneLeftPausing, HyperBandForBOHB):
    pass


class ResumableHyperBand(NoneLeftPausing, HyperBandScheduler):
    """Synchronous HyperBand across a resume. Ray re-adds restored trials most recent first,
    and HyperBand fills brackets in the order trials arrive: the brackets would be made anew,
    finished trials would sit in them forever without results, and their rungs never close.
    Here trials are placed when the scheduler is next asked to decide, in creation order (as
    an uninterrupted sweep placed them), and each bracket's rungs are replayed from its
    trials' reported epochs: the halvings already made are made again, and a trial waiting at
    an unfinished rung waits again (PAUSED) instead of training past it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._arrived: list[Trial] = []

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self._arrived.append(trial)
        reconcile_search(tune_controller)

    def _place(self, tune_controller) -> None:
        arrived, self._arrived = sorted(self._arrived, key=creation_index), []
        histories = {}
        for trial in arrived:
            super().on_trial_add(tune_controller, trial)
            if history := earlier_results(trial, self._time_attr):
                histories[trial] = history
        brackets = list(dict.fromkeys(self._trial_info[t][0] for t in histories))
        for bracket in brackets:
            self._replay(tune_controller, bracket, histories)

    def _replay(self, tune_controller, bracket, histories: dict) -> None:
        attr, ended = self._time_attr, (Trial.TERMINATED, Trial.ERROR)
        while bracket.current_trials():
            milestone, waiting, reached = bracket._cumul_r, False, []
            for trial in bracket.current_trials():
                rows = [r for r in histories.get(trial, ()) if r[attr] <= milestone]
                if rows:
                    bracket.update_trial_stats(trial, rows[-1])
                if rows and rows[-1][attr] >= milestone:
                    reached.append(trial)
                elif trial.status in ended:  # ended on its own: done early, diverged, failed
                    bracket.cleanup_trial(trial)
                else:
                    waiting = True  # still on its way to this rung
            if waiting:  # the rung is open: who reached it waits, as it did before the fault
                for trial in reached:
                    if trial.status == Trial.PENDING:
                        tune_controller._set_trial_status(trial, Trial.PAUSED)
                return
            if not bracket.current_trials() or bracket.finished():
                for trial in bracket.current_trials():
                    if trial.status not in ended:
                        tune_controller.stop_trial(trial)
                return
            good, bad = bracket.successive_halving(self._metric, self._metric_op)
            self._num_stopped += len(bad)
            for trial in bad:
                bracket.cleanup_trial(trial)
                if trial.status not in ended:  # the fault came before Tune saved the stop
                    tune_controller.stop_trial(trial)

    def choose_trial_to_run(self, tune_controller):
        self._place(tune_controller)
        return super().choose_trial_to_run(tune_controller)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict):
        self._place(tune_controller)
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self._place(tune_controller)
        super().on_trial_remove(tune_controller, trial)
