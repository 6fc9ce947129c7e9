"""The private local Ray starts its workers through distune/ops/start_worker.py: forked by the
driver's fork server (distune/ops/worker_fork.py), else straight into Ray's worker where the
runtime environment holds at most variables, through Ray's own setup_worker.py otherwise."""

from __future__ import annotations

import json
import os
import signal
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import process_gone
from distune.ops import worker_fork
from distune.ops.start_worker import FORK_ENV, fork_request, worker_start

WORKER = ["/ray/_private/workers/default_worker.py", "--node-ip-address=127.0.0.1", "--worker-id=ab"]


def context(**fields) -> str:
    """What Ray's setup_worker.py is handed (RuntimeEnvContext.serialize: every field)."""
    base = {"command_prefix": [], "env_vars": {}, "py_executable": sys.executable,
            "override_worker_entrypoint": None, "java_jars": []}
    return "--serialized-runtime-env-context=" + json.dumps({**base, **fields})


def test_variables_alone_start_the_worker_directly(monkeypatch):
    monkeypatch.setenv("DISTUNE_T_HOME", "/home/x")
    monkeypatch.delenv("DISTUNE_T_UNSET", raising=False)
    # Ray's raylet puts its own flags after the worker's (and Tune's actors carry two variables)
    argv = [*WORKER, "--language=PYTHON", context(env_vars={
        "PL_DISABLE_FORK": "1", "P": "${DISTUNE_T_HOME}/lib:${DISTUNE_T_UNSET}", "Q": "$DISTUNE_T_HOME"})]
    command, env = worker_start(argv)
    assert command == [sys.executable, *WORKER]
    assert env == {"PL_DISABLE_FORK": "1", "P": "/home/x/lib:", "Q": "/home/x"}  # Ray's update_envs
    assert worker_start([*WORKER, "--language", "PYTHON"]) == ([sys.executable, *WORKER], {})
    assert worker_start([*WORKER, "--language=PYTHON", context(py_executable="/venv/bin/python")])[0] == \
        ["/venv/bin/python", *WORKER]


@pytest.mark.parametrize("argv", [
    [*WORKER, "--language=PYTHON", context(command_prefix=["cd", "/work", "&&"])],  # working_dir
    [*WORKER, "--language=PYTHON", context(override_worker_entrypoint="/in/container/worker.py")],
    ["-cp", "x", "--language=JAVA", context()],
    [*WORKER, "--language=PYTHON", "--serialized-runtime-env-context={not json"],
])
def test_anything_else_goes_to_rays_setup_worker(argv):
    assert worker_start(argv) is None


@pytest.mark.slow
def test_a_local_rays_workers_start_through_it_and_get_their_environment(ray_local, tmp_path):
    """On the suite's Ray, started as distune starts its own: the raylet's worker command names
    start_worker.py; an actor with variables (as Tune's trials have) sees them, and one with a
    working directory (a command prefix: Ray's setup_worker.py) runs in it."""
    from distune.ops import local_raylet

    cmdline = Path(f"/proc/{local_raylet()}/cmdline").read_bytes().split(b"\0")
    command = next(a for a in cmdline if a.startswith(b"--python_worker_command="))
    assert b"distune/ops/start_worker.py " in command, command

    @ray_local.remote
    class Probe:
        def seen(self):
            return os.environ.get("DISTUNE_T_VAR"), os.getcwd(), Path("marker").exists()

        def pid(self):
            return os.getpid()

    with zipfile.ZipFile(tmp_path / "dir.zip", "w") as z:  # an actor's working_dir: a URI
        z.writestr("dir/marker", "here")
    with_vars = Probe.options(runtime_env={"env_vars": {"DISTUNE_T_VAR": "${HOME}/v"}}).remote()
    in_dir = Probe.options(runtime_env={"working_dir": f"file://{tmp_path}/dir.zip"}).remote()
    assert ray_local.get(with_vars.seen.remote())[0] == os.environ["HOME"] + "/v"
    # a variable the fork server's Ray was not imported with: exec'd, not forked
    assert worker_fork.launcher_of(ray_local.get(with_vars.pid.remote())) is None
    assert ray_local.get(in_dir.seen.remote())[2], "the working_dir actor did not start in its directory"
    for actor in (with_vars, in_dir):
        ray_local.kill(actor)
    # and its log monitor, started by this process too, lists the log directory every 0.5 s
    # instead of ten times a second
    monitor, = [p for p in Path("/proc").glob("[0-9]*") if _parent(p) == os.getpid()
                and b"log_monitor.py" in (p / "cmdline").read_bytes()]
    assert b"RAY_LOG_MONITOR_MANY_FILES_THRESHOLD=0\0" in (monitor / "environ").read_bytes()


