"""GPU checks, prepared to run in one call on a lent GPU machine (bench/README.md, "GPU checks").

    PYTHONPATH=. python3 bench/gpu_checks.py --out DIR [--dry-run] [--only a,b,c,d] [--budget 450] [--cores 8]

Four steps, in order, each with a time budget and a PASS/FAIL line; a step that fails or runs out of
time does not stop the next. Every trial is the default study's (``drive``, vector observations, TD3
defaults, gradients clipped at 50) with a small ``learning_starts``, and runs in a process of its own
(the driver imports no torch, so a hung CUDA call costs one step, not the run).

a. Device selection: ``agents.agent.resolve_device("auto")`` is cuda; a TD3 agent built with device
   "auto" has its parameters, its optimizers' state, buffer samples, target smoothing noise and
   generator on cuda, and its update's metrics are finite; a short ``study.trial.run_trial`` with
   device "auto" completes, its summary is finite, and its checkpoint loads back into an agent on cuda.
b. CPU vs CUDA agreement: the same seed's trial on cpu and on cuda, twice: with TD3's target smoothing
   (whose noise comes from each device's own generator, so the runs part by design after the first
   update) and without it (then only floating-point rounding parts them). Figures only: how far apart
   actor-path Q, buffer Q and returns are; no pass/fail on equality.
c. Fractional GPU without Ray: one trial alone, then 4 at once with the same CUDA_VISIBLE_DEVICES and
   device "auto" (as Ray's ``gpu: 0.25`` would place 4 trials on one GPU), started together after each
   has made its CUDA context: all complete on cuda; env steps per second alone and together.
d. Population throughput: ``bench/bench_population.py --device cuda`` for P=32, then P=8, against the
   same members as separate processes sharing the GPU, ``--cores`` (8) at a time; one round each. The
   population process runs ``--cores`` learner threads (the bench's rule); for P=32 also ``per_core``
   (8 single-threaded populations of 4 members, 8 processes on the GPU, as 8 population trials would).

Writes ``gpu_checks.json`` (every figure, rewritten after each step), ``gpu_checks.md`` (the table),
``gpu_checks.log`` (each child's command, exit status and output tail) and ``population/P*.json|md``
into ``--out``, and prints the table last. ``--dry-run`` runs the same steps tiny on the CPU (device
cpu where the real run expects cuda; b then compares cpu with cpu, which must agree exactly), to test
the plumbing on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.common import json_safe, table_number  # noqa: E402

# Sizes and time budgets (seconds) of each step: on the GPU machine, and tiny for --dry-run.
SIZES: dict[str, dict[str, Any]] = {
    "gpu": {
        "trial": {"steps": 2_000, "learning_starts": 256, "report_every": 250, "eval_every": 1_000},
        "fractional_steps": 2_500,
        "population": {"members": [32, 8], "steps": 1_500, "rounds": 1},
        "budgets": {"a": 60, "b": 75, "c": 90, "d32": 180, "d8": 70},
        "budget": 450,
    },
    "dry": {
        "trial": {"steps": 600, "learning_starts": 256, "report_every": 100, "eval_every": 300},
        "fractional_steps": 600,
        "population": {"members": [4, 2], "steps": 1_150, "rounds": 1},
        "budgets": {"a": 120, "b": 240, "c": 300, "d32": 400, "d8": 240},
        "budget": 1_500,
    },
}
TRIAL_BASE: dict[str, Any] = {
    "env": "drive",
    "env_settings": {"observation": "vector"},
    "agent": {"grad_clip_norm": 50.0},
    "eval_episodes": 1,
    "torch_threads": 1,
}
REPORT_KEYS = {  # report key -> short name, for the figures of a trial's reports
    "env_steps": "step",
    "debug/actor_q_mean": "actor_q_mean",
    "debug/actor_q_max": "actor_q_max",
    "debug/actor_q_min": "actor_q_min",
    "train/q1_value": "q1",
    "train/critic_loss": "critic_loss",
    "train/episode_return": "episode_return",
    "eval/return_mean": "eval_return",
    "perf/env_steps_per_s": "env_steps_per_s",
    "perf/updates_per_s": "updates_per_s",
}
SUMMARY_FINITE = ("final_return", "best_return", "max_actor_q", "min_actor_q", "q_low", "q_high")
FRACTIONAL = 4  # trials on one GPU, as Ray's gpu: 0.25


# ---- children: each runs in a process of its own and prints one JSON line last -------------------


def trial_config(spec: dict[str, Any]) -> Any:
    from study.config import TrialConfig

    agent = {**TRIAL_BASE["agent"], "learning_starts": spec["learning_starts"], **spec.get("agent", {})}
    return TrialConfig.model_validate(
        {
            **TRIAL_BASE,
            "agent": agent,
            "steps": spec["steps"],
            "seed": spec.get("seed", 0),
            "report_every": spec["report_every"],
            "eval_every": spec["eval_every"],
            "checkpoint_every": spec["steps"],
            "device": spec["device"],
        }
    )


def _cuda_facts() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"cuda_available": False}
    return {
        "cuda_available": True,
        "cuda_initialized": torch.cuda.is_initialized(),
        "gpu": torch.cuda.get_device_name(0),
        "max_memory_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
    }


def child_device(spec: dict[str, Any]) -> dict[str, Any]:
    """Step a, in one process: the agent's placement with device "auto", then a short trial."""
    import numpy as np
    import torch

    import envs
    from agents import TD3
    from agents.agent import resolve_device
    from study.trial import run_trial

    expected = spec["expect"]
    checks: dict[str, tuple[bool, str]] = {}

    def on(tensors: list[Any]) -> set[str]:
        return {t.device.type for t in tensors}

    device = resolve_device("auto")
    checks["resolve_device('auto')"] = (device.type == expected, str(device))
    cfg = trial_config({**spec["trial"], "device": "auto"})
    env = envs.make(cfg.env, cfg.env_settings)
    agent = TD3(env.observation_space, env.action_space, cfg.agent, device="auto", seed=0)
    params = [p for name in ("actor", "critic", "actor_target", "critic_target") for p in getattr(agent.nets, name).parameters()]
    checks["parameters"] = (on(params) == {expected}, f"{len(params)} tensors on {sorted(on(params))}")
    checks["generator"] = (agent._generator.device.type == expected, str(agent._generator.device))
    obs, _ = env.reset(seed=0)
    for _ in range(cfg.agent.learning_starts + 8):  # enough for a batch and learning_starts
        action = agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        agent.observe(obs, action, float(reward), next_obs, terminated)
        obs = env.reset()[0] if terminated or truncated else next_obs
    batch = agent.buffer.sample(cfg.agent.batch_size, agent._rng, agent.device)
    sampled = [batch.obs, batch.action, batch.reward, batch.next_obs, batch.terminated]
    checks["buffer sample"] = (on(sampled) == {expected}, f"5 tensors on {sorted(on(sampled))}")
    noise = agent.smoothing_noise(batch)
    checks["smoothing noise"] = (noise is not None and noise.device.type == expected, str(None if noise is None else noise.device))
    metrics: dict[str, float] = {}
    for _ in range(2):  # the second update steps the actor too (policy_delay 2)
        metrics = agent.update(diagnostics=True)
    finite = [k for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)]
    checks["update metrics finite"] = (
        len(finite) == len(metrics) > 0 and "debug/actor_q_max" in metrics,
        f"{len(finite)} of {len(metrics)} finite, actor_q_max {metrics.get('debug/actor_q_max')}",
    )
    states = [t for opt in (agent.optimizers.actor, agent.optimizers.critic) for s in opt.state.values() for t in s.values()
              if torch.is_tensor(t) and t.dim() > 0]  # fmt: skip
    checks["optimizer state"] = (bool(states) and on(states) == {expected}, f"{len(states)} tensors on {sorted(on(states))}")
    action = agent.act(obs, explore=False)
    checks["act"] = (isinstance(action, np.ndarray) and bool(np.all(np.isfinite(action))), f"{action.dtype} {action.shape}")
    env.close()

    with tempfile.TemporaryDirectory(prefix="gpu_checks_a_") as tmp:
        started = time.perf_counter()
        summary = run_trial(cfg, tmp, progress=False, tensorboard=False)
        trial_s = time.perf_counter() - started
        bad = [k for k in SUMMARY_FINITE if not (isinstance(summary.get(k), (int, float)) and math.isfinite(summary[k]))]
        checks["run_trial completes"] = (
            summary["stop_reason"] == "completed" and summary["env_steps"] == cfg.steps,
            f"stop_reason {summary['stop_reason']}, {summary['env_steps']} env steps, {trial_s:.1f} s",
        )
        checks["summary finite"] = (not bad, "non-finite: " + ", ".join(bad) if bad else ", ".join(SUMMARY_FINITE))
        loaded = TD3(env.observation_space, env.action_space, cfg.agent, device="auto", seed=0)
        loaded.load(Path(tmp) / "checkpoint")
        loaded_params = list(loaded.nets.actor.parameters())
        checks["checkpoint loads on device"] = (
            loaded.env_steps == cfg.steps and loaded._generator.device.type == expected and on(loaded_params) == {expected},
            f"env_steps {loaded.env_steps}, generator {loaded._generator.device}",
        )
    return {
        "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()},
        "summary": {k: summary.get(k) for k in (*SUMMARY_FINITE, "env_steps", "stop_reason", "episodes", "wall_time_s")},
        "trial_s": trial_s,
        "torch": torch.__version__,
        **_cuda_facts(),
    }


