"""Where an experiment lives: a local or NFS directory, or a cloud URI (s3://, gs://, with
pyarrow's options in the query, e.g. `s3://bucket/path?endpoint_override=host:9000&scheme=http`).

Ray Tune writes trial results and checkpoints to the URI itself (`RunConfig.storage_path`), so
a trial can resume on any node. distune's own code reads and writes plain files; for a URI it
works in a private local mirror of the experiment, made for this process and removed at its
exit: `refresh` downloads what Ray wrote (checkpoints only one by one, when needed), `publish`
uploads the files distune wrote. Local and NFS directories are used in place: no mirror.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import tempfile
import urllib.parse
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from distune.errors import DistuneError

CHECKPOINT_PREFIX = "checkpoint_"
# Object stores show an object only once its upload completed: a reader never sees half a
# file. Elsewhere, uploads go to a temporary name and are renamed.
ATOMIC_PUT = ("s3", "gcs")

_mirrors: dict[str, Path] = {}  # experiment URI -> its mirror, in this process
_synced: dict[Path, dict[str, tuple[int, int]]] = {}  # mirror -> file -> (size, mtime) as synced
_kept: set[Path] = set()  # mirrors holding files that could not be uploaded


def is_uri(location: str) -> bool:
    return "://" in location


def join(root: str, name: str) -> str:
    """`root/name` for a path or a URI; a URI keeps its query (pyarrow's options) at the end."""
    if not is_uri(root):
        return os.path.join(root, name)
    parts = urllib.parse.urlsplit(root)
    return urllib.parse.urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{name}"))


def parent(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/").rsplit("/", 1)[0]))


def filesystem(uri: str) -> tuple[Any, str]:
    """pyarrow's filesystem and path for a URI, or one clear error for a URI it cannot use."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, NotImplementedError, OSError) as e:
        raise DistuneError(f"run.storage: cannot use {uri} ({e}). Use a local or NFS path, or "
                           "s3://BUCKET/PATH or gs://BUCKET/PATH, with pyarrow's options as a "
                           "query if needed (?endpoint_override=HOST:PORT&scheme=http).") from None


def mirror(uri: str) -> Path:
    """This process's local directory for the experiment at `uri` (made by `refresh` or
    `prepare_remote`). Its name is the experiment's, as for a local experiment."""
    if uri not in _mirrors:
        root = Path(tempfile.mkdtemp(prefix="distune-mirror-"))
        atexit.register(_remove_mirror, root)
        _mirrors[uri] = root / PurePosixPath(urllib.parse.urlsplit(uri).path).name
    return _mirrors[uri]


def _remove_mirror(root: Path) -> None:
    if not any(m.parent == root for m in _kept):
        shutil.rmtree(root, ignore_errors=True)


def remote_of(directory: Path) -> str | None:
    """The URI of the experiment `directory` mirrors; None for a local experiment."""
    return next((uri for uri, m in _mirrors.items() if m == Path(directory)), None)


def where(path: Path) -> str:
    """A file or directory as the user should see it: its URI if it is in a mirror."""
    path = Path(path)
    for uri, m in _mirrors.items():
        if path == m:
            return uri
        if m in path.parents:
            return join(uri, path.relative_to(m).as_posix())
    return str(path)


def root_of(directory: Path) -> str:
    """The storage an experiment is in, as `--storage` takes it."""
    uri = remote_of(directory)
    return parent(uri) if uri else str(Path(directory).parent)


def fetch(uri: str) -> Path:
    """The mirror of an existing experiment, with everything Ray and distune wrote except
    checkpoints."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    if _call(uri, fs.get_file_info, path).type == pafs.FileType.NotFound:
        raise DistuneError(f"no experiment at {uri}. Check the experiment's name and --storage.")
    directory = mirror(uri)
    refresh(directory)
    return directory


def sibling(directory: Path, name: str) -> Path:
    """The experiment `name` stored beside `directory` (a mirror of it for a URI)."""
    uri = remote_of(directory)
    return fetch(join(parent(uri), name)) if uri else Path(directory).parent / name


def refresh(directory: Path) -> None:
    """Bring a mirror up to date with its URI (not checkpoints); nothing for a local experiment."""
    uri = remote_of(directory)
    if uri:
        _download(uri, directory, with_checkpoints=False)


def _in_experiment(trial, checkpoint) -> str:
    """A trial's checkpoint within the experiment's storage as the trial sees it now. Ray records
    checkpoints by absolute path; only its last two names are taken from it (its trial's
    directory: a PBT trial's latest is in the trial it copied; and its own), so an experiment that
    was moved, copied or is read through a mirror never loads another copy's checkpoint."""
    at = PurePosixPath(checkpoint.path)
    return str(PurePosixPath(trial.storage.trial_fs_path).parent / at.parent.name / at.name)


def checkpoint_path(trial, checkpoint) -> Path:
    """Where a trial's checkpoint is in the experiment's own directory (or its mirror, whose
    files `local_copy` downloads)."""
    return Path(_in_experiment(trial, checkpoint))


def in_mirror(path: Path) -> bool:
    """Is `path` inside a local mirror of a URI experiment (its files downloaded on use)?"""
    return _mirror_of(Path(path)) is not None


def local_copy(path: Path) -> Path:
    """`path` itself, its files first downloaded if it is in a mirror (a checkpoint, say)."""
    path = Path(path)
    if _mirror_of(path):
        _download(where(path), path, with_checkpoints=True)
    return path


def publish(directory: Path) -> None:
    """Upload every file distune wrote in a mirror since it was synced; nothing for a local
    experiment. On failure the mirror is kept, and the error says where it is."""
    uri = remote_of(directory)
    if not uri:
        return
    fs, base = filesystem(uri)
    synced = _synced.setdefault(directory, {})
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel, stamp = file.relative_to(directory).as_posix(), _stamp(file)
        if synced.get(rel) == stamp:
            continue
        try:
            _upload(fs, file, f"{base}/{rel}")
        except OSError as e:
            _kept.add(directory)
            raise DistuneError(f"could not upload {rel} to {uri} ({e}). The experiment's files "
                               f"are kept in {directory}: copy them there once the storage "
                               "works again.") from None
        synced[rel] = stamp


def prepare_remote(directory: Path, overwrite: bool) -> None:
    """For a new experiment at a URI: refuse a taken name (or empty it with `overwrite`), check
    that this machine may write there, and make the local mirror."""
    import pyarrow.fs as pafs

    uri = remote_of(directory)
    fs, path = filesystem(uri)
    if _call(uri, fs.get_file_info, pafs.FileSelector(path, allow_not_found=True)):
        if not overwrite:
            raise taken_error(directory)
        _call(uri, fs.delete_dir, path)
    probe(uri)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    _synced.pop(directory, None)


def probe(uri: str) -> None:
    """Write and delete a small object at `uri`: fail before a sweep, not after it."""
    fs, path = filesystem(uri)
    test = f"{path.rstrip('/')}/.distune-write-test-{uuid.uuid4().hex[:8]}"

    def write_and_delete() -> None:
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(test) as out:
            out.write(b"ok")
        fs.delete_file(test)

    _call(uri, write_and_delete)


def resume_command(directory: Path) -> str:
    """Quoted for the shell: a URI's query holds `&`."""
    return f"distune resume {directory.name} --storage {shlex.quote(root_of(directory))}"


def taken_error(directory: Path) -> DistuneError:
    return DistuneError(f"experiment {directory.name!r} already exists at {where(directory)}. "
                        f"Continue it with `{resume_command(directory)}`, pick another --name, "
                        "or pass --overwrite to replace it.")


def _call(uri: str, fn, *args):
    """Run a storage call; a failure (no such bucket, no permission, no connection) is the
    user's to fix."""
    try:
        return fn(*args)
    except OSError as e:
        raise DistuneError(f"run.storage: cannot use {uri} ({e}). Check that the bucket exists, "
                           "that this machine's credentials may read and write it (AWS_* "
                           "variables or the node's role for s3://, GOOGLE_APPLICATION_CREDENTIALS "
                           "for gs://), and the URI's options.") from None


def _download(uri: str, local: Path, with_checkpoints: bool) -> None:
    """Copy the files under `uri` that changed since the last copy into `local`, each atomically."""
    import pyarrow.fs as pafs

    fs, base = filesystem(uri)
    synced = _synced.setdefault(_mirror_of(local), {})
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    for info in _call(uri, fs.get_file_info, selector):
        rel = PurePosixPath(info.path).relative_to(base)
        if info.type != pafs.FileType.File or (not with_checkpoints and any(
                part.startswith(CHECKPOINT_PREFIX) for part in rel.parts[:-1])):
            continue
        target = local.joinpath(*rel.parts)
        key = target.relative_to(_mirror_of(local)).as_posix()
        if target.is_file() and synced.get(key) == _stamp(target) == (info.size, info.mtime_ns):
            continue  # unchanged since this process copied it
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.part")
        _call(uri, _copy_down, fs, info.path, part)
        if info.mtime_ns is not None:
            os.utime(part, ns=(info.mtime_ns, info.mtime_ns))
        os.replace(part, target)
        synced[key] = _stamp(target)


def _copy_down(fs, path: str, local: Path) -> None:
    with fs.open_input_stream(path) as src, local.open("wb") as dst:
        shutil.copyfileobj(src, dst)


def _stamp(file: Path) -> tuple[int, int]:
    stat = file.stat()
    return stat.st_size, stat.st_mtime_ns


def _mirror_of(local: Path) -> Path | None:
    return next((m for m in _mirrors.values() if local == m or m in local.parents), None)


def _upload(fs, file: Path, path: str) -> None:
    atomic = fs.type_name in ATOMIC_PUT
    target = path if atomic else f"{path}.distune-upload"
    if not atomic:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with file.open("rb") as src, fs.open_output_stream(target) as dst:
        shutil.copyfileobj(src, dst)
    if not atomic:
        fs.move(target, path)


def checkpoint_gone(trial, checkpoint) -> bool:
    """Is a checkpoint the sweep's saved state names absent from the experiment's storage? Tune
    deletes a trial's surplus checkpoints the moment a newer one registers, and registers one
    before its copy is on storage, but saves the sweep's state only every few seconds: a driver
    killed in between leaves a state whose trial's latest checkpoint is not there (both seen in
    the SIGKILL fault test). Such a trial restarts from its first epoch (distune.sweep.gone).
    Asked of the trial's own storage filesystem (a bucket, for a running sweep on a URI)."""
    from pyarrow.fs import FileType

    path = _in_experiment(trial, checkpoint)
    return trial.storage.storage_filesystem.get_file_info(path).type == FileType.NotFound
