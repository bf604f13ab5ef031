"""The Tune trainable's resources and its CARLA slot (against the stand-in CARLA server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from study.spec import load_spec
from study.trainable import carla_slot, trial_resources
from tests.support.carla import free_base_port, standin_script
from tests.support.carla_standin import send_request
from tests.support.notebook import project_env

# A trial's process at its end, as Ray leaves it: SIGTERM raises SystemExit in the main thread
# (ray._private.worker's handler), and here it arrives while a finalizer runs; a second finalizer
# has a real bug.
TRIAL_PROCESS_END = """
import os, signal, sys, weakref
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
if sys.argv[1] == "installed":
    from study.trainable import exit_in_finalizer_is_no_error
    sys.unraisablehook = exit_in_finalizer_is_no_error
class Resource:
    pass
def finalizer(_):
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(10_000):  # bytecode, in which Python runs the signal's handler
        pass
def broken_finalizer(_):
    raise ValueError("a real bug in a finalizer")
resource = Resource(); watch = weakref.ref(resource, finalizer); del resource
other = Resource(); watch_other = weakref.ref(other, broken_finalizer); del other
"""


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


@pytest.mark.parametrize("hook", ["installed", "absent"])
def test_the_sigterm_that_ends_a_trial_prints_no_traceback_and_real_errors_still_do(hook: str) -> None:
    """Ray's SystemExit inside a finalizer printed "Exception ignored in ... SystemExit: 1" with a
    traceback on a study's console at a trial's end; "absent" shows this program reproduces it."""
    done = subprocess.run([sys.executable, "-c", TRIAL_PROCESS_END, hook], capture_output=True, text=True,
                          timeout=120, env=project_env())
    assert "ValueError: a real bug in a finalizer" in done.stderr, done.stderr
    assert ("SystemExit" in done.stderr) == (hook == "absent"), done.stderr


# Three trials, one at a time, each stopped by Tune at its third report and taking 5 s to wind down
# (3 s past Tune's default wait): the process is reused only if each trial allows that time. (Without
# allow_wind_down, Ray 2.60 logged "Could not re-use actor" and the study hung: no control run here.)
SLOW_WIND_DOWN = """
import json, os, sys, time
import ray
from ray import tune
from study.trainable import allow_wind_down

def trial(config):
    allow_wind_down()
    try:
        for i in range(1_000):
            tune.report({"pid": os.getpid()})
            time.sleep(0.05)
    finally:
        time.sleep(5)

ray.init(num_cpus=1, include_dashboard=False)
tuner = tune.Tuner(trial, param_space={"x": tune.grid_search([0, 1, 2])},
                   tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
                   run_config=tune.RunConfig(storage_path=sys.argv[1], stop={"training_iteration": 3}, verbose=0))
results = tuner.fit()
print(json.dumps({"errors": len(results.errors), "pids": sorted({r.metrics["pid"] for r in results})}))
ray.shutdown()
"""


@pytest.mark.slow
def test_a_stopped_trial_that_winds_down_slowly_hands_its_process_to_the_next_trial(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SLOW_WIND_DOWN, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env={**project_env(), "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"errors": 0, "pids": outcome["pids"]} and len(outcome["pids"]) == 1, outcome