def _wait_at_barrier(folder: str | None, timeout: float = 120.0) -> float:
    """Say this process is ready, then wait for the driver's go (a file); returns the wait."""
    if not folder:
        return 0.0
    started = time.perf_counter()
    Path(folder, f"ready-{os.getpid()}").touch()
    while not Path(folder, "go").exists():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"no go in {folder} after {timeout:.0f} s")
        time.sleep(0.02)
    return time.perf_counter() - started


def child_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """One trial (steps b and c): its reports' figures, summary, and the device it ran on."""
    import torch

    from agents.agent import resolve_device
    from study.trial import run_trial

    device = resolve_device(spec["device"])
    if device.type == "cuda":
        torch.zeros(1, device=device)  # the CUDA context, before the barrier: trials start together
    cfg = trial_config(spec)
    waited = _wait_at_barrier(spec.get("barrier"))
    reports: list[dict[str, float]] = []

    def on_report(report: dict[str, float], _checkpoint: Any) -> None:
        reports.append({short: report[key] for key, short in REPORT_KEYS.items()} | {"t": time.time()})

    started, t0 = time.perf_counter(), time.time()
    with tempfile.TemporaryDirectory(prefix="gpu_checks_trial_") as tmp:
        summary = run_trial(cfg, tmp, on_report=on_report, progress=False, tensorboard=False)
    learning = [r for r in reports if r["step"] - cfg.report_every >= cfg.agent.learning_starts]
    return {
        "device": str(device),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "waited_s": waited,
        "wall_s": time.perf_counter() - started,
        "t_start": t0,
        "t_learning": learning[0]["t"] if learning else math.nan,  # end of the first all-learning window
        "t_end": reports[-1]["t"] if reports else math.nan,
        "learning_env_steps_per_s": statistics.median(r["env_steps_per_s"] for r in learning) if learning else math.nan,
        "reports": reports,
        "summary": {k: summary.get(k) for k in (*SUMMARY_FINITE, "env_steps", "stop_reason", "episodes", "wall_time_s")},
        **_cuda_facts(),
    }


