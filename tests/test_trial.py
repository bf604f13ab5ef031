"""The trial loop's measurements: when the guard may judge, evaluation on its own env, exact resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from study import metrics as m
from study.config import build_trial_config
from study.episode import EPISODE_FILE, TrainingEpisode, observation_digest, resume_episode
from study.results import summarize
from study.trial import CHECKPOINT_DIR, PARALLEL_PROBE_SIZE, STATE_FILE, TrialState, _flushes_subnormals, run_trial, torch_for_training

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["hidden_sizes=[64, 64]", "eval_episodes=1"]


def trial(env: str, steps: int, *overrides: str, **fields: Any) -> Any:
    return build_trial_config({"env": env, "steps": steps, **fields}, [*SMALL, *overrides])


def collect(cfg: Any, out: Path, **kwargs: Any) -> tuple[dict[str, Any], list[dict[str, float]]]:
    reports: list[dict[str, float]] = []
    summary = run_trial(cfg, out, on_report=lambda report, _: reports.append(report), progress=False, **kwargs)
    return summary, reports


# --- the guard judges only what exists --------------------------------------------------------


def test_a_report_before_the_first_actor_step_is_not_judged(tmp_path: Path) -> None:
    """With the defaults the report at step 1,000 follows one critic update and no actor step."""
    cfg = trial("Pendulum-v1", 1_500, "guard.patience=1", "eval_every=1500")
    summary, reports = collect(cfg, tmp_path)
    first = reports[1]
    assert first[m.ENV_STEPS] == 1_000 and math.isfinite(first["train/critic_loss"])
    assert math.isnan(first[m.ACTOR_Q_MAX]) and math.isnan(first[m.GUARD_EXCESS])
    assert first[m.GUARD_STRIKES] == 0
    assert summary["stop_reason"] == "completed" and summary["env_steps"] == summary["stop_step"] == 1_500
    assert math.isfinite(reports[-1][m.GUARD_EXCESS])  # judged once the actor has stepped
    # Each report says the step its evaluation ran at: none yet at 1,000, the final one at 1,500.
    assert math.isnan(first[m.EVAL_STEP]) and reports[-1][m.EVAL_STEP] == 1_500


# --- evaluation ---------------------------------------------------------------------------------


def test_evaluation_changes_neither_the_training_episodes_nor_their_randomness(tmp_path: Path) -> None:
    """Training with an evaluation every 500 steps is the same training as with one at the end."""
    settings = {"observation": "vector", "n_npcs": 5}
    often, _ = collect(trial("drive", 2_000, "eval_every=500", env_settings=settings), tmp_path / "often")
    once, _ = collect(trial("drive", 2_000, "eval_every=2000", env_settings=settings), tmp_path / "once")
    for key in ("episodes", "max_actor_q", "min_actor_q", "final_return", "reward_range_seen"):
        assert often[key] == once[key], key


def test_a_shared_env_evaluates_through_the_between_episodes_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CARLA's path (one server per trial), on Pendulum's 200-step episodes."""
    monkeypatch.setattr(envs, "needs_server", lambda name: True)
    hooks: list[int] = []
    cfg = trial("Pendulum-v1", 1_000, "eval_every=500", "eval_episodes=2", "learning_starts=300")
    summary = run_trial(cfg, tmp_path, between_episodes=lambda: hooks.append(1), progress=False)
    # Training episodes end at 200 and 400; evaluation at 500 cuts the third short (truncated) and
    # runs two episodes; training restarts and ends at 700 and 900; the evaluation at 1,000 cuts
    # the sixth. Every reset passes the hook: 4 training ends, 2 x (2 evaluation episodes + 1 cut).
    assert summary["episodes"] == 6
    assert len(hooks) == 4 + 2 * (2 + 1)


# --- checkpoints ----------------------------------------------------------------------------------


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = trial("Pendulum-v1", 1_000, "learning_starts=200", "checkpoint_every=500", "eval_every=500",
                "report_every=250")
    written: list[Path] = []

    def keep(report: dict[str, float], checkpoint: Path | None) -> None:
        if checkpoint is not None:
            written.append(checkpoint)

    from agents import TD3

    original_save = TD3.save

    def save_then_crash(self: TD3, path: Path, include_buffer: bool = False) -> None:
        if self.env_steps == 1_000:
            (Path(path) / "agent.pt").write_bytes(b"half")
            raise KeyboardInterrupt("killed while writing")
        original_save(self, path, include_buffer)

    monkeypatch.setattr(TD3, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, tmp_path, on_report=keep, progress=False)
    link = tmp_path / CHECKPOINT_DIR
    assert link.is_symlink() and link.resolve() == written[-1].resolve()
    assert sorted(p.name for p in link.iterdir()) == sorted(["agent.pt", "buffer.npz", STATE_FILE, EPISODE_FILE])
    assert json.loads((link / STATE_FILE).read_text())["episodes"] == 2  # the checkpoint at 500


