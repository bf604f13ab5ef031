"""The study's three pictures, as matplotlib Figures (no pyplot: no global state, any backend).

1. Actor-path Q against env steps, a panel per arm, symlog scale with the Q interval shaded: a
   runaway arm leaves the band by orders of magnitude, a healthy one stays inside it. Symlog and
   not log because Q can be negative (Pendulum's returns all are) and can run away downward.
   Buffer Q (``train/q1_value``, Q1 on the replay buffer's actions) is drawn on the same axes in
   the arm's colour, dashed, beside actor-path Q (Q1(s, actor(s)), solid): the CARLA run's
   discovery was the gap between those two lines (actor-path Q 2.3M while buffer Q read 43 to
   70), which a plot of actor-path Q alone cannot show.
2. Evaluation return against env steps per arm: the mean over seeds with a band from the worst
   to the best seed, which with a handful of seeds is the spread worth seeing.
3. Explosion rate per factor level (or per arm) with Wilson intervals: the share of the trials
   observed to the table's horizon whose actor-path Q left its interval by then (a trial stopped
   earlier without exploding is censored, in neither), the study's first question.
"""

from __future__ import annotations

import math
from itertools import cycle
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis import stats, tables
from analysis.load import StudyResults
from study import metrics as m
from study.plan import REGIME_SEPARATOR, regime_of

PANEL_WIDTH, PANEL_HEIGHT = 4.5, 3.2
MAX_COLUMNS = 3
COLORS = [f"C{i}" for i in range(10)]


def arm_colors(arms: list[str]) -> dict[str, str]:
    """A colour per arm, the same for an arm's name in every regime (``*/critic_l2=0.01`` alike)."""
    names = list(dict.fromkeys(arm.split(REGIME_SEPARATOR)[-1] for arm in arms))
    by_name = dict(zip(names, cycle(COLORS)))
    return {arm: by_name[arm.split(REGIME_SEPARATOR)[-1]] for arm in arms}
# Symlog is linear within +-1 reward unit and logarithmic beyond: returns and Q of any scale fit.
SYMLOG_LINTHRESH = 1.0


