"""Population training against separate processes: total env steps per second, side by side.

For P members (seeds 0 .. P-1) of one trial config, the same work done two ways in one run:

- population: one process, ``study.population.run_population(threads=cores)``: ``cores``
  populations of P / cores members, each in a thread of its own (one torch thread; kernels release
  the GIL, Python does not);
- per core: ``cores`` processes, each one population of P / cores members in one thread (how a
  study on CPU would run an arm's seeds: one population trial per core);
- separate: P processes, each ``run_population`` with its one seed (the same loop, guard and
  reports, P = 1), ``cores`` of them at a time, each with one torch thread.

Default: the default study's trial (``drive``, vector observations, 20 NPCs, TD3 defaults with
gradients clipped at 50, learning_starts 1,000), reports and guard checks every 100 env steps,
1,500 env steps per member, P = 8 and P = 32, on 2 cores. Two figures per way:

- steady: env steps per second from 1,100 env steps per member (100 updates in: imports, env and
  agent construction, warm-up and every process's first calls behind it) to the end, timed at the
  members' reports; for several processes their windows' total over ``cores`` (perfect packing,
  which favours them);
- whole: env steps over the wall time from the first process start to the last exit (start-ups
  included: the separate processes pay one each).

    PYTHONPATH=. python bench/bench_population.py [--members 8 32] [--steps 1500] [--cores 2] [--note TEXT]

Ends with ``population P=8: X.XXx separate processes (cpu)`` (the steady figure). Writes
bench/results/population.json and .md (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TRIAL = {
    "env": "drive",
    "env_settings": {"observation": "vector"},
    "agent": {"grad_clip_norm": 50.0},
    "report_every": 100,
    "eval_every": 100,
    "checkpoint_every": 100,
    "torch_threads": 1,
    "device": "cpu",
}
WINDOW_FROM = 1_100  # 100 updates after learning_starts: every process's first calls are behind it


def worker(seeds: list[int], steps: int, threads: int) -> dict[str, Any]:
    """Run ``run_population`` for ``seeds``: its steady window (from the first member's report
    ``WINDOW_FROM`` env steps in to the last member's last report), CPU time and env steps."""
    from study.config import TrialConfig
    from study.population import run_population

    cfg = TrialConfig.model_validate({**TRIAL, "steps": steps})
    reported: dict[int, list[float]] = {}

    def on_report(seed: int, report: dict[str, float]) -> None:
        reported.setdefault(int(report["env_steps"]), []).append(time.perf_counter())

    cpu = time.process_time()
    runs = run_population(cfg, seeds, threads=threads, on_report=on_report)
    return {
        "window_s": max(reported[steps]) - min(reported[WINDOW_FROM]),
        "window_steps": len(seeds) * (steps - WINDOW_FROM),
        "cpu_s": time.process_time() - cpu,
        "env_steps": sum(run.env_steps for run in runs),
        "outcomes": [run.outcome for run in runs],
    }


def _command(seeds: list[int], args: argparse.Namespace, threads: int) -> list[str]:
    return [sys.executable, __file__, "--worker", ",".join(map(str, seeds)), "--steps", str(args.steps),
            "--threads", str(threads)]  # fmt: skip


def _environment() -> dict[str, str]:
    return os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _result(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate()
    if process.returncode:
        raise RuntimeError(f"worker failed ({process.returncode}): {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def run_processes(groups: list[list[int]], threads: int, args: argparse.Namespace) -> dict[str, Any]:
    """One process per group of seeds, ``cores`` running at a time, the next started as one exits."""
    start = time.perf_counter()
    pending = list(groups)
    running: list[subprocess.Popen[str]] = []
    results: list[dict[str, Any]] = []
    while pending or running:
        while pending and len(running) < args.cores:
            running.append(subprocess.Popen(_command(pending.pop(0), args, threads), env=_environment(),
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
        time.sleep(0.05)
        for process in [p for p in running if p.poll() is not None]:
            running.remove(process)
            results.append(_result(process))
    return {
        # Several processes' windows packed perfectly on the cores (which favours them); one alone as is.
        "window_s": max(sum(r["window_s"] for r in results) / args.cores, max(r["window_s"] for r in results)),
        "window_steps": sum(r["window_steps"] for r in results),
        "cpu_s": sum(r["cpu_s"] for r in results),
        "env_steps": sum(r["env_steps"] for r in results),
        "outcomes": [o for r in results for o in r["outcomes"]],
        "whole_s": time.perf_counter() - start,
    }


def ways(members: int, cores: int) -> dict[str, tuple[list[list[int]], int]]:
    """Each way's processes (the seeds of each) and learner threads per process."""
    seeds = list(range(members))
    return {
        "population": ([seeds], cores),
        "per core": ([seeds[k::cores] for k in range(cores)], 1),
        "separate": ([[seed] for seed in seeds], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=1_500, help="env steps per member (learning starts at 1,000)")
    parser.add_argument("--cores", type=int, default=2, help="cores both ways may use: learner threads, concurrent processes")
    parser.add_argument("--note", default="", help="what else ran on the machine (goes into the results)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "population.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker([int(s) for s in args.worker.split(",")], args.steps, args.threads)))
        return

    rows = []
    load_before = os.getloadavg()
    for members in args.members:
        row: dict[str, Any] = {"members": members}
        for way, (groups, threads) in ways(members, args.cores).items():
            result = run_processes(groups, threads, args)
            row[way] = result | {
                "steady_steps_per_s": result["window_steps"] / result["window_s"],
                "whole_steps_per_s": result["env_steps"] / result["whole_s"],
            }
            print(f"P={members:3d} {way:10s}: steady {row[way]['steady_steps_per_s']:7.1f} env steps/s "
                  f"({result['window_s']:.1f} s), whole {row[way]['whole_steps_per_s']:7.1f} env steps/s "
                  f"({result['whole_s']:.1f} s), CPU {result['cpu_s']:.1f} s", flush=True)  # fmt: skip
        for way in ("population", "per core"):
            for figure in ("steady", "whole"):
                row[f"{way} {figure} ratio"] = row[way][f"{figure}_steps_per_s"] / row["separate"][f"{figure}_steps_per_s"]
        rows.append(row)
    load_after = os.getloadavg()
    meta = {
        "date": datetime.date.today().isoformat(),
        "command": shlex.join(["python", "bench/bench_population.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": load_before,
        "load_average_after": load_after,
        "note": args.note,
        "trial": TRIAL | {"steps": args.steps},
        "cores": args.cores,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    args.out.with_suffix(".md").write_text(_markdown(meta, rows))
    for row in rows:
        for way in ("population", "per core"):
            print(f"{way} P={row['members']}: steady {row[f'{way} steady ratio']:.2f}x, "
                  f"whole {row[f'{way} whole ratio']:.2f}x separate processes")  # fmt: skip
    first = next((row for row in rows if row["members"] == 8), rows[0])
    print(f"population P={first['members']}: {first['population steady ratio']:.2f}x separate processes (cpu)")


def _markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Population vs separate processes: total env steps per second",
        "",
        f"`{meta['command']}` ({meta['date']}, {meta['machine']}, {meta['cores']} cores; load average "
        f"{meta['load_average_before'][0]:.1f} before, {meta['load_average_after'][0]:.1f} after)."
        + (f" {meta['note']}" if meta["note"] else ""),
        "",
        "| P | way | steady env steps/s | x separate | whole env steps/s | x separate | CPU s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for way in ("population", "per core", "separate"):
            result = row[way]
            ratios = ("1", "1") if way == "separate" else (f"{row[f'{way} steady ratio']:.2f}", f"{row[f'{way} whole ratio']:.2f}")
            lines.append(
                f"| {row['members']} | {way} | {result['steady_steps_per_s']:.1f} | **{ratios[0]}x** | "
                f"{result['whole_steps_per_s']:.1f} | {ratios[1]}x | {result['cpu_s']:.1f} |"
            )
    lines += [
        "",
        f"steady: from {WINDOW_FROM:,} env steps per member (100 updates in) to the end, inside the loops "
        "(several processes: their windows over the cores, as if packed perfectly); whole: from "
        "the first process start to the last exit. population: one process, one thread per core; per "
        "core: one single-threaded population process per core; separate: one process per member.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
