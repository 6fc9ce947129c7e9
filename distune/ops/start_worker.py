"""The private local Ray's worker launcher, in place of Ray's setup_worker.py (local_ray_environment
points the raylet here). Ray starts every Python worker through setup_worker.py, which imports
Ray (0.5 s of CPU, measured) to apply the worker's runtime environment, then execs bash, which
execs the worker, which imports Ray again. Where that environment holds at most environment
variables, as for every worker of distune's private Ray (Tune gives each trial's actor two),
this sets them as Ray's `update_envs` does and execs the worker itself: the same arguments, the
same process. Anything else (a command prefix, a container, another language) goes to Ray's
own setup_worker.py, unchanged. Standard library only: importing Ray here would cost what
this saves."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys


def parser() -> argparse.ArgumentParser:
    """Ray's setup_worker.py's own options, parsed the same way."""
    p = argparse.ArgumentParser()
    p.add_argument("--serialized-runtime-env-context", type=str)
    p.add_argument("--language", type=str)
    return p


def worker_start(argv: list[str]) -> tuple[list[str], dict[str, str]] | None:
    """The worker's command line and the variables to set, where its runtime environment
    asks for nothing else; else None."""
    args, rest = parser().parse_known_args(argv)
    try:
        context = json.loads(args.serialized_runtime_env_context or "{}")
    except ValueError:
        return None
    env_vars = context.pop("env_vars", None) or {}
    executable = context.pop("py_executable", None) or sys.executable
    if args.language != "PYTHON" or any(context.values()):
        return None
    return [executable, *rest], {k: expanded(v) for k, v in env_vars.items()}


def expanded(value: str) -> str:
    """Ray's rule (ray._private.utils.update_envs): $X and ${X} from this environment, an
    unset ${X} as nothing."""
    return re.sub(r"\$\{[A-Z0-9_]+\}", "", os.path.expandvars(value))


def main() -> None:
    start = worker_start(sys.argv[1:])
    if start is None:
        ray_dir = importlib.util.find_spec("ray").submodule_search_locations[0]  # not imported
        command = [sys.executable, os.path.join(ray_dir, "_private", "workers", "setup_worker.py"),
                   *sys.argv[1:]]
    else:
        command, env_vars = start
        os.environ.update(env_vars)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
