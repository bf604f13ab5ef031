"""What ``critic_layer_norm`` costs: TD3 updates per second with the plain critic and the LayerNorm one.

``td3_update`` alone (no env, no buffer sampling: fixed random batches, cycled) with the TD3
defaults (256-256, batch 256, policy delay 2, so every second update also steps the actor and the
targets), one torch thread, on Pendulum-sized inputs (obs 3, action 1) and on the driving
simulator's vector observation (obs 14, action 2). Each measurement is a fresh process; the runs
alternate plain, layer_norm, plain, layer_norm ... so both see the same machine load, and the
ratio layer_norm / plain is taken within each round, then the median over rounds.

    PYTHONPATH=. python bench/critic_layer_norm.py [--rounds 3] [--updates 1000] [--warmup 200] [--device cpu]

Writes bench/results/critic_layer_norm.json and .md (``--out``), and prints the table.
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
HIDDEN = (256, 256)
BATCH = 256
SHAPES = {"pendulum": (3, 1), "drive_vector": (14, 2)}  # (obs_dim, action_dim)
VARIANTS = ("plain", "layer_norm")
N_BATCHES = 8  # distinct batches, cycled: enough that no update reuses the previous one's inputs


def worker(shape: str, variant: str, updates: int, warmup: int, device: str, seed: int) -> dict[str, float]:
    """Updates per second (wall and process CPU time) of ``td3_update`` after ``warmup`` updates."""
    import gymnasium as gym
    import numpy as np
    import torch

    from agents import TD3Config
    from agents.agent import resolve_device
    from agents.buffer import Batch
    from agents.td3 import TD3Networks, make_optimizers, td3_update

    torch.set_num_threads(1)
    dev = resolve_device(device)
    obs_dim, action_dim = SHAPES[shape]
    cfg = TD3Config(hidden_sizes=HIDDEN, batch_size=BATCH, critic_layer_norm=variant == "layer_norm")
    torch.manual_seed(seed)
    space = gym.spaces.Box(-1.0, 1.0, shape=(obs_dim,), dtype=np.float32)
    nets = TD3Networks.build(space, action_dim, cfg, dev)
    optimizers = make_optimizers(nets, cfg)
    generator = torch.Generator(device=dev).manual_seed(seed)
    batches = [
        Batch(
            obs=torch.rand(BATCH, obs_dim, device=dev) * 2 - 1,
            action=torch.rand(BATCH, action_dim, device=dev) * 2 - 1,
            reward=torch.randn(BATCH, device=dev),
            next_obs=torch.rand(BATCH, obs_dim, device=dev) * 2 - 1,
            terminated=(torch.rand(BATCH, device=dev) < 0.01).float(),
        )
        for _ in range(N_BATCHES)
    ]

    def run(first: int, count: int) -> None:
        for i in range(first, first + count):
            td3_update(batches[i % N_BATCHES], nets, optimizers, cfg, generator, (i + 1) % cfg.policy_delay == 0)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    run(0, warmup)
    wall, cpu = time.perf_counter(), time.process_time()
    run(warmup, updates)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"updates_per_s": updates / wall, "updates_per_cpu_s": updates / cpu, "ms_per_update": 1e3 * wall / updates}


def run_worker(shape: str, variant: str, args: argparse.Namespace, seed: int) -> dict[str, float]:
    """One measurement in a fresh process with one thread for torch and its BLAS."""
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    cmd = [sys.executable, __file__, "--worker", shape, variant, "--updates", str(args.updates),
           "--warmup", str(args.warmup), "--device", args.device, "--seed", str(seed)]  # fmt: skip
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def summarize(runs: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, dict[str, Any]]:
    """Per shape: median updates/s of each variant, and layer_norm / plain per round and median."""
    summary = {}
    for shape, by_variant in runs.items():
        plain, normed = by_variant["plain"], by_variant["layer_norm"]
        entry: dict[str, Any] = {}
        for key in ("updates_per_s", "updates_per_cpu_s"):
            ratios = [b[key] / a[key] for a, b in zip(plain, normed, strict=True)]
            entry[key] = {
                "plain": statistics.median(r[key] for r in plain),
                "layer_norm": statistics.median(r[key] for r in normed),
                "ratio_per_round": ratios,
                "ratio": statistics.median(ratios),
            }
        summary[shape] = entry
    return summary


def markdown(summary: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# critic_layer_norm: td3_update updates per second, plain critic vs LayerNorm critic",
        "",
        f"`{meta['command']}`, {meta['date']}, torch {meta['torch']}, {meta['device']}, one thread, "
        f"{meta['rounds']} rounds of {meta['updates']} timed updates after {meta['warmup']}; load average "
        f"{meta['load_before'][0]:.2f} before, {meta['load_after'][0]:.2f} after ({meta['note']}).",
        "",
        "| inputs (obs, action) | plain updates/s | layer_norm updates/s | layer_norm / plain | per round "
        "| per CPU-second ratio |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for shape, entry in summary.items():
        wall, cpu = entry["updates_per_s"], entry["updates_per_cpu_s"]
        per_round = ", ".join(f"{r:.3f}" for r in wall["ratio_per_round"])
        lines.append(
            f"| {shape} {SHAPES[shape]} | {wall['plain']:.1f} | {wall['layer_norm']:.1f} | **{wall['ratio']:.3f}** "
            f"| {per_round} | {cpu['ratio']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="plain / layer_norm pairs per shape, alternated")
    parser.add_argument("--updates", type=int, default=1_000, help="timed updates per run")
    parser.add_argument("--warmup", type=int, default=200, help="updates before timing starts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="what else ran on the machine, for the record")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "critic_layer_norm.json")
    parser.add_argument("--worker", nargs=2, metavar=("SHAPE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        shape, variant = args.worker
        print(json.dumps(worker(shape, variant, args.updates, args.warmup, args.device, args.seed)))
        return

    import torch

    load_before = os.getloadavg()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {s: {v: [] for v in VARIANTS} for s in SHAPES}
    for r in range(args.rounds):
        for shape in SHAPES:
            for variant in VARIANTS:
                result = run_worker(shape, variant, args, args.seed + r)
                runs[shape][variant].append(result)
                print(f"round {r + 1}  {shape:12s}  {variant:10s}  {result['updates_per_s']:6.1f} updates/s  "
                      f"({result['updates_per_cpu_s']:.1f} per CPU-second)", flush=True)  # fmt: skip
    summary = summarize(runs)
    meta = {
        "command": " ".join(["PYTHONPATH=. python bench/critic_layer_norm.py", *map(shlex.quote, sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": args.device,
        "hidden_sizes": HIDDEN,
        "batch_size": BATCH,
        "rounds": args.rounds,
        "updates": args.updates,
        "warmup": args.warmup,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "note": args.note or "nothing noted",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2) + "\n")
    table = markdown(summary, meta)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
