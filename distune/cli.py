"""`distune` on the command line. User mistakes exit 2 with one paragraph, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distune.config.load import FLAG_FIELDS, load_experiment, presets
from distune.config.schema import DEFAULT_STORAGE
from distune.errors import DistuneError, Interrupted
from distune.results.layout import BEST_FILE, CHARTS_DIR, CONFIG_FILE, HISTORY_FILE
from distune.ops.storage import fetch, is_uri, join, where

EXIT_INTERNAL_ERROR = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="experiment YAML file or preset name (default: mnist-mlp)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any field, e.g. --set train.epochs=3 (repeatable; values are YAML)")
    p.add_argument("--searcher", help="search.searcher")
    p.add_argument("--scheduler", help="schedule.scheduler")
    p.add_argument("--samples", type=int, help="search.num_samples")
    p.add_argument("--backend", choices=["tensorflow", "jax"], help="train.backend: Keras's backend in the trials")
    p.add_argument("--data", help="data.path: an MNIST .npz in Keras's layout")
    p.add_argument("--storage", help=f"run.storage (default {DEFAULT_STORAGE})")
    p.add_argument("--name", help="run.name")
    p.add_argument("--address", help="run.address: an existing Ray cluster (auto, ray://HOST:10001)")


def _existing_args(p: argparse.ArgumentParser, what: str = "experiment") -> None:
    p.add_argument("name", help=f"{what} name (or its directory)")
    p.add_argument("--storage", default=None, help=f"where it lives (default {DEFAULT_STORAGE})")


def _verbose_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true", help="show Ray and TensorFlow logs")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="distune", description="Distributed hyperparameter tuning "
                                   "of Keras MNIST models on Ray Tune.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = root.add_subparsers(dest="command", required=True)
    _sweep_commands(sub, common)
    _reading_commands(sub, common)
    return root


def _sweep_commands(sub, common) -> None:
    """The commands that run (or check) a sweep: run, validate, resume, nightly, submit."""
    run = sub.add_parser("run", parents=[common], help="run a sweep (default preset: mnist-mlp)")
    _experiment_args(run)
    run.add_argument("--overwrite", action="store_true", help="replace an experiment of the same name")
    run.add_argument("--refit", action="store_true",
                     help="retrain the winner on train+validation before testing it")
    _verbose_arg(run)

    val = sub.add_parser("validate", parents=[common], help="check an experiment without running it")
    _experiment_args(val)

    res = sub.add_parser("resume", parents=[common], help="continue an interrupted sweep")
    _existing_args(res)
    res.add_argument("--refit", action="store_true", help="as for run")
    res.add_argument("--skip-corrupt", action="store_true",
                     help="resume even if some trials' checkpoints are unreadable (they fail)")
    _verbose_arg(res)

    night = sub.add_parser("nightly", parents=[common], help="tonight's dated sweep: warm-started, "
                           "compared with earlier nights (docs/nightly.md)")
    _experiment_args(night)
    night.add_argument("--date", help="the night, YYYY-MM-DD (default: $DISTUNE_NIGHT, else today)")
    night.add_argument("--time-budget", help="run.time_budget_s as a duration: 6h, 90m, 1h30m")
    night.add_argument("--keep-nights", type=int, default=7, metavar="N",
                       help="keep checkpoints of the last N nights (default 7); history is kept")
    night.add_argument("--notify", metavar="URL", help="POST a JSON summary here (failures warn)")
    night.add_argument("--rebaseline", action="store_true", help="an intended change of code or "
                       "data: compare later nights with this one, and promote its winner")
    _verbose_arg(night)

    job = sub.add_parser("submit", parents=[common], conflict_handler="resolve",
                         help="run a sweep as a Ray job on a remote cluster (cluster/README.md)")
    _experiment_args(job)
    job.add_argument("--address", metavar="URL", help="the cluster's Jobs API, e.g. "
                     "http://127.0.0.1:8265 through a tunnel (default $RAY_API_SERVER_ADDRESS)")
    job.add_argument("--no-wait", action="store_true", help="print the job id and return")
    job.add_argument("--overwrite", action="store_true", help="as for run")
    job.add_argument("--refit", action="store_true", help="as for run")
    job.add_argument("--insecure-http-token", action="store_true", help="send the token over plain "
                     "http to another machine (refused by default: use a tunnel or https)")


def _reading_commands(sub, common) -> None:
    """The commands that read what sweeps wrote, or what distune offers."""
    show = sub.add_parser("show", parents=[common], help="trials of an experiment, best first")
    _existing_args(show)
    show.add_argument("--top", type=int, default=None, help="show only the best N trials")

    hist = sub.add_parser("history", parents=[common], help="a nightly sweep's nights as a table")
    _existing_args(hist, "sweep")

    rep = sub.add_parser("report", parents=[common], help="write report.html (charts, winner) "
                         "for an experiment, finished or running (docs/report.md)")
    _existing_args(rep)

    sub.add_parser("presets", parents=[common], help="list the shipped presets")
    sub.add_parser("searchers", parents=[common], help="list the searchers and their options")
    sub.add_parser("schedulers", parents=[common], help="list the schedulers and their options")


def _load(args):
    flags = {k: getattr(args, k) for k in FLAG_FIELDS}
    return load_experiment(args.config, args.overrides, flags)


def cmd_run(args) -> int:
    from distune.pipeline import run

    exp, stem = _load(args)
    _print_summary(run(exp, stem, overwrite=args.overwrite, refit=args.refit, verbose=args.verbose))
    return 0


def cmd_submit(args) -> int:
    from distune.submit import submit_sweep

    flags = {k: getattr(args, k) for k in FLAG_FIELDS if k != "address"}
    return submit_sweep(args.config, args.overrides, flags, address=args.address,
                        wait=not args.no_wait, overwrite=args.overwrite, refit=args.refit,
                        insecure_http_token=args.insecure_http_token)


def cmd_resume(args) -> int:
    from distune.pipeline import resume

    directory = experiment_path(args.name, args.storage)
    _print_summary(resume(directory, refit=args.refit, skip_corrupt=args.skip_corrupt,
                          verbose=args.verbose))
    return 0


def cmd_nightly(args) -> int:
    from distune.ops.lock import Locked
    from distune.nightly.night import EXIT_LOCKED, NightOptions, night_date, nightly, parse_duration

    if args.keep_nights < 1:
        raise DistuneError(f"--keep-nights {args.keep_nights}: keep at least 1 night.")
    exp, stem = _load(args)
    opts = NightOptions(night_date(args.date), args.time_budget and parse_duration(args.time_budget),
                        args.keep_nights, args.notify, args.rebaseline, args.verbose)
    try:
        return nightly(exp, stem, opts)
    except Locked as e:
        print(f"distune: error: {e}", file=sys.stderr)
        return EXIT_LOCKED


def cmd_history(args) -> int:
    from distune.nightly.night import history_text

    sweep = Path(args.name).expanduser()
    if not (sweep / HISTORY_FILE).is_file():
        sweep = Path(args.storage or DEFAULT_STORAGE).expanduser().absolute() / args.name
    print(history_text(sweep))
    return 0


def experiment_path(name: str, storage: str | None) -> Path:
    """A directory (or URI) given as such, else <storage>/<name>; for a URI, a local mirror
    of the experiment (distune.ops.storage)."""
    directory = Path(name).expanduser()
    if directory.is_dir() and (directory / CONFIG_FILE).is_file():
        return directory
    if is_uri(name) or (storage and is_uri(storage)):
        return fetch(name if is_uri(name) else join(storage, name))
    return Path(storage or DEFAULT_STORAGE).expanduser().absolute() / name


def _print_summary(s) -> None:
    width = max(len(k) for k in s.best_config)
    print(f"\nBest of {s.trials} trials ({s.wall_s:.0f} s):")
    for k, v in s.best_config.items():
        print(f"  {k:<{width}}  {v:.4g}" if isinstance(v, float) else f"  {k:<{width}}  {v}")
    print(f"  validation {s.metric}: {s.best_score:.4f}")
    print(f"  test accuracy{' (refit on train+val)' if s.refit else ''}: {s.test_accuracy:.4f}")
    for label, path in s.files.items():
        print(f"  {label:<6} {where(path)}")


def cmd_validate(args) -> int:
    from distune.trial.data import check_subset, find_mnist, read_npz
    from distune.config.schema import storage_root
    from distune.sweep.directory import check_writable
    from distune.ops.storage import probe
    from distune.trial.usermodel import dry_build
    exp, _ = _load(args)
    dry_build(exp)
    if "://" not in storage_root(exp):
        check_writable(Path(storage_root(exp)))
    else:
        probe(storage_root(exp))
    file = find_mnist(exp.data.path)
    if file is not None:
        check_subset(exp.data.train_subset, len(read_npz(file)["x_train"]), file)
    print(f"OK: {exp.planned_trials} trials, searcher {exp.search.searcher}, "
          f"scheduler {exp.schedule.scheduler}, up to {exp.max_epochs} epochs; data: "
          f"{file or 'Keras download'}")
    return 0


def cmd_show(args) -> int:
    from distune.results.table import format_table, open_analysis, trials_table
    from distune.config.saved import load_saved_experiment

    directory = experiment_path(args.name, args.storage)
    exp = load_saved_experiment(directory)
    table = trials_table(open_analysis(directory), exp.search.metric, exp.search.mode,
                         exp.train.epochs, finished=(directory / BEST_FILE).is_file())
    print(f"{where(directory)}: {len(table)} trials, ranked by best {exp.search.metric} ({exp.search.mode})")
    print(format_table(table, args.top))
    if (directory / BEST_FILE).is_file():
        best = json.loads((directory / BEST_FILE).read_text())
        print(f"winner: {best['trial']}  test accuracy {best['test_accuracy']:.4f}")
    return 0


def cmd_report(args) -> int:
    from distune.report.page import report_of
    from distune.ops.storage import publish

    directory = experiment_path(args.name, args.storage)
    page = report_of(directory)
    publish(directory)  # a URI's mirror: upload the report
    print(f"report: {where(page)}\ncharts: {where(directory / CHARTS_DIR)}/*.png")
    return 0


def cmd_registry(args) -> int:
    from distune.search.schedulers import SCHEDULERS
    from distune.search.searchers import SEARCHERS

    registry = SEARCHERS if args.command == "searchers" else SCHEDULERS
    for entry in registry.values():
        pairs = f" (only with {' or '.join(entry.only_with)})" if entry.only_with else ""
        print(f"{entry.name:<15} {entry.summary}{pairs}")
        for name, field in entry.options.model_fields.items():
            default = "required" if field.is_required() else f"default {field.default!r}"
            print(f"{'':<17}{name}: {field.description or ''} ({default})")
    return 0


def cmd_presets(args) -> int:
    for name, summary in presets().items():
        print(f"{name:<16} {summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler = {"run": cmd_run, "resume": cmd_resume, "validate": cmd_validate, "show": cmd_show,
               "nightly": cmd_nightly, "history": cmd_history, "submit": cmd_submit,
               "report": cmd_report, "presets": cmd_presets, "searchers": cmd_registry,
               "schedulers": cmd_registry}[args.command]
    from distune.ops.environment import quiet_environment

    quiet_environment(getattr(args, "verbose", False))
    # Progress lines as they happen, also into a pipe or a log file (`| tee`, a nightly job's
    # log), where Python would otherwise hold them in a block buffer until the command ends
    if hasattr(sys.stdout, "reconfigure"):  # not a StringIO a caller put there
        sys.stdout.reconfigure(line_buffering=True)
    try:
        return handler(args)
    except Interrupted as e:
        print(f"distune: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DistuneError as e:
        if args.debug:
            raise
        print(f"distune: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `distune show NAME | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("distune: interrupted (a second Ctrl-C skips saving the sweep's state)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # a bug, not the user's mistake. Printed here: once Ray has shut down,
        if args.debug:  # the excepthook it installs can fail and print nothing at all.
            raise
        import traceback

        traceback.print_exc()
        print("distune: internal error: the traceback above is a bug in distune or a library it "
              "uses, not a mistake in your input; please report it. Finished trials stay in the "
              "experiment's storage (`distune show NAME`, `distune resume NAME`).", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())


def entry() -> None:
    """The `distune` command: `main`, then a prompt as soon as its work is done. A driver that
    tested a winner holds TensorFlow, whose interpreter teardown takes 2-4 s more (measured);
    so, as at a normal exit, other threads are awaited, exit handlers run and output is
    flushed, and then the process ends without that teardown."""
    import atexit
    import os
    import threading

    code = main()
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # noqa: SLF001  (what sys.exit would run; no public name for it)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # `distune show | head`, or a closed stream
            pass
    os._exit(code or 0)
