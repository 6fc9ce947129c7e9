"""Top-k re-evaluation (`select.top_k`, `select.seeds`): a trustworthy winner, not a lucky one.

A network's validation score moves by tenths of a point from seed to seed, so the sweep's
first place is partly the luckiest draw. After the search, the k best distinct configs (each
at its best checkpointed epoch) are retrained from scratch with `seeds` fresh seeds each, as
one more Ray Tune run in `<experiment>/select/` (a grid over config x seed, trials in parallel
like the search's). Each retrain runs the config's full epochs (its `epochs` or train.epochs,
early stopping as configured, no scheduler) and is scored like a search trial: the search
metric at its best checkpointed epoch. The winner is the config with the best mean; the
search's own scores are not averaged in (they were selected for being high). The exported model
is the winner's median-scoring seed, and each of the winner's seed models is tested once, so
the test accuracy comes with its spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from distune.config.schema import Experiment
from distune.errors import DistuneError
from distune.results.table import write_atomic
from distune.ops.storage import where
from distune.winner.pick import Tested, evaluate_checkpoint, ranked
from distune.results.layout import SELECT_DIR, SELECT_TABLE
from distune.results.records import CONFIG_PREFIX, TrialRecord
from distune.results.values import best_first, config_key, plain_config



@dataclass
class Candidate:
    """One of the search's top-k configs and its retrains (each at its best checkpointed epoch)."""

    search_rank: int
    search: TrialRecord
    runs: list[TrialRecord] = field(default_factory=list)  # finished retrains, by seed index
    seeds: list[int] = field(default_factory=list)  # the seed index of each run
    failed: int = 0  # retrains that errored, diverged or saved no finite score

    @property
    def scores(self) -> list[float]:
        return [r.score for r in self.runs]

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores)) if self.runs else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation across seeds (NaN with fewer than two)."""
        return spread(self.scores)


@dataclass
class Selection:
    ranking: list[Candidate]  # best mean first
    tests: list[Tested]  # of each of the winner's runs
    exported: int  # which of the winner's runs is exported: the median-scoring one
    table: Path  # select.csv

    @property
    def best(self) -> Candidate:
        return self.ranking[0]

    @property
    def winner(self) -> TrialRecord:
        """The winning config as the search found it, represented by its exported retrain."""
        run = self.best.runs[self.exported]
        return self.best.search.but(score=run.score, epoch=run.epoch, checkpoint=run.checkpoint)

    @property
    def accuracies(self) -> list[float]:
        return [tested.accuracy for tested in self.tests]

    def summary(self, metric: str) -> dict[str, Any]:
        """What best.json gains."""
        best = self.best
        return {"val_mean": best.mean, "val_std": _json_float(best.std),
                "test_accuracy_mean": float(np.mean(self.accuracies)),
                "test_accuracy_std": _json_float(spread(self.accuracies)),
                "seeds": len(best.runs), "seed_scores": best.scores,
                f"search_{metric}": best.search.score,
                "select_trial": best.runs[self.exported].trial_id,
                "seed": best.seeds[self.exported], "select_table": SELECT_TABLE}


def spread(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def top_configs(analysis, exp: Experiment) -> list[TrialRecord]:
    """The search's best distinct configs (a config searched twice counts once), best first."""
    seen, out = set(), []
    for w in ranked(analysis.trials, exp.search.metric, exp.search.mode):
        if config_key(w.config) not in seen:
            seen.add(config_key(w.config))
            out.append(w)
    return out[:exp.select.top_k]


def build_select_tuner(exp: Experiment, data: dict, directory: Path, configs: list[dict],
                       verbose: bool = False, say: Callable[[str], None] = print):
    """config x seed as a grid, no scheduler: every retrain runs its config's full epochs."""
    from ray import tune

    from distune.sweep.progress import ProgressLines
    from distune.sweep.tune import checkpoint_config, make_trainable, trial_dirname

    space = {"config": tune.grid_search(configs),
             "seed": tune.grid_search(list(range(exp.select.seeds)))}
    tune_config = tune.TuneConfig(metric=exp.search.metric, mode=exp.search.mode, num_samples=1,
                                  max_concurrent_trials=exp.resources.max_concurrent_trials,
                                  reuse_actors=True, trial_dirname_creator=trial_dirname)
    run_config = tune.RunConfig(
        name=SELECT_DIR, storage_path=where(directory), checkpoint_config=checkpoint_config(exp),
        failure_config=tune.FailureConfig(max_failures=exp.run.max_failures),
        callbacks=[ProgressLines(exp.search.metric, exp.search.mode, exp.train.epochs, say)],
        verbose=1 if verbose else 0)
    return tune.Tuner(make_trainable(exp, data), param_space=space, tune_config=tune_config,
                      run_config=run_config)


