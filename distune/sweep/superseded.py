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
    checkpoints: Tune then starts it afresh (without this, its restore fails), its result logs
    too, as for any trial without a checkpoint (else a driver's copy left on this machine by
    the killed run would repeat its epochs)."""

    def on_trial_start(self, iteration, trials, trial, **info):
        manager = trial.run_metadata.checkpoint_manager
        latest = manager.latest_checkpoint_result if manager else None
        if latest is None or not superseded(latest.checkpoint.filesystem, latest.checkpoint.path):
            return
        from pyarrow.fs import FileType

        manager._latest_checkpoint_result = None  # Ray has no public way to drop a checkpoint
        manager._checkpoint_results = [
            r for r in manager._checkpoint_results
            if r.checkpoint.filesystem.get_file_info(r.checkpoint.path).type != FileType.NotFound]
        trial.run_metadata.invalidate_cache()
        for name in (RESULTS_LOG_FILE, PROGRESS_FILE):  # Tune's loggers, which come after
            Path(trial.local_path, name).unlink(missing_ok=True)  # this, begin them anew
