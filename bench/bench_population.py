"""Population training against separate processes: total env steps per second, side by side.

For P members (seeds 0 .. P-1) of one trial config, the same work done two ways in one run:

- population: one process, ``study.population.run_population`` with one learner thread per core
  (``TD3Population(threads=cores)``, one torch thread: kernels release the GIL);
- separate: P processes, each ``run_population`` with its one seed (the same loop, guard and
  reports, P = 1), ``cores`` of them at a time, each with one torch thread.

Default: the default study's trial (``drive``, vector observations, 20 NPCs, TD3 defaults with
gradients clipped at 50, learning_starts 1,000), 1,500 env steps per member (500 updates), P = 8
and P = 32, on 2 cores. Two figures per P:

- loop: env steps per second inside the loops (each process times its own, after start-up);
  for separate processes the loops' total time over ``cores`` (perfect packing, which favours
  them);
- whole: env steps over the wall time from the first process start to the last exit (start-ups
  included: the separate processes pay one each).

    PYTHONPATH=. python bench/bench_population.py [--members 8 32] [--steps 1500] [--cores 2] [--note TEXT]

Ends with ``population P=8: X.XXx separate processes (cpu)`` (the loop figure). Writes
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
    "report_every": 500,
    "eval_every": 500,
    "checkpoint_every": 500,
    "torch_threads": 1,
    "device": "cpu",
}


def worker(seeds: list[int], steps: int, threads: int) -> dict[str, Any]:
    """Run ``run_population`` for ``seeds``; its loop's wall and CPU time, and the members' env steps."""
    from study.config import TrialConfig
    from study.population import run_population

    cfg = TrialConfig.model_validate({**TRIAL, "steps": steps})
    wall, cpu = time.perf_counter(), time.process_time()
    runs = run_population(cfg, seeds, threads=threads)
    return {
        "loop_s": time.perf_counter() - wall,
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


def run_population_process(members: int, args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    process = subprocess.Popen(_command(list(range(members)), args, args.cores), env=_environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    result = _result(process)
    return result | {"whole_s": time.perf_counter() - start}


def run_separate_processes(members: int, args: argparse.Namespace) -> dict[str, Any]:
    """One process per member, ``cores`` running at a time, the next started as one exits."""
    start = time.perf_counter()
    pending, running, results = list(range(members)), [], []
    while pending or running:
        while pending and len(running) < args.cores:
            seed = pending.pop(0)
            running.append(subprocess.Popen(_command([seed], args, 1), env=_environment(), stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True))  # fmt: skip
        time.sleep(0.05)
        for process in [p for p in running if p.poll() is not None]:
            running.remove(process)
            results.append(_result(process))
    return {
        "loop_s": sum(r["loop_s"] for r in results) / args.cores,  # the loops packed perfectly on the cores
        "cpu_s": sum(r["cpu_s"] for r in results),
        "env_steps": sum(r["env_steps"] for r in results),
        "outcomes": [o for r in results for o in r["outcomes"]],
        "whole_s": time.perf_counter() - start,
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
        for way, run in (("population", run_population_process), ("separate", run_separate_processes)):
            result = run(members, args)
            row[way] = result | {
                "loop_steps_per_s": result["env_steps"] / result["loop_s"],
                "whole_steps_per_s": result["env_steps"] / result["whole_s"],
            }
            print(f"P={members:3d} {way:10s}: loop {row[way]['loop_steps_per_s']:7.1f} env steps/s "
                  f"({result['loop_s']:.1f} s), whole {row[way]['whole_steps_per_s']:7.1f} env steps/s "
                  f"({result['whole_s']:.1f} s), CPU {result['cpu_s']:.1f} s", flush=True)  # fmt: skip
        row["loop_ratio"] = row["population"]["loop_steps_per_s"] / row["separate"]["loop_steps_per_s"]
        row["whole_ratio"] = row["population"]["whole_steps_per_s"] / row["separate"]["whole_steps_per_s"]
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
        print(f"P={row['members']}: loop {row['loop_ratio']:.2f}x, whole {row['whole_ratio']:.2f}x separate processes")
    first = next((row for row in rows if row["members"] == 8), rows[0])
    print(f"population P={first['members']}: {first['loop_ratio']:.2f}x separate processes (cpu)")


def _markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Population vs separate processes: total env steps per second",
        "",
        f"`{meta['command']}` ({meta['date']}, {meta['machine']}, {meta['cores']} cores; load average "
        f"{meta['load_average_before'][0]:.1f} before, {meta['load_average_after'][0]:.1f} after)."
        + (f" {meta['note']}" if meta["note"] else ""),
        "",
        "| P | population loop | separate loop | loop ratio | population whole | separate whole | whole ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        pop, sep = row["population"], row["separate"]
        lines.append(
            f"| {row['members']} | {pop['loop_steps_per_s']:.1f} | {sep['loop_steps_per_s']:.1f} | "
            f"**{row['loop_ratio']:.2f}x** | {pop['whole_steps_per_s']:.1f} | {sep['whole_steps_per_s']:.1f} | "
            f"{row['whole_ratio']:.2f}x |"
        )
    lines += ["", "env steps per second; loop: inside the training loops; whole: first start to last exit.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
