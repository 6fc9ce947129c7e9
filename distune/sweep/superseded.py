"""Checkpoints Tune deleted after its last saved state named them. Tune deletes a trial's
surplus checkpoints the moment a newer one registers, but saves the sweep's state (and copies
its result logs to storage) only every few seconds: a driver killed in between leaves a state
whose trial's latest checkpoint is gone, newer ones of that trial beside it (seen in the
SIGKILL fault test). No checkpoint on storage matches the results the state holds, so such a
trial restarts from its first epoch, same seed, same curve, instead of failing its resume."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ray.tune import Callback

from distune.results.layout import PROGRESS_FILE, RESULTS_LOG_FILE


def _index(name: str) -> int | None:
    head, _, number = name.partition("_")
    return int(number) if head == "checkpoint" and number.isdigit() else None


def superseded(fs, path: str) -> bool:
    """Is the checkpoint at `path` (on pyarrow filesystem `fs`) gone, with a newer checkpoint
    of the same trial beside it?"""
    from pyarrow.fs import FileSelector, FileType

    path = str(path)
    mine = _index(PurePosixPath(path).name)
    if mine is None or fs.get_file_info(path).type != FileType.NotFound:
        return False
    try:
        beside = fs.get_file_info(FileSelector(str(PurePosixPath(path).parent)))
    except (FileNotFoundError, OSError):
        return False
    return any(info.type == FileType.Directory and (_index(PurePosixPath(info.path).name) or -1) > mine
               for info in beside)


class RestartSuperseded(Callback):
    """Before Tune restores a trial whose latest checkpoint was superseded, forget its missing
    checkpoints: Tune then starts it afresh (without this, its restore fails). A trial that
    starts afresh after a fault (that, or no checkpoint in the saved state) begins its result
    logs anew, as Tune's loggers do on another machine; else the copy the killed driver left on
    this one, ahead of the state, would repeat its epochs (seen: epochs 1, 2, 1, 2)."""

    def on_trial_start(self, iteration, trials, trial, **info):
        manager = trial.run_metadata.checkpoint_manager
        latest = manager.latest_checkpoint_result if manager else None
        if latest is not None and superseded(latest.checkpoint.filesystem, latest.checkpoint.path):
            from pyarrow.fs import FileType

            manager._latest_checkpoint_result = None  # Ray has no public way to drop a checkpoint
            manager._checkpoint_results = [
                r for r in manager._checkpoint_results
                if r.checkpoint.filesystem.get_file_info(r.checkpoint.path).type != FileType.NotFound]
            trial.run_metadata.invalidate_cache()
        if trial.latest_checkpoint_result is None:  # from its first epoch: Tune's loggers,
            for name in (RESULTS_LOG_FILE, PROGRESS_FILE):  # which come after this, begin anew
                Path(trial.local_path, name).unlink(missing_ok=True)
