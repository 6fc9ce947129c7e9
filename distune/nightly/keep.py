"""What a night leaves behind: the best model so far promoted (a symlink swapped atomically),
old nights' checkpoints pruned (their tables, reports and history stay), the notification."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Callable

from distune.errors import DistuneError
from distune.nightly.history import Night
from distune.results.layout import (BEST_DIR, BEST_FILE, BEST_MODEL_FILE, CONFIG_FILE, NIGHTS_DIR,
                                    PROMOTED_DIR, PROMOTED_FILE)
from distune.results.table import write_json


def promoted_score(sweep: Path) -> float | None:
    file = sweep / BEST_DIR / PROMOTED_FILE
    return json.loads(file.read_text())["score"] if file.is_file() else None


def promote(sweep: Path, night_dir: Path, night: Night) -> None:
    """Copy the winner into promoted/<date>/ via a temporary directory, then swap the `best`
    symlink with one rename: a reader sees the old best or the new one, never a mix."""
    link = sweep / BEST_DIR
    if link.exists() and not link.is_symlink():
        raise DistuneError(f"{link} is not the symlink nightly maintains; move it away so "
                           "nightly can promote winners there.")
    store = sweep / PROMOTED_DIR
    store.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=store, prefix=f".{night.date}-"))
    tmp.chmod(0o755)
    for name in (BEST_MODEL_FILE, BEST_FILE, CONFIG_FILE):
        shutil.copy2(night_dir / name, tmp / name)
    write_json(tmp / PROMOTED_FILE, {"night": night.date, "metric": night.metric,
                                     "score": night.best_score, "test_accuracy": night.test_accuracy,
                                     "config": night.best_config, "config_hash": night.config_hash,
                                     "code_version": night.code_version})
    final = store / night.date
    if final.exists():
        shutil.rmtree(final)  # a half-finished earlier attempt at the same night
    tmp.rename(final)
    new_link = sweep / f".{BEST_DIR}-{os.getpid()}"
    new_link.unlink(missing_ok=True)
    new_link.symlink_to(Path(PROMOTED_DIR) / night.date, target_is_directory=True)
    previous = os.readlink(link) if link.is_symlink() else None
    os.replace(new_link, link)
    for old in store.iterdir():  # keep the new best and the one before it (to roll back)
        if old.name not in (night.date, Path(previous or "").name) and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)


def prune(sweep: Path, keep: int, tonight: str, say: Callable[[str], None]) -> None:
    """Delete checkpoints and exported models of all but the last `keep` nights (and tonight's,
    should it be a backfilled earlier date); their tables, reports and history rows stay."""
    nights = sorted(d for d in (sweep / NIGHTS_DIR).iterdir() if d.is_dir())
    pruned = []
    for night in (n for n in nights[:-keep] if n.name != tonight):
        victims = [c for pattern in ("*/checkpoint_*", "select/*/checkpoint_*")
                   for c in night.glob(pattern) if c.is_dir()]
        for victim in victims:
            shutil.rmtree(victim, ignore_errors=True)
        model = night / BEST_MODEL_FILE
        if victims or model.exists():
            model.unlink(missing_ok=True)
            pruned.append(night.name)
    if pruned:
        say(f"distune: pruned checkpoints of {', '.join(pruned)} (keeping the last {keep} nights)")


def post(url: str, payload: dict[str, Any]) -> None:
    """POST a JSON summary; a failure only warns (the night's results are already safe)."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except (OSError, ValueError) as e:
        print(f"distune: warning: could not notify {url}: {e}", file=sys.stderr)
