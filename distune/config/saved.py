"""The resolved config a run saved in its directory, read back for resume, show and report."""

from __future__ import annotations

from pathlib import Path

from distune.config.load import validate
from distune.config.schema import Experiment
from distune.config.yamlfile import load_yaml, read_text
from distune.errors import DistuneError
from distune.ops.storage import where
from distune.results.layout import CONFIG_FILE


def load_saved_experiment(directory: Path) -> Experiment:
    """The resolved config a run saved in its directory."""
    config_file = directory / CONFIG_FILE
    if not directory.is_dir():
        raise DistuneError(f"no experiment at {directory}. Check the name and --storage.")
    if not config_file.is_file():
        raise DistuneError(f"{where(directory)} is not a distune experiment (no {CONFIG_FILE}).")
    return validate(load_yaml(read_text(config_file)), str(config_file))
