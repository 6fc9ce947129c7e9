"""`distune submit`: validation before any network, the job it sends, log following, exit status.

The fast tests drive `submit_sweep` with a fake Jobs API client (the shape of Ray's
JobSubmissionClient). The slow test starts a real token-protected Ray head with its dashboard
(it needs Ray's `default` extra, aiohttp and friends; skipped without it) and submits a
one-trial sweep to it.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import distune
from distune.cli import main
from distune.config import validate
from distune.errors import DistuneError
from distune.submit import JOB_CONFIG, auth_headers, check_address, connect, submit_sweep

URL = "http://127.0.0.1:8265"


@dataclass
class Info:
    status: str
    driver_exit_code: int | None = None


class FakeClient:
    """Ray's JobSubmissionClient as distune uses it; records what it was sent."""

    def __init__(self, status: str = "SUCCEEDED", exit_code: int | None = 0,
                 logs: tuple[str, ...] = ("line 1\n", "line 2\n"),
                 interrupt: BaseException | None = None):
        self.status, self.exit_code, self.logs, self.interrupt = status, exit_code, logs, interrupt
        self.request: dict = {}
        self.shipped_config = ""
        self.stopped = False

    def submit_job(self, **request) -> str:
        self.request = request
        self.shipped_config = (Path(request["runtime_env"]["working_dir"]) / JOB_CONFIG).read_text()
        return "raysubmit_fake"

    async def tail_job_logs(self, job_id: str):
        for chunk in self.logs:
            yield chunk
        if self.interrupt:
            raise self.interrupt

    def get_job_info(self, job_id: str) -> Info:
        return Info(self.status, self.exit_code)

    def stop_job(self, job_id: str) -> bool:
        self.stopped = True
        return True


def submit(client: FakeClient, *overrides: str, wait: bool = True, **kw):
    out = io.StringIO()
    seen = {}

    def factory(address, headers):
        seen.update(address=address, headers=headers)
        return client

    code = submit_sweep("mnist-mlp", list(overrides), {"samples": 2}, address=URL, wait=wait,
                        client_factory=factory, out=out, **kw)
    return code, out.getvalue(), seen


@pytest.fixture(autouse=True)
def no_token(monkeypatch, tmp_path):
    """No token from the developer's environment or home leaks into these tests."""
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_the_job_runs_the_validated_config_with_this_distune(tmp_path):
    client = FakeClient()
    code, out, seen = submit(client, "train.epochs=1", "run.name=remote", overwrite=True)
    assert code == 0 and seen["address"] == URL and seen["headers"] == {}
    req = client.request
    assert req["entrypoint"] == f"python -m distune run {JOB_CONFIG} --address auto --overwrite"
    assert req["runtime_env"]["py_modules"] == [str(Path(distune.__file__).parent)]
    assert req["metadata"] == {"distune_experiment": "remote"}
    shipped = validate(yaml.safe_load(client.shipped_config))  # a complete, valid experiment
    assert shipped.run.name == "remote" and shipped.train.epochs == 1
    assert shipped.search.num_samples == 2 and shipped.run.address is None
    assert "line 1\nline 2\n" in out and "raysubmit_fake SUCCEEDED" in out
    assert not Path(req["runtime_env"]["working_dir"]).exists()  # the temp dir is cleaned up


