"""The one exception type a user ever sees: the CLI prints it in a paragraph and exits 2."""

from __future__ import annotations

import reprlib

MAX_SHOWN = 300  # characters of a user's value an error message echoes
MAX_PROBLEM = 600  # characters of one problem's message, what it echoes included
MAX_LISTED = 20  # problems a ConfigError's message lists (all are kept in .problems)

_repr = reprlib.Repr()  # keyword arguments only from Python 3.12
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlong = 3, MAX_SHOWN, MAX_SHOWN, 60
_repr.maxtuple = _repr.maxlist = _repr.maxdict = _repr.maxset = _repr.maxfrozenset = 8


class DistuneError(Exception):
    """A problem the user can fix (bad config, missing data, unknown name, ...)."""


class ConfigError(DistuneError):
    """An invalid experiment: every problem found, each with the path of the field at fault."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source} is not a valid experiment:"]
        lines += [f"  {clip(f'{path}: {msg}' if path else msg, MAX_PROBLEM)}" for path, msg in problems[:MAX_LISTED]]
        if len(problems) > MAX_LISTED:
            lines.append(f"  ... and {len(problems) - MAX_LISTED} more problems; fix these first")
        super().__init__("\n".join(lines))


class Interrupted(DistuneError):
    """Ctrl-C: the sweep's state is saved and `distune resume` continues it."""


def shown(value) -> str:
    """A user's value as an error message echoes it: its repr, never more than a few hundred
    characters, however big or deep the value (built cut short, not cut after building)."""
    return clip(_repr.repr(value))


def clip(text: str, limit: int = MAX_SHOWN) -> str:
    """`text` cut to `limit` characters, marked where it was cut."""
    return text if len(text) <= limit else f"{text[:limit - 4]} ..."
