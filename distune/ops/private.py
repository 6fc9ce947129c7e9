"""Directories only this user can have written: the private ones under the shared temp dir
(another user who could create or enter one could feed a trial its data or a zygote its
requests), and experiment directories whose pickled Ray state distune reads."""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import tempfile
from pathlib import Path

from distune.errors import DistuneError


class NotPrivate(Exception):
    """The directory exists but someone else made it, can enter it, or it is a symlink."""


def private_dir(name: str) -> Path:
    """`<tmp>/<name>`: made here with mode 0700, or, if it exists, trusted only when it is a
    real directory this user owns and nobody else can enter."""
    path = Path(tempfile.gettempdir()) / name
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise NotPrivate(f"{path} is not a private directory of this user")
    return path


TRUSTED_OWNERS = {os.getuid(), 0}  # this user, and root (who can write anything anyway)


def check_trusted(directory: Path) -> None:
    """Ray keeps a sweep's state as pickles, and reading a pickle runs what it names: read
    only what nobody but this user (or root) can have written. The directory, and what lies
    in it two levels down (its files, the trials' directories and their files), owned by one
    of them and writable by no one else; its parent writable by others only with the sticky
    bit (as /tmp), so that no one can put another directory in its place."""
    def why_not(path: Path, st: os.stat_result) -> str | None:
        if st.st_uid not in TRUSTED_OWNERS:
            return f"{path} belongs to another user (uid {st.st_uid})"
        if st.st_mode & 0o002 or (st.st_mode & 0o020 and not _own_group(st.st_gid)):
            return f"{path} can be written by other users (mode {stat.S_IMODE(st.st_mode):o})"
        return None

    parent = directory.resolve().parent
    pst = os.stat(parent)
    problem = (f"{parent} can be written by other users and lacks the sticky bit"
               if pst.st_mode & 0o002 and not pst.st_mode & stat.S_ISVTX else None)
    for path in _entries(directory, 2):
        problem = problem or why_not(path, os.stat(path))
        if problem:
            break
    if problem:
        raise DistuneError(f"{problem}. distune reads Ray's saved sweep state (pickles) from "
                           f"{directory}, and a file someone else can write there could run code "
                           f"as you. Make it yours alone (chown, then chmod -R go-w {directory}), "
                           "or copy the experiment into a directory of your own.")


@functools.lru_cache(maxsize=None)
def _own_group(gid: int) -> bool:
    """A group only this user is in: the per-user group many systems give each user (with
    umask 002, everything they write is group-writable)."""
    import grp
    import pwd

    try:
        me = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    others = {m for m in group.gr_mem if m != me}
    in_it = [u.pw_name for u in pwd.getpwall() if u.pw_gid == gid and u.pw_name != me]
    return gid == os.getgid() and not others and not in_it


def _entries(directory: Path, levels: int):
    """`directory` and what lies under it, `levels` deep."""
    yield directory
    if levels:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=True):
                    yield from _entries(Path(entry.path), levels - 1)
                else:
                    yield Path(entry.path)
