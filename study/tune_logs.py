"""Tune's per-trial result files, kept whole across a trial's restart.

Tune's JSON and CSV loggers write a trial's ``result.json`` and ``progress.csv`` in a driver staging
folder (``/tmp/ray/session_*/artifacts/...``) and copy that folder to the study's storage only
every so often. When a failed trial restarts from its checkpoint, Tune first copies the storage's
files back over the staged ones (``LoggerCallback._restore_from_remote``), so the rows reported
between the last copy and the checkpoint are lost from the Tune folder (a trial reports again only
the rows after its checkpoint). A population member that stopped at the checkpoint's step then
reads as unfinished in ``result.json`` (``analysis.load.load_tune``, ``study.run``'s table).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray import tune
from ray.air.constants import EXPR_PROGRESS_FILE, EXPR_RESULT_FILE
from ray.tune.experiment import Trial

RESULT_FILES = (EXPR_RESULT_FILE, EXPR_PROGRESS_FILE)

logger = logging.getLogger(__name__)


class PersistResultFiles(tune.Callback):
    """Copies a trial's staged result files to its storage folder at each checkpoint the trial
    registers (after Tune logged the checkpoint's row), so what a restart, or a ``--resume`` after
    the driver was killed, copies back holds every row up to the checkpoint it continues from; the
    rows after it are reported again (the later row of a step wins)."""

    def on_checkpoint(self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: Any, **info: Any) -> None:
        try:
            persist_result_files(trial)
        except Exception:
            # Tune drops a checkpoint whose callbacks raise: a failed copy must cost rows, not it.
            logger.warning("could not copy %s's result files to %s", trial, trial.path, exc_info=True)


def persist_result_files(trial: Trial) -> None:
    """Each staged result file to the trial's storage folder, through a temporary name, so that a
    driver killed mid-copy leaves the previous whole file and never half a line."""
    storage = trial.storage.storage_filesystem
    try:  # a sync of the staging folder in flight would otherwise land its older copy after this one
        trial.storage.syncer.wait()
    except Exception:
        logger.warning("Tune's last copy of the staging folder to %s failed", trial.storage.experiment_fs_path, exc_info=True)
    for name in RESULT_FILES:
        staged = Path(trial.local_path, name)
        if not staged.is_file():
            continue
        destination = Path(trial.path, name).as_posix()
        partial = destination + ".partial"
        pyarrow.fs.copy_files(staged.as_posix(), partial, destination_filesystem=storage)
        storage.move(partial, destination)
