"""Coverage of analysis.stats' 95% intervals at 3, 5 and 10 seeds, by simulation.

    PYTHONPATH=. python bench/stats_coverage.py [--studies 4000] [--seed 0] [--md bench/results/stats_coverage.md]

Each cell simulates ``--studies`` studies from a known distribution and counts the intervals that
hold the true value (``analysis.stats.coverage``). Rows:

- mean of one arm's returns, Student-t (``t_interval``), and for reference the percentile
  bootstrap of the mean (what analysis.tables used before; 2,000 resamples, vectorised here): normal;
  Student-t with 3 df (heavy tails); lognormal sigma 0.5 and 1 (skewed); RL-like mixtures of
  seeds that learn (N(-200, 30)) and seeds that fail (N(-900, 100)), 50/50 and 70/30.
- paired mean difference (``mean_difference`` on matched seeds): a seed effect N(0, 300) shared
  by both arms, arm effect +20, per-trial noise N(0, 30); and the same with lognormal(0, 1) noise
  added to the arm (skewed differences). Unpaired Welch (``mean_difference`` on different seeds):
  normal, sd 30 vs 90.
- paired explosion-rate difference (``rate_difference``, Newcombe paired): per seed, correlated
  binary outcomes with rates p_arm, p_baseline and correlation rho; plus the exact minimum over
  a grid (p in 0.05..0.95 by 0.05, rho in {0, 0.3, 0.6}), computed by enumerating every 2x2 table.

Not part of the test suite (tests/test_analysis_stats.py checks the 5-seed cells that must hold).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import gammaln

from analysis import stats

SEEDS = (3, 5, 10)
Draw = Callable[[np.random.Generator, int], tuple[Any, ...]]


def mixture(learn: float) -> Draw:
    def draw(rng: np.random.Generator, n: int) -> tuple[Any, ...]:
        ok = rng.random(n) < learn
        return (np.where(ok, rng.normal(-200, 30, n), rng.normal(-900, 100, n)),)

    return draw


def paired(skewed: bool) -> Draw:
    def draw(rng: np.random.Generator, n: int) -> tuple[Any, ...]:
        seed_effect = rng.normal(0, 300, n)
        arm = -500 + seed_effect + 20 + rng.normal(0, 30, n) + (rng.lognormal(0, 1, n) * 30 if skewed else 0)
        return arm, -500 + seed_effect + rng.normal(0, 30, n)

    return draw


def welch(rng: np.random.Generator, n: int) -> tuple[Any, ...]:
    """Different seed labels, so ``mean_difference`` compares them unpaired."""
    return pd.Series(rng.normal(20, 30, n)), pd.Series(rng.normal(0, 90, n), index=range(100, 100 + n))


def binary_pairs(p_arm: float, p_base: float, rho: float) -> Draw:
    p11 = p_arm * p_base + rho * math.sqrt(p_arm * (1 - p_arm) * p_base * (1 - p_base))
    cells = np.array([p11, p_arm - p11, p_base - p11, 1 - p_arm - p_base + p11])

    def draw(rng: np.random.Generator, n: int) -> tuple[Any, ...]:
        kind = rng.choice(4, size=n, p=cells)
        return kind <= 1, (kind == 0) | (kind == 2)

    return draw


def exact_paired_minimum(n: int) -> tuple[float, str]:
    """Smallest exact coverage of the paired rate interval over the grid, and where."""
    tables = np.array([(a, b, c, n - a - b - c) for a in range(n + 1) for b in range(n + 1 - a) for c in range(n + 1 - a - b)])
    bounds = np.array([stats.newcombe_paired(*map(int, t))[1] for t in tables])
    log_count = gammaln(n + 1) - gammaln(tables + 1).sum(axis=1)
    worst = (2.0, "")
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
    for pa in grid:
        for pb in grid:
            for rho in (0.0, 0.3, 0.6):
                p11 = pa * pb + rho * math.sqrt(pa * (1 - pa) * pb * (1 - pb))
                p = np.array([p11, pa - p11, pb - p11, 1 - pa - pb + p11])
                if p.min() <= 0:
                    continue
                weight = np.exp(log_count + (tables * np.log(p)).sum(axis=1))
                d = pa - pb
                cover = weight[(bounds[:, 0] <= d + 1e-12) & (d - 1e-12 <= bounds[:, 1])].sum()
                if cover < worst[0]:
                    worst = (float(cover), f"p {pa:.2f} vs {pb:.2f}, rho {rho}")
    return worst


def percentile_bootstrap(draw: Draw, truth: float, n: int, studies: int, rng: np.random.Generator) -> float:
    hits = 0
    index = rng.integers(0, n, size=(2000, n))
    for _ in range(studies):
        (x,) = draw(rng, n)
        low, high = np.quantile(np.asarray(x)[index].mean(axis=1), [0.025, 0.975])
        hits += bool(low <= truth <= high)
    return hits / studies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--md", type=Path, default=None)
    args = parser.parse_args()
    start = time.perf_counter()

    one = lambda x: stats.t_interval(x)  # noqa: E731
    diff = lambda a, b: (lambda d: (d.low, d.high))(stats.mean_difference(a, b))  # noqa: E731
    rate = lambda a, b: (lambda d: (d.low, d.high))(stats.rate_difference(a, b))  # noqa: E731
    returns: list[tuple[str, Draw, float]] = [
        ("normal(0, 1)", lambda g, n: (g.normal(0, 1, n),), 0.0),
        ("Student t, 3 df", lambda g, n: (g.standard_t(3, n),), 0.0),
        ("lognormal(0, 0.5)", lambda g, n: (g.lognormal(0, 0.5, n),), math.exp(0.125)),
        ("lognormal(0, 1)", lambda g, n: (g.lognormal(0, 1, n),), math.exp(0.5)),
        ("mixture 50% learn / 50% fail", mixture(0.5), -550.0),
        ("mixture 70% learn / 30% fail", mixture(0.7), 0.7 * -200 + 0.3 * -900),
    ]
    rows: list[tuple[str, Draw, Callable[..., Any], float]] = []
    for name, draw, truth in returns:
        rows.append((f"mean, t: {name}", draw, one, truth))
    rows += [
        ("paired difference, t: seed effect sd 300, noise sd 30", paired(False), diff, 20.0),
        ("paired difference, t: same + lognormal noise on the arm", paired(True), diff, 20.0 + 30 * math.exp(0.5)),
        ("unpaired difference, Welch: sd 30 vs 90", welch, diff, 20.0),
        ("paired rate, Newcombe: 0.2 vs 0.8, rho 0", binary_pairs(0.2, 0.8, 0.0), rate, -0.6),
        ("paired rate, Newcombe: 0.3 vs 0.6, rho 0.3", binary_pairs(0.3, 0.6, 0.3), rate, -0.3),
        ("paired rate, Newcombe: 0.1 vs 0.9, rho 0", binary_pairs(0.1, 0.9, 0.0), rate, -0.8),
        ("paired rate, Newcombe: 0.5 vs 0.5, rho 0.5", binary_pairs(0.5, 0.5, 0.5), rate, 0.0),
    ]
    lines = ["| interval | 3 seeds | 5 seeds | 10 seeds |", "|---|---:|---:|---:|"]
    for name, draw, interval, truth in rows:
        cells = [stats.coverage(draw, interval, truth, n, args.studies, np.random.default_rng([args.seed, n])) for n in SEEDS]
        lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        print(lines[-1], flush=True)
    for name, draw, truth in returns[:1] + returns[2:3] + returns[4:5]:
        cells = [percentile_bootstrap(draw, truth, n, args.studies, np.random.default_rng([args.seed, n])) for n in SEEDS]
        lines.append(f"| (reference) mean, percentile bootstrap: {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        print(lines[-1], flush=True)
    exact = [exact_paired_minimum(n) for n in SEEDS]
    lines.append("| paired rate, Newcombe: exact minimum over the grid | " + " | ".join(f"{c:.3f}" for c, _ in exact) + " |")
    print(lines[-1])
    where = "; ".join(f"{n} seeds at {w}" for n, (_, w) in zip(SEEDS, exact, strict=True))
    footer = f"\n{args.studies} studies per cell, seed {args.seed}; exact minima: {where}. Wall {time.perf_counter() - start:.0f} s.\n"
    print(footer)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        head = "Coverage of nominal 95% intervals (analysis.stats), `PYTHONPATH=. python bench/stats_coverage.py`\n\n"
        args.md.write_text(head + "\n".join(lines) + "\n" + footer)


if __name__ == "__main__":
    main()