# --- exact resume ---------------------------------------------------------------------------------


@pytest.mark.parametrize("observation", ["vector", "image"])
def test_an_episode_in_flight_is_replayed_on_a_fresh_env(observation: str, tmp_path: Path) -> None:
    settings = {"observation": observation, "n_npcs": 5}
    env = envs.make("drive", settings)
    env.reset(seed=3)
    episode, obs = TrainingEpisode.begin(env)  # an unseeded reset: drawn from the env's generator
    rng = np.random.default_rng(0)
    for _ in range(40):
        action = rng.uniform(-1, 1, size=2).astype(np.float32)
        obs, reward, terminated, truncated, _ = env.step(action)
        assert not (terminated or truncated)
        episode.record(action, float(reward))
    episode.save(tmp_path, obs)
    fresh = envs.make("drive", settings)
    replayed, replayed_obs, note = resume_episode(fresh, tmp_path, replayable=True, seed=99)
    assert note == "episode replayed exactly (40 steps)"
    assert observation_digest(replayed_obs) == observation_digest(obs)
    assert replayed.episode_return == episode.episode_return and replayed.length == 40
    # The next episode's scenario comes from the same generator state in both envs.
    assert observation_digest(TrainingEpisode.begin(fresh)[1]) == observation_digest(TrainingEpisode.begin(env)[1])


def test_an_env_that_cannot_replay_starts_a_new_episode_and_says_so(tmp_path: Path) -> None:
    env = gym.make("Pendulum-v1")
    episode, obs = TrainingEpisode.begin(env, seed=1)
    episode.save(tmp_path, obs)
    _, _, note = resume_episode(gym.make("Pendulum-v1"), tmp_path, replayable=False, seed=2)
    assert note.startswith("episode restarted")


RUN = ["--env", "Pendulum-v1", "--seed", "4", "--steps", "3000", "--quiet",
       "--set", "checkpoint_every=1500", "--set", "eval_every=1500", "--set", "eval_episodes=2",
       "--set", "hidden_sizes=[64, 64]"]  # fmt: skip


