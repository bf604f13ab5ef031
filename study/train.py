"""Train one TD3 agent, no Ray: ``python -m study.train --env ENV --steps N [...]``.

Writes TensorBoard events to ``OUT/tensorboard``, a checkpoint to ``OUT/checkpoint`` and, at the
end, ``OUT/summary.json``. The actor-path Q guard is on unless ``--no-guard``. ``--resume``
continues from ``OUT/checkpoint`` after a crash or a kill.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from envs import EnvSettingsError
from study.config import ConfigError, TrialConfig, build_trial_config
from study.results import SUMMARY_FILE
from study.trial import CHECKPOINT_DIR, run_trial


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m study.train",
        description="Train one TD3 agent with actor-path Q diagnostics and the Q guard.",
        epilog="example: python -m study.train --env Pendulum-v1 --steps 15000 --set critic_l2=0.01",
    )
    parser.add_argument("--env", default="Pendulum-v1", help="gymnasium id, 'drive' (embedded simulator) or 'carla'")
    parser.add_argument("--steps", type=int, default=TrialConfig.model_fields["steps"].default, help="env steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a TD3 field (tau=0.01), a trial field (eval_every=2000), guard.FIELD, or an "
        "env setting (drive.n_npcs=5, carla.port=2000); repeatable",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default runs/ENV-seedS-TIME)")
    parser.add_argument("--no-guard", action="store_true", help="report the guard's metrics but never stop")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = {"env": args.env, "steps": args.steps, "seed": args.seed}
    if args.no_guard:
        base["guard"] = {"enabled": False}
    try:
        cfg = build_trial_config(base, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    out = args.out or Path("runs") / f"{args.env}-seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    resume_from = out / CHECKPOINT_DIR if args.resume else None
    if resume_from is not None and not resume_from.is_dir():
        print(f"error: --resume: no checkpoint at {resume_from}", file=sys.stderr)
        return 2

    try:
        summary = run_trial(cfg, out, resume_from=resume_from, progress=not args.quiet)
    except (EnvSettingsError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    _print_summary(summary, out)
    return 0


def _print_summary(summary: dict, out: Path) -> None:
    brief = {key: value for key, value in summary.items() if key != "config"}
    print(json.dumps(brief, indent=2))
    outcome = summary["stop_reason"] or "completed"
    print(f"{outcome} after {summary['env_steps']} env steps; summary: {out / SUMMARY_FILE}")
    print(f"curves: tensorboard --logdir {out / 'tensorboard'}")


if __name__ == "__main__":
    sys.exit(main())
