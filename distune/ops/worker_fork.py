"""A fork server for the private local Ray's Python workers (the launcher's half is in
start_worker.py).

Every trial is a Ray actor, and every actor a new worker process that imports Ray and Ray Tune
before it runs a line of distune: 2.2 s of CPU each (measured), on the path to each trial's
first epoch and ~120 times in the test suite. The driver starts this server just before its
local Ray. It imports what Ray and Tune import (NumPy, pandas, Arrow: ~1.1 s) while Ray starts.
Ray itself (~0.9 s) reads its C++ settings (the job, the raylet) once, as its library loads, so
the server forks one zygote per worker environment (per Ray job, in practice: a driver that
joins the Ray is another), which imports Ray and Tune in that environment and forks a worker
for each launcher that asks. The child becomes the launcher's worker exactly: its arguments,
environment, working directory, umask, signal dispositions and mask, standard streams, a process
group of its own, and it ends with its launcher. A request from an environment the first
imports did not see (besides what the raylet adds) is refused, and that worker is exec'd as
before. Children share the server's hash seed; NumPy's global generator is seeded anew in each,
as `random`'s is by Python.

One server per driver process (and environment); requests come as JSON (no pickles) over a
Unix socket in a directory only this user can enter. The server ends with its driver, a zygote
with its server, its raylet, or after two idle minutes.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from distune.ops.private import NotPrivate, private_dir
from distune.ops.start_worker import FORK_ENV

# Imported while Ray starts: what `import ray.tune` imports that does not load Ray's library.
DEPENDENCIES = ("numpy", "pandas", "pyarrow", "pydantic", "grpc", "google.protobuf",
                "jsonschema", "requests", "yaml", "msgpack", "psutil", "fsspec", "rich", "tqdm",
                "cloudpickle", "aiohttp", "urllib3", "filelock", "packaging")
RAY = ("ray", "ray.tune", "ray._private.workers.default_worker")  # with the first request
# What the raylet adds to a worker's environment (the server's own name among it): the first
# imports, before any request, did not see them.
RAYLET_SETS = ("RAY_", "SPT_NOENV", FORK_ENV)
# Read as Keras, JAX or TensorFlow import, which a worker does itself (fused trials' actors, with
# their backend's settings): the server imports none of them, so they may differ.
NOT_IMPORTED = ("KERAS_", "XLA_", "JAX_", "TF_")
# Not compared, read at run time: the runtime-environment variables Tune gives its actors but
# not tasks (PyTorch Lightning's by a package this server never imports), and the terminal's
# size, which GNU readline puts in a driver's environment as it loads (under pytest, say).
RUNTIME_ONLY = frozenset({"PL_DISABLE_FORK", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS",
                          "COLUMNS", "LINES"})
FORKS = "forks"  # "<worker pid> <launcher pid>" per line, beside the socket

ZYGOTE_IDLE_S = 120.0  # a zygote no one asked for this long exits (its job may be over)

_started: dict[str, subprocess.Popen] = {}  # environment -> this process's server for it
_count = itertools.count()


@contextlib.contextmanager
def forked_workers():
    """Around the ray.init that starts a local Ray: its workers are forked by this process's
    server (started, or reused for the same environment; another one's is stopped), named in
    the environment the raylet inherits, and in no other process this one starts later."""
    path = _server()
    if path:
        os.environ[FORK_ENV] = path
    try:
        yield
        if path:
            _prepare(path)
    finally:
        os.environ.pop(FORK_ENV, None)


def _prepare(path: str) -> None:
    """Have the zygote for this Ray's job import Ray now, while the driver readies its sweep,
    rather than when the first actor asks. A wrong guess of the workers' environment costs one
    unused zygote."""
    import ray

    with contextlib.suppress(OSError, ValueError, KeyError, AttributeError, LookupError):
        env = worker_environment(local_raylet(), ray.get_runtime_context().get_job_id())
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(path)
            conn.sendall(json.dumps({"prepare": env}).encode() + b"\n")


def worker_environment(raylet: int, job: str) -> dict[str, str]:
    """The environment `raylet` starts job `job`'s workers with, as Ray 2.60 makes it: the
    raylet's own (from /proc), without the jemalloc it preloads for itself, with the job, the
    raylet and setproctitle's switch."""
    env = dict(e.split("=", 1) for e in Path(f"/proc/{raylet}/environ").read_text().split("\0")
               if "=" in e)
    if env.get("RAY_LD_PRELOAD_ON_WORKERS") != "1":
        env.pop("LD_PRELOAD", None)
    return {**env, "RAY_JOB_ID": job, "RAY_RAYLET_PID": str(raylet), "SPT_NOENV": "1"}


def _server() -> str | None:
    if sys.platform != "linux" or os.environ.get("DISTUNE_WORKER_FORK_OFF") == "1":
        return None
    key = json.dumps(sorted((k, v) for k, v in os.environ.items() if k != FORK_ENV))
    for other in [k for k in _started if k != key or _started[k].poll() is not None]:
        with contextlib.suppress(OSError):
            _started.pop(other).terminate()
    if key in _started:
        return _started[key].args[3]
    try:
        home = private_dir(f"distune-workers-{os.getuid()}")
    except NotPrivate:
        return None
    _clear_stale(home)
    path = str(home / f"{os.getpid()}-{next(_count)}.sock")
    if len(path.encode()) > 100:  # a Unix socket's path has ~107 bytes
        return None
    with open(home / f"{Path(path).stem}.log", "ab") as log:
        _started[key] = subprocess.Popen(
            [sys.executable, "-m", "distune.ops.worker_fork", path, str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True, process_group=0)
    return path


def worker_raylet() -> int:
    """The raylet of the Ray worker this runs in: RAY_RAYLET_PID, which the raylet sets for its
    workers (a forked worker's parent is this server), else the parent."""
    return int(os.environ.get("RAY_RAYLET_PID") or os.getppid())


def local_raylet() -> int:
    """The pid of this node's raylet (its trials' workers are its children): the one this
    driver started, else the one it joined, this user's, found by its socket on its command
    line (Linux)."""
    from ray._private import ray_constants, worker

    node = worker._global_node
    started = node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET)
    if started:
        return started[0].process.pid
    flag = f"--raylet_socket_name={node.raylet_socket_name}".encode()
    for process in Path("/proc").iterdir():
        try:
            if (process.name.isdigit() and process.stat().st_uid == os.getuid()
                    and flag in (process / "cmdline").read_bytes().split(b"\0")):
                return int(process.name)
        except OSError:  # gone since listed
            continue
    raise LookupError(f"no raylet of this user's listens on {node.raylet_socket_name}")


def _clear_stale(home: Path) -> None:
    """What servers of drivers that are gone left behind (a server killed outright)."""
    from distune.ops.lock import pid_alive

    for f in home.iterdir():
        driver = f.name.split("-", 1)[0]
        if driver.isdigit() and not pid_alive(int(driver)):
            with contextlib.suppress(OSError):
                f.unlink()


def launcher_of(pid: int) -> int | None:
    """The launcher (the process the raylet started) of worker `pid`, if a server forked it."""
    with contextlib.suppress(NotPrivate, OSError):
        for forks in private_dir(f"distune-workers-{os.getuid()}").glob(f"*.{FORKS}"):
            for line in forks.read_text().splitlines():
                child, launcher = line.split()
                if int(child) == pid:
                    return int(launcher)
    return None


# --- the server itself -----------------------------------------------------------------------

def serve(path: str, parent: int) -> None:
    """Bind first (launchers queue while the imports run), then hand each request to the
    zygote for its environment (started if need be) until the driver is gone."""
    listener = bind(path)
    driver = os.pidfd_open(parent)
    for name in DEPENDENCIES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    imported_with = _compared(os.environ, RAYLET_SETS + NOT_IMPORTED)
    assert not {"keras", "jax", "tensorflow"} & set(sys.modules), "see NOT_IMPORTED"
    zygotes: dict[str, socket.socket] = {}
    forks = open(Path(path).with_suffix(f".{FORKS}"), "a", buffering=1)
    try:
        while True:
            ready, _, _ = select.select([listener, driver], [], [], 5.0)
            reap()
            if driver in ready:
                break
            if listener in ready:
                conn, _ = listener.accept()
                with conn:
                    try:
                        _hand_on(conn, imported_with, zygotes, forks, listener)
                    except (OSError, ValueError, KeyError, TypeError) as e:
                        print(f"request not served: {e}", file=sys.stderr, flush=True)
    finally:
        for name in (path, Path(path).with_suffix(f".{FORKS}"), Path(path).with_suffix(".log")):
            with contextlib.suppress(OSError):
                os.unlink(name)


def _compared(env: dict, skip=()) -> dict[str, str]:
    return {k: v for k, v in env.items()
            if k != FORK_ENV and k not in RUNTIME_ONLY and not k.startswith(skip)}


def _hand_on(conn: socket.socket, imported_with: dict, zygotes: dict, forks, listener) -> None:
    """One launcher's request to its environment's zygote, with the connection to answer on."""
    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    while not message.endswith(b"\n"):
        more = conn.recv(1 << 20)
        if not more:
            raise ValueError("the request was cut short")
        message += more
    try:
        request = json.loads(message)
        if "prepare" in request:  # a zygote ahead of its first worker (_prepare)
            env = request["prepare"]
            key = json.dumps(sorted(_compared(env).items()))
            if _compared(env, RAYLET_SETS + NOT_IMPORTED) == imported_with and key not in zygotes:
                zygotes[key] = _start_zygote(env, forks, [listener, *zygotes.values()])
            return
        why = _refusal(request, fds, imported_with) or (
            "a thread runs here: no fork" if threading.active_count() != 1 else None)
        if why:
            print(f"refused launcher {request.get('launcher')}: {why}", file=sys.stderr, flush=True)
            return
        key = json.dumps(sorted(_compared(request["env"]).items()))
        for _ in range(2):  # a zygote that has gone: once more, with a new one
            if key not in zygotes:
                zygotes[key] = _start_zygote(request["env"], forks, [listener, *zygotes.values()])
            try:
                socket.send_fds(zygotes[key], [message], [conn.fileno(), *fds])
                return
            except OSError:
                zygotes.pop(key).close()
    finally:
        for fd in fds:
            os.close(fd)


def _refusal(request: dict, fds: list[int], imported_with: dict) -> str | None:
    """Why this server cannot make the launcher's worker, if it cannot."""
    if len(fds) != 3:
        return "no standard streams came with the request"
    if os.path.realpath(request["executable"]) != os.path.realpath(sys.executable):
        return f"another interpreter ({request['executable']})"
    if not request["argv"] or not request["argv"][0].endswith("default_worker.py"):
        return "not Ray's default worker"
    env = _compared(request["env"], RAYLET_SETS + NOT_IMPORTED)
    if env != imported_with:
        changed = sorted(k for k in env.keys() | imported_with.keys()
                         if env.get(k) != imported_with.get(k))
        return f"an environment this server did not import with ({', '.join(changed)})"
    return None


def _start_zygote(env: dict, forks, to_close: list) -> socket.socket:
    """A child that imports Ray and Tune in `env` (Ray reads its C++ settings as it loads) and
    forks the workers of requests sent to the returned socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid:
        theirs.close()
        return ours
    code = 1
    try:
        for other in (ours, *to_close):
            other.close()
        os.environ.clear()
        os.environ.update(env)
        for name in RAY:
            importlib.import_module(name)
        _serve_zygote(theirs, forks)
        code = 0
    finally:
        os._exit(code)


def _serve_zygote(control: socket.socket, forks) -> None:
    """Fork a worker per request until the server is gone (its end of `control` closed), the
    raylet is, or no request came for ZYGOTE_IDLE_S (a request sent as it exits is lost with
    its socket: that launcher sees the connection closed and execs its worker)."""
    try:
        raylet = os.pidfd_open(int(os.environ["RAY_RAYLET_PID"]))
    except (KeyError, ValueError, OSError):
        return
    idle_since = time.monotonic()
    while True:
        ready, _, _ = select.select([control, raylet], [], [], 5.0)
        reap()
        if raylet in ready or not ready and time.monotonic() - idle_since > ZYGOTE_IDLE_S:
            return
        if control not in ready:
            continue
        idle_since = time.monotonic()
        message, fds, _, _ = socket.recv_fds(control, 1 << 20, 4)
        if not message:
            return
        conn, streams = socket.socket(fileno=fds[0]), fds[1:]
        with conn:
            try:
                request = json.loads(message)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _become_worker(request, streams, [control, conn, forks])
                pidfd = os.pidfd_open(pid)
                try:
                    socket.send_fds(conn, [json.dumps({"pid": pid}).encode()], [pidfd])
                finally:
                    os.close(pidfd)
                forks.write(f"{pid} {request['launcher']}\n")
            except (OSError, ValueError, KeyError, TypeError) as e:
                print(f"request not served: {e}", file=sys.stderr, flush=True)
            finally:
                for fd in streams:
                    os.close(fd)


def _become_worker(request: dict, fds: list[int], to_close: list) -> None:
    """In the child: the launcher's process, as an exec would have made it, running Ray's
    worker. Never returns."""
    code = 1
    try:
        for other in to_close:
            other.close()
        os.setpgid(0, 0)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        ignored = set(request["ignored"])
        for sig in set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)
        if signal.SIGINT not in ignored:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # as Python starts
        signal.pthread_sigmask(signal.SIG_SETMASK, request["blocked"])
        if "numpy" in sys.modules:  # its global generator was seeded once, in the server
            sys.modules["numpy"].random.seed()
        end_with(request["launcher"], "distune-launcher-watch")  # as if the raylet killed it
        code = _run_worker(request["argv"])
    finally:
        os._exit(code)


def _run_worker(argv: list[str]) -> int:
    """Ray's default_worker.py as `python default_worker.py ARGS` runs it, with the
    interpreter's exit steps (threads joined, atexit) before the exit status."""
    import atexit
    import runpy
    import traceback

    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))  # a script's, not the server's
    code = 0
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - as the interpreter reports an uncaught exception
        traceback.print_exc()
        code = 1
    with contextlib.suppress(BaseException):
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def end_with(pid: int, name: str) -> None:
    """End this process the moment process `pid` is gone, even mid-epoch (as a spawned child's
    PR_SET_PDEATHSIG does): a thread waits on its pidfd, or polls where there is none."""
    from distune.ops.lock import pid_alive

    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while pid_alive(pid):
                time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name=name).start()


def bind(path: str) -> socket.socket:
    """A listening Unix socket at `path` that only this user can connect to."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    server.bind(path)
    os.umask(old)
    server.listen(64)
    return server


def reap() -> None:
    """Collect this process's children that have exited."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
    sys.stderr.flush()
    os._exit(0)
