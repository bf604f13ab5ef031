"""The MLflow UI as a new user opens it, in a real browser: Debian's chromium, headless, driving
``mlflow ui`` on 127.0.0.1 against a study's store after ``python -m analysis.report`` published into
it. The page is read after the UI's JavaScript rendered it (tests/support/browser.py); screenshots
are saved beside the test's output and their paths printed (``pytest -s`` shows them).

The store is tests/support/analysis_store.py's (the layout the study driver writes, real MLflow
client), so the expected figures are the analysis' own (``tables.ablation_table``) and known; its
arms are one regime's, named as the default study's runaway regime names them, the longest names a
user meets there.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from analysis import load, report, tables
from analysis.publish import shown_figure
from study import results as r
from tests.support.analysis_store import TRIALS, write_mlflow_study
from tests.support.browser import chromium_path, headless_chromium, mlflow_ui

pytestmark = [
    pytest.mark.slow,  # about 40 s: the UI's start, two pages
    pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed (make install installs it with apt-get)"),
]

# The rows of MLflow's runs table (ag-grid) as {run name: {column id: cell text}}: a row is split
# into pinned and scrolling parts, joined by the row's id.
TABLE_ROWS = """(() => {
  const rows = {};
  for (const row of document.querySelectorAll('.ag-row')) {
    const cells = rows[row.getAttribute('row-id')] = rows[row.getAttribute('row-id')] || {};
    for (const cell of row.querySelectorAll('[col-id]')) cells[cell.getAttribute('col-id')] = cell.innerText.trim();
  }
  const named = {};
  for (const cells of Object.values(rows)) {
    const name = (cells['attributes.`Run Name`'] || '').split('\\n').pop();
    if (name) named[name] = cells;
  }
  return named;
})()"""
REGIME = "seed_reward_lr1e-3_tau0.05"  # search_spaces/default.yaml's runaway regime
# The figures cut short on screen: a metric cell's value wider than its cell.
CUT_FIGURES = """[...document.querySelectorAll('.ag-row [col-id^="metrics."] .ag-cell-value')]
  .filter(value => value.scrollWidth > value.clientWidth).map(value => value.innerText)"""
# The run names cut short on screen: a name whose laid-out text (a Range over it: its full width,
# ellipsis or not) ends past its link's box or its cell's.
CUT_NAMES = """[...document.querySelectorAll('.ag-row [col-id="attributes.`Run Name`"] a')]
  .filter(link => link.innerText.trim())
  .filter(link => {
    const text = document.createRange();
    text.selectNodeContents(link);
    const end = text.getBoundingClientRect().right;
    return end > link.getBoundingClientRect().right + 1 || end > link.closest('[role=gridcell]').getBoundingClientRect().right + 1;
  }).map(link => link.innerText.trim())"""
CLOSE_ASSISTANT = "document.querySelector('button[aria-label=\"Close\"]')?.click(); true"  # MLflow's chat panel
# The columns a person compares arms by, left to right, and the ablation-table figure each shows.
COLUMNS = {
    "seeds": "n_seeds",
    "explosion_rate": "explosion_rate",
    "explosion_rate_low": "explosion_rate_low",
    "explosion_rate_high": "explosion_rate_high",
    "return_mean": "shared_return_mean",
    "return_mean_low": "shared_return_mean_low",
    "return_mean_high": "shared_return_mean_high",
    "common_step": "shared_step",
    "median_explosion_step": "median_explosion_step",
    "exploded": "exploded",
    "observed": "observed",
}


def cell_value(text: str) -> float:
    return math.nan if text == "NaN" else float(text)


def test_a_new_user_sees_the_arms_side_by_side_with_their_figures_and_the_report_one_click_away(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_mlflow_study(tmp_path, regime=REGIME)
    assert report.main(["--storage", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    # What the console tells the user to open: the mlflow ui command, then the arms' URL.
    command = re.search(r"mlflow ui --backend-store-uri (\S+)", printed).group(1)
    route = re.search(r"then open http://127\.0\.0\.1:5000/(#\S+)", printed).group(1)
    results = load.load_study(tmp_path)
    expected = tables.ablation_table(results.trials, results.curves)

    with mlflow_ui(command, tmp_path / "mlflow_ui.log") as base, headless_chromium(tmp_path / "profile", width=2560) as page:
        page.open(f"{base}/{route}")
        column = f"metrics.`{r.ARM_PREFIX}explosion_rate`"
        page.wait_for(f"(() => {{ const rows = {TABLE_ROWS}; return {len(expected)} <= Object.values(rows)"
                      f".filter(cells => cells['{column}']).length; }})()")  # fmt: skip
        page.evaluate(CLOSE_ASSISTANT)
        page.wait_for(f"document.querySelectorAll('[col-id=\"metrics.`{r.ARM_PREFIX}{list(COLUMNS)[-1]}`\"]').length > 1")
        sidebar = page.evaluate("document.querySelector('nav, aside')?.innerText || document.body.innerText")
        assert "Model registry" in sidebar and "Judges" not in sidebar, sidebar  # model training's pages, not GenAI's
        rows = page.evaluate(TABLE_ROWS)
        shot = page.screenshot(tmp_path / "mlflow_arms.png")
        print(f"\nscreenshot of the arms side by side: {shot}")

        # Every arm a row of its own, with the analysis' figures in the view's columns; no seed
        # row until its arm is opened.
        assert set(expected.index) <= set(rows), sorted(rows)
        assert not [name for name in rows if " seed=" in name], sorted(rows)
        for arm, figures in expected.iterrows():
            for name, figure in COLUMNS.items():
                shown = cell_value(rows[arm][f"metrics.`{r.ARM_PREFIX}{name}`"])
                # As the arm run holds it: to 4 significant digits (analysis.publish.shown_figure).
                assert shown == pytest.approx(shown_figure(float(figures[figure])), rel=1e-9, nan_ok=True), (arm, name, shown)
        names = page.evaluate("[...document.querySelectorAll('.ag-row [col-id=\"attributes.`Run Name`\"] a')].map(a => a.innerText.trim())")
        assert set(expected.index) <= set(names), names  # what CUT_NAMES measures
        truncated = page.evaluate(CUT_FIGURES) + page.evaluate(CUT_NAMES)
        assert not truncated, f"cut short on screen: {truncated}"
        headers = page.evaluate("[...document.querySelectorAll('.ag-header-cell')].sort((a, b) => a.getBoundingClientRect().left"
                                " - b.getBoundingClientRect().left).map(c => c.getAttribute('col-id'))")  # fmt: skip
        assert [h for h in headers if h.startswith("metrics.")] == [f"metrics.`{r.ARM_PREFIX}{n}`" for n in COLUMNS]

        # An arm opens on its seeds.
        seeds = sorted(r.trial_run_name(f"{REGIME}/{arm}", seed) for arm, seed, *_ in TRIALS.values() if arm == "baseline")
        page.evaluate("[...document.querySelectorAll('.ag-row')].find(row => row.innerText.includes('/baseline'))"
                      ".querySelector('[col-id=\"attributes.`Run Name`\"] button').click()")  # fmt: skip
        page.wait_for(" && ".join(f"document.body.innerText.includes('{seed}')" for seed in seeds))
        cut_names = page.evaluate(CUT_NAMES)
        assert not cut_names, f"run names cut short on screen: {cut_names}"
        print(f"screenshot of an arm opened on its seeds: {page.screenshot(tmp_path / 'mlflow_seeds.png')}")

        # The report: a link above the table, to report.html on the study run, its figures inline.
        href = page.evaluate("[...document.querySelectorAll('a')].find(a => a.innerText === 'the report')?.getAttribute('href')")
        assert href and results.mlflow.study_run_id in href, href
        page.open(f"{base}/{href}")
        page.wait_for("document.querySelector('iframe.mlflow-html-iframe')?.src.startsWith('blob:')")
        text = page.wait_for("document.body.innerText.includes('report/report.html') && document.body.innerText")
        for name in ("report.md", "actor_q.png", "returns.png", "explosion.png", "trials.csv", "ablation.csv"):
            assert name in text, name
        page.evaluate(CLOSE_ASSISTANT)
        print(f"screenshot of the report in MLflow: {page.screenshot(tmp_path / 'mlflow_report.png')}")
