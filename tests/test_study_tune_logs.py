"""study.tune_logs on a real Tune run: a trial that fails after a checkpoint and is retried keeps,
in the study folder's result.json, every row it reported up to that checkpoint."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback

from study.tune_logs import PersistResultFiles

FAILS_AFTER_STEP = 3  # the first attempt dies right after this step's checkpoint
LAST_STEP = 5
COPY_SECONDS = 1.0  # ample for Tune's copy of a few small files


@pytest.fixture
def local_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune copies its staging folder to storage every TUNE_GLOBAL_CHECKPOINT_S and after each
    # num_to_keep checkpoints of a trial: an hour leaves only the second. The trainable lets the
    # copy that follows step 2's checkpoint finish before it reports step 3, so storage's copy
    # misses step 3's row, as a periodic copy can miss a study's rows.
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "3600")
    ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False)
    yield
    ray.shutdown()


def checkpoints_then_fails_once(config: dict) -> None:
    """Reports steps 1..LAST_STEP, with a checkpoint up to FAILS_AFTER_STEP; the first attempt dies
    right after that step's checkpoint, the retry continues from it."""
    checkpoint = tune.get_checkpoint()
    start = 1
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = int(Path(folder, "step").read_text()) + 1
    for step in range(start, LAST_STEP + 1):
        if step == FAILS_AFTER_STEP and checkpoint is None:
            time.sleep(COPY_SECONDS)  # Tune's copy after step 2's checkpoint runs in the background
        if step <= FAILS_AFTER_STEP:
            with tempfile.TemporaryDirectory() as folder:
                Path(folder, "step").write_text(str(step))
                tune.report({"step": step}, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report({"step": step})
        if step == FAILS_AFTER_STEP and checkpoint is None:
            raise RuntimeError("injected failure after the checkpoint")


def run_retried_trial(storage: Path, callbacks: list[tune.Callback]) -> tuple[list[int], list[int]]:
    """The steps in the study folder's result.json, and in the ResultGrid's dataframe."""
    tuner = tune.Tuner(
        checkpoints_then_fails_once,
        run_config=tune.RunConfig(
            name="retried",
            storage_path=str(storage),
            callbacks=[JsonLoggerCallback(), *callbacks],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),  # as study.run's
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,
        ),
    )
    result = tuner.fit()[0]
    assert result.error is None
    (result_file,) = (storage / "retried").glob("*/result.json")
    steps = [json.loads(line)["step"] for line in result_file.read_text().splitlines()]
    return steps, list(result.metrics_dataframe["step"])


@pytest.mark.usefixtures("local_ray")
def test_a_retried_trial_keeps_the_rows_it_reported_up_to_its_checkpoint(tmp_path: Path) -> None:
    assert run_retried_trial(tmp_path, [PersistResultFiles()]) == (list(range(1, LAST_STEP + 1)),) * 2


@pytest.mark.usefixtures("local_ray")
def test_without_it_tune_loses_the_checkpoints_row_at_the_retry(tmp_path: Path) -> None:
    """What the callback is for: should a Ray upgrade stop losing the row, this says so."""
    file_steps, _ = run_retried_trial(tmp_path, [])
    assert FAILS_AFTER_STEP not in file_steps
