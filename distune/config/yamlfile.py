"""Experiment files as YAML, read safely: bounded in size, depth and alias expansion, UTF-8,
no repeated keys, libyaml's parser where installed. Anything refused is one clear line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from distune.errors import DistuneError, clip, shown

# An experiment is a few kB. Far past these it is the wrong file, or one built to exhaust
# memory (aliases that expand exponentially, "billion laughs"); refused before it costs any.
MAX_FILE_BYTES = 1_000_000
MAX_VALUES = 100_000  # scalars and collections, aliases expanded
MAX_DEPTH = 64  # nesting levels; a tree space adds 4 per level of sub-spaces



def read_text(path: Path) -> str:
    """An experiment file's text. Read at most MAX_FILE_BYTES + 1 bytes: what is bigger is no
    experiment, and parsing it would take seconds and hundreds of MB."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise DistuneError(f"{path}: cannot read it ({e.strerror or e}). Check the path and its permissions.") from None
    if len(data) > MAX_FILE_BYTES:
        raise DistuneError(f"{path}: more than {MAX_FILE_BYTES // 1000} kB, far too big for an experiment "
                           "file (they are a few kB). Check that this is the file you meant.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DistuneError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}). "
                           "An experiment file must be UTF-8 text: save it as UTF-8.") from None


class Refused(yaml.MarkedYAMLError):
    """YAML that parses but is refused: a duplicate key, or too big or deep once aliases expand."""


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """libyaml's parser where it is installed (the pure-Python one is many times slower), and
    unique keys: by default a repeated key silently replaces the earlier value."""

    def construct_mapping(self, node, deep=False):
        first: dict[Any, int] = {}
        for key_node, _ in node.value:  # before merge keys (<<) are flattened: they may override
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in first:
                    raise Refused(problem=f"key {shown(key)} appears twice in one mapping (first at "
                                  f"line {first[key] + 1}), and the later value would silently "
                                  "replace the earlier; keep one", problem_mark=key_node.start_mark)
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """The one document in `text`, checked before it is built: aliases cannot expand it past
    MAX_VALUES, nor nesting past MAX_DEPTH (deep data breaks Python's recursion later)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if problem := _node_problem(node):
            raise Refused(problem=problem)
        return loader.construct_document(node)
    except RecursionError:  # the pure-Python parser recurses per level
        raise Refused(problem=f"nested more than {MAX_DEPTH} levels deep; an experiment needs "
                      "far fewer") from None
    finally:
        loader.dispose()


def _node_problem(root: yaml.Node) -> str | None:
    """Why a parsed document cannot be built: its values counted with every alias expanded,
    and its depth, in one walk over the distinct nodes (an alias is a node met again)."""
    size: dict[int, int] = {}  # id -> values under it, aliases expanded
    depth: dict[int, int] = {}
    started: set[int] = set()  # the nodes on the path from the root: met again, a cycle
    stack, aliased = [(root, False)], False
    while stack:
        node, finished = stack.pop()
        key = id(node)
        kids = [] if isinstance(node, yaml.ScalarNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
        if finished:
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            started.discard(key)
            if size[key] > MAX_VALUES:
                return (f"more than {MAX_VALUES} values once its aliases (*name) are expanded; an "
                        "experiment needs far fewer (aliases that repeat aliases multiply)" if aliased
                        else f"more than {MAX_VALUES} values; an experiment needs far fewer")
            if depth[key] > MAX_DEPTH:
                return f"nested more than {MAX_DEPTH} levels deep; an experiment needs far fewer"
        elif key in started:
            return "an alias (*name) refers to a value that contains it; write the value out"
        elif key in size:
            aliased = True
        else:
            started.add(key)
            stack.append((node, True))
            stack += [(k, False) for k in kids]
    return None


def yaml_problem(label: str, e: yaml.YAMLError) -> str:
    """One line for a YAML error: where, what, and what to do."""
    mark = getattr(e, "problem_mark", None)
    problem = clip(getattr(e, "problem", None) or str(e).splitlines()[0])
    if isinstance(e, Refused):
        return f"{label}{f', line {mark.line + 1}' if mark else ''}: {problem}."
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{label}: not valid YAML{where}: {problem}. Fix the file's syntax."
