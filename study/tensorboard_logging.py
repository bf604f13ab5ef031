"""TensorBoard events per trial, written by the study's driver under the names of DESIGN.md.

Tune's own TensorBoard logger prefixes every metric with ``ray/tune/`` and warns on the NaN that
reports carry before a value exists; this callback writes the report keys as they are, so
``tensorboard --logdir <storage>/<study>`` shows the same names as ``study.train``'s events and
MLflow. The driver writes into each trial's folder, which Tune syncs to the study's storage (a
trial's own working directory is not synced: Tune's ``sync_artifacts`` is off by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.experiment import Trial
from torch.utils.tensorboard import SummaryWriter

from study import metrics as m
from study.plan import POPULATION
from study.results import SEED

FLUSH_SECONDS = 30  # how stale the events a user watches during a study may be


class TensorBoardCallback(tune.Callback):
    """One event writer per trial (per member of a population trial, in its folder ``seed<k>``);
    finite report values only, against ``env_steps``.

    A trial retried or resumed from a checkpoint reports again steps it had reported before:
    its writer is reopened with ``purge_step`` at the first step it reports, so TensorBoard
    drops the stale tail instead of drawing two curves over it.
    """

    def __init__(self) -> None:
        self._writers: dict[str, dict[int, SummaryWriter]] = {}  # Tune trial id -> seed -> writer

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the experiment state; writers are reopened after a restore.
        return {**self.__dict__, "_writers": {}}

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        step, seed = int(result[m.ENV_STEPS]), int(result[SEED])
        writers = self._writers.setdefault(trial.trial_id, {})
        if seed not in writers:
            folder = Path(trial.local_path) / (f"seed{seed}" if POPULATION in trial.config else "")
            writers[seed] = SummaryWriter(str(folder), purge_step=step, flush_secs=FLUSH_SECONDS)
        for key, value in m.tensorboard_scalars(result).items():
            writers[seed].add_scalar(key, value, step)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._close(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._close(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._close(trial.trial_id)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for trial_id in list(self._writers):
            self._close(trial_id)

    def _close(self, trial_id: str) -> None:
        for writer in self._writers.pop(trial_id, {}).values():
            writer.close()
