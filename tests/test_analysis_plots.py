"""The figures show what they claim: a symlog panel per arm with the Q interval, return curves at
evaluations only, explosion-rate bars at the table's rates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from analysis import load, plots, tables


@pytest.fixture(scope="module")
def results(mlflow_study_storage: Path) -> load.StudyResults:
    return load.load_study(mlflow_study_storage)


def test_actor_q_panel_per_arm_on_symlog_with_the_interval(results: load.StudyResults) -> None:
    fig = plots.actor_q_figure(results)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split()[0] for ax in panels] == ["baseline", "tau=0.5", "tau=1.0"]
    assert all(ax.get_yscale() == "symlog" for ax in panels)
    band = next(c for c in panels[0].collections if isinstance(c, PolyCollection))
    low, high = band.get_paths()[0].vertices[:, 1].min(), band.get_paths()[0].vertices[:, 1].max()
    assert (low, high) == (-1600.0, 0.0)
    assert panels[2].get_title().endswith("(2/2 exploded)")
    # one solid max and one dashed min line per seed, plus a dotted line per explosion
    assert len(panels[2].get_lines()) == 2 * 2 + 2


def test_return_curves_only_at_evaluations(results: load.StudyResults) -> None:
    """The reports at 1500 repeat the evaluation at 1000: the curve does not invent a point there."""
    ax = plots.return_figure(results).axes[0]
    baseline = next(line for line in ax.get_lines() if line.get_label() == "baseline")
    assert list(baseline.get_xdata()) == [1000, 2000]
    assert list(baseline.get_ydata()) == [-950, -500]  # mean of the two seeds


def test_explosion_bars_are_the_table_rates(results: load.StudyResults, tmp_path: Path) -> None:
    table = tables.ablation_table(results.trials, results.curves)
    fig = plots.explosion_figure(table)
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    np.testing.assert_allclose(heights, table["explosion_rate"])
    path = plots.save(fig, tmp_path / "explosion.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_explosion_panels_per_factor(results: load.StudyResults) -> None:
    fig = plots.explosion_figure(tables.factor_level_table(results.trials, results.curves, ["tau"]))
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["tau"]
    assert [t.get_text() for t in visible[0].get_xticklabels()] == ["0.005", "0.5", "1.0"]
