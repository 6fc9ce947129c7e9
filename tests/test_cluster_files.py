"""cluster/: the launch files are valid for the tools that read them, and nothing in them
opens Ray to the internet or runs it without token authentication.

Launcher files go through Ray's own offline preparation and schema check (what `ray up` does
before it calls the cloud); KubeRay manifests are checked for the fields each kind needs; the
distune command lines inside them are parsed by distune's CLI and their experiments validated.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from conftest import REPO

CLUSTER = REPO / "cluster"
LAUNCHERS = sorted(CLUSTER.glob("*.yaml"))
MANIFESTS = sorted((CLUSTER / "kuberay").glob("*.yaml"))
RAY_PORTS = {6379, 8265, 10001}
MIN_RAY = (2, 52)  # token authentication


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def walk(node: Any) -> Iterator[tuple[str | None, Any]]:
    """Every (key, value) pair in a parsed document, at any depth."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield None, v
            yield from walk(v)


def version(tag: str) -> tuple[int, int]:
    return tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", tag).groups())


def test_the_files_exist():
    assert {p.name for p in LAUNCHERS} == {"aws.yaml", "gcp.yaml"}
    assert {p.name for p in MANIFESTS} >= {"raycluster.yaml", "rayjob.yaml", "nightly.yaml",
                                           "storage.yaml"}
    assert (CLUSTER / "README.md").is_file() and (CLUSTER / "Dockerfile").is_file()


# --- ray up files ---------------------------------------------------------------------------

@pytest.fixture(params=LAUNCHERS, ids=lambda p: p.name)
def launcher(request) -> tuple[dict, dict]:
    """(the file as written, the file as `ray up` sees it after merging Ray's defaults)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(request.param.read_text())
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)  # Ray's ray-schema.json, plus its own cross-field checks
    return raw, prepared


def test_launcher_passes_rays_schema(launcher):
    import json

    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(launcher[0], schema)  # the file alone, before any default fills it


def test_launcher_has_a_cpu_head_and_gpu_workers_that_scale_to_zero(launcher):
    _, config = launcher
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu = [t for name, t in types.items() if name != config["head_node_type"]]
    assert len(gpu) == 1 and gpu[0]["resources"]["GPU"] >= 1
    assert gpu[0]["min_workers"] == 0 and 1 <= gpu[0]["max_workers"] <= config["max_workers"]
    assert any("distune[gpu]" in c for c in config["worker_setup_commands"])
    assert any("distune" in c for c in config["head_setup_commands"])


def test_launcher_keeps_ray_private_and_token_protected(launcher):
    raw, config = launcher
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for command in (c for c in starts if "ray start" in c):
        assert "RAY_AUTH_MODE=token ray start" in command, command
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "~/.ray/auth_token" in config["file_mounts"]  # every node gets the token
    provider = config["provider"]["type"]
    for node_type in config["available_node_types"].values():
        node = node_type["node_config"]
        if provider == "aws":  # own group: one Ray creates also opens SSH to everyone
            assert node.get("SecurityGroupIds"), "every node type needs the prepared group"
        else:  # own network: GCP's `default` network lets SSH in from anywhere
            assert all("networks/distune" in i["network"] for i in node["networkInterfaces"])
    assert "IpPermissions" not in raw["provider"].get("security_group", {})


# --- KubeRay manifests ----------------------------------------------------------------------

def all_manifest_docs() -> list[tuple[str, dict]]:
    found = []
    for path in MANIFESTS:
        for doc in docs(path):
            found.append((path.name, doc))
            if doc.get("kind") == "ConfigMap":  # a RayJob kept for the CronJob to create
                found += [(f"{path.name}:{key}", d) for key, text in doc.get("data", {}).items()
                          if key.endswith(".yaml") for d in yaml.safe_load_all(text)]
    return found


MANIFEST_DOCS = all_manifest_docs()


def check_ray_cluster_spec(spec: dict) -> None:
    assert version(spec["rayVersion"]) >= MIN_RAY
    assert spec["authOptions"]["mode"] == "token"
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and "rayStartParams" in head
    assert head["template"]["spec"]["containers"]
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert group["groupName"] and "rayStartParams" in group
        assert group["minReplicas"] == 0 and group["maxReplicas"] >= 1  # scales to zero
        for container in group["template"]["spec"]["containers"]:
            assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1


def check_distune_command(command: str) -> None:
    """The job's command line is one distune accepts, and its experiment is valid."""
    from distune.cli import parser
    from distune.config import FLAG_FIELDS, load_experiment

    argv = shlex.split(command)
    assert argv[0] == "distune"
    args = parser().parse_args(argv[1:])
    assert args.address == "auto"
    load_experiment(args.config, args.overrides, {k: getattr(args, k) for k in FLAG_FIELDS})


