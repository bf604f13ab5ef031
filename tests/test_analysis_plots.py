"""The figures show what they claim: a symlog panel per arm with the Q interval, return curves at
evaluations only, explosion-rate bars at the table's rates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.lines import Line2D

from analysis import load, plots, tables
from study import metrics as m


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
    # a thin max line per seed, a dotted line per explosion, then the two arm means
    assert len(panels[2].get_lines()) == 2 + 2 + 2


def _line(ax: Axes, label: str) -> Line2D:
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return line


def test_buffer_q_beside_actor_path_q_in_each_arm(results: load.StudyResults) -> None:
    """Each panel draws buffer Q (train/q1_value) dashed beside actor-path Q solid, both the mean over
    the arm's seeds of the loaded frame, in the arm's one colour: the gap between them is the CARLA
    run's discovery. t3's infinite actor-path Q at 1000 cannot be averaged and is left out there."""
    fig = plots.actor_q_figure(results)
    panels = {ax.get_title().split()[0]: ax for ax in fig.axes if ax.get_visible()}
    colors = set()
    for arm, ax in panels.items():
        curves = results.curves[results.curves["arm"] == arm]
        buffer_q, actor_q = _line(ax, plots.BUFFER_Q_LABEL), _line(ax, plots.ACTOR_Q_LABEL)
        expected = curves.groupby(m.ENV_STEPS)[m.Q1_VALUE].mean()
        np.testing.assert_array_equal(buffer_q.get_xdata(), expected.index)
        np.testing.assert_array_equal(buffer_q.get_ydata(), expected.to_numpy())
        assert (buffer_q.get_linestyle(), actor_q.get_linestyle()) == ("--", "-")
        assert buffer_q.get_color() == actor_q.get_color()
        assert all(line.get_color() == actor_q.get_color() for line in ax.get_lines())  # one colour per arm
        colors.add(actor_q.get_color())
    assert len(colors) == len(panels)
    # The values the store wrote (tests/support/analysis_store.py), seed means by hand.
    np.testing.assert_array_equal(_line(panels["baseline"], plots.BUFFER_Q_LABEL).get_ydata(), [-255, -390, -455, -510])
    runaway = panels["tau=1.0"]
    np.testing.assert_array_equal(_line(runaway, plots.BUFFER_Q_LABEL).get_ydata(), [-300, -335, -380])
    np.testing.assert_array_equal(_line(runaway, plots.ACTOR_Q_LABEL).get_xdata(), [500, 1000, 1500])
    np.testing.assert_array_equal(_line(runaway, plots.ACTOR_Q_LABEL).get_ydata(), [-145, 250, 2200])
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend[:2] == [plots.ACTOR_Q_LABEL, plots.BUFFER_Q_LABEL]
    assert "train/q1_value" in plots.BUFFER_Q_LABEL and "actor(s)" in plots.ACTOR_Q_LABEL


def test_return_curves_only_at_evaluations(results: load.StudyResults) -> None:
    """The reports at 1500 repeat the evaluation at 1000: the curve does not invent a point there."""
    ax = plots.return_figure(results).axes[0]
    baseline = next(line for line in ax.get_lines() if line.get_label() == "baseline")
    assert list(baseline.get_xdata()) == [1000, 2000]
    assert list(baseline.get_ydata()) == [-950, -500]  # mean of the two seeds


def in_regimes(results: load.StudyResults, regimes: list[str]) -> load.StudyResults:
    """The same trials run once in each regime, named regime/arm as a study with regimes names them."""
    def copies(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([frame.assign(arm=f"{r}/" + frame["arm"], trial_id=f"{r}/" + frame["trial_id"]) for r in regimes])
    return dataclasses.replace(results, trials=copies(results.trials), curves=copies(results.curves))


def test_returns_get_a_panel_per_regime_and_an_arm_one_colour_in_every_regime(results: load.StudyResults) -> None:
    fig = plots.return_figure(in_regimes(results, ["healthy", "runaway"]))
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == ["Regime healthy", "Regime runaway"]
    colors = [{line.get_label(): line.get_color() for line in ax.get_lines()} for ax in fig.axes]
    assert list(colors[1]) == ["runaway/baseline", "runaway/tau=0.5", "runaway/tau=1.0"]
    assert [colors[0][f"healthy/{arm}"] for arm in ("baseline", "tau=0.5", "tau=1.0")] == list(colors[1].values())
    assert len(set(colors[1].values())) == 3
    np.testing.assert_array_equal(_line(fig.axes[1], "runaway/baseline").get_ydata(), [-950, -500])


def test_explosion_bars_are_the_table_rates(results: load.StudyResults, tmp_path: Path) -> None:
    table = tables.ablation_table(results.trials, results.curves)
    fig = plots.explosion_figure(table)
    widths = [bar.get_width() for bar in fig.axes[0].patches]  # horizontal bars, one per arm
    np.testing.assert_allclose(widths, table["explosion_rate"])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list(table.index)
    path = plots.save(fig, tmp_path / "explosion.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_explosion_panels_per_factor(results: load.StudyResults) -> None:
    fig = plots.explosion_figure(tables.factor_level_table(results.trials, results.curves, ["tau"]))
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["tau"]
    assert [t.get_text() for t in visible[0].get_xticklabels()] == ["0.005", "0.5", "1.0"]
