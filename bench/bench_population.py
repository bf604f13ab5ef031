"""Population training against separate processes: total env steps per second, side by side.

For P members (seeds 0 .. P-1) of one trial config, the same work done in one run two ways (three
with ``--ways``):

- population: one process, ``study.population.run_population(threads=cores)``: ``cores``
  populations of P / cores members, each in a thread of its own (one torch thread; the kernels
  release the GIL, the Python between them does not);
- separate: P processes, each ``run_population`` with its one seed (the same loop, guard and
  reports, P = 1), ``cores`` of them at a time, each with one torch thread;
- per core (optional): ``cores`` processes, each one population of P / cores members in one thread,
  as a study on CPU could run an arm's seeds (one population trial per core).

Default: the default study's trial (``drive``, vector observations, 20 NPCs, TD3 defaults with
gradients clipped at 50, learning_starts 1,000), reports and guard checks every 100 env steps, one
evaluation episode per member at the last step (inside the steady window, the same in every way),
1,300 env steps per member, P = 8 and P = 32, on 2 cores, 2 rounds (the ways' order reversed in the
second, so that both see the same drift in machine load); ratios per round, then their median.
Three figures per way:

- steady: env steps per second from 1,100 env steps per member (100 updates in: imports, env and
  agent construction, warm-up and every process's first calls behind it) to the end, timed at the
  members' reports; for several processes, their windows' total over ``cores`` (as if packed
  perfectly, which favours them). The figure of the last line.
- per CPU-second: the same window's env steps over the CPU time spent in it (all threads, all
  processes): what the work costs, which other people's processes distort less than wall time.
- whole: env steps over the wall time from the first process start to the last exit (start-ups
  and warm-up included: separate processes pay one each, a share that shrinks with longer runs).

    PYTHONPATH=. python bench/bench_population.py [--members 8 32] [--steps 1300] [--rounds 2] [--cores 2]
        [--ways population separate per_core] [--device cpu] [--note TEXT]

``--device`` (default cpu) is the trial's device in every process, ``cuda`` for instance: then the
separate processes share the one GPU, ``cores`` of them at a time, as trials with a fractional GPU
would. Ends with ``population P=8: X.XXx separate processes (cpu)`` on the CPU, and on another
device with its largest population's ratio, ``population P=32: X.XXx separate processes (cuda)``.
Writes bench/results/population.json and .md (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
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
    "eval_every": 1_000_000,  # one evaluation, at the last step (a trial's rule): the learning loop is what is timed
    "eval_episodes": 1,
    "checkpoint_every": 100,
    "torch_threads": 1,
    "device": "cpu",
}
WINDOW_FROM = 1_100  # 100 updates after learning_starts: every process's first calls are behind it
FIGURES = ("steady", "per_cpu_s", "whole")


def worker(seeds: list[int], steps: int, threads: int, device: str = "cpu") -> dict[str, Any]:
    """Run ``run_population`` for ``seeds`` on ``device``: its steady window (from the first member's
    report ``WINDOW_FROM`` env steps in to the last member's last report; a report reads the metrics
    back, so on a GPU it waits for the work before it) in wall and CPU time, and env steps."""
    from agents.agent import resolve_device
    from study.config import TrialConfig
    from study.population import run_population

    cfg = TrialConfig.model_validate({**TRIAL, "steps": steps, "device": device})
    marks: dict[int, list[tuple[float, float]]] = {}

    def on_report(reports: dict[int, dict[str, float]], _checkpoint: Any) -> None:
        step = int(next(iter(reports.values()))["env_steps"])
        marks.setdefault(step, []).append((time.perf_counter(), time.process_time()))

    runs = run_population(cfg, seeds, threads=threads, on_report=on_report)
    (wall0, cpu0), (wall1, cpu1) = min(marks[WINDOW_FROM]), max(marks[steps])
    return {
        "window_s": wall1 - wall0,
        "window_cpu_s": cpu1 - cpu0,
        "window_steps": len(seeds) * (steps - WINDOW_FROM),
        "env_steps": sum(run.summary["env_steps"] for run in runs),
        "outcomes": [run.summary["stop_reason"] for run in runs],
        "device": resolve_device(device).type,
    }


def _command(seeds: list[int], args: argparse.Namespace, threads: int) -> list[str]:
    return [sys.executable, __file__, "--worker", ",".join(map(str, seeds)), "--steps", str(args.steps),
            "--threads", str(threads), "--device", args.device]  # fmt: skip


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
    """One process per group of seeds, ``cores`` running at a time, the next started as one exits;
    the way's three figures (see the module docstring)."""
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
    whole_s = time.perf_counter() - start
    window_s = max(sum(r["window_s"] for r in results) / args.cores, max(r["window_s"] for r in results))
    window_steps = sum(r["window_steps"] for r in results)
    return {
        "steady": window_steps / window_s,
        "per_cpu_s": window_steps / sum(r["window_cpu_s"] for r in results),
        "whole": sum(r["env_steps"] for r in results) / whole_s,
        "whole_s": whole_s,
        "devices": sorted({r["device"] for r in results}),
    }


