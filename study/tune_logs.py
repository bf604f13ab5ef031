"""Tune's per-trial result files, kept whole across a trial's restart.

Tune's JSON and CSV loggers write a trial's ``result.json`` and ``progress.csv`` in a driver staging
folder (``/tmp/ray/session_*/artifacts/...``) and copy that folder to the study's storage only
every so often. When a failed trial restarts from its checkpoint, Tune first copies the storage's
files back over the staged ones (``LoggerCallback._restore_from_remote``), so the rows reported
since the last copy are lost from the Tune folder. A trial replays the rows after its checkpoint,
but not those before it: a population member that stopped at the checkpoint's step would read as
unfinished in ``result.json`` (``analysis.load.load_tune``, ``study.run``'s table), and a per-seed
trial would lose the curve points up to its checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.fs
from ray import tune
from ray.air.constants import EXPR_PROGRESS_FILE, EXPR_RESULT_FILE
from ray.tune.experiment import Trial

RESULT_FILES = (EXPR_RESULT_FILE, EXPR_PROGRESS_FILE)


class PersistResultFiles(tune.Callback):
    """Copies a trial's staged result files to its storage folder at each checkpoint the trial
    registers (after Tune logged the checkpoint's row), so what a restart, or a ``--resume`` after
    the driver was killed, copies back holds every row up to the checkpoint it continues from; the
    rows after it are reported again (the later row of a step wins)."""

    def on_checkpoint(self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: Any, **info: Any) -> None:
        persist_result_files(trial)


def persist_result_files(trial: Trial) -> None:
    for name in RESULT_FILES:
        staged = Path(trial.local_path, name)
        if staged.is_file():
            pyarrow.fs.copy_files(
                staged.as_posix(),
                Path(trial.path, name).as_posix(),
                destination_filesystem=trial.storage.storage_filesystem,
            )
