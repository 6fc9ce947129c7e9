"""Directories under the shared temp dir that only this user can use. Another user who could
create or enter one could feed a trial its data or a zygote its requests."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


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
