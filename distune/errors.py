"""The one exception type a user ever sees: the CLI prints it in a paragraph and exits 2."""

from __future__ import annotations


class DistuneError(Exception):
    """A problem the user can fix (bad config, missing data, unknown name, ...)."""


class ConfigError(DistuneError):
    """An invalid experiment: every problem found, each with the path of the field at fault."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source} is not a valid experiment:"]
        lines += [f"  {path}: {msg}" if path else f"  {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


class Interrupted(DistuneError):
    """Ctrl-C: the sweep's state is saved and `distune resume` continues it."""
