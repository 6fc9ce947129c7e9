"""One nightly run per sweep at a time: an O_EXCL lock file that names its holder (pid, host).

A plain file works on shared filesystems and tells the next run *who* holds the sweep. A run that
crashed leaves its file behind; when the holder was on this host and its pid is gone, the lock is
stale and is cleared. On another host the pid cannot be checked, so such a lock only expires at
its `expires` time (start + time budget + an hour), when the run gave a budget. The short
check-clear-create step is serialised with filelock, so two runs never both clear and take it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock

from distune.errors import DistuneError

GRACE_S = 3600.0  # a budgeted run's lock is considered abandoned this long after its budget


class Locked(DistuneError):
    """Another run holds the sweep (the CLI exits with its own status for this)."""


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # half-written by a run that died between create and write


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (perhaps another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def stale_reason(holder: dict, mtime: float) -> str | None:
    """Why a lock may be cleared, or None while its holder may still be running."""
    if not holder:
        return "unreadable" if time.time() - mtime > 60 else None
    if holder.get("host") == socket.gethostname():
        return None if pid_alive(int(holder.get("pid", -1))) else f"pid {holder.get('pid')} is gone"
    expires = holder.get("expires")
    if expires is not None and time.time() > expires:
        return f"expired at {time.strftime('%Y-%m-%d %H:%M', time.localtime(expires))}"
    return None


def acquire(path: Path, budget_s: float | None = None, say: Callable[[str], None] = print) -> None:
    """Take the lock or raise Locked, clearing a stale one first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
          "expires": time.time() + budget_s + GRACE_S if budget_s else None}
    with FileLock(str(path) + ".guard", timeout=60):
        if path.exists():
            holder = _holder(path)
            reason = stale_reason(holder, path.stat().st_mtime)
            if reason is None:
                since = time.strftime("%Y-%m-%d %H:%M", time.localtime(holder.get("started", 0)))
                raise Locked(f"another nightly run of this sweep is in progress (pid "
                             f"{holder.get('pid')} on {holder.get('host')}, since {since}); lock "
                             f"file {path}. Wait for it to finish. If no such run exists (its "
                             "machine was lost), delete the lock file and run again.")
            say(f"distune: cleared a stale lock {path} ({reason}; left by pid {holder.get('pid')} "
                f"on {holder.get('host')})")
            path.unlink()
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)


def release(path: Path) -> None:
    """Remove the lock if it is still ours."""
    if _holder(path).get("pid") == os.getpid() and _holder(path).get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextmanager
def held(path: Path, budget_s: float | None = None,
         say: Callable[[str], None] = print) -> Iterator[None]:
    acquire(path, budget_s, say)
    try:
        yield
    finally:
        release(path)
