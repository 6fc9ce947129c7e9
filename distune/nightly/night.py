"""`distune nightly`: one dated sweep per night that builds on the earlier nights and says what
changed. Layout under `<run.storage>/<sweep name>/`:

    nights/<YYYY-MM-DD>/   an ordinary distune experiment (plus nightly-report.md and the chart)
    history.sqlite         one row per night (distune.nightly.history)
    best -> promoted/<date>/   the best model so far (symlink, swapped atomically)
    nightly.lock           held while a night runs (distune.ops.lock)

A night warm-starts its searcher from earlier nights' trials and re-evaluates the earlier bests
first, so a change in code or data shows up as a drop in a known config's score (a regression).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from distune.config.load import validate

from distune.config.schema import Experiment, storage_root
from distune.errors import DistuneError, Interrupted
from distune.pipeline import Summary, resume, run
from distune.nightly.history import FINISHED, History, Night, chart, judge, report
from distune.results.layout import (BEST_DIR, BEST_FILE, HISTORY_FILE, LOCK_FILE, NIGHT_CHART_FILE,
                                    NIGHT_REPORT_FILE, NIGHTS_DIR)
from distune.results.table import write_atomic
from distune.nightly.keep import post, promote, promoted_score, prune
from distune.results.values import better, config_key

EXIT_REGRESSION = 3
EXIT_LOCKED = 4
DATE_ENV = "DISTUNE_NIGHT"
DEFAULT_KEEP_NIGHTS = 7


@dataclass(frozen=True)
class NightOptions:
    date: str
    time_budget_s: float | None = None
    keep_nights: int = DEFAULT_KEEP_NIGHTS
    notify: str | None = None
    rebaseline: bool = False
    verbose: bool = False


def parse_duration(text: str) -> float:
    """'6h', '90m', '1h30m', '45s' or plain seconds -> seconds."""
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower() or \
            (len(parts) > 1 and not all(u for _, u in parts)):
        raise DistuneError(f"--time-budget {text!r}: expected a duration like 6h, 90m, 1h30m, 45s "
                           "or a number of seconds.")
    seconds = sum(float(n) * units[u] for n, u in parts)
    if seconds <= 0:
        raise DistuneError(f"--time-budget {text!r}: must be more than 0.")
    return seconds


def night_date(text: str | None) -> str:
    """--date, else $DISTUNE_NIGHT, else today (local time), as YYYY-MM-DD."""
    text = text or os.environ.get(DATE_ENV)
    if not text:
        return datetime.date.today().isoformat()
    try:
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise DistuneError(f"--date {text!r} (or ${DATE_ENV}): expected YYYY-MM-DD, e.g. "
                           "2026-11-23; leave both unset for today.") from None


def sweep_directory(exp: Experiment, stem: str) -> Path:
    """<run.storage>/<run.name or the config's stem>: where all nights of a sweep live."""
    root = storage_root(exp)
    if "://" in root:
        raise DistuneError(f"run.storage: {root}: nightly sweeps need a local or shared-filesystem "
                           "path (the history and the lock are files).")
    return Path(root) / (exp.run.name or stem)


def config_hash(exp: Experiment) -> str:
    """Identifies what is searched and how, not where or for how long it runs. Defaults are left
    out, so a new optional field in a later distune version does not change every hash."""
    raw = exp.model_dump(mode="json", exclude_defaults=True)
    raw.setdefault("run", {})
    for key in ("name", "storage", "address", "time_budget_s"):
        raw["run"].pop(key, None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]