# ---- the driver ------------------------------------------------------------------------------------


class Driver:
    """Runs the steps, each child in a session of its own (killed whole at its deadline), and
    records every figure."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = SIZES["dry" if args.dry_run else "gpu"]
        self.expect = "cpu" if args.dry_run else "cuda"
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / "gpu_checks.log"
        self.log_path.write_text("")
        self.started = time.perf_counter()
        self.deadline = self.started + (args.budget or self.sizes["budget"])
        self.results: dict[str, Any] = {
            "meta": {
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": shlex.join(["python3", "bench/gpu_checks.py", *sys.argv[1:]]),
                "dry_run": args.dry_run,
                "expected_device": self.expect,
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "python": platform.python_version(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "load_average_before": os.getloadavg(),
                "sizes": self.sizes,
                "cores": args.cores,
            },
            "steps": {},
        }
        self.rows: list[tuple[str, str, Any]] = []  # (step, figure, value) for the table

    # -- plumbing

    def say(self, text: str) -> None:
        print(text, flush=True)
        with self.log_path.open("a") as log:
            log.write(text + "\n")

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def budget(self, name: str) -> float:
        return min(self.sizes["budgets"][name], self.left() - 5)

    def environment(self, **extra: str) -> dict[str, str]:
        return os.environ | {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def start(self, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(command, cwd=REPO, env=env or self.environment(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip

    def child(self, kind: str, spec: dict[str, Any], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return self.start([sys.executable, __file__, "--child", kind, "--spec", json.dumps(spec)], env)

    def wait(self, processes: list[subprocess.Popen[str]], timeout: float, label: str) -> list[tuple[int | None, str, str]]:
        """Wait for every process until ``timeout`` from now, then kill what is left (its whole
        session); each one's exit status (None: killed at the deadline), stdout and stderr."""
        end = time.perf_counter() + max(timeout, 0)
        outcomes = []
        for process in processes:
            try:
                out, err = process.communicate(timeout=max(end - time.perf_counter(), 0.1))
                code: int | None = process.returncode
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                out, err = process.communicate()
                code = None
            outcomes.append((code, out, err))
            with self.log_path.open("a") as log:
                log.write(f"--- {label}: pid {process.pid}, exit {'killed at its deadline' if code is None else code}\n"
                          f"$ {shlex.join(process.args if isinstance(process.args, list) else [str(process.args)])[:600]}\n"  # type: ignore[arg-type]
                          f"[stdout tail]\n{out[-3000:]}\n[stderr tail]\n{err[-4000:]}\n")  # fmt: skip
        return outcomes

    @staticmethod
    def parsed(outcome: tuple[int | None, str, str]) -> dict[str, Any]:
        code, out, err = outcome
        if code is None:
            raise RuntimeError("killed at the step's deadline")
        if code:
            raise RuntimeError(f"exit {code}: {err.strip().splitlines()[-1] if err.strip() else 'no stderr'}")
        return json.loads(out.strip().splitlines()[-1])

    def record(self, step: str, title: str, ok: bool, note: str, figures: dict[str, Any], elapsed: float) -> None:
        verdict = "PASS" if ok else "FAIL"
        self.results["steps"][step] = {"title": title, "result": verdict, "note": note, "seconds": elapsed, "figures": figures}
        self.say(f"[{verdict}] {step}. {title}: {note} ({elapsed:.0f} s)")
        self.save()

    def save(self) -> None:
        self.results["meta"]["seconds"] = time.perf_counter() - self.started
        self.results["meta"]["load_average_after"] = os.getloadavg()
        (self.out / "gpu_checks.json").write_text(json.dumps(json_safe(self.results), indent=2))

    def run_step(self, step: str, title: str, body: Any, budget_names: tuple[str, ...]) -> None:
        if step not in self.args.only:
            return
        needed = min(self.sizes["budgets"][name] for name in budget_names)
        started = time.perf_counter()
        if self.left() < min(30.0, needed):
            self.record(step, title, False, f"skipped: {self.left():.0f} s of the run's budget left", {}, 0.0)
            return
        self.say(f"--- {step}. {title} (budget {min(sum(self.budget(n) for n in budget_names), self.left() - 5):.0f} s)")
        try:
            ok, note, figures = body()
        except Exception as err:  # noqa: BLE001 - a failed step is reported, and the next one runs
            ok, note, figures = False, f"{type(err).__name__}: {err}", {}
        self.record(step, title, ok, note, figures, time.perf_counter() - started)

    # -- the steps

    def trial_spec(self, **changes: Any) -> dict[str, Any]:
        return {**self.sizes["trial"], "device": "auto", **changes}

    def step_a(self) -> tuple[bool, str, dict[str, Any]]:
        outcome = self.wait([self.child("device", {"expect": self.expect, "trial": self.trial_spec()})], self.budget("a"), "a")
        result = self.parsed(outcome[0])
        failed = [name for name, check in result["checks"].items() if not check["ok"]]
        for name, check in result["checks"].items():
            self.rows.append(("a", name, f"{'ok' if check['ok'] else 'FAILED'}: {check['detail']}"))
        for key in ("gpu", "torch", "max_memory_allocated_mb", "trial_s"):
            if key in result:
                self.rows.append(("a", key, result[key]))
        for key, value in result["summary"].items():
            self.rows.append(("a", f"summary {key}", value))
        note = f"all {len(result['checks'])} checks on {self.expect}" if not failed else "failed: " + "; ".join(
            f"{name} ({result['checks'][name]['detail']})" for name in failed)  # fmt: skip
        return not failed, note, result

    def step_b(self) -> tuple[bool, str, dict[str, Any]]:
        other = "cpu" if self.args.dry_run else "cuda"
        variants = {"smoothing on": {}, "smoothing off": {"agent": {"target_policy_smoothing": False}}}
        # role "cpu" is the reference; role "test" the device under test (cpu again in the dry run)
        specs = [(variant, role, self.trial_spec(device=device, **changes))
                 for variant, changes in variants.items() for role, device in (("cpu", "cpu"), ("test", other))]  # fmt: skip
        outcomes = self.wait([self.child("trial", spec) for _, _, spec in specs], self.budget("b"), "b")
        runs: dict[str, dict[str, Any]] = {}
        problems = []
        for (variant, role, spec), outcome in zip(specs, outcomes, strict=True):
            try:
                runs.setdefault(variant, {})[role] = self.parsed(outcome)
            except Exception as err:  # noqa: BLE001
                problems.append(f"{variant}, {spec['device']}: {err}")
        figures: dict[str, Any] = {}
        for variant, pair in runs.items():
            if len(pair) < 2:
                continue
            cpu, test = pair["cpu"], pair["test"]
            figures[variant] = agreement(cpu, test, other)
            for run, name in ((cpu, "cpu"), (test, other)):
                if run["device"] != name or run["summary"]["stop_reason"] != "completed":
                    problems.append(f"{variant}: the {name} trial ran on {run['device']}, {run['summary']['stop_reason']}")
            for key, value in figures[variant].items():
                self.rows.append(("b", f"{variant}: {key}", value))
        ok = not problems and len(figures) == len(variants)
        note = (f"cpu vs {other}, same seed, {self.sizes['trial']['steps']} steps: figures only (not bit-exact by design)"
                if ok else "; ".join(problems) or "no pair completed")  # fmt: skip
        if ok and other == "cpu":  # the dry run compares cpu with cpu: that must agree exactly
            exact = all(f.get("max |actor_q_mean diff| over reports") == 0 and f["final eval return |diff|"] == 0 for f in figures.values())
            note += "; cpu vs cpu exact" if exact else "; cpu vs cpu NOT exact"
            ok = exact
        return ok, note, {"runs": runs, "agreement": figures}

    def step_c(self) -> tuple[bool, str, dict[str, Any]]:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES") or "0"
        env = self.environment(CUDA_VISIBLE_DEVICES=visible)
        spec = self.trial_spec(steps=self.sizes["fractional_steps"])
        end = time.perf_counter() + self.budget("c")
        alone = self.parsed(self.wait([self.child("trial", spec, env)], end - time.perf_counter(), "c alone")[0])
        with tempfile.TemporaryDirectory(prefix="gpu_checks_barrier_") as barrier:
            processes = [self.child("trial", {**spec, "seed": k, "barrier": barrier}, env) for k in range(FRACTIONAL)]
            while len(list(Path(barrier).glob("ready-*"))) < FRACTIONAL and time.perf_counter() < end - 10:
                if any(p.poll() is not None for p in processes):
                    break
                time.sleep(0.02)
            Path(barrier, "go").touch()
            outcomes = self.wait(processes, end - time.perf_counter(), "c together")
        together, problems = [], []
        for k, outcome in enumerate(outcomes):
            try:
                together.append(self.parsed(outcome))
            except Exception as err:  # noqa: BLE001
                problems.append(f"trial {k}: {err}")
        for k, run in enumerate([alone, *together]):
            if run["device"] != self.expect or run["summary"]["stop_reason"] != "completed":
                problems.append(f"trial {k}: {run['device']}, {run['summary']['stop_reason']}")
            if self.expect == "cuda" and not run.get("max_memory_allocated_mb"):
                problems.append(f"trial {k}: no CUDA memory allocated")
        figures: dict[str, Any] = {"CUDA_VISIBLE_DEVICES": visible, "steps": spec["steps"]}
        def rate(run: dict[str, Any]) -> float:
            return math.nan if run["learning_env_steps_per_s"] is None else run["learning_env_steps_per_s"]

        figures["alone: learning env steps/s"] = rate(alone)
        figures["alone: wall s"] = alone["wall_s"]
        if together:
            rates = [rate(run) for run in together]
            figures["together: learning env steps/s per trial"] = [round(r, 1) for r in rates]
            figures["together: sum of env steps/s"] = sum(rates)
            figures["together: sum / alone"] = sum(rates) / rate(alone)
            figures["together: per trial / alone (mean)"] = statistics.mean(rates) / rate(alone)
            figures["together: wall s (max)"] = max(run["wall_s"] for run in together)
            figures["together: learning windows overlap"] = overlap([(run["t_learning"], run["t_end"]) for run in together])
            figures["together: max CUDA MiB per trial"] = max(run.get("max_memory_allocated_mb", 0.0) for run in together)
        for key, value in figures.items():
            self.rows.append(("c", key, value))
        ok = not problems and len(together) == FRACTIONAL
        note = (f"{FRACTIONAL} trials with CUDA_VISIBLE_DEVICES={visible} all completed on {self.expect}; together "
                f"{figures.get('together: sum / alone', math.nan):.2f}x one trial's env steps/s" if ok else "; ".join(problems))  # fmt: skip
        return ok, note, {"alone": alone, "together": together, "figures": figures}

    def step_d(self) -> tuple[bool, str, dict[str, Any]]:
        device = "cpu" if self.args.dry_run else "cuda"
        size = self.sizes["population"]
        folder = self.out / "population"
        folder.mkdir(exist_ok=True)
        figures: dict[str, Any] = {"device": device, "cores": self.args.cores, "steps": size["steps"], "rounds": size["rounds"]}
        problems, lines = [], []
        for members, budget_name in zip(size["members"], ("d32", "d8"), strict=True):  # the headline P=32 first
            if self.left() < 30:
                problems.append(f"P={members}: skipped, {self.left():.0f} s left")
                continue
            command = [sys.executable, str(REPO / "bench" / "bench_population.py"), "--device", device,
                       "--members", str(members), "--steps", str(size["steps"]), "--rounds", str(size["rounds"]),
                       "--cores", str(self.args.cores), "--ways", *ways(members, self.args.cores),
                       "--out", str(folder / f"P{members}.json"),
                       "--note", "bench/gpu_checks.py step d"]  # fmt: skip
            code, out, err = self.wait([self.start(command)], self.budget(budget_name), f"d P={members}")[0]
            for line in out.strip().splitlines():
                self.say(f"    {line}")
            if code != 0:
                problems.append(f"P={members}: " + ("killed at its deadline" if code is None else f"exit {code}: {err.strip()[-300:]}"))
                continue
            lines.append(out.strip().splitlines()[-1])
            data = json.loads((folder / f"P{members}.json").read_text())
            row = data["rows"][0]
            figures[f"P={members} devices"] = data["meta"]["device"]
            if data["meta"]["device"] != device:
                problems.append(f"P={members}: ran on {data['meta']['device']}")
            for way, medians in row["medians"].items():
                for figure, value in medians.items():
                    figures[f"P={members} {way}: {figure} env steps/s"] = value
            for way, ratios in row["ratios"].items():
                for figure, ratio in ratios.items():
                    figures[f"P={members} {way} / separate: {figure}"] = ratio["median"]
            figures[f"P={members} last line"] = lines[-1]
        for key, value in figures.items():
            self.rows.append(("d", key, value))
        ok = not problems
        return ok, "; ".join(lines) if ok else "; ".join(problems), figures

    # -- the run

    def run(self) -> None:
        mode = "DRY RUN on the CPU (tiny sizes)" if self.args.dry_run else "on the GPU"
        self.say(f"gpu_checks {mode}: steps {','.join(self.args.only)}, budget {self.left():.0f} s, "
                 f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}")  # fmt: skip
        self.run_step("a", f"device selection (auto -> {self.expect})", self.step_a, ("a",))
        self.run_step("b", "CPU vs CUDA agreement, same seed", self.step_b, ("b",))
        self.run_step("c", f"fractional GPU without Ray: {FRACTIONAL} trials on one GPU", self.step_c, ("c",))
        self.run_step("d", f"population throughput vs separate processes ({self.args.cores} at a time)", self.step_d, ("d32", "d8"))
        self.save()
        table = self.markdown()
        (self.out / "gpu_checks.md").write_text(table)
        self.say("")
        self.say(table)

    def markdown(self) -> str:
        meta = self.results["meta"]
        lines = [
            f"# GPU checks{' (DRY RUN on the CPU, tiny sizes)' if meta['dry_run'] else ''}",
            "",
            f"`{meta['command']}` ({meta['date']}, {meta['machine']}, Python {meta['python']}, "
            f"{meta['seconds']:.0f} s; load average {meta['load_average_before'][0]:.1f} before, "
            f"{meta['load_average_after'][0]:.1f} after).",
            "",
            "| step | result | seconds | note |",
            "|---|---|---:|---|",
        ]
        for step, result in self.results["steps"].items():
            lines.append(f"| {step}. {result['title']} | **{result['result']}** | {result['seconds']:.0f} | {_cell(result['note'])} |")
        lines += ["", "| step | figure | value |", "|---|---|---:|"]
        for step, figure, value in self.rows:
            lines.append(f"| {step} | {_cell(figure)} | {_cell(_number(value))} |")
        return "\n".join(lines) + "\n"