def test_relative_paths_travel_as_absolute_ones_and_remote_paths_are_explained(tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist.npz").write_bytes(b"")  # exists here
    client = FakeClient()  # answers no state API: the head could be anywhere
    code, out, _ = submit(client, "data.path=mnist.npz", "run.storage=results")
    shipped = yaml.safe_load(client.shipped_config)
    assert shipped["data"]["path"] == str(tmp_path / "mnist.npz")
    assert shipped["run"]["storage"] == str(tmp_path / "results")
    assert f"note: data.path {tmp_path / 'mnist.npz'} (exists here) is read on the cluster's head" in out
    assert f"note: run.storage {tmp_path / 'results'} is a directory on the cluster's head" in out
    from distune.submit import path_notes

    exp = yaml.safe_load(client.shipped_config)
    assert path_notes(validate(exp), "127.0.0.1") == []  # a cluster on this machine
    assert "is not on this machine" in path_notes(validate({**exp, "data": {"path": "/nowhere/m.npz"}}),
                                                  "10.0.0.9")[0]


def test_default_name_is_fixed_before_submitting():
    client = FakeClient()
    submit(client)
    name = yaml.safe_load(client.shipped_config)["run"]["name"]
    assert name.startswith("mnist-mlp-") and client.request["metadata"]["distune_experiment"] == name


def test_exit_status_is_the_jobs(capsys):
    assert submit(FakeClient("FAILED", exit_code=2))[0] == 2     # a user error on the cluster
    assert submit(FakeClient("FAILED", exit_code=None))[0] == 1  # e.g. the runtime env failed
    assert submit(FakeClient("STOPPED", exit_code=None))[0] == 1


def test_no_wait_returns_at_once_with_the_commands_to_follow_and_stop():
    client = FakeClient(logs=())
    code, out, _ = submit(client, wait=False)
    assert code == 0 and "raysubmit_fake" in out
    assert f"ray job stop raysubmit_fake --address {URL}" in out


def test_ctrl_c_stops_following_not_the_job():
    client = FakeClient(interrupt=KeyboardInterrupt())
    code, out, _ = submit(client)
    assert code == 130 and not client.stopped
    assert "keeps running" in out and f"ray job stop raysubmit_fake --address {URL}" in out


def test_a_lost_log_stream_says_how_to_follow_again():
    client = FakeClient(interrupt=RuntimeError("WebSocket connection closed unexpectedly"))
    code, out, _ = submit(client)
    assert code == 1 and "lost the job's log stream" in out
    assert f"ray job logs --follow raysubmit_fake --address {URL}" in out


@pytest.mark.parametrize("address,refused", [
    ("http://10.0.0.7:8265", True), ("http://head.example.com:8265", True),
    ("https://head.example.com:8265", False), ("http://127.0.0.1:8265", False),
    ("http://localhost:8265", False), ("http://[::1]:8265", False)])
def test_a_token_never_goes_over_plain_http_to_another_machine(address, refused, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret")
    sent = []
    factory = lambda address, headers: sent.append(headers) or FakeClient()  # noqa: E731
    run = lambda **kw: submit_sweep("mnist-mlp", [], {"samples": 2}, address=address,  # noqa: E731
                                    wait=False, client_factory=factory, out=io.StringIO(), **kw)
    if not refused:
        assert run() == 0 and sent == [{"Authorization": "Bearer secret"}]
        return
    with pytest.raises(DistuneError, match="in the clear.*--insecure-http-token"):
        run()
    assert sent == []  # refused before any connection: nothing was sent
    assert run(insecure_http_token=True) == 0 and len(sent) == 1  # the user said so
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    sent.clear()
    assert run() == 0 and sent == [{}]  # no token, nothing to leak


def test_token_comes_from_env_then_token_file(monkeypatch, tmp_path):
    assert auth_headers() == {}
    token_file = tmp_path / "home" / ".ray" / "auth_token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("from-file\n")
    assert auth_headers() == {"Authorization": "Bearer from-file"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert auth_headers() == {"Authorization": "Bearer from-env"}
    code, out, seen = submit(FakeClient(), wait=False)
    assert seen["headers"] == {"Authorization": "Bearer from-env"}
    assert "RAY_AUTH_MODE=token ray job stop" in out  # Ray's CLI sends the token only then
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(DistuneError, match="RAY_AUTH_TOKEN_PATH"):
        auth_headers()


@pytest.mark.parametrize("address", ["localhost:8265", "ray://head:10001", "auto", "http://",
                                     "http://head:99999", ""])
def test_bad_addresses_are_refused(address, monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    with pytest.raises(DistuneError, match="--address"):
        check_address(address)


def test_address_defaults_to_ray_api_server_address(monkeypatch):
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "https://head.internal:8265/")
    assert check_address(None) == "https://head.internal:8265"


def test_cli_checks_the_config_before_the_address(capsys):
    assert main(["submit", "mnist-mlp", "--set", "train.epochs=0", "--address", "nope"]) == 2
    err = capsys.readouterr().err
    assert "train.epochs" in err and "Traceback" not in err
    assert main(["submit", "mnist-mlp", "--address", "localhost:8265"]) == 2
    assert "not a Jobs API URL" in capsys.readouterr().err


def test_unreachable_head_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:2")  # --address wins over it
    with pytest.raises(DistuneError) as e:
        connect("http://127.0.0.1:1", {})
    assert "ray[default]" in str(e.value) or "cannot reach the Jobs API at http://127.0.0.1:1" in str(e.value)
    assert os.environ["RAY_ADDRESS"] == "http://127.0.0.1:2"


# --- a real head ---------------------------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture
def ray_head(tmp_path):
    """A token-protected head with its dashboard on 127.0.0.1, in its own temp dir (so no
    other local `ray.init()` finds it) and its own process group (so it is stopped alone)."""
    pytest.importorskip("aiohttp", reason="the Jobs API server needs Ray's `default` extra")
    token = secrets.token_hex(16)
    gcs, dash, client, agent = _free_ports(4)
    temp = tempfile.mkdtemp(prefix="dst", dir="/tmp")  # short: Ray's socket paths have a limit
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start",
           "--head", "--block", f"--port={gcs}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
           f"--dashboard-agent-listen-port={agent}", f"--temp-dir={temp}", "--num-cpus=2",
           "--disable-usage-stats"]
    head = subprocess.Popen(cmd, env=env, stdout=(tmp_path / "head.log").open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        import requests

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/api/version", timeout=2,
                                headers={"Authorization": f"Bearer {token}"}).ok:
                    break
            except requests.ConnectionError:
                pass
            assert head.poll() is None, (tmp_path / "head.log").read_text()
            time.sleep(1)
        yield url, token
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # every Ray process of this head, and only those
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_submit_to_a_real_head(ray_head, mnist_path, tmp_path, monkeypatch, capsys):
    url, token = ray_head
    monkeypatch.chdir(tmp_path)  # paths as a user types them: relative to where they are
    (tmp_path / "data").mkdir()
    shutil.copy(mnist_path, tmp_path / "data" / "mnist.npz")
    (tmp_path / "mymodel.py").write_text(  # the user's own model travels with the job
        "import keras\n\n\ndef build(hp):\n    return keras.Sequential([keras.Input((784,)), "
        "keras.layers.Dense(hp['units'], activation='relu'), keras.layers.Dense(10, activation='softmax')])\n")
    args = ["submit", "mnist-mlp", "--address", url, "--data", "data/mnist.npz", "--samples", "1",
            "--set", "train.epochs=1", "--set", "data.train_subset=500", "--set", "run.report=false",
            "--set", "model.builder=mymodel.py:build", "--storage", "results", "--name", "remote"]
    assert main(args) == 2  # no token: refused before anything is sent
    assert "wants a token" in capsys.readouterr().err
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * len(token))  # a wrong one: the head says no
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the token was rejected" in err and "Traceback" not in err
    assert not (tmp_path / "results" / "remote").exists()  # nothing ran

    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    assert main(args) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "SUCCEEDED" in out and "test accuracy" in out
    assert "note: data.path" not in out  # the head is this machine: the same files
    assert (tmp_path / "results" / "remote" / "best.json").is_file()
    saved = yaml.safe_load((tmp_path / "results" / "remote" / "distune.yaml").read_text())
    assert saved["data"]["path"] == str(tmp_path / "data" / "mnist.npz")
    # the job built the copy of mymodel.py that travelled with it, not the file here
    assert saved["model"]["builder"].endswith("/distune_job_model.py:build")
    assert not saved["model"]["builder"].startswith(str(tmp_path))