def code_version() -> str:
    """distune's version, plus the git commit when it runs from a checkout (".dirty" if edited)."""
    from importlib.metadata import version

    __version__ = version("distune")  # pyproject.toml's, the one place it is written
    src = Path(__file__).resolve().parent
    if "site-packages" in src.parts:
        return __version__
    git = ["git", "-C", str(src)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short=10", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return __version__
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{head.stdout.strip()}{'.dirty' if dirty else ''}"


def nightly(exp: Experiment, stem: str, opts: NightOptions, say: Callable[[str], None] = print) -> int:
    """Run (or resume) tonight's sweep under the sweep's lock; 0, or EXIT_REGRESSION."""
    from distune.ops import lock
    from distune.sweep.directory import check_writable

    sweep = sweep_directory(exp, stem)
    check_writable(sweep)
    if opts.notify and not opts.notify.startswith(("http://", "https://")):
        raise DistuneError(f"--notify {opts.notify!r}: expected an http:// or https:// URL.")
    with lock.held(sweep / LOCK_FILE, opts.time_budget_s or exp.run.time_budget_s, say):
        return _night(exp, sweep, opts, say)


@contextmanager
def _ray_stopping_on_sigterm(exp: Experiment, verbose: bool) -> Iterator[None]:
    """systemd and Kubernetes stop with SIGTERM, which Ray's driver turns into an immediate
    exit: once Ray is up, make SIGTERM act as Ctrl-C, so Tune saves the sweep's state and the
    next run resumes the night."""
    import threading

    import ray

    from distune.sweep.tune import start_ray

    owns_ray = start_ray(exp, verbose)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT)) \
        if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        if owns_ray:
            ray.shutdown()


def _night(exp: Experiment, sweep: Path, opts: NightOptions, say: Callable[[str], None]) -> int:
    history = History(sweep / HISTORY_FILE)
    night_dir = sweep / NIGHTS_DIR / opts.date
    night = history.get(opts.date)
    if night is not None and night.status in FINISHED:
        say(f"distune: night {opts.date} of {sweep.name} already ran ({night.status}); report: "
            f"{night_dir / NIGHT_REPORT_FILE}")
        return 0
    night = night or Night(opts.date, metric=exp.search.metric, mode=exp.search.mode)
    night.status, night.code_version = "running", code_version()
    night.config_hash = night.config_hash or config_hash(exp)  # a resumed night keeps its own
    night.rebaseline = night.rebaseline or opts.rebaseline
    history.save(night)
    started = time.time()
    try:
        with _ray_stopping_on_sigterm(exp, opts.verbose):
            if _has_state(night_dir):
                summary = resume(night_dir, verbose=opts.verbose, say=say)
            else:
                planned = plan(exp, sweep, opts, history.nights(), say)
                summary = run(planned, opts.date, overwrite=True, verbose=opts.verbose, say=say)
    except (Interrupted, KeyboardInterrupt) as e:
        _give_up(history, night, "interrupted", started, opts, sweep)
        raise Interrupted(f"interrupted: night {opts.date} is saved in {night_dir}; run the same "
                          f"`distune nightly` command with --date {opts.date} to resume it.") from e
    except BaseException:
        _give_up(history, night, "failed", started, opts, sweep)
        raise
    night.wall_s += time.time() - started
    return conclude(night, sweep, history, opts, summary, say)


def _give_up(history: History, night: Night, status: str, started: float, opts: NightOptions,
             sweep: Path) -> None:
    night.status, night.wall_s = status, night.wall_s + time.time() - started
    history.save(night)
    if opts.notify:
        post(opts.notify, {"sweep": sweep.name, "night": night.date, "status": status})


def _has_state(directory: Path) -> bool:
    return any(directory.glob("experiment_state*.json"))


