"""A YAML file or preset + CLI overrides -> one validated `Experiment`. Nothing else reads raw
dicts. Every problem is reported at once, each with its dotted path."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from distune.config.checks import describe, semantic_problems, warm_start_problems
from distune.config.schema import DEFAULT_PRESET, Experiment
from distune.config.yamlfile import Refused, load_yaml, read_text, yaml_problem
from distune.errors import ConfigError, DistuneError
from distune.ops.usercode import anchor_code


# Short CLI flags -> the field they set.
FLAG_FIELDS = {
    "searcher": "search.searcher",
    "scheduler": "schedule.scheduler",
    "samples": "search.num_samples",
    "data": "data.path",
    "storage": "run.storage",
    "name": "run.name",
    "address": "run.address",
    "backend": "train.backend",
}

def presets() -> dict[str, str]:
    """Shipped presets: name -> first comment line of the file."""
    out = {}
    for f in sorted(resources.files("distune.presets").iterdir(), key=lambda f: f.name):
        if f.name.endswith(".yaml"):
            first = f.read_text().splitlines()[0] if f.read_text() else ""
            out[f.name[:-5]] = first.lstrip("# ").strip()
    return out


def resolve_source(source: str | None) -> tuple[str, str, str]:
    """(label, stem, YAML text) for a file path or a preset name; None is the default preset."""
    source = source or DEFAULT_PRESET
    path = Path(source).expanduser()
    if path.is_file():
        return str(path), path.stem, read_text(path)
    if source in presets():
        return f"preset {source}", source, (resources.files("distune.presets") / f"{source}.yaml").read_text()
    hint = "a YAML file" if source.endswith((".yaml", ".yml")) or "/" in source else "a preset"
    raise DistuneError(f"{source}: no such file or preset ({hint} was expected). "
                       f"Presets: {', '.join(presets())}; or pass the path of your own YAML file.")


def load_experiment(source: str | None = None, overrides: list[str] = (),
                    flags: dict[str, Any] | None = None, check_local: bool = True) -> tuple[Experiment, str]:
    """Load, override and validate. Returns the experiment and its stem (for default names).
    `check_local`: the warm-start experiments must be here (False where the sweep runs
    elsewhere: a submitted job checks them where it runs)."""
    label, stem, text = resolve_source(source)
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as e:
        raise DistuneError(yaml_problem(label, e)) from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(label, [("", f"the file must be a mapping of sections "
                                        f"({', '.join(Experiment.model_fields)}), got {type(raw).__name__}")])
    for key, value in (flags or {}).items():
        if value is not None:
            _switch_entry(raw, key, value)
            _set_path(raw, FLAG_FIELDS[key], value)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DistuneError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set train.epochs=3")
        try:
            parsed = load_yaml(value)
        except Refused as e:
            raise DistuneError(yaml_problem(f"--set {key.strip()}", e)) from None
        except yaml.YAMLError:
            parsed = value
        if key.strip() in CODE_FIELDS and isinstance(parsed, str):  # typed here: from here
            parsed = anchor_code(parsed, os.getcwd())
        _set_path(raw, key.strip(), parsed)
    _anchor_paths(raw, _base(source))
    exp = validate(raw, label)
    if check_local and (problems := warm_start_problems(exp)):
        raise ConfigError(label, problems)
    return exp, stem


def local_path(value: str) -> bool:
    """A path on this machine (not a URI), written relative to the current directory."""
    return "://" not in value and not value.startswith("~") and not os.path.isabs(value)


CODE_FIELDS = ("model.builder", "model.keras_tuner")


def _base(source: str | None) -> str:
    """Where a file's relative model.builder / model.keras_tuner point from: its directory
    (a preset's: the current one)."""
    path = Path(source).expanduser() if source else None
    return str(path.resolve().parent) if path and path.is_file() else os.getcwd()


def _anchor_paths(raw: dict, base: str) -> None:
    """Relative data.path, run.storage and warm-start directories, anchored to the caller's directory now: the saved
    config (distune.yaml, a submitted job's file) then means the same from any directory or
    process. `~` stays as written, so it names the home of the machine that runs the job."""
    for section, key in (("data", "path"), ("run", "storage")):
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str) and node[key] and local_path(node[key]):
            node[key] = os.path.abspath(node[key])
    model = raw.get("model")
    for key in ("builder", "keras_tuner"):
        if isinstance(model, dict) and isinstance(model.get(key), str):
            model[key] = anchor_code(model[key], base)
    search = raw.get("search")
    sources = search.get("warm_start") if isinstance(search, dict) else None
    if isinstance(sources, (str, list)):  # a directory here, not a sibling experiment's name
        anchored = [os.path.abspath(s) if isinstance(s, str) and local_path(s) and os.path.isdir(s)
                    else s for s in ([sources] if isinstance(sources, str) else sources)]
        search["warm_start"] = anchored[0] if isinstance(sources, str) else anchored


def validate(raw: dict, label: str = "experiment") -> Experiment:
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(label, [describe(err) for err in e.errors()]) from None
    problems = semantic_problems(exp)
    if problems:
        raise ConfigError(label, problems)
    return exp


def _switch_entry(raw: dict, flag: str, value: Any) -> None:
    """--searcher/--scheduler to another name drops the file's options for the old one."""
    section, key = {"searcher": ("search", "searcher"), "scheduler": ("schedule", "scheduler")}.get(flag, (None, None))
    if section and isinstance(raw.get(section), dict) and raw[section].get(key) not in (None, value):
        raw[section].pop("options", None)


def _set_path(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value