def _grid(n_panels: int) -> tuple[Figure, list]:
    columns = min(n_panels, MAX_COLUMNS)
    rows = math.ceil(n_panels / columns)
    fig = Figure(figsize=(PANEL_WIDTH * columns, PANEL_HEIGHT * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False, sharey=True).ravel().tolist()
    for unused in axes[n_panels:]:
        unused.set_visible(False)
    return fig, axes[:n_panels]


# The actor-path Q plot's lines, by label: the legend names them and the tests find them so.
ACTOR_Q_LABEL = "actor-path Q1(s, actor(s)): batch mean, mean over seeds"
BUFFER_Q_LABEL = "buffer Q1(s, a), train/q1_value: batch mean, mean over seeds"
SEED_MAX_LABEL = "actor-path Q batch max, one line per seed (what the guard judges)"
EXPLOSION_LABEL = "explosion step of a seed"
INTERVAL_LABEL = "Q interval (every return lies in it)"


def seed_mean(curves: pd.DataFrame, key: str) -> pd.Series:
    """``key`` per env step, the mean over the seeds that reported there; a non-finite value (a
    runaway the guard stops on) is left out, since a mean with an infinity in it cannot be drawn."""
    values = curves[key].replace([np.inf, -np.inf], np.nan)
    return values.groupby(curves[m.ENV_STEPS]).mean().dropna()


def actor_q_figure(results: StudyResults) -> Figure:
    """A panel per arm, one colour per arm: actor-path Q (solid) and buffer Q (dashed), each the
    batch mean averaged over seeds, so their gap reads at a glance; thin lines each seed's batch max
    of actor-path Q against the grey Q interval, dotted verticals the seeds' explosion steps.

    Means of the same statistic (batch mean) are compared, as ``guard/actor_to_buffer_q_ratio``
    does; the per-seed maxima show which seed left the interval, since a seed the guard stopped
    drops out of the mean from its stop on."""
    arms = tables.arm_order(results.trials["arm"])
    fig, axes = _grid(len(arms))
    colors = arm_colors(arms)
    for ax, arm in zip(axes, arms, strict=False):
        color = colors[arm]
        curves = results.curves[results.curves["arm"] == arm]
        interval = curves.groupby(m.ENV_STEPS)[[m.Q_LOW, m.Q_HIGH]].median().dropna()
        ax.fill_between(interval.index, interval[m.Q_LOW], interval[m.Q_HIGH], color="0.88", label=INTERVAL_LABEL)
        trials = results.trials[results.trials["arm"] == arm]
        for trial in trials.itertuples():
            curve = curves[curves["trial_id"] == trial.trial_id]
            q_max = curve[m.ACTOR_Q_MAX].replace([np.inf, -np.inf], np.nan)
            ax.plot(curve[m.ENV_STEPS], q_max, color=color, lw=0.7, alpha=0.45, label=f"seed {trial.seed}: {SEED_MAX_LABEL}")
            if trial.exploded and math.isfinite(trial.explosion_step):
                ax.axvline(trial.explosion_step, color=color, lw=0.8, ls=":", label=f"seed {trial.seed}: {EXPLOSION_LABEL}")
        actor_q, buffer_q = seed_mean(curves, m.ACTOR_Q_MEAN), seed_mean(curves, m.Q1_VALUE)
        ax.plot(actor_q.index, actor_q, color=color, lw=2.4, ls="-", label=ACTOR_Q_LABEL)
        # Drawn on top, thinner, its gaps white: where the two lines coincide (a healthy run) the
        # dashes still show inside the solid line instead of vanishing under it.
        ax.plot(buffer_q.index, buffer_q, color=color, lw=1.6, ls="--", gapcolor="white", label=BUFFER_Q_LABEL)
        ax.set_yscale("symlog", linthresh=SYMLOG_LINTHRESH)
        ax.set_title(f"{arm}  ({int(trials['exploded'].sum())}/{len(trials)} exploded)", fontsize=9, color=color)
        ax.set_xlabel("env steps")
        ax.set_ylabel("Q (symlog)")
    # One legend for the figure, in black: the line styles mean the same in every panel, the
    # colour only says which arm (the panel's title is in it too).
    keys = [
        Line2D([], [], color="k", lw=2.4, ls="-", label=ACTOR_Q_LABEL),
        Line2D([], [], color="k", lw=1.6, ls="--", gapcolor="white", label=BUFFER_Q_LABEL),
        Line2D([], [], color="k", lw=0.7, alpha=0.45, label=SEED_MAX_LABEL),
        Line2D([], [], color="k", lw=0.8, ls=":", label=EXPLOSION_LABEL),
        Patch(color="0.88", label=INTERVAL_LABEL),
    ]
    fig.legend(handles=keys, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.suptitle("Actor-path Q (solid) against buffer Q (dashed), per arm: the gap between them is the paradox", fontsize=10)
    return fig


def return_figure(results: StudyResults) -> Figure:
    """Evaluation return per arm: mean over the seeds still running, band from worst to best seed.
    One panel per regime (their rewards differ in scale), arms coloured alike across panels."""
    arms = tables.arm_order(results.trials["arm"])
    regimes = list(dict.fromkeys(regime_of(arm) for arm in arms))
    fig = Figure(figsize=(8, 4.5 * len(regimes)), layout="constrained")
    axes = fig.subplots(len(regimes), 1, squeeze=False).ravel()
    # Reports between evaluations repeat the last one: the evaluations the tables read, where they ran.
    evaluated = stats.evaluations(results.curves)[0]
    colors = arm_colors(arms)
    for ax, regime in zip(axes, regimes, strict=True):
        for arm in [arm for arm in arms if regime_of(arm) == regime]:
            color = colors[arm]
            per_step = evaluated[evaluated["arm"] == arm].groupby(m.ENV_STEPS)[m.EVAL_RETURN]
            mean, low, high = per_step.mean(), per_step.min(), per_step.max()
            ax.plot(mean.index, mean, color=color, label=arm, marker="o", markersize=3)
            ax.fill_between(mean.index, low, high, color=color, alpha=0.2)
        ax.set_xlabel("env steps")
        ax.set_ylabel("evaluation return")
        ax.set_title(f"{'Return per arm' if regime is None else f'Regime {regime}'}: mean over seeds, band = min to max seed")
        ax.legend(fontsize=8, loc="best")
    return fig


def explosion_figure(table: pd.DataFrame) -> Figure:
    """Bars of explosion rate with Wilson intervals, from ``ablation_table`` (index: arm) or
    ``factor_level_table`` (index: factor, level): one panel per factor."""
    if "factor" not in table.index.names:
        return _arm_explosion_figure(table)
    groups = list(table.groupby(level="factor", sort=False))
    fig, axes = _grid(len(groups))
    for ax, (name, part) in zip(axes, groups, strict=True):
        labels = [str(key[-1]) for key in part.index]
        rate, error = _rate_and_error(part)
        ax.bar(labels, rate, yerr=error, capsize=4, color="tab:red", alpha=0.7)
        ax.set_ylim(0, 1.05)
        ax.set_title(str(name), fontsize=9)
        ax.set_ylabel("share exploded (of observed)")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.suptitle(f"Explosion rate (95% Wilson interval)\n{_horizon_text(table)}; censored trials left out", fontsize=10)
    return fig


def _arm_explosion_figure(table: pd.DataFrame) -> Figure:
    """One horizontal bar per arm, first arm on top: arm names (``regime/arm``) are too long to
    stand side by side under vertical bars."""
    fig = Figure(figsize=(PANEL_WIDTH * 2, 1.2 + 0.3 * len(table)), layout="constrained")
    ax = fig.subplots()
    rate, error = _rate_and_error(table)
    several = table["horizon"].nunique() > 1  # regimes with budgets of their own: say which bar is by which
    labels = [f"{arm} (by {h:,.0f})" if several and np.isfinite(h) else str(arm) for arm, h in table["horizon"].items()]
    ax.barh(labels, rate, xerr=error, capsize=3, color="tab:red", alpha=0.7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("share exploded (of observed)")
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(f"Explosion rate (95% Wilson interval)\n{_horizon_text(table)}; censored trials left out", fontsize=10)
    return fig


def _rate_and_error(part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    rate = part["explosion_rate"].to_numpy(dtype=float)
    return rate, np.vstack([rate - part["explosion_rate_low"], part["explosion_rate_high"] - rate])


def _horizon_text(table: pd.DataFrame) -> str:
    horizons = sorted(set(table["horizon"].dropna()))
    if not horizons:
        return "no common horizon"
    return "by " + " or ".join(f"{h:,.0f}" for h in horizons) + " env steps" + (" (each row's regime's)" if len(horizons) > 1 else "")


def save(fig: Figure, path: Path | str) -> Path:
    """Write a figure as PNG."""
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
