"""The report command and the notebook, on a store in the results-contract layout (fast); the same
on a real study run is in test_analysis_study.py."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import load, report, tables
from study.spec.schema import Reference
from tests.support.analysis_store import REFERENCE, STUDY, write_mlflow_study, write_tune_study
from tests.support.notebook import REPORT_FILES, images, project_env, run_notebook


@pytest.fixture(scope="module")
def storage(mlflow_study_storage: Path) -> Path:
    return mlflow_study_storage


def test_report_command_writes_its_files_and_prints_the_table(storage: Path, capsys: pytest.CaptureFixture) -> None:
    assert report.main(["--storage", str(storage)]) == 0
    out_dir = storage / STUDY / report.REPORT_DIR
    assert REPORT_FILES <= {p.name for p in out_dir.iterdir()}
    printed = capsys.readouterr().out
    assert "return mean [95% t CI]" in printed and "tau=1.0" in printed and "2/2" in printed
    markdown = (out_dir / "report.md").read_text()
    assert "## Each arm against the baseline" in markdown  # the one-at-a-time section
    # The verdicts come right after the headline, a line per arm against the baseline.
    assert markdown.index("## Verdicts") < markdown.index("## Ablation per arm")
    assert "- tau=1.0: exploded 2/2 vs 0/2 by 2,000 steps (paired on 2 seeds, difference +1.00 [0.07, 1.00]); return at 1,000 steps -300.00" in markdown
    assert "- tau=0.5: exploded 1/1 vs 0/2 by 2,000 steps (unpaired difference" in markdown
    assert "![Actor-path Q](actor_q.png)" in markdown
    html = (out_dir / "report.html").read_text()
    assert '<img src="actor_q.png"' in html and "<table" in html
    for png in ("actor_q.png", "returns.png", "explosion.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trials = pd.read_csv(out_dir / "trials.csv")
    assert len(trials) == 5 and trials["exploded"].sum() == 3


DESIGN_SECTIONS = {
    "factorial": {"Verdicts", "Per factor level", "Main effects"},
    "one_at_a_time": {"Verdicts", "Each arm against the baseline"},
    "optuna": {"Best configurations (Q bounded)", "Parameter importances (fANOVA)"},
}


@pytest.mark.parametrize("design", sorted(DESIGN_SECTIONS))
def test_report_sections_follow_the_design(design: str, tmp_path: Path) -> None:
    write_mlflow_study(tmp_path, design=design)
    results = load.load_study(tmp_path)
    parts = {s.title: s for s in report.sections(results, tables.ablation_table(results.trials, results.curves))}
    others = set().union(*DESIGN_SECTIONS.values()) - DESIGN_SECTIONS[design]
    assert DESIGN_SECTIONS[design] <= set(parts) and not others & set(parts)
    if design == "factorial":  # a line per level of tau against its first level, 0.005
        assert [line.split(":")[0] for line in parts["Verdicts"].lines] == ["tau=0.5 vs 0.005", "tau=1.0 vs 0.005"]
    if design == "optuna":  # one factor varied: it carries all the importance
        assert parts["Parameter importances (fANOVA)"].table.loc["tau", "on return"] == "1"


def test_report_reads_a_tune_folder_without_mlflow(tmp_path: Path) -> None:
    write_tune_study(tmp_path)
    out = tmp_path / "out"
    assert report.main(["--storage", str(tmp_path), "--out", str(out)]) == 0
    assert REPORT_FILES <= {p.name for p in out.iterdir()}


def test_report_refuses_an_unknown_study(storage: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--storage", str(storage), "--study", "nope"])
    assert exit_info.value.code == 2
    assert "study 'nope'" in capsys.readouterr().err


def test_tables_read_as_a_person_reads_them(storage: Path) -> None:
    """The common step, the IQM that is the mean, censored counts, the horizon, and whether a
    comparison was paired: stated in the cells, not left to the reader."""
    results = load.load_study(storage)
    arms = report.format_ablation(tables.ablation_table(results.trials, results.curves))
    assert arms.loc["tau=1.0", ["return at step", "return IQM", "exploded / observed", "explosions to step"]].tolist() == [
        "1,000", "IQM = mean (n < 4)", "2/2", "2,000"
    ]
    assert arms.loc["baseline", "return mean [95% t CI]"] == "-500 [-1771, 770.6]"
    # Against the other arms, at the step tau=1.0's second seed stopped: -900 and -1,000.
    assert arms.loc["baseline", ["common step (regime, or study)", "return there [95% t CI]"]].tolist() == ["1,000", "-950 [-1585, -314.7]"]
    versus = report.format_comparisons(tables.versus_baseline(results.trials, results.curves))
    assert versus.loc["tau=1.0", ["rate compared", "return compared"]].tolist() == ["paired, 2 seeds", "paired, 2 seeds"]
    assert versus.loc["tau=1.0", ["Δ explosion rate [95% CI]", "return at step"]].tolist() == ["+1.00 [0.07, 1.00]", "1,000"]
    assert versus.loc["tau=0.5", ["exploded / observed (vs reference)", "rate compared"]].tolist() == [
        "1/1 vs 0/2", "unpaired, 2 seeds"
    ]


def test_headline_counts_the_trials_observed_to_the_horizon() -> None:
    table = pd.DataFrame(
        {"exploded": [0, 3, 0], "observed": [5, 4, 0], "censored": [0, 1, 5], "horizon": [16000.0] * 3},
        index=pd.Index(["baseline", "tau=1.0", "tau=0.5"], name="arm"),
    )
    assert report.headline(table) == (
        "Actor-path Q ran away by 16,000 env steps (exploded / observed) in: tau=1.0 (3/4, 1 censored). "
        "The guard saw no actor-path Q runaway by 16,000 env steps in: baseline (0/5). "
        "No trial observed to that step in: tau=0.5."
    )


def test_headline_names_each_horizon_where_regimes_have_their_own() -> None:
    table = pd.DataFrame(
        {"exploded": [4, 0, 0], "observed": [5, 5, 3], "censored": [0, 0, 0], "horizon": [7000.0, 7000.0, 4000.0]},
        index=pd.Index(["runaway/baseline", "runaway/l2", "healthy/l2"], name="arm"),
    )
    assert report.headline(table) == (
        "Actor-path Q ran away by 7,000 env steps (exploded / observed) in: runaway/baseline (4/5). "
        "The guard saw no actor-path Q runaway by 7,000 env steps in: runaway/l2 (0/5). "
        "The guard saw no actor-path Q runaway by 4,000 env steps in: healthy/l2 (0/3)."
    )


def test_formatting() -> None:
    assert report.with_interval(1.23456, 1.0, 2.0) == "1.235 [1, 2]"
    assert report.with_interval(3.0, math.nan, math.nan) == "3"
    assert report.number(math.nan) == "–"
    frame = pd.DataFrame({"a|b": ["x|y"]}, index=pd.Index(["r"], name="arm"))
    assert report.markdown_table(frame) == "| arm | a|b |\n|---|---|\n| r | x\\|y |"


def test_module_entry_point(storage: Path) -> None:
    """``python -m analysis.report`` as a user types it."""
    out = storage / "cli_out"
    done = subprocess.run(
        [sys.executable, "-m", "analysis.report", "--storage", str(storage), "--out", str(out)],
        env=project_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "report:" in done.stdout and (out / "report.md").exists()


def test_notebook_runs_top_to_bottom(storage: Path) -> None:
    notebook = run_notebook(storage)
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert images(notebook) == 3  # actor-path Q, returns, explosion rate


def test_published_reference_beside_the_measured_returns(tmp_path: Path) -> None:
    """The study file's published returns, read back from either store, beside each arm's measured
    return at the step the ablation table reads it; every column says its env step, the sources are
    listed, and the note says which figures are at a measured step and which not."""
    write_mlflow_study(tmp_path / "mlflow", reference=REFERENCE)
    write_tune_study(tmp_path / "tune", reference=REFERENCE)
    from_mlflow, from_tune = load.load_study(tmp_path / "mlflow"), load.load_study(tmp_path / "tune")
    assert from_mlflow.reference == from_tune.reference == tuple(Reference.model_validate(item) for item in REFERENCE)
    assert from_mlflow.env == from_tune.env == "Pendulum-v1"
    arms = tables.ablation_table(from_mlflow.trials, from_mlflow.curves)
    section = report.reference_section(from_mlflow, arms)
    assert section is not None and section.title == "Published reference"
    table = section.table
    published, far = "[1] published at 2,000 steps", "[2] published at 1,000,000 steps"
    assert list(table.columns) == ["measured at step", "measured return mean [95% t CI]", "seeds evaluated", published, far]
    assert table.loc["baseline", published] == "-450.5 ± 20.25 (10 trials), TD3"
    assert table.loc["tau=0.5", published] == "-700"
    assert table.loc["tau=1.0", published] == table.loc["tau=1.0", far] == "–"
    assert table.loc["baseline", far] == "-150"
    # Measured: the baseline's two seeds at 2,000 (-400, -600); tau=1.0's at 1,000, where t3 stopped.
    assert table.loc["baseline", "measured at step"] == "2,000" and table.loc["tau=1.0", "measured at step"] == "1,000"
    assert table.loc["baseline", "measured return mean [95% t CI]"].startswith("-500 [")
    assert section.note == (
        "Measured returns are at 1,000 and 2,000 env steps on Pendulum-v1. Published at a measured step, the figures to "
        "read them against: [1]. At other steps, not comparable with them as they stand: [2] (1,000,000). The published "
        "figures were measured on Pendulum-v0, this study on Pendulum-v1."
    )
    assert section.lines == ("[1] Pendulum-v0, 2,000 env steps: last evaluation. Source: a paper, Table 2",
                             "[2] Pendulum-v1, 1,000,000 env steps. Source: its learning curves")
    markdown, _ = report.write_report(from_mlflow, tmp_path / "report")
    text = markdown.read_text()
    assert text.index("## Ablation per arm") < text.index("## Published reference") < text.index("## Each arm against")
    assert f"| {published} |" in text and "-450.5 ± 20.25 (10 trials), TD3" in text
    # A study file without a reference gets no such section.
    write_mlflow_study(tmp_path / "plain")
    plain = load.load_study(tmp_path / "plain")
    assert plain.reference == () and report.reference_section(plain, arms) is None
