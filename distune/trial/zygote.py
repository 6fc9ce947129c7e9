"""One process per Ray node and Keras backend that imports Keras once and forks every training
process.

Importing TensorFlow and Keras costs about 6 s of CPU on a laptop core (Keras on JAX, which
needs no TensorFlow, about 4 s). Each Ray actor used to spawn its training process
(distune.trial.worker) and pay it again: once per trial slot per sweep, and again in every later
sweep on the same Ray (the select stage, nightly's sweeps, a test suite). The zygote pays it
once per node and Ray session: it imports without running any op (so no runtime threads or
devices exist yet, which keeps fork safe), then forks a child per request, which configures its
own threads and devices as a spawned one would.

Requests come over a Unix socket in a directory only this user can enter, as JSON (no
pickles); the requester's end of a socket pair travels with the request (SCM_RIGHTS) and
becomes the child's connection. A child exits as soon as the actor that asked for it is gone;
the zygote exits when its node's raylet is gone. Anything unusual (not Linux, a directory
someone else owns, a zygote that will not start) makes the caller spawn as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from distune.ops.lock import pid_alive
from distune.ops.private import NotPrivate, private_dir
from distune.ops.worker_fork import bind, end_with, reap, worker_raylet

START_TIMEOUT_S = 60.0  # the zygote binds its socket before importing TensorFlow
SOCKET = "zygote.sock"


class Unavailable(Exception):
    """No zygote for this process: the caller spawns its training process instead."""


def _flavour(environ=None) -> str:
    """A zygote serves only processes that would import the same code (interpreter, distune,
    PYTHONPATH: Ray jobs ship their own) with the same import-time TensorFlow settings."""
    environ = os.environ if environ is None else environ
    env = sorted((k, v) for k, v in environ.items()
                 if k.startswith(("TF_", "KERAS_", "XLA_", "JAX_")) or k == "PYTHONPATH")
    key = (sys.executable, str(Path(__file__).resolve().parents[1]), env)
    return hashlib.blake2b(repr(key).encode(), digest_size=6).hexdigest()


def home_of(raylet: int, environ=None) -> Path:
    """The zygote's private directory for this user, raylet and code (refused if unsafe);
    `environ`: the requesters' environment, if not this process's."""
    try:
        return private_dir(f"distune-zygote-{os.getuid()}-{raylet}-{_flavour(environ)}")
    except NotPrivate as e:
        raise Unavailable(str(e)) from None


def fork_child(data_dir: str, threads: int, raylet: int | None = None,
               environ: dict[str, str] | None = None) -> tuple[Connection, int]:
    """A training process forked by this node's zygote (started if need be): its connection
    and pid. `raylet`: the node's (default: this Ray worker's, one raylet per node and
    session); `environ`: the child's (default: this process's). Raises Unavailable when there
    is none to be had."""
    if sys.platform != "linux" or not hasattr(socket, "send_fds"):
        raise Unavailable("needs Linux")
    raylet = raylet or worker_raylet()
    environ = dict(os.environ if environ is None else environ)
    home = home_of(raylet, environ)
    ours, theirs = socket.socketpair()
    try:
        request = json.dumps({"data_dir": data_dir, "threads": threads, "parent": os.getpid(),
                              "env": environ}).encode()
        with _connect(home, raylet) as conn:
            socket.send_fds(conn, [request], [theirs.fileno()])
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    raise Unavailable("the zygote closed the connection")
                reply += chunk
    except (OSError, subprocess.SubprocessError) as e:
        ours.close()
        raise Unavailable(str(e)) from None
    finally:
        theirs.close()
    ours.setblocking(True)
    return Connection(ours.detach()), int(json.loads(reply)["pid"])


def enabled() -> bool:
    """Whether training processes fork here: Linux, and not turned off with DISTUNE_ZYGOTE=0."""
    return sys.platform == "linux" and os.environ.get("DISTUNE_ZYGOTE") != "0"


def start_here(env: dict[str, str]) -> bool:
    """Start this node's zygote for training processes with `env` (a trial's backend settings)
    unless it runs: called in a Ray worker, by a task the driver sends each node as a sweep
    starts, so that TensorFlow's import overlaps Tune's start-up instead of delaying the first
    trial. Returns once the zygote listens (before its import); whether one does."""
    if not enabled():
        return False
    saved = dict(os.environ)
    os.environ.update(env)  # what the trial's actor sets before it asks (see _flavour)
    try:
        raylet = worker_raylet()
        _connect(home_of(raylet), raylet).close()  # an empty request: the zygote ignores it
        return True
    except (Unavailable, OSError, subprocess.SubprocessError):
        return False
    finally:
        os.environ.clear()
        os.environ.update(saved)


def listening(raylet: int, environ: dict[str, str]) -> bool:
    """Whether `raylet`'s zygote for processes with `environ` is up, so that a driver on its
    node need not send a task to start it (a Ray worker's start: 1.5 s of CPU)."""
    try:
        _dial(str(home_of(raylet, environ) / SOCKET)).close()  # an empty request: ignored
    except (Unavailable, OSError):
        return False
    return True


class Early:
    """A zygote a driver starts before its local Ray, so that TensorFlow's import (~7 s of CPU)
    runs while Ray starts (~6 s, a third of it idle on 2 cores) instead of after it, on the
    path to the first trial's first epoch. It learns its raylet once Ray is up (`adopt`);
    until then it imports, and without one it exits."""

    def __init__(self, env: dict[str, str]) -> None:
        self.environ = {**os.environ, **env}  # what the trials' actors will have
        self.process = subprocess.Popen([sys.executable, "-m", "distune.trial.zygote", "--adopt"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, env=self.environ,
                                        start_new_session=True, close_fds=True)

    def adopt(self, raylet: int) -> bool:
        """Serve `raylet`'s node, unless a zygote already does; whether this one does."""
        import fcntl

        try:
            home = home_of(raylet, self.environ)
            with open(home / "lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                with contextlib.suppress(OSError):
                    _dial(str(home / SOCKET)).close()
                    return self.cancel()  # another one serves it
                self.process.stdin.write(f"{raylet} {home}\n".encode())
                self.process.stdin.close()
                ready, _, _ = select.select([self.process.stdout], [], [], 10.0)
                if ready and self.process.stdout.readline() == b"bound\n":
                    self.process.stdout.close()
                    return True
        except (Unavailable, OSError):
            pass
        return self.cancel()

    def cancel(self) -> bool:
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.wait()
        return False


def _connect(home: Path, raylet: int) -> socket.socket:
    """A connection to the zygote in `home`, which the first caller starts (under a lock)."""
    import fcntl

    path = str(home / SOCKET)
    with contextlib.suppress(OSError):
        return _dial(path)
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with contextlib.suppress(OSError):
            return _dial(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a dead zygote's socket
        log = open(home / "zygote.log", "ab")
        # Started through a shell that exits at once: Ray kills a dead actor's children, and
        # the zygote must outlive the actor that happened to start it.
        subprocess.run(["/bin/sh", "-c", 'exec "$0" "$@" &', sys.executable, "-m",
                        "distune.trial.zygote", str(home), str(raylet)], stdin=subprocess.DEVNULL,
                       stdout=log, stderr=log, start_new_session=True, close_fds=True, check=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                return _dial(path)
            except OSError:
                if time.monotonic() > deadline:
                    raise Unavailable("the zygote did not start") from None
                time.sleep(0.05)


def _dial(path: str) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        raise
    return conn


# --- the zygote itself ---------------------------------------------------------------------

def serve(home: Path, raylet: int) -> None:
    """Bind first (callers may queue), import, then fork one child per request until the
    raylet is gone."""
    server = _bind(home)
    from distune.trial.child import preload

    preload()
    _serve(server, home, raylet)


def serve_adopted() -> None:
    """An `Early` zygote: import while a thread waits for "RAYLET HOME" on stdin and binds
    there (callers queue until the import is done); no raylet, no zygote."""
    from distune.trial.child import preload

    told: list = []

    def adopt() -> None:
        line = sys.stdin.readline().split(maxsplit=1)
        try:
            home = Path(line[1].strip())
            told.extend([int(line[0]), home, _bind(home)])
        except (IndexError, ValueError, OSError):
            told.clear()
        sys.stdout.write("bound\n" if told else "no\n")
        sys.stdout.flush()

    waiter = threading.Thread(target=adopt, daemon=True)
    waiter.start()
    preload()
    waiter.join()
    if not told:
        return
    raylet, home, server = told
    # as `_connect` starts one: its children must not write into the driver's pipe
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(home / "zygote.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    for fd, target in ((null, 0), (log, 1), (log, 2)):
        os.dup2(fd, target)
    os.close(null)
    os.close(log)
    _serve(server, home, raylet)


def _bind(home: Path) -> socket.socket:
    return bind(str(home / SOCKET))


def _serve(server: socket.socket, home: Path, raylet: int) -> None:
    print(f"zygote {os.getpid()} ready for raylet {raylet}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGCHLD, lambda *_: reap())
    while pid_alive(raylet):
        ready, _, _ = select.select([server], [], [], 1.0)
        if ready:
            conn, _ = server.accept()
            with conn:
                try:
                    _fork_one(server, conn)
                except (OSError, ValueError, KeyError):
                    pass  # a broken request: its caller sees the closed connection and spawns
    shutil.rmtree(home, ignore_errors=True)  # its raylet's: no one else's to ask for again


def _fork_one(server: socket.socket, conn: socket.socket) -> None:
    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 1)
    request = json.loads(message)
    if len(fds) != 1:
        raise ValueError("no connection came with the request")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            server.close()
            conn.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.environ.clear()
            os.environ.update(request["env"])  # the actor's: CUDA_VISIBLE_DEVICES and all
            end_with(request["parent"], "distune-parent-watch")  # the actor that asked
            from distune.trial.child import serve_trials

            serve_trials(Connection(fds[0]), request["data_dir"], request["threads"])
            code = 0
        finally:
            os._exit(code)
    os.close(fds[0])
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--adopt"]:
        serve_adopted()
    else:
        serve(Path(sys.argv[1]), int(sys.argv[2]))
    sys.stderr.flush()
    os._exit(0)  # at once: the interpreter's teardown with TensorFlow loaded took 3-4 s
