"""The private local Ray starts its workers through distune/ops/start_worker.py: straight into
Ray's worker where the runtime environment holds at most variables, through Ray's own
setup_worker.py otherwise."""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

from distune.ops.start_worker import worker_start

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
    from distune.sweep.tune import local_raylet

    cmdline = Path(f"/proc/{local_raylet()}/cmdline").read_bytes().split(b"\0")
    command = next(a for a in cmdline if a.startswith(b"--python_worker_command="))
    assert b"distune/ops/start_worker.py " in command, command

    @ray_local.remote
    class Probe:
        def seen(self):
            return os.environ.get("DISTUNE_T_VAR"), os.getcwd(), Path("marker").exists()

    with zipfile.ZipFile(tmp_path / "dir.zip", "w") as z:  # an actor's working_dir: a URI
        z.writestr("dir/marker", "here")
    with_vars = Probe.options(runtime_env={"env_vars": {"DISTUNE_T_VAR": "${HOME}/v"}}).remote()
    in_dir = Probe.options(runtime_env={"working_dir": f"file://{tmp_path}/dir.zip"}).remote()
    assert ray_local.get(with_vars.seen.remote())[0] == os.environ["HOME"] + "/v"
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