def agreement(cpu: dict[str, Any], test: dict[str, Any], other: str) -> dict[str, Any]:
    """How far apart two trials of one seed are: actor-path Q, buffer Q and returns, per report and at the end."""

    def floats(report: dict[str, Any]) -> dict[str, float]:  # JSON carried NaN as null
        return {k: math.nan if v is None else v for k, v in report.items()}

    pairs = [(floats(a), floats(b)) for a, b in zip(cpu["reports"], test["reports"], strict=False) if a["step"] == b["step"]]
    learning = [(a, b) for a, b in pairs if math.isfinite(a["actor_q_mean"]) and math.isfinite(b["actor_q_mean"])]

    def rel(a: float, b: float) -> float:
        return abs(a - b) / max(abs(a), abs(b), 1e-12)

    figures: dict[str, Any] = {}
    if learning:
        (a0, b0), (a1, b1) = learning[0], learning[-1]
        figures[f"actor_q_mean at step {a0['step']:.0f}: cpu / {other}"] = f"{a0['actor_q_mean']:.6g} / {b0['actor_q_mean']:.6g}"
        figures[f"actor_q_mean rel diff at step {a0['step']:.0f} (first report)"] = rel(a0["actor_q_mean"], b0["actor_q_mean"])
        figures[f"actor_q_mean at step {a1['step']:.0f}: cpu / {other}"] = f"{a1['actor_q_mean']:.6g} / {b1['actor_q_mean']:.6g}"
        figures[f"actor_q_mean rel diff at step {a1['step']:.0f} (last report)"] = rel(a1["actor_q_mean"], b1["actor_q_mean"])
        figures[f"actor_q_max rel diff at step {a1['step']:.0f}"] = rel(a1["actor_q_max"], b1["actor_q_max"])
        figures[f"q1 (buffer Q) rel diff at step {a1['step']:.0f}"] = rel(a1["q1"], b1["q1"])
        figures["max |actor_q_mean diff| over reports"] = max(abs(a["actor_q_mean"] - b["actor_q_mean"]) for a, b in learning)
        figures["max actor_q_mean rel diff over reports"] = max(rel(a["actor_q_mean"], b["actor_q_mean"]) for a, b in learning)
    ca, cb = floats(cpu["summary"]), floats(test["summary"])
    rate_a, rate_b = (math.nan if r is None else r for r in (cpu["learning_env_steps_per_s"], test["learning_env_steps_per_s"]))
    figures[f"final eval return: cpu / {other}"] = f"{ca['final_return']:.4g} / {cb['final_return']:.4g}"
    figures["final eval return |diff|"] = abs(ca["final_return"] - cb["final_return"])
    figures[f"max_actor_q: cpu / {other}"] = f"{ca['max_actor_q']:.4g} / {cb['max_actor_q']:.4g}"
    figures[f"episodes: cpu / {other}"] = f"{ca['episodes']} / {cb['episodes']}"
    figures[f"learning env steps/s: cpu / {other}"] = f"{rate_a:.0f} / {rate_b:.0f}"
    return figures