def plan(exp: Experiment, sweep: Path, opts: NightOptions, earlier: list[Night],
         say: Callable[[str], None]) -> Experiment:
    """Tonight's experiment: dated name, time budget, earlier bests first, warm start."""
    from distune.space.params import Fixed, is_conditional
    from distune.search.searchers import SEARCHERS
    from distune.search.warmstart import fits

    earlier = [n for n in earlier if n.date < opts.date and n.status in FINISHED]
    raw = exp.model_dump(mode="json")
    raw["run"].update(name=opts.date, storage=str(sweep / NIGHTS_DIR))
    # New configs each night; the split and each config's training stay seeded by run.seed.
    base = exp.run.seed if exp.search.seed is None else exp.search.seed
    raw["search"]["seed"] = base + int(opts.date.replace("-", ""))
    if opts.time_budget_s:
        raw["run"]["time_budget_s"] = opts.time_budget_s
    params = exp.model.params
    flat = not is_conditional(params)
    if flat and exp.search.searcher != "stepwise":
        searched = [k for k, p in params.items() if not isinstance(p, Fixed)]
        points, seen = [], {config_key(p) for p in exp.search.initial_points}
        for config in earlier_bests(sweep, earlier):
            point = {k: config[k] for k in searched if k in config}
            if len(point) == len(searched) and fits(params, point) and config_key(point) not in seen:
                seen.add(config_key(point))
                points.append(point)
        if points:
            say(f"distune: re-evaluating {len(points)} earlier best config(s) first")
            raw["search"]["initial_points"] = [*points, *exp.search.initial_points]
            if exp.planned_trials == exp.search.num_samples:  # not a grid: they come on top
                raw["search"]["num_samples"] = exp.search.num_samples + len(points)
    sources = [str(sweep / NIGHTS_DIR / n.date) for n in earlier
               if not n.regression and _has_state(sweep / NIGHTS_DIR / n.date)][-opts.keep_nights:]
    if sources and SEARCHERS[exp.search.searcher].can("warm_start") and flat:
        own = exp.search.warm_start
        raw["search"]["warm_start"] = [*([own] if isinstance(own, str) else own or []), *sources]
    elif sources:
        say(f"distune: searcher {exp.search.searcher} does not learn from earlier trials "
            f"(warm start needs {' or '.join(SEARCHERS.able('warm_start'))} over a "
            "flat space); tonight only re-evaluates the earlier bests")
    return validate(raw, f"night {opts.date}")


def earlier_bests(sweep: Path, earlier: list[Night]) -> list[dict[str, Any]]:
    """The promoted best's config and the last sound night's best, without repeats."""
    configs = []
    promoted = sweep / BEST_DIR / BEST_FILE
    if promoted.is_file():
        configs.append(json.loads(promoted.read_text())["config"])
    last = next((n for n in reversed(earlier) if n.best_config and not n.regression), None)
    if last is not None:
        configs.append(last.best_config)
    unique = {config_key(c): c for c in configs}
    return list(unique.values())


def conclude(night: Night, sweep: Path, history: History, opts: NightOptions, summary: Summary,
             say: Callable[[str], None]) -> int:
    """Record the night, judge it against earlier ones, promote, report, prune, notify."""
    night_dir, exp = summary.directory, summary.experiment
    metric, mode = exp.search.metric, exp.search.mode
    night.rechecks = _rechecks(night, history, summary)
    history.record_scores(night.date, [(t, any(_runs(t.config, p) for p in exp.search.initial_points))
                                       for t in summary.records if not math.isnan(t.score)])
    champion = None
    for n in [] if night.rebaseline else history.comparable(night.date, night.config_hash):
        champion = n if champion is None or better(n.best_score, champion.best_score, mode) else champion
    _fill(night, summary, champion)
    night.promoted = not night.regression and (
        night.rebaseline or better(night.best_score, promoted_score(sweep), mode))
    if night.promoted:
        promote(sweep, night_dir, night)
    night.status = "regression" if night.regression else "ok"
    history.save(night)

    nights = history.nights()
    drawn = chart(nights, night_dir / NIGHT_CHART_FILE)
    write_atomic(night_dir / NIGHT_REPORT_FILE, report(sweep.name, night, champion, nights,
                                                       NIGHT_CHART_FILE if drawn else None))
    prune(sweep, opts.keep_nights, night.date, say)
    say(_headline(sweep, night, champion) + f"\ndistune: report: {night_dir / NIGHT_REPORT_FILE}")
    if opts.notify:
        post(opts.notify, {"sweep": sweep.name, "night": night.date, "status": night.status,
                           "metric": metric, "best": night.best_score,
                           "test_accuracy": night.test_accuracy, "improved": night.improved,
                           "regression": night.regression, "promoted": night.promoted,
                           "report": str(night_dir / NIGHT_REPORT_FILE)})
    return EXIT_REGRESSION if night.regression else 0


