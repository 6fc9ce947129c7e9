"""The private local Ray's worker launcher, in place of Ray's setup_worker.py (local_ray_environment
points the raylet here). Ray starts every Python worker through setup_worker.py, which imports
Ray (0.5 s of CPU, measured) to apply the worker's runtime environment, then execs bash, which
execs the worker, which imports Ray again. Where that environment holds at most environment
variables, as for every worker of distune's private Ray (Tune gives each trial's actor two),
this sets them as Ray's `update_envs` does and execs the worker itself: the same arguments, the
same process. Anything else (a command prefix, a container, another language) goes to Ray's
own setup_worker.py, unchanged. Standard library only: importing Ray here would cost what
this saves.

Where the driver started a fork server (distune.ops.worker_fork, named by $DISTUNE_WORKER_FORK),
a plain Python worker is not exec'd but forked there, from a process that has imported Ray and
Ray Tune (2.2 s of CPU a worker, measured): this process hands over its arguments, environment,
working directory, signal state and standard streams, then waits for that worker and ends with
it (and the worker with this process: the raylet's kill still ends it). A server that is gone or
refuses (an environment it did not import with) means the exec, as before."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import select
import signal
import socket
import sys


FORK_ENV = "DISTUNE_WORKER_FORK"  # the fork server's socket, in the raylet's environment


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


def fork_request(command: list[str], env_vars: dict[str, str]) -> bytes:
    """All a fork server needs to make its child this process's worker: the worker's argv,
    its environment (with the runtime environment's `env_vars` applied), working directory, umask, the signals this process ignores and blocks, and this process's pid."""
    umask = os.umask(0)
    os.umask(umask)
    catchable = set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
    return json.dumps({
        "executable": command[0], "argv": command[1:], "env": {**os.environ, **env_vars},
        "cwd": os.getcwd(), "umask": umask,
        "ignored": sorted(int(n) for n in catchable if signal.getsignal(n) == signal.SIG_IGN),
        "blocked": sorted(int(n) for n in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "launcher": os.getpid()}).encode() + b"\n"


def forked(command: list[str], env_vars: dict[str, str]) -> int | None:
    """The worker forked by the server at $DISTUNE_WORKER_FORK, awaited: its pid once it has
    ended, or None where there is no server or it refused (then nothing was started)."""
    path = os.environ.get(FORK_ENV)
    if not path or sys.platform != "linux":
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        socket.send_fds(conn, [fork_request(command, env_vars)], [0, 1, 2])
        reply, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    except OSError:
        return None
    finally:
        conn.close()
    if not reply or len(fds) != 1:
        return None  # refused: the server says why in its log
    pid = int(json.loads(reply)["pid"])

    def relay(number: int, _frame) -> None:  # what the raylet sends this process reaches it
        try:
            os.kill(pid, number)
        except OSError:
            pass

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, relay)
    while True:
        try:
            select.select([fds[0]], [], [])  # a pidfd: readable once the worker has exited
            return pid
        except InterruptedError:
            continue


def main() -> None:
    start = worker_start(sys.argv[1:])
    if start is None:
        ray_dir = importlib.util.find_spec("ray").submodule_search_locations[0]  # not imported
        command = [sys.executable, os.path.join(ray_dir, "_private", "workers", "setup_worker.py"),
                   *sys.argv[1:]]
    else:
        command, env_vars = start
        if forked(command, env_vars) is not None:
            return
        os.environ.update(env_vars)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