def retrain(exp: Experiment, directory: Path, splits, configs: list[dict], verbose: bool,
            say: Callable[[str], None]) -> Path:
    """Run (or, after an interruption, continue) the select stage's Tune run."""
    from ray import tune

    from distune.sweep.tune import fit, make_trainable

    select_dir = directory / SELECT_DIR
    data = splits.for_trials()
    if tune.Tuner.can_restore(where(select_dir)):
        say(f"distune: continuing the re-evaluation in {where(select_dir)}")
        make = lambda: tune.Tuner.restore(  # noqa: E731
            where(select_dir), trainable=make_trainable(exp, data), resume_unfinished=True,
            resume_errored=True)
    else:
        say(f"distune: re-evaluating the top {len(configs)} configs with {exp.select.seeds} "
            f"seeds each ({len(configs) * exp.select.seeds} trials) in {where(select_dir)}")
        make = lambda: build_select_tuner(exp, data, directory, configs, verbose, say)  # noqa: E731
    return select_dir, fit(exp, verbose, make, say, state_dir=select_dir)


def gather(search: list[TrialRecord], trials, exp: Experiment) -> list[Candidate]:
    """Each candidate's retrains, scored like search trials; best mean first. A config that
    errored or diverged on any seed ranks below every config that finished all of them."""
    candidates = {config_key(w.config): Candidate(i, w) for i, w in enumerate(search, 1)}
    scored = {w.trial_id: w for w in ranked(trials, exp.search.metric, exp.search.mode)}
    for trial in sorted(trials, key=lambda t: t.config["seed"]):
        candidate = candidates.get(config_key(plain_config(trial.config["config"])))
        if candidate is None:
            continue
        run = scored.get(trial.trial_id)
        if run is None or trial.status == "ERROR" or (trial.last_result or {}).get("diverged"):
            candidate.failed += 1
            continue
        candidate.runs.append(run.but(config=candidate.search.config))
        candidate.seeds.append(int(trial.config["seed"]))
    return sorted(candidates.values(), key=lambda c: (
        not c.runs, c.failed > 0, best_first(c.mean, exp.search.mode) if c.runs else 0.0,
        c.search_rank))


def reevaluate(exp: Experiment, directory: Path, splits, analysis, verbose: bool = False,
               say: Callable[[str], None] = print) -> Selection:
    """The select stage end to end: retrain, rank by mean, test the winner's seeds, write
    select.csv and print the ranking."""
    search = top_configs(analysis, exp)
    if len(search) < exp.select.top_k:
        say(f"distune: only {len(search)} distinct configs have a checkpoint; re-evaluating those")
    select_dir, retrained = retrain(exp, directory, splits, [w.config for w in search], verbose, say)
    ranking = gather(search, retrained.trials, exp)
    best = ranking[0]
    if not best.runs:
        raise DistuneError(f"no retrain in {where(select_dir)} saved a checkpoint with a finite "
                           f"{exp.search.metric}; see each trial's error.txt there.")
    order = sorted(range(len(best.runs)), key=lambda i: best_first(best.scores[i], exp.search.mode))
    median = order[(len(order) - 1) // 2]  # of an even number: the better middle one
    from distune.sweep.tune import training_node

    node = training_node(exp)
    selection = Selection(ranking, [evaluate_checkpoint(run, splits, node) for run in best.runs],
                          median, directory / SELECT_TABLE)
    write_atomic(selection.table, select_table(ranking, exp.search.metric).to_csv(index=False))
    say(describe(selection, exp))
    return selection


def select_table(ranking: list[Candidate], metric: str) -> pd.DataFrame:
    """One row per re-evaluated config, best mean first."""
    rows = [{"rank": i, "search_rank": c.search_rank, "search_trial": c.search.trial_id,
             f"search_{metric}": c.search.score, f"{metric}_mean": c.mean, f"{metric}_std": c.std,
             "seeds": len(c.runs), "failed": c.failed,
             "scores": " ".join(f"{s:.6g}" for s in c.scores),
             "trials": " ".join(r.trial_id for r in c.runs),
             **{CONFIG_PREFIX + k: v for k, v in c.search.config.items()}}
            for i, c in enumerate(ranking, 1)]
    return pd.DataFrame(rows)


def describe(selection: Selection, exp: Experiment) -> str:
    """The ranking as a person reads it, ending with the winner's test spread."""
    metric = exp.search.metric
    lines = [f"Top {len(selection.ranking)} configs retrained with {exp.select.seeds} seeds each "
             f"({metric}, mean ± std; the search's single run in parentheses):"]
    for i, c in enumerate(selection.ranking, 1):
        std = f"{c.std:.4f}" if math.isfinite(c.std) else "n/a"
        failed = f", {c.failed} failed" if c.failed else ""
        config = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in c.search.config.items() if k != "architecture")
        lines.append(f"  {i}. {c.mean:.4f} ± {std}  (search #{c.search_rank}: "
                     f"{c.search.score:.4f}{failed})  {config}")
    accuracies, best = selection.accuracies, selection.best
    test_std = spread(accuracies)
    spread_text = f" ± {test_std:.4f}" if math.isfinite(test_std) else ""
    lines.append(f"  winner: search #{best.search_rank}; test accuracy of its {len(accuracies)} "
                 f"seed models {np.mean(accuracies):.4f}{spread_text}; exported: seed "
                 f"{best.seeds[selection.exported]} (the median by {metric})")
    return "\n".join(lines)