def ways(members: int, cores: int) -> dict[str, tuple[list[list[int]], int]]:
    """Each way's processes (the seeds of each) and learner threads per process."""
    seeds = list(range(members))
    return {
        "population": ([seeds], cores),
        "separate": ([[seed] for seed in seeds], 1),
        "per_core": ([seeds[k::cores] for k in range(cores)], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=1_300, help=f"env steps per member (> {WINDOW_FROM})")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cores", type=int, default=2, help="cores every way may use: learner threads, concurrent processes")
    parser.add_argument("--ways", nargs="+", choices=["population", "separate", "per_core"], default=["population", "separate"])
    parser.add_argument("--device", default="cpu", help="every process's trial device: cpu, cuda, cuda:N or auto")
    parser.add_argument("--note", default="", help="what else ran on the machine (goes into the results)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "population.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker([int(s) for s in args.worker.split(",")], args.steps, args.threads, args.device)))
        return
    if args.steps <= WINDOW_FROM or "separate" not in args.ways:
        parser.error(f"need --steps > {WINDOW_FROM} and 'separate' among --ways")

    load_before = os.getloadavg()
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {p: {way: [] for way in args.ways} for p in args.members}
    for r in range(args.rounds):
        for members in args.members:
            for way in args.ways if r % 2 == 0 else reversed(args.ways):
                groups, threads = ways(members, args.cores)[way]
                result = run_processes(groups, threads, args)
                runs[members][way].append(result)
                print(f"round {r + 1} P={members:3d} {way:10s}: steady {result['steady']:7.1f} env steps/s, "
                      f"{result['per_cpu_s']:6.1f} per CPU-second, whole {result['whole']:7.1f} env steps/s "
                      f"({result['whole_s']:.0f} s)", flush=True)  # fmt: skip
    rows = [_row(members, runs[members]) for members in args.members]
    devices = sorted({d for row in runs.values() for results in row.values() for r in results for d in r["devices"]})
    device = "/".join(devices)  # what the workers ran on, as torch names it
    meta = {
        "date": datetime.date.today().isoformat(),
        "command": shlex.join(["python", "bench/bench_population.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "note": args.note,
        "trial": TRIAL | {"steps": args.steps, "device": args.device},
        "cores": args.cores,
        "rounds": args.rounds,
        "device": device,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows, "runs": runs}, indent=2))
    args.out.with_suffix(".md").write_text(_markdown(meta, rows))
    for row in rows:
        for way, ratios in row["ratios"].items():
            print(f"{way} P={row['members']}: " + ", ".join(f"{figure} {ratios[figure]['median']:.2f}x" for figure in FIGURES)
                  + " separate processes")  # fmt: skip
    if device == "cpu":
        first = next((row for row in rows if row["members"] == 8), rows[0])
    else:  # on a GPU the population's case is the large one: P=32, else the largest
        first = next((row for row in rows if row["members"] == 32), max(rows, key=lambda row: row["members"]))
    if "population" in first["ratios"]:
        ratio = first["ratios"]["population"]["steady"]["median"]
        print(f"population P={first['members']}: {ratio:.2f}x separate processes ({device})")


def _row(members: int, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per way and figure, and each way's ratios to separate processes: per round, then their median."""
    medians = {way: {f: statistics.median(run[f] for run in results) for f in FIGURES} for way, results in runs.items()}
    ratios = {}
    for way, results in runs.items():
        if way == "separate":
            continue
        per_round = {f: [a[f] / b[f] for a, b in zip(results, runs["separate"], strict=True)] for f in FIGURES}
        ratios[way] = {f: {"median": statistics.median(values), "rounds": values} for f, values in per_round.items()}
    return {"members": members, "medians": medians, "ratios": ratios}


def _markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Population vs separate processes: total env steps per second",
        "",
        f"`{meta['command']}` ({meta['date']}, {meta['machine']}, {meta['cores']} cores, {meta['rounds']} rounds"
        + ("" if meta["device"] == "cpu" else f", trials on {meta['device']}") + "; "
        f"load average {meta['load_average_before'][0]:.1f} before, {meta['load_average_after'][0]:.1f} after)."
        + (f" {meta['note']}" if meta["note"] else ""),
        "",
        "| P | way | steady env steps/s | x separate (per round) | per CPU-second | x separate | whole env steps/s | x separate |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for way, medians in row["medians"].items():
            ratios = row["ratios"].get(way)

            def x(figure: str, rounds: bool = False, ratios: Any = ratios) -> str:
                if ratios is None:
                    return "1"
                per_round = " (" + ", ".join(f"{v:.2f}" for v in ratios[figure]["rounds"]) + ")" if rounds else ""
                return f"**{ratios[figure]['median']:.2f}x**{per_round}"

            lines.append(
                f"| {row['members']} | {way} | {medians['steady']:.1f} | {x('steady', True)} | "
                f"{medians['per_cpu_s']:.1f} | {x('per_cpu_s')} | {medians['whole']:.1f} | {x('whole')} |"
            )
    lines += [
        "",
        f"Medians over rounds. steady: from {WINDOW_FROM:,} env steps per member (100 updates in) to the end, "
        "inside the loops (several processes: their windows over the cores, as if packed perfectly); per "
        "CPU-second: the same window over its CPU time; whole: first process start to last exit. population: "
        "one process, one thread per core; separate: one process per member; per_core: one single-threaded "
        "population process per core.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