def _rechecks(night: Night, history: History, summary: Summary) -> list[dict[str, Any]]:
    """Each initial point (earlier winners, run first) judged against its earlier scores."""
    out = []
    for point in summary.experiment.search.initial_points:
        for t in (t for t in summary.records if _runs(t.config, point)):  # the first is the recheck
            score = None if math.isnan(t.score) else t.score  # NaN: never scored
            earlier = [] if night.rebaseline else history.baseline(t.config, night.date,
                                                                    night.config_hash)
            out.append(asdict(judge(t.config, earlier, score, t.status, summary.experiment.search.mode)))
            break
    return out


def _fill(night: Night, summary: Summary, champion: Night | None) -> None:
    """The night's facts from its run's Summary."""
    exp, records, mode = summary.experiment, summary.records, summary.experiment.search.mode
    busy_h = sum(float(t.last.get("time_s") or 0.0) for t in records) / 3600
    night.metric, night.mode = summary.metric, mode
    night.best_config, night.best_score = summary.best_config, float(summary.best_score)
    night.test_accuracy = float(summary.test_accuracy)
    night.trials = len(records)
    night.stopped_early = sum(t.status in ("stopped", "early-stopped") for t in records)
    night.failed = sum(t.status in ("error", "diverged") for t in records)
    night.cpu_hours = busy_h * exp.resources.cpus_per_trial
    night.gpu_hours = busy_h * exp.resources.gpus_per_trial
    night.improved = None if champion is None else better(night.best_score, champion.best_score, mode)
    night.regression = any(c["verdict"] == "regression" for c in night.rechecks)
    warm = exp.search.warm_start
    night.warm_from = [Path(w).name for w in ([warm] if isinstance(warm, str) else warm or [])]


def _runs(config: dict[str, Any], point: dict[str, Any]) -> bool:
    """Does a trial's config set every value of an initial point?"""
    return config_key({k: config.get(k) for k in point}) == config_key(point)


def _headline(sweep: Path, night: Night, champion: Night | None) -> str:
    if night.improved is None:
        change = "nothing comparable before it (first night, new config, or rebaseline)"
    else:
        change = (f"{'improved' if night.improved else 'no improvement'} "
                  f"({night.best_score - champion.best_score:+.4f} vs {champion.date})")
    lines = [f"distune: {sweep.name} night {night.date}: best {night.metric} "
             f"{night.best_score:.4f}, test accuracy {night.test_accuracy:.4f}; {change}"
             f"{'; promoted to ' + str(sweep / BEST_DIR) if night.promoted else ''}"]
    for c in night.rechecks:
        if c["verdict"] == "regression":
            lines.append(f"distune: REGRESSION: earlier best {json.dumps(c['config'])} scored "
                         f"{c['score']:.4f}, earlier {sum(c['earlier']) / len(c['earlier']):.4f} "
                         f"(allowed drop {c['threshold']:.4f})")
    return "\n".join(lines)


def history_text(sweep: Path) -> str:
    """`distune history`: the nights as a table, and where the latest report is."""
    from distune.nightly.history import table

    file = sweep / HISTORY_FILE
    if not file.is_file():
        raise DistuneError(f"no nightly history at {file}. Check the sweep's name and --storage "
                           "(the history appears after the first `distune nightly`).")
    nights = History(file).nights()
    latest = sweep / NIGHTS_DIR / nights[-1].date / NIGHT_REPORT_FILE if nights else None
    tail = f"\nlatest report: {latest}" if latest and latest.is_file() else ""
    return f"{sweep}: {len(nights)} nights\n{table(nights)}{tail}"