@pytest.mark.parametrize("where,doc", MANIFEST_DOCS, ids=[f"{w}:{d.get('kind')}" for w, d in MANIFEST_DOCS])
def test_manifest_has_what_its_kind_needs(where, doc):
    assert doc["apiVersion"] and doc["kind"]
    assert doc["metadata"].get("name") or doc["metadata"].get("generateName")
    kind, spec = doc["kind"], doc.get("spec")
    if kind == "RayCluster":
        check_ray_cluster_spec(spec)
    elif kind == "RayJob":
        assert spec["shutdownAfterJobFinishes"] is True
        assert isinstance(spec["ttlSecondsAfterFinished"], int)
        check_ray_cluster_spec(spec["rayClusterSpec"])
        check_distune_command(spec["entrypoint"])
    elif kind == "CronJob":
        assert len(spec["schedule"].split()) == 5
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["containers"] and pod["serviceAccountName"]
    elif kind == "Role":  # the CronJob may create RayJobs and do nothing else
        assert doc["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"],
                                 "verbs": ["create"]}]
    elif kind == "PersistentVolumeClaim":
        assert spec["accessModes"] == ["ReadWriteMany"]
    else:
        assert kind in {"ServiceAccount", "RoleBinding", "ConfigMap"}, f"unchecked kind {kind}"


def test_kinds_the_issue_asks_for():
    kinds = [d["kind"] for _, d in MANIFEST_DOCS]
    assert "RayCluster" in kinds and "CronJob" in kinds and kinds.count("RayJob") == 2


def test_images_and_ray_versions_agree():
    """One Ray version everywhere: images, rayVersion, the Dockerfile's base."""
    text = "\n".join(p.read_text() for p in [*LAUNCHERS, *MANIFESTS, CLUSTER / "Dockerfile"])
    versions = set(re.findall(r"rayproject/ray:(\d+\.\d+\.\d+)", text))
    versions |= set(re.findall(r"rayVersion:\s*\"?(\d+\.\d+\.\d+)", text))
    assert len(versions) == 1 and version(versions.pop()) >= MIN_RAY


# --- security scan of everything under cluster/ ------------------------------------------------

def every_file() -> list[Path]:
    return sorted(p for p in CLUSTER.rglob("*") if p.is_file())


@pytest.mark.parametrize("path", every_file(), ids=lambda p: str(p.relative_to(CLUSTER)))
def test_nothing_is_opened_to_the_internet(path):
    text = path.read_text()
    assert "0.0.0.0/0" not in text and "::/0" not in text
    assert not re.search(r"dashboard[-_]host\W+0\.0\.0\.0", text)
    if path.suffix == ".yaml":
        for key, value in (kv for d in docs(path) for kv in walk(d)):
            assert not (key in ("type", "serviceType") and value in ("LoadBalancer", "NodePort"))
            assert not (key == "enableIngress" and value), "no Ingress to the Ray head"
            assert not (key == "kind" and value in ("Ingress", "Service", "Gateway"))
            assert not (key == "hostPort" and value in RAY_PORTS), "Ray port on the node's IP"


def test_every_template_turns_token_auth_on():
    for path in LAUNCHERS:
        assert "RAY_AUTH_MODE=token ray start --head" in path.read_text()
    clusters = [d["spec"] for _, d in MANIFEST_DOCS if d["kind"] == "RayCluster"]
    clusters += [d["spec"]["rayClusterSpec"] for _, d in MANIFEST_DOCS if d["kind"] == "RayJob"]
    assert len(clusters) == 3
    for spec in clusters:
        assert spec["authOptions"] == {"mode": "token", "secretName": "distune-ray-token"}
