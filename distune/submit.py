"""`distune submit`: run a sweep as a Ray job on a remote cluster, through its Jobs API.

The experiment is validated here first, so a typo fails on the laptop and not after GPU
nodes have scaled up. The fully resolved config (file + flags + defaults, name fixed), the
user's model module if any, and this distune package travel with the job (`working_dir`,
`py_modules`): the cluster runs exactly what was validated, whatever distune version its image
holds, without the user's package installed there.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ipaddress
import logging
import os
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO
from urllib.parse import urlparse

from distune.config.load import load_experiment

from distune.config.schema import DEFAULT_STORAGE, Experiment
from distune.errors import DistuneError

JOB_CONFIG = "distune-job.yaml"
JOB_MODEL = "distune_job_model.py"  # a user's model.builder / model.keras_tuner module
EXIT_FAILED = 1
EXIT_DETACHED = 130
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
TUNNEL_HINT = ("Open a tunnel first: `ray dashboard cluster/aws.yaml` (or gcp.yaml), or "
               "`kubectl port-forward svc/HEAD-SERVICE 8265:8265` for KubeRay, then pass "
               "--address http://127.0.0.1:8265")


def check_address(address: str | None) -> str:
    """The Jobs API URL, from --address or $RAY_API_SERVER_ADDRESS; anything else is refused
    here, before Ray turns it into a confusing connection error."""
    address = (address or os.environ.get("RAY_API_SERVER_ADDRESS") or "").strip()
    if not address:
        raise DistuneError(f"--address is required: the cluster's Jobs API (dashboard) URL. "
                           f"{TUNNEL_HINT}.")
    url = urlparse(address)
    try:
        port_ok = url.port is None or 0 < url.port < 65536
    except ValueError:
        port_ok = False
    if url.scheme not in ("http", "https") or not url.hostname or not port_ok:
        raise DistuneError(f"--address {address!r} is not a Jobs API URL: expected "
                           "http(s)://HOST:8265 (ray://HOST:10001 and 'auto' are addresses for "
                           f"`distune run --address`, on the cluster itself). {TUNNEL_HINT}.")
    return address.rstrip("/")


def check_transport(address: str, headers: dict[str, str], insecure: bool = False) -> None:
    """A bearer token never travels over plain http beyond this machine: whoever reads it can
    run code on the cluster. Refused before anything is sent, unless the user says so."""
    url = urlparse(address)
    if not headers or url.scheme != "http" or _loopback(url.hostname or "") or insecure:
        return
    raise DistuneError(f"--address {address}: plain http to another machine would send the "
                       "cluster's token in the clear, and anyone who reads it can run code "
                       "there. Reach the head through a tunnel to 127.0.0.1 (`ray dashboard "
                       "cluster/aws.yaml`, an SSH -L tunnel, or `kubectl port-forward`), or use "
                       "https. Only on a network you trust end to end, pass "
                       "--insecure-http-token to send it anyway.")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_headers() -> dict[str, str]:
    """A bearer token from RAY_AUTH_TOKEN, the file at RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token
    (Ray's own order). Ray's client sends one only when RAY_AUTH_MODE=token is set in this
    process; here having a token is enough."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return {"Authorization": f"Bearer {token}"}
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    file = Path(named).expanduser() if named else Path.home() / ".ray" / "auth_token"
    if file.is_file():
        token = file.read_text().strip()
    elif named:
        raise DistuneError(f"RAY_AUTH_TOKEN_PATH={named}: no such file. Point it at the "
                           "cluster's token file, or set RAY_AUTH_TOKEN instead.")
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextmanager
def _address_wins() -> Iterator[None]:
    """JobSubmissionClient lets RAY_ADDRESS / RAY_API_SERVER_ADDRESS override the address it is
    given; --address must win, so both are hidden while the client is built."""
    saved = {k: os.environ.pop(k) for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
             if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def connect(address: str, headers: dict[str, str]):
    """A JobSubmissionClient for `address`; every way this fails is the user's to fix."""
    if importlib.util.find_spec("aiohttp") is None:
        import ray

        raise DistuneError("distune submit needs Ray's job client, which comes with Ray's "
                           f"`default` extra: pip install 'ray[default]=={ray.__version__}'.")
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    for name in ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.WARNING)  # "uploading...", "socket closed"

    try:
        with _address_wins():
            return JobSubmissionClient(address, headers=headers)
    except ConnectionError:
        raise DistuneError(f"cannot reach the Jobs API at {address}: nothing answers there. "
                           f"Is the cluster up and the tunnel open? {TUNNEL_HINT}.") from None
    except AuthenticationError:
        hint = ("the token was rejected" if headers else
                "the cluster wants a token and none was found")
        raise DistuneError(f"{address}: {hint}. Set RAY_AUTH_TOKEN to the cluster's token "
                           "(see cluster/README.md, 'Tokens') and submit again.") from None
    except RuntimeError as e:
        raise DistuneError(f"{address} answered, but not as a Ray Jobs API: {e}") from None


def head_host(client) -> str | None:
    """The cluster's head node's host name, from its state API (None when it will not say)."""
    try:
        reply = client._do_request("GET", "/api/v0/nodes?detail=1&limit=100")
        nodes = reply.json()["data"]["result"]["result"]
        return next(n.get("node_name") or n.get("node_ip") for n in nodes if n.get("is_head_node"))
    except Exception:  # noqa: BLE001 - an older or stand-in server: no answer, no harm
        return None


def path_notes(exp: Experiment, head: str | None) -> list[str]:
    """What the user should know about local paths in a job (made absolute where it was
    submitted, by load_experiment): they are read on the cluster, which may be elsewhere."""
    if head is not None and head in _this_machine():
        return []  # the cluster runs on this machine: the same files
    where = f"the cluster's head node ({head})" if head else "the cluster's head node"
    notes = []
    if exp.data.path and "://" not in exp.data.path:
        found = "exists here" if Path(exp.data.path).expanduser().is_file() else "is not on this machine"
        notes.append(f"data.path {exp.data.path} ({found}) is read on {where}, not on this "
                     "machine; if it is not there too, the job stops at once with 'MNIST file "
                     "not found'. Copy it there (or to storage every node shares) and pass "
                     "that path, or drop --data to use the cluster's Keras cache or download.")
    if "://" not in exp.run.storage and not exp.run.storage.startswith("~"):
        notes.append(f"run.storage {exp.run.storage} is a directory on {where} and must be "
                     "writable there (with GPU worker nodes: storage every node shares).")
    return notes


def _this_machine() -> set[str]:
    """Names and addresses of this machine (Ray names a node by its IP unless told)."""
    from ray.util import get_node_ip_address

    names = {socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1", "::1"}
    with contextlib.suppress(OSError):
        names |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    with contextlib.suppress(Exception):
        names.add(get_node_ip_address())  # the address Ray itself would give a node here
    return names


def job_request(exp: Experiment, stem: str, workdir: Path, *, overwrite: bool,
                refit: bool) -> tuple[str, dict[str, Any]]:
    """Write the resolved config into `workdir`; return the experiment name and the
    submit_job keyword arguments that run it with `distune run` on the cluster."""
    name = exp.run.name or f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    exp = exp.model_copy(update={"run": exp.run.model_copy(update={"name": name})})
    if exp.model.code is not None:  # the user's model module travels with the job, as read here
        (workdir / JOB_MODEL).write_text(exp.model.code.source)
        field = "keras_tuner" if exp.model.keras_tuner else "builder"
        exp = exp.model_copy(update={"model": exp.model.model_copy(update={
            field: f"{JOB_MODEL}:{exp.model.code.function}"})})
    (workdir / JOB_CONFIG).write_text(exp.to_yaml())
    command = ["python", "-m", "distune", "run", JOB_CONFIG, "--address", "auto"]
    command += ["--overwrite"] * overwrite + ["--refit"] * refit
    runtime_env = {"working_dir": str(workdir),
                   "py_modules": [str(Path(__file__).parent)],
                   "excludes": ["__pycache__", "*.pyc"]}
    return name, {"entrypoint": " ".join(command), "runtime_env": runtime_env,
                  "metadata": {"distune_experiment": name}}


def submit_sweep(config: str | None, overrides: list[str], flags: dict[str, Any], *,
                 address: str | None, wait: bool = True, overwrite: bool = False,
                 refit: bool = False, insecure_http_token: bool = False,
                 client_factory: Callable | None = None, out: TextIO | None = None) -> int:
    """Validate, submit, and (unless `wait` is false) follow the job to its end.
    Returns the exit status: the job driver's own (0, 1, 2 ...) once it has ended."""
    out = out or sys.stdout
    exp, stem = load_experiment(config, overrides, flags, check_local=False)  # checked where it runs
    address = check_address(address)
    headers = auth_headers()
    check_transport(address, headers, insecure_http_token)
    client = (client_factory or connect)(address, headers)
    with tempfile.TemporaryDirectory(prefix="distune-job-") as tmp:
        name, request = job_request(exp, stem, Path(tmp), overwrite=overwrite, refit=refit)
        try:
            job_id = client.submit_job(**request)
        except RuntimeError as e:
            raise DistuneError(f"{address} refused the job: {e}") from None
    for note in path_notes(exp, head_host(client)):
        print(f"distune: note: {note}", file=out)
    auth = "RAY_AUTH_MODE=token " if headers else ""
    again = (f"follow it with `{auth}ray job logs --follow {job_id} --address {address}`; "
             f"stop it with `{auth}ray job stop {job_id} --address {address}`")
    print(f"distune: submitted {name} as Ray job {job_id} to {address}", file=out)
    print(f"distune: results will be in {exp.run.storage}/{name} on the cluster", file=out)
    if exp.run.storage == DEFAULT_STORAGE:
        print("distune: note: run.storage is the head node's home directory; with GPU worker "
              "nodes, trials need storage every node shares (--storage /mnt/distune/results, "
              "see cluster/README.md)", file=out)
    if not wait:
        print(f"distune: {again}", file=out)
        return 0
    return _follow(client, job_id, out, again)


def _follow(client, job_id: str, out: TextIO, again: str) -> int:
    """Stream the job's output to its end; the exit status is the job driver's own."""
    try:
        from aiohttp import ClientError
    except ImportError:  # only a stand-in client gets here: Ray's needs aiohttp
        ClientError = OSError
    try:
        asyncio.run(_print_logs(client, job_id, out))
        info = _final_info(client, job_id)
    except KeyboardInterrupt:
        print(f"\ndistune: stopped following; job {job_id} keeps running on the cluster: "
              f"{again}", file=out)
        return EXIT_DETACHED
    except (RuntimeError, OSError, ClientError) as e:
        print(f"\ndistune: lost the job's log stream ({e}); job {job_id} may still be running: "
              f"{again}", file=out)
        return EXIT_FAILED
    status = str(info.status)
    print(f"distune: job {job_id} {status}", file=out)
    if status == "SUCCEEDED":
        return 0
    code = getattr(info, "driver_exit_code", None)
    return code if isinstance(code, int) and code > 0 else EXIT_FAILED


async def _print_logs(client, job_id: str, out: TextIO) -> None:
    async for chunk in client.tail_job_logs(job_id):
        out.write(chunk)
        out.flush()


def _final_info(client, job_id: str, timeout_s: float = 60.0):
    """The log stream can close a moment before the job's status turns terminal."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = client.get_job_info(job_id)
        if str(info.status) in TERMINAL or time.monotonic() > deadline:
            return info
        time.sleep(0.5)