def _parent(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_a_fork_request_carries_what_an_exec_would_have_kept(monkeypatch):
    """The worker's argv without the interpreter, the environment with the runtime
    environment's variables, and this process's directory, umask and signal state."""
    monkeypatch.setenv("DISTUNE_T_HOME", "/home/x")
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
    try:
        request = json.loads(fork_request([sys.executable, *WORKER], {"PL_DISABLE_FORK": "1"}))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    assert request["executable"] == sys.executable and request["argv"] == WORKER
    assert request["env"] == {**os.environ, "PL_DISABLE_FORK": "1"}
    assert request["cwd"] == os.getcwd() and request["launcher"] == os.getpid()
    assert signal.SIGUSR2 in request["blocked"] and signal.SIGPIPE in request["ignored"]  # Python's


def test_the_fork_server_refuses_what_its_imports_did_not_see():
    """Another interpreter, another program, or an environment other than the one the server
    imported Ray's dependencies with (what the raylet adds, and Tune's run-time-only
    variables, aside): those workers are exec'd."""
    imported_with = {"PATH": "/bin"}
    env = {"PATH": "/bin", "RAY_JOB_ID": "01000000", "SPT_NOENV": "1", "PL_DISABLE_FORK": "1"}
    ok = {"executable": sys.executable, "argv": WORKER, "env": env}
    assert worker_fork._refusal(ok, [0, 1, 2], imported_with) is None
    assert "interpreter" in worker_fork._refusal({**ok, "executable": "/usr/bin/python2"}, [0, 1, 2], imported_with)
    assert "default worker" in worker_fork._refusal({**ok, "argv": ["/x/setup_worker.py"]}, [0, 1, 2], imported_with)
    assert "standard streams" in worker_fork._refusal(ok, [0], imported_with)
    assert "OMP_X" in worker_fork._refusal({**ok, "env": {**env, "OMP_X": "1"}}, [0, 1, 2], imported_with)
    # but not Keras's, JAX's or TensorFlow's, which the server never imports (fused trials' actors)
    assert worker_fork._refusal({**ok, "env": {**env, "KERAS_BACKEND": "jax"}}, [0, 1, 2], imported_with) is None


@pytest.mark.slow
def test_a_local_rays_workers_are_forked_as_their_launchers_would_have_become(ray_local):
    """On the suite's Ray (its server started as distune starts one): a trial-like actor's
    process is forked by the server's zygote for this job, with Ray and Tune imported there, and
    has what the process the raylet started (its launcher) has: its environment, directory,
    session, a process group of its own, SIGINT blocked. The two end together, whichever is
    killed. A driver that joins this Ray (another job) gets its workers forked too."""
    from distune.ops import local_raylet

    @ray_local.remote(num_cpus=1)
    class Probe:
        def state(self):
            import ray.tune  # noqa: F401 - already there: imported before the fork

            return {"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0),
                    "sid": os.getsid(0), "cwd": os.getcwd(), "env": dict(os.environ),
                    "status": Path(f"/proc/{os.getpid()}/task/{os.getpid()}/status").read_text(),
                    "argv": sys.argv[1:]}

    actors = [Probe.options(runtime_env={"env_vars": {"PL_DISABLE_FORK": "1"}}).remote() for _ in range(2)]
    states = ray_local.get([a.state.remote() for a in actors])
    server, = [p.pid for p in worker_fork._started.values()]
    for state in states:
        launcher = worker_fork.launcher_of(state["pid"])
        assert _parent(Path(f"/proc/{state['ppid']}")) == server and launcher is not None, state
        proc = Path(f"/proc/{launcher}")
        assert _parent(proc) == local_raylet() and b"start_worker.py" in (proc / "cmdline").read_bytes()
        assert f"--worker-id=" in " ".join(state["argv"]) and all(
            a.encode() in (proc / "cmdline").read_bytes() for a in state["argv"])
        environ = dict(e.split("=", 1) for e in (proc / "environ").read_text().split("\0") if "=" in e)
        assert {k: state["env"].get(k) for k in environ} == environ and state["env"]["PL_DISABLE_FORK"] == "1"
        assert environ[FORK_ENV] and environ["RAY_RAYLET_PID"] == str(local_raylet())
        # what the driver predicts for it, to have the job's zygote import Ray before any worker asks
        predicted = worker_fork.worker_environment(local_raylet(), environ["RAY_JOB_ID"])
        assert worker_fork._compared(predicted) == worker_fork._compared(environ)
        assert state["cwd"] == os.readlink(proc / "cwd") and state["sid"] == os.getsid(launcher)
        assert state["pgid"] == state["pid"]
        assert signal.SIGINT in _mask(state["status"], "SigBlk") & _mask((proc / "status").read_text(), "SigBlk")
    # killing the launcher ends the worker; a worker that ends ends its launcher
    first, second = states
    os.kill(worker_fork.launcher_of(first["pid"]), signal.SIGKILL)
    launcher = worker_fork.launcher_of(second["pid"])
    ray_local.kill(actors[1])
    assert process_gone(first["pid"], 10.0) and process_gone(launcher, 10.0)


def _mask(status: str, field: str) -> set[int]:
    bits = int(next(line.split()[1] for line in status.splitlines() if line.startswith(field + ":")), 16)
    return {n + 1 for n in range(64) if bits >> n & 1}