def ways(members: int, cores: int) -> list[str]:
    """Step d's ways: per_core (``cores`` single-threaded populations) only where it differs from
    separate processes, i.e. with more members than cores."""
    return ["population", "separate", *(["per_core"] if members > cores else [])]


def overlap(windows: list[tuple[float, float]]) -> float:
    """The time all windows share, over the mean window: 1 when they ran wholly together."""
    windows = [(a, b) for a, b in windows if math.isfinite(a) and math.isfinite(b) and b > a]
    if not windows:
        return math.nan
    shared = min(b for _, b in windows) - max(a for a, _ in windows)
    return max(shared, 0.0) / statistics.mean(b - a for a, b in windows)


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float) and (math.isnan(value) or 0 < abs(value) < 1e-3):
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return table_number(value)
    return str(value)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for gpu_checks.json, .md, .log and population/")
    parser.add_argument("--dry-run", action="store_true", help="the same steps, tiny, on the CPU")
    parser.add_argument("--only", default="a,b,c,d", help="steps to run, e.g. b,d (a rerun of what failed)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 450; dry run 1500)")
    parser.add_argument("--cores", type=int, default=8, help="step d: concurrent separate processes, and the population's threads")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child = {"device": child_device, "trial": child_trial}[args.child]
        print(json.dumps(json_safe(child(json.loads(args.spec)))), flush=True)
        return
    if args.out is None:
        parser.error("--out is required")
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.dry_run and args.cores == 8:
        args.cores = 2
    Driver(args).run()


if __name__ == "__main__":
    main()
