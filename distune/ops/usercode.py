"""A user's model function (`model.builder`, `model.keras_tuner`), read once on the driver and
carried as source text to every trial.

A spec is `module.path:function` (importable here) or `file.py:function` (a path; relative ones
are anchored to the experiment file's directory). Either way the driver reads the module's
source and the trials run that text: a training process forked on another node, or a job
submitted to a cluster, needs neither the user's file nor their package installed. The code
runs as the user's own program would; only its module file travels, so a module that imports
its own package's siblings needs that package where trials run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

MAX_SOURCE = 1_000_000  # characters: a model file, not a data file


class UserCodeError(ValueError):
    """The spec cannot be read or imported; the message says what to fix."""


@dataclass(frozen=True)
class UserCode:
    spec: str  # as written, relative paths anchored
    function: str
    source: str
    origin: str  # the file the source came from

    @property
    def module_name(self) -> str:
        """One module per source text, so two versions never share a name in one process."""
        digest = hashlib.blake2b(self.source.encode(), digest_size=6).hexdigest()
        return f"distune_user_{Path(self.origin).stem}_{digest}"

    def load(self) -> Callable:
        """The function, from the source text (once per process)."""
        module = sys.modules.get(self.module_name)
        if module is None:
            from distune.ops.environment import quiet_tensorflow

            quiet_tensorflow(initialise=True)  # what a model file runs first, without TF's start-up lines
            module = types.ModuleType(self.module_name)
            module.__file__ = self.origin
            sys.modules[self.module_name] = module
            try:
                exec(compile(self.source, self.origin, "exec"), module.__dict__)  # noqa: S102 - the user's own code
            except BaseException:
                del sys.modules[self.module_name]
                raise
        function = getattr(module, self.function, None)
        if not callable(function):
            raise UserCodeError(f"{self.origin} defines no function {self.function!r}")
        return function


def anchor_code(spec: str, base: str) -> str:
    """A relative `file.py:function` spec made absolute against `base` (a directory)."""
    where, sep, function = spec.rpartition(":")
    if sep and where.endswith(".py") and not os.path.isabs(os.path.expanduser(where)):
        return f"{os.path.abspath(os.path.join(base, where))}:{function}"
    return spec


def read_code(spec: str) -> UserCode:
    """Find the spec's source file and read it; UserCodeError says what is wrong."""
    where, sep, function = spec.rpartition(":")
    if not sep or not where or not function.isidentifier():
        raise UserCodeError(f"expected 'module.path:function' or 'file.py:function', got {spec[:200]!r}")
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise UserCodeError(f"no such file: {path}")
    else:
        try:
            found = importlib.util.find_spec(where)
        except (ImportError, ValueError) as e:
            raise UserCodeError(f"cannot import {where}: {e}") from None
        if found is None or not found.origin or not found.origin.endswith(".py"):
            raise UserCodeError(f"cannot import {where}: no such module on the Python path here "
                                "(or not a .py file); write the file's path instead: path/to/file.py:"
                                f"{function}")
        path = Path(found.origin)
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserCodeError(f"cannot read {path}: {e}") from None
    if len(source) > MAX_SOURCE:
        raise UserCodeError(f"{path} is {len(source)} characters; a model file is expected")
    code = UserCode(spec, function, source, str(path))
    try:
        code.load()
    except UserCodeError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's module failed to import
        raise UserCodeError(f"importing {path} failed: {type(e).__name__}: {e}") from None
    return code
