"""The Tune trainable's resources and its CARLA slot (against the stand-in CARLA server)."""

from __future__ import annotations

from pathlib import Path

import psutil

from study.spec import load_spec
from study.trainable import carla_slot, trial_resources
from tests.support.carla import free_base_port, standin_script
from tests.support.carla_standin import send_request


def test_trials_ask_for_a_carla_slot_only_when_they_run_carla() -> None:
    assert trial_resources(load_spec("default")) == {"cpu": 1.0, "gpu": 0.0}
    assert trial_resources(load_spec("carla_ablation")) == {"cpu": 5.0, "gpu": 0.5, "carla": 1.0}


def test_the_embedded_simulator_needs_no_carla_slot() -> None:
    with carla_slot(load_spec("default")) as (settings, between_episodes):
        assert settings == {} and between_episodes is None


def test_a_carla_trial_points_its_env_at_a_leased_server_and_leaves_no_process(tmp_path: Path) -> None:
    script = standin_script(tmp_path)  # launches the stand-in exactly as the pool launches CARLA
    base = free_base_port(4)
    spec = load_spec("carla_ablation")
    pool = {**spec.carla_pool, "executable": script, "slots": 1, "base_port": base, "tm_base_port": base + 3,
            "lock_dir": str(tmp_path / "locks"), "log_dir": None, "memory_limit_mb": None, "startup_timeout_s": 30.0}
    spec = spec.model_copy(update={"carla_pool": pool})

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with carla_slot(spec) as (settings, between_episodes):
        assert settings == {"host": "127.0.0.1", "port": base, "tm_port": base + 3}
        assert f"-carla-rpc-port={base}" in send_request(base, "standin_args")
        server = {p.pid for p in psutil.Process().children(recursive=True)} - before
        assert server
        # A server that died during an episode is back before the next reset.
        for pid in server:
            psutil.Process(pid).kill()
        assert between_episodes is not None
        between_episodes()
        assert f"-carla-rpc-port={base}" in send_request(base, "standin_args")
        server |= {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not [pid for pid in server if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
