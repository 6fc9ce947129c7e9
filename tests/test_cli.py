"""The `distune` command as a user runs it: real processes, exit codes, no tracebacks."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO, tensorflow_mapped


def distune(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distune", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env={**os.environ, **(env or {})})


def sockets_while_running(proc: subprocess.Popen, every_s: float = 0.3):
    """(process name, address) of every listening TCP socket of `proc` and its descendants,
    sampled until it exits (what another machine could connect to), how the GCS answered a
    request without a token (the gRPC status of each GCS port, asked once), and the pids of
    its Ray workers."""
    import psutil

    seen: set[tuple[str, str]] = set()
    gcs: dict[int, str] = {}
    workers: set[int] = set()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            family = {p.pid: p for p in [root, *root.children(recursive=True)]}
            for pid, p in family.items():
                with contextlib.suppress(psutil.Error):
                    if p.name() != "raylet" and any("default_worker.py" in a for a in p.cmdline()):
                        workers.add(pid)
            for c in psutil.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN and c.pid in family:
                    name = family[c.pid].name()
                    seen.add((name, c.laddr.ip))
                    if name == "gcs_server" and c.laddr.port not in gcs:
                        gcs[c.laddr.port] = _ask_without_token(c.laddr.port)
        except psutil.Error:
            pass  # a process ended between listing and asking
        time.sleep(every_s)
    return seen, gcs, workers


def _ask_without_token(port: int) -> str:
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=5)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name


@pytest.mark.slow
def test_run_then_show(mnist_path, tmp_path):
    """`distune run` of the default preset, as scripts/bench/default_preset.py --quick runs it
    (so this also keeps that script working), then `distune show` of its results. While it
    runs, no process of its Ray listens beyond loopback, and its GCS refuses a request without
    the token (ShadowRay, CVE-2023-48022), and it starts no Ray worker that no trial uses."""
    storage = str(tmp_path / "store")
    proc = subprocess.Popen([sys.executable, "scripts/bench/default_preset.py", "--quick", "--data",
                             str(mnist_path), "--storage", storage], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    listening, gcs, workers = sockets_while_running(proc)  # the local Ray's servers, from the OS
    r = subprocess.CompletedProcess(proc.args, proc.returncode, *proc.communicate(timeout=300))
    assert r.returncode == 0, r.stdout + r.stderr
    servers = {name for name, _ in listening}
    assert {"gcs_server", "raylet"} <= servers, f"no Ray server seen listening: {listening}"
    exposed = {(name, ip) for name, ip in listening if not ipaddress.ip_address(ip).is_loopback
               and not (ip.startswith("::ffff:") and ipaddress.ip_address(ip[7:]).is_loopback)}
    assert not exposed, f"listening beyond loopback: {sorted(exposed)}"
    assert "UNAUTHENTICATED" in gcs.values() and "OK" not in gcs.values(), gcs  # token required
    assert "test accuracy: 0." in r.stdout and "Traceback" not in r.stdout + r.stderr
    assert "epoch   1/1" in r.stdout
    assert len(workers) <= 2, workers  # one per trial slot: none started ahead of need (4 were)
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("default_preset_test_accuracy: 0.")
    best = json.loads((tmp_path / "store" / "bench" / "best.json").read_text())
    assert float(last.split(": ")[1]) == pytest.approx(best["test_accuracy"], abs=1e-4)
    assert (tmp_path / "store" / "bench" / "report.html").is_file()  # on by default

    s = distune("show", "bench", "--storage", storage)
    assert s.returncode == 0, s.stderr
    assert "2 trials, ranked by best val_accuracy" in s.stdout and best["trial"] in s.stdout
    assert s.stdout.index(best["trial"]) < s.stdout.rindex("completed")
    assert f"winner: {best['trial']}" in s.stdout

    again = distune("run", "--data", str(mnist_path), "--storage", storage, "--name", "bench")
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.slow
def test_verbose_run_shows_ray_and_finishes(joined_ray, mnist_path, tmp_path):
    """--verbose: Ray's own log lines and worker output, and the sweep still saves its
    state (Ray's progress bars once replaced `print`, and the Tuner could not be pickled).
    On the suite's Ray: test_run_then_show starts a private one. A driver that joined a Ray
    tests its winner in its node's zygote, as one that started it does: it never imports
    Keras or TensorFlow (6 s of CPU beside the trials)."""
    proc = subprocess.Popen([sys.executable, "-m", "distune", "run", "--verbose", "--data", str(mnist_path),
                             "--storage", str(tmp_path), "--name", "loud", "--samples", "1",
                             "--set", "train.epochs=1", "--set", "data.train_subset=300",
                             "--set", "run.report=false"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env={**os.environ, **joined_ray})
    loaded = tensorflow_loaded_while_running(proc)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, *proc.communicate(timeout=300))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "Total run time" in r.stderr and "test accuracy: 0." in r.stdout  # Ray's INFO log
    assert not loaded, "the joined driver imported TensorFlow"


def tensorflow_loaded_while_running(proc: subprocess.Popen) -> bool:
    """Whether TensorFlow's library was ever mapped into `proc`, sampled until it exits."""
    loaded = False
    while proc.poll() is None:
        loaded = loaded or bool(tensorflow_mapped(proc.pid))
        time.sleep(0.2)
    return loaded


def test_only_a_joined_clusters_workers_get_the_quiet_settings_as_a_runtime_env():
    """A local Ray's workers inherit them from the raylet this process starts (the run above
    is quiet); a runtime environment there would cost each worker's start 0.4 s of CPU."""
    from distune.ops import QUIET_ENV, job_runtime_env

    assert job_runtime_env("local") is None
    assert job_runtime_env("10.0.0.5:6379") == {"env_vars": {k: os.environ[k] for k in QUIET_ENV}}


def test_an_internal_error_is_reported_with_its_traceback(monkeypatch, capsys):
    """A bug is not the user's mistake: exit 1, the traceback, and where the results are.
    (Ray's excepthook, once Ray has shut down, could print nothing at all.)"""
    from distune import cli

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "cmd_presets", broken)
    assert cli.main(["presets"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err and "internal error" in err
    assert "distune show NAME" in err


@pytest.mark.parametrize("args,message", [
    (["run", "--searcher", "tpee"], "search.searcher: 'tpee' is not one of: random, grid"),
    (["run", "--data", "/nowhere/mnist.npz"], "data.path: MNIST file not found: /nowhere/mnist.npz"),
    (["run", "no-such-preset"], "no such file or preset"),
    (["validate", "--set", "train.epochs=0"], "train.epochs"),
    (["validate", "--scheduler", "asha", "--set", "schedule.options={grace_period: 9, max_t: 2}"],
     "grace_period (9) must be <= max_t (2)"),
    (["show", "never-ran", "--storage", "/tmp/distune-nothing-here"], "no experiment at"),
    (["run", "--storage", "/proc/distune", "--data", str(REPO)], "data.path: MNIST file not found"),
])
def test_user_mistakes_exit_2_without_traceback(args, message):
    r = distune(*args, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("distune: error:")


def test_unwritable_storage_is_refused_before_the_sweep(mnist_path, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = distune("run", "--data", str(mnist_path), "--storage", str(blocker / "results"), timeout=120)
    assert r.returncode == 2 and "run.storage: cannot write to" in r.stderr
    assert "Choose a writable --storage path" in r.stderr and "Traceback" not in r.stderr
    v = distune("validate", "--data", str(mnist_path), "--storage", str(blocker / "results"))
    assert v.returncode == 2 and "run.storage: cannot write to" in v.stderr


def test_malformed_yaml_file(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("search:\n  searcher: [random\n")
    r = distune("validate", str(f))
    assert r.returncode == 2 and "not valid YAML at line" in r.stderr and "Traceback" not in r.stderr


def test_debug_shows_the_traceback():
    r = distune("validate", "--searcher", "nope", "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_the_command_ends_as_sys_exit_would_without_the_teardown():
    """`distune` (cli.entry) skips the interpreter's teardown, 2-4 s with TensorFlow loaded,
    but not what a normal exit does: other threads awaited, exit handlers run, output flushed.
    (Exit statuses through it: every `distune(...)` call in these tests.)"""
    code = ("import atexit, sys, threading, time\n"
            "atexit.register(lambda: print('handler ran'))\n"
            "threading.Thread(target=lambda: (time.sleep(1.5), print('thread ended'))).start()\n"
            "sys.argv = ['distune', 'presets']\n"
            "from distune.cli import entry\n"
            "entry()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "mnist-mlp" in r.stdout, r.stderr
    lines = r.stdout.splitlines()  # the thread outlives main (unless under heavy load)
    assert lines[-1] == "handler ran" and "thread ended" in lines, r.stdout


def test_validate_and_presets(mnist_path):
    r = distune("validate", "--data", str(mnist_path))
    assert r.returncode == 0 and r.stdout.startswith("OK: 12 trials, searcher random")
    p = distune("presets")
    assert p.returncode == 0 and "mnist-mlp" in p.stdout
    s = distune("searchers")  # every searcher with its options: gp too, in the plain install
    assert s.returncode == 0 and all(k in s.stdout for k in ("gp", "acq", "kernel", "n_initial_points"))