def study_train(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "study.train", *RUN, *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


@pytest.mark.slow
def test_a_killed_and_resumed_run_ends_as_the_uninterrupted_one(tmp_path: Path) -> None:
    """Pendulum-v1, seed 4, 3,000 steps, killed after its checkpoint at 1,500 (mid-episode)."""
    whole = study_train("--out", str(tmp_path / "whole"))
    killed = study_train("--out", str(tmp_path / "killed"))
    link = tmp_path / "killed" / CHECKPOINT_DIR
    deadline = time.monotonic() + 300
    while not (link.is_symlink() and link.resolve().name.startswith("step-000001500")):
        assert killed.poll() is None and time.monotonic() < deadline, "no checkpoint at 1,500"
        time.sleep(0.2)
    time.sleep(1.0)  # on past the checkpoint, into the steps a kill loses
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    assert whole.wait(timeout=600) == 0
    resumed = study_train("--out", str(tmp_path / "killed"), "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read() if resumed.stderr else ""

    expected = json.loads((tmp_path / "whole" / "summary.json").read_text())
    got = json.loads((tmp_path / "killed" / "summary.json").read_text())
    for key in sorted(set(expected) - {"wall_time_s", "resumes"}):
        assert got[key] == expected[key], key
    assert got["resumes"] == ["at 1500 env steps: episode replayed exactly (100 steps)"]


def test_a_resume_without_the_buffer_is_not_judged_while_the_buffer_refills(tmp_path: Path) -> None:
    """The agent has stepped its actor, but until the buffer holds a batch again it makes no update."""
    common = ("report_every=100", "eval_every=1000", "checkpoint_every=1000", "checkpoint_buffer=false",
              "guard.patience=1")  # fmt: skip
    run_trial(trial("Pendulum-v1", 1_200, *common), tmp_path, progress=False)  # actor steps from 1,002
    resumed = trial("Pendulum-v1", 1_500, *common)
    summary, reports = collect(resumed, tmp_path, resume_from=tmp_path / CHECKPOINT_DIR)
    first = reports[0]
    assert first[m.ENV_STEPS] == 1_300 and math.isnan(first[m.GUARD_EXCESS]) and first[m.GUARD_STRIKES] == 0
    assert summary["stop_reason"] == "completed" and summary["env_steps"] == 1_500


def test_a_shared_env_evaluation_on_the_step_an_episode_ends_counts_no_empty_episode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envs, "needs_server", lambda name: True)
    hooks: list[int] = []
    cfg = trial("Pendulum-v1", 400, "eval_every=200", "report_every=200", "checkpoint_every=200", "learning_starts=100")
    summary = run_trial(cfg, tmp_path, between_episodes=lambda: hooks.append(1), progress=False)
    assert summary["episodes"] == 2  # the episodes ending at 200 and 400, each once
    assert len(hooks) == 2 + 2 * (1 + 1)  # each end; each evaluation's episode and the restart after it


def test_a_checkpoint_from_before_the_history_resumes_with_the_same_summary(tmp_path: Path) -> None:
    """Older checkpoints kept running figures instead of the reported history: read as a history,
    they summarize to the figures they held."""
    legacy = {"episodes": 3, "episode_return": -700.0, "episode_length": 200.0, "eval_return_mean": -650.0,
              "eval_return_std": 40.0, "best_eval_return": -600.0, "max_actor_q": 12.0, "min_actor_q": -900.0,
              "q_interval": [-1600.0, 0.0], "guard_strikes": 1, "guard_reason": "q_explosion", "stop_reason": None,
              "stop_step": None, "wall_time_s": 5.0, "resumes": [], "recent_returns": [-700.0], "recent_lengths": [200]}
    (tmp_path / STATE_FILE).write_text(json.dumps(legacy))
    state = TrialState.load(tmp_path / STATE_FILE)
    figures = summarize(state.history, env_steps=2_000, stop_reason=None, stop_step=None)
    assert (figures.final_return, figures.best_return, figures.final_return_std) == (-650.0, -600.0, 40.0)
    assert (figures.max_actor_q, figures.min_actor_q, figures.q_low, figures.q_high) == (12.0, -900.0, -1600.0, 0.0)
    assert state.guard_strikes == 1 and state.episodes == 3


# --- the CPU's float mode -----------------------------------------------------------------------


def test_a_trial_trains_with_subnormal_floats_flushed_in_its_own_thread(tmp_path: Path) -> None:
    """Subnormal weights made critic_l2 trials 5x slower (study.trial.configure_torch); the flag is
    per thread, and Ray runs a trial in a thread of its own. Here the thread starts with flushing off."""
    torch.set_flush_denormal(False)  # what a new thread inherits here (an earlier test's trial may have set it)
    subnormal = torch.tensor([1e-40])
    assert subnormal.item() != 0.0, "this CPU keeps subnormal floats: nothing to flush"
    seen: list[float] = []

    def train() -> None:
        def probe(report: dict[str, float], checkpoint: Path | None) -> None:
            seen.append((subnormal * 1.0).item())  # a subnormal result is flushed to 0 with the flag on

        run_trial(trial("Pendulum-v1", 300), tmp_path, progress=False, tensorboard=False, on_report=probe)

    thread = threading.Thread(target=train)
    thread.start()
    thread.join()
    assert seen == [0.0]
    assert (subnormal * 1.0).item() != 0.0  # this thread's mode is untouched


def test_a_trial_in_the_callers_thread_leaves_its_float_mode_and_thread_count_as_they_were(tmp_path: Path) -> None:
    torch.set_flush_denormal(False)
    threads = torch.get_num_threads()
    run_trial(trial("Pendulum-v1", 300).model_copy(update={"torch_threads": threads + 1}), tmp_path, progress=False,
              tensorboard=False)  # fmt: skip
    assert (torch.tensor([1e-40]) * 1.0).item() != 0.0 and torch.get_num_threads() == threads


def test_intra_op_threads_started_before_the_trial_are_named_in_a_warning() -> None:
    """PyTorch's intra-op threads keep the float mode they started with (study.trial.configure_torch)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: PyTorch starts no intra-op threads")
    outcome: dict[str, Any] = {}

    def script_that_trained_before() -> None:
        torch.set_flush_denormal(False)
        torch.set_num_threads(2)
        torch.ones(PARALLEL_PROBE_SIZE) * 1.0  # starts this thread's intra-op threads, flushing off
        with pytest.warns(RuntimeWarning, match="not in the 1 PyTorch intra-op threads it started before the trial") as seen:
            with torch_for_training(2):
                outcome["flushed here"] = (torch.tensor([1e-40]) * 1.0).item() == 0.0
        outcome["warnings"] = len(seen)

    def new_thread() -> None:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with torch_for_training(2):
                outcome["flushed everywhere"] = _flushes_subnormals(PARALLEL_PROBE_SIZE)
        outcome["new thread warnings"] = len(seen)

    threads = torch.get_num_threads()
    try:
        for target in (script_that_trained_before, new_thread):
            thread = threading.Thread(target=target)
            thread.start()
            thread.join()
    finally:
        torch.set_num_threads(threads)
    assert outcome == {"flushed here": True, "warnings": 1, "flushed everywhere": True, "new thread warnings": 0}
