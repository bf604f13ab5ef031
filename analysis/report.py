"""``python -m analysis.report --storage DIR [--study NAME]``: a study's tables and plots as a
Markdown and an HTML report in ``<storage>/<study>/report/``; prints the ablation table.

The report is assembled once as a list of sections (a title, a table or a figure, a note) and
rendered twice, so the Markdown and the HTML always say the same thing. Which sections appear
depends on the design: factorial studies get main effects, one-at-a-time studies each arm
against the baseline, Optuna studies the best configurations and parameter importances.
"""

from __future__ import annotations

import argparse
import html
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import plots, tables
from analysis.load import StudyNotFound, StudyResults, load_study

REPORT_DIR = "report"


@dataclass(frozen=True)
class Section:
    """One part of the report: a table, or a figure file next to the report."""

    title: str
    note: str = ""
    table: pd.DataFrame | None = None
    figure: str | None = None


# --- formatting -------------------------------------------------------------------------------


def number(value: float) -> str:
    """4 significant digits; a dash for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}"


def with_interval(value: float, low: float, high: float) -> str:
    """``value [low, high]``, the interval left out where there is none (one seed)."""
    if math.isnan(low) or math.isnan(high):
        return number(value)
    return f"{number(value)} [{number(low)}, {number(high)}]"


def _column(frame: pd.DataFrame, name: str) -> list[str]:
    return [with_interval(v, lo, hi) for v, lo, hi in frame[[name, f"{name}_low", f"{name}_high"]].itertuples(index=False)]


def format_ablation(table: pd.DataFrame) -> pd.DataFrame:
    """An ``ablation_table`` / ``factor_level_table`` for reading: estimates with their 95% CIs."""
    return pd.DataFrame(
        {
            "seeds": table["n_seeds"],
            "return mean [95% CI]": _column(table, "return_mean"),
            "return IQM [95% CI]": _column(table, "return_iqm"),
            "exploded": [f"{k}/{n}" for k, n in zip(table["exploded"], table["n_seeds"], strict=True)],
            "explosion rate [95% CI]": _column(table, "explosion_rate"),
            "median explosion step": [number(v) for v in table["median_explosion_step"]],
            "env steps": table["env_steps"],
            "outcomes": table["outcomes"],
        },
        index=table.index,
    )


def format_effects(table: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """``main_effects`` (prefix "effect") or ``versus_baseline`` (prefix "diff") for reading."""
    formatted = pd.DataFrame(
        {
            "Δ return [95% CI]": _column(table, f"return_{prefix}"),
            "Δ explosion rate [95% CI]": _column(table, f"explosion_{prefix}"),
        },
        index=table.index,
    )
    if "reference" in table:
        formatted.insert(0, "against", table["reference"])
    return formatted


def format_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Every float cell to 4 significant digits, other cells as they are."""
    return frame.apply(lambda col: col.map(number) if pd.api.types.is_float_dtype(col) else col)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table, the index as the first column(s)."""
    flat = frame.reset_index()
    header = [str(c) for c in flat.columns]

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in flat.itertuples(index=False)]
    return "\n".join(lines)


# --- content ----------------------------------------------------------------------------------


def headline(table: pd.DataFrame) -> str:
    """The study's answer in one sentence, from ``tables.ablation_table``: where actor-path Q
    stayed bounded and where not."""
    bounded = [arm for arm, row in table.iterrows() if row["exploded"] == 0]
    exploded = [f"{arm} ({row['exploded']}/{row['n_seeds']})" for arm, row in table.iterrows() if row["exploded"]]
    parts = []
    if bounded:
        parts.append(f"The guard saw no actor-path Q runaway in any seed of: {', '.join(bounded)}.")
    if exploded:
        parts.append(f"Actor-path Q ran away (seeds exploded / seeds) in: {', '.join(exploded)}.")
    return " ".join(parts)


def sections(results: StudyResults, arms: pd.DataFrame) -> list[Section]:
    """The report's content for this study's design (figures as file names in the report dir);
    ``arms`` is ``tables.ablation_table(results.trials)``, computed once by the caller."""
    trials, factors = results.trials, results.factors
    parts = [
        Section("Ablation per arm", "Return is the last evaluation's; intervals are over seeds.", format_ablation(arms)),
    ]
    if results.design == "factorial" and factors:
        parts.append(Section("Per factor level", table=format_ablation(tables.factor_level_table(trials, factors))))
        parts.append(
            Section(
                "Main effects",
                "Each level against the factor's first level, averaged over the other factors.",
                format_effects(tables.main_effects(trials, factors), "effect"),
            )
        )
    if results.design == "one_at_a_time" and tables.BASELINE in set(trials["arm"]):
        parts.append(Section("Each arm against the baseline", table=format_effects(tables.versus_baseline(trials), "diff")))
    if results.design == "optuna" and factors:
        parts.append(Section("Best configurations (Q bounded)", table=format_numbers(tables.best_configs(trials, factors))))
        importances = pd.DataFrame(
            {
                "on return": tables.param_importances(trials, factors, "final_return"),
                "on explosion": tables.param_importances(trials, factors, "exploded"),
            }
        ).rename_axis("factor")
        parts.append(Section("Parameter importances (fANOVA)", table=format_numbers(importances)))
    parts += [
        Section("Actor-path Q", "Symlog scale; the grey band is the Q interval.", figure="actor_q.png"),
        Section("Return curves", figure="returns.png"),
        Section("Explosion rate", figure="explosion.png"),
        Section("Trials", table=format_numbers(trials.set_index(["arm", "seed"]))),
    ]
    return parts


def explosion_table(results: StudyResults, arms: pd.DataFrame) -> pd.DataFrame:
    """What the explosion plot shows: per factor level for factorial designs, else per arm."""
    if results.design == "factorial" and results.factors:
        return tables.factor_level_table(results.trials, results.factors)
    return arms


# --- rendering --------------------------------------------------------------------------------


def render_markdown(results: StudyResults, summary: str, parts: Sequence[Section]) -> str:
    lines = [f"# Study `{results.name}` ({results.design})", "", _intro(results), "", summary, ""]
    for part in parts:
        lines += [f"## {part.title}", ""]
        if part.note:
            lines += [part.note, ""]
        if part.table is not None:
            lines += [markdown_table(part.table), ""]
        if part.figure is not None:
            lines += [f"![{part.title}]({part.figure})", ""]
    return "\n".join(lines)


def render_html(results: StudyResults, summary: str, parts: Sequence[Section]) -> str:
    body = [f"<h1>Study <code>{html.escape(results.name)}</code> ({results.design})</h1>"]
    body += [f"<p>{html.escape(_intro(results))}</p>", f"<p><b>{html.escape(summary)}</b></p>"]
    for part in parts:
        body.append(f"<h2>{html.escape(part.title)}</h2>")
        if part.note:
            body.append(f"<p>{html.escape(part.note)}</p>")
        if part.table is not None:
            body.append(part.table.reset_index().to_html(border=0, index=False))
        if part.figure is not None:
            body.append(f'<img src="{part.figure}" alt="{html.escape(part.title)}">')
    style = "body{font-family:sans-serif;max-width:1200px;margin:auto} table{border-collapse:collapse;font-size:13px}"
    style += " td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right} img{max-width:100%}"
    return f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(results.name)}</title>" + (
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _intro(results: StudyResults) -> str:
    trials = results.trials
    return (
        f"{len(trials)} trials in {trials['arm'].nunique()} arms, {int(trials['env_steps'].sum()):,} env steps; "
        f"factors: {', '.join(results.factors) or 'none'}; read from {results.source}."
    )


def write_report(results: StudyResults, out_dir: Path | str) -> tuple[Path, pd.DataFrame]:
    """Write report.md, report.html, the figures and the tables as CSV; return report.md's path
    and the ablation table (its bootstrap intervals are the expensive part: computed once)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arms = tables.ablation_table(results.trials)
    plots.save(plots.actor_q_figure(results), out_dir / "actor_q.png")
    plots.save(plots.return_figure(results), out_dir / "returns.png")
    plots.save(plots.explosion_figure(explosion_table(results, arms)), out_dir / "explosion.png")
    results.trials.to_csv(out_dir / "trials.csv", index=False)
    arms.to_csv(out_dir / "ablation.csv")
    summary, parts = headline(arms), sections(results, arms)
    (out_dir / "report.html").write_text(render_html(results, summary, parts), encoding="utf-8")
    markdown = out_dir / "report.md"
    markdown.write_text(render_markdown(results, summary, parts), encoding="utf-8")
    return markdown, arms


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", type=Path, required=True, help="the study runner's storage folder")
    parser.add_argument("--study", help="study name (needed when the storage holds several)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<storage>/mlflow.db)")
    parser.add_argument("--out", type=Path, help="report folder (default: <storage>/<study>/report)")
    args = parser.parse_args(argv)
    if not args.storage.is_dir():
        parser.error(f"--storage {args.storage}: no such folder")
    try:
        results = load_study(args.storage, args.study, tracking_uri=args.tracking_uri)
    except StudyNotFound as error:
        parser.error(str(error))
    if results.trials.empty:
        parser.error(f"study {results.name!r} has no trials yet")
    path, arms = write_report(results, args.out or args.storage / results.name / REPORT_DIR)
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 40):
        print(format_ablation(arms).to_string())
    print(f"\nreport: {path}\n        {path.with_suffix('.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
