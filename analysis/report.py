"""``python -m analysis.report --storage DIR [--study NAME]``: a study's tables and plots as a
Markdown and an HTML report in ``<storage>/<study>/report/``; prints the ablation table.

The report is assembled once as a list of sections (a title, a table, a figure, lines, a note)
and rendered twice, so the Markdown and the HTML always say the same thing. Which sections appear
depends on the design: factorial studies get main effects, one-at-a-time studies each arm
against the baseline, both a line per comparison with the verdict its intervals support, Optuna
studies the best configurations and parameter importances.
"""

from __future__ import annotations

import argparse
import html
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import plots, tables
from analysis.verdicts import MIN_SEEDS, span, verdict_line
from analysis.load import StudyNotFound, StudyResults, load_study
from study.spec.schema import PublishedReturn, Reference
from analysis.publish import how_to_open, publish_or_say

REPORT_DIR = "report"


@dataclass(frozen=True)
class Section:
    """One part of the report: a table, a figure file next to the report, or lines of text."""

    title: str
    note: str = ""
    table: pd.DataFrame | None = None
    figure: str | None = None
    lines: tuple[str, ...] = ()


# --- formatting -------------------------------------------------------------------------------


def number(value: float) -> str:
    """4 significant digits; a dash for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}"


def share(value: float) -> str:
    """A rate, two decimals: counts of a few seeds carry no more."""
    return "–" if value is None or math.isnan(value) else f"{value:.2f}"


def with_interval(value: float, low: float, high: float, show: Callable[[float], str] = number) -> str:
    """``value [low, high]``, the interval left out where there is none (one seed)."""
    if math.isnan(low) or math.isnan(high):
        return show(value)
    return f"{show(value)} [{show(low)}, {show(high)}]"


def _column(frame: pd.DataFrame, name: str, show: Callable[[float], str] = number) -> list[str]:
    columns = frame[[name, f"{name}_low", f"{name}_high"]].itertuples(index=False)
    return [with_interval(v, lo, hi, show) for v, lo, hi in columns]


def step(value: float) -> str:
    """An env step as a person reads it, ``16,000``; a dash for none."""
    return "–" if value is None or math.isnan(value) else f"{value:,.0f}"


def format_ablation(table: pd.DataFrame) -> pd.DataFrame:
    """An ``ablation_table`` / ``factor_level_table`` for reading: estimates with their 95% CIs,
    the step returns are read at, explosions of the trials observed to the horizon. Arm tables also
    give the return at the step common to the arm's regime (``tables.shared_returns``), the figure
    MLflow's runs table compares arms by."""
    shared = {}
    if "shared_step" in table:
        shared = {
            "common step (regime, or study)": [step(v) for v in table["shared_step"]],
            "return there [95% t CI]": _column(table, "shared_return_mean"),
        }
    return pd.DataFrame(
        {
            "seeds": [f"{n} ({k} evaluated)" if k < n else str(n) for n, k in table[["n_seeds", "n_returns"]].to_numpy()],
            "return at step": [step(v) for v in table["return_step"]],
            "return mean [95% t CI]": _column(table, "return_mean"),
            "return IQM": [
                "IQM = mean (n < 4)" if is_mean and not math.isnan(v) else number(v)
                for v, is_mean in zip(table["return_iqm"], table["iqm_is_mean"], strict=True)
            ],
            **shared,
            "exploded / observed": [f"{k}/{n}" for k, n in zip(table["exploded"], table["observed"], strict=True)],
            "censored": table["censored"],
            "explosions to step": [step(v) for v in table["horizon"]],
            "explosion rate [95% Wilson CI]": _column(table, "explosion_rate", share),
            "median explosion step": [step(v) for v in table["median_explosion_step"]],
            "env steps": [step(v) for v in table["env_steps"]],
            "outcomes": table["outcomes"],
        },
        index=table.index,
    )


def difference(value: float, low: float, high: float, digits: int | None = None) -> str:
    """A difference as the verdict lines print it (``analysis.verdicts.span``): signed, to the digits its
    interval's width supports; a dash for none."""
    return "–" if math.isnan(value) else span(value, low, high, digits)


def _differences(frame: pd.DataFrame, name: str, digits: int | None = None) -> list[str]:
    columns = frame[[name, f"{name}_low", f"{name}_high"]].itertuples(index=False)
    return [difference(v, lo, hi, digits) for v, lo, hi in columns]


def _pairing(paired: bool, seeds: int) -> str:
    return f"{'paired' if paired else 'unpaired'}, {seeds} seed{'s' * (seeds != 1)}"


def format_comparisons(table: pd.DataFrame) -> pd.DataFrame:
    """``versus_baseline`` or ``main_effects`` for reading: each side's explosions, the differences
    with their 95% CIs and whether they were paired by seed, the step returns are read at."""
    if table.empty:
        return table
    counts = table[["exploded", "observed", "reference_exploded", "reference_observed"]].itertuples(index=False)
    formatted = pd.DataFrame(
        {
            "exploded / observed (vs reference)": [f"{k}/{n} vs {kr}/{nr}" for k, n, kr, nr in counts],
            "censored": table["censored"],
            "explosions to step": [step(v) for v in table["horizon"]],
            "Δ explosion rate [95% CI]": _differences(table, "explosion_diff", digits=2),
            "rate compared": [_pairing(p, n) for p, n in zip(table["explosion_paired"], table["explosion_seeds"], strict=True)],
            "return at step": [step(v) for v in table["return_step"]],
            "Δ return [95% CI]": _differences(table, "return_diff"),
            "return compared": [_pairing(p, n) for p, n in zip(table["return_paired"], table["return_seeds"], strict=True)],
            "verdict": table["verdict"],
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
    """The study's answer in one sentence, from ``tables.ablation_table``: where actor-path Q ran
    away by the horizon and where not (exploded / observed; a censored trial is in neither)."""

    def counts(row: pd.Series) -> str:
        exploded, observed, censored = (int(row[column]) for column in ("exploded", "observed", "censored"))
        return f"{exploded}/{observed}" + (f", {censored} censored" if censored else "")

    parts = []
    # Rows of one horizon together (regimes with budgets of their own have one each), in table order.
    for horizon, group in table.groupby(table["horizon"].fillna(math.inf), sort=False):
        rows = list(group.iterrows())
        exploded = [f"{arm} ({counts(row)})" for arm, row in rows if row["exploded"]]
        bounded = [f"{arm} ({counts(row)})" for arm, row in rows if not row["exploded"] and row["observed"]]
        unobserved = [str(arm) for arm, row in rows if not row["observed"]]
        by = f"by {step(horizon)} env steps" if math.isfinite(horizon) else "(no common horizon)"
        if exploded:
            parts.append(f"Actor-path Q ran away {by} (exploded / observed) in: {', '.join(exploded)}.")
        if bounded:
            parts.append(f"The guard saw no actor-path Q runaway {by} in: {', '.join(bounded)}.")
        if unobserved:
            parts.append(f"No trial observed to that step in: {', '.join(unobserved)}.")
    return " ".join(parts)


ABLATION_NOTE = (
    "Return: each trial's latest evaluation at the last env step every trial of the row reached (return at step), "
    "mean with its Student-t 95% interval over seeds; the IQM (25% trimmed mean) trims nothing below 4 seeds. "
    "The same return at the last step every trial of the arm's regime (of the study, without regimes) reached "
    "compares one arm with another: a trial the guard stopped early sets that step for its regime. "
    "Explosions by one horizon (explosions to step), each regime's own in a study with regimes: a trial stopped before it without exploding is censored, "
    "in neither count; the rate has its Wilson 95% interval."
)


COMPARISON_NOTE = (
    "Differences are arm minus baseline (its regime's, regime/baseline, in a study with regimes), explosions of the trials observed to the pair's horizon, returns at the last "
    "env step both arms' trials reached. Paired: by seed (paired t; Newcombe's paired interval); unpaired where the "
    "seed sets differ (Welch's t; Newcombe's hybrid score)."
)


VERDICTS_NOTE = {
    "one_at_a_time": "Each arm against the baseline (in a study with regimes, its regime's: regime/baseline): explosions of the trials observed to the horizon (a trial stopped "
    "earlier without exploding is censored), returns at the last env step both arms' trials reached; paired by seed "
    "when both arms have the same seeds. A verdict claims only what a 95% interval excludes; under "
    f"{MIN_SEEDS} seeds it says too few.",
    "factorial": "Each factor level against the factor's first level, averaged over the other factors' levels (the "
    "cells): paired by seed and cell; returns at the last env step the two levels' trials reached, explosions "
    "of the trials observed to the horizon. The explosion interval counts each (seed, cell) pair as independent, "
    "though pairs of one seed share its initial weights: with few seeds it can be narrower than the data "
    "support. A verdict claims only what a 95% interval excludes; under "
    f"{MIN_SEEDS} seeds it says too few.",
}


ACTOR_Q_NOTE = (
    "Symlog scale, a panel per arm in the arm's colour: actor-path Q, Q1(s, actor(s)) (solid), beside buffer Q, Q1 on "
    "the replay buffer's actions (train/q1_value, dashed), each the batch mean averaged over seeds; a gap between them "
    "is the actor climbing where the critic extrapolates. Thin lines: each seed's batch max of actor-path Q, which the "
    "guard judges against the grey band, the Q interval; dotted: explosion steps."
)


def verdicts(results: StudyResults) -> Section | None:
    """The "Verdicts" section: a line per arm against the baseline (one-at-a-time) or per factor
    level against its reference (factorial); None for an Optuna study, which has neither."""
    trials, curves = results.trials, results.curves
    missing = tables.missing_baselines(trials["arm"]) if results.design == "one_at_a_time" else []
    named = " or ".join(map(repr, missing))
    if results.design == "one_at_a_time" and tables.no_baseline_ran(trials["arm"]):
        return Section("Verdicts", f"No arm named {named}: nothing to compare the arms against.")
    if results.design == "one_at_a_time":
        comparisons = tables.arm_comparisons(trials, curves)
    elif results.design == "factorial" and results.factors:
        comparisons = list(tables.effect_comparisons(trials, curves, results.factors).values())
    else:
        return None
    if not comparisons:
        return Section("Verdicts", "Nothing to compare: no arm or factor level besides the reference.")
    note = VERDICTS_NOTE[results.design] + (f" No arm named {named}: its regime's arms are not compared." if missing else "")
    return Section("Verdicts", note, lines=tuple(verdict_line(c) for c in comparisons))


def published(figure: PublishedReturn) -> str:
    """A published return as its source gives it: the mean, then the std and the trials where the
    source gives them, then the arm's name there; to 7 significant digits (a trailing zero of the
    source's is not kept: 9792.80 reads 9792.8)."""
    text = f"{figure.mean:.7g}"
    if figure.std is not None:
        text += f" ± {figure.std:.7g}"
    if figure.trials is not None:
        text += f" ({figure.trials} trials)"
    return text + (f", {figure.label}" if figure.label else "")


def comparable(measured_steps: set[float], env: str, references: Sequence[Reference]) -> str:
    """Which published figures hold at an env step (and on the env) the measured returns were read
    at: a return after 1M steps says nothing about one after 100k, so the report says so itself."""
    on = f" on {env}" if env else ""
    if measured_steps:
        sentences = [f"Measured returns are at {' and '.join(step(v) for v in sorted(measured_steps))} env steps{on}."]
    else:
        sentences = [f"No measured return to compare yet{on} (no arm has a common evaluation step)."]
    same = [f"[{i}]" for i, ref in enumerate(references, start=1) if ref.env_steps in measured_steps]
    others = [f"[{i}] ({ref.env_steps:,})" for i, ref in enumerate(references, start=1) if ref.env_steps not in measured_steps]
    if same:
        sentences.append(f"Published at a measured step, the figures to read them against: {', '.join(same)}.")
    if others:
        sentences.append(f"At other steps, not comparable with them as they stand: {', '.join(others)}.")
    envs = sorted({ref.env for ref in references if env and ref.env != env})
    if envs:
        sentences.append(f"The published figures were measured on {', '.join(envs)}, this study on {env}.")
    return " ".join(sentences)


def reference_section(results: StudyResults, arms: pd.DataFrame) -> Section | None:
    """The "Published reference" section: each arm's measured return (at the step the ablation table
    reads it) beside the returns the study file cites for it, each column with its env step and every
    source named; None for a study file without a ``reference``."""
    if not results.reference:
        return None
    table = pd.DataFrame(
        {
            "measured at step": [step(v) for v in arms["return_step"]],
            "measured return mean [95% t CI]": _column(arms, "return_mean"),
            "seeds evaluated": arms["n_returns"],
        },
        index=arms.index,
    )
    for i, ref in enumerate(results.reference, start=1):
        column = f"[{i}] published at {ref.env_steps:,} steps"
        table[column] = [published(ref.returns[arm]) if arm in ref.returns else "–" for arm in arms.index]
    sources = [
        f"[{i}] {ref.env}, {ref.env_steps:,} env steps{f': {ref.measure}' if ref.measure else ''}. Source: {ref.source}"
        for i, ref in enumerate(results.reference, start=1)
    ]
    steps = {float(v) for v in arms["return_step"] if not math.isnan(v)}
    return Section("Published reference", comparable(steps, results.env, results.reference), table, lines=tuple(sources))


def sections(results: StudyResults, arms: pd.DataFrame) -> list[Section]:
    """The report's content for this study's design (figures as file names in the report dir);
    ``arms`` is ``tables.ablation_table(results.trials, results.curves)``, computed once by the caller."""
    trials, curves, factors = results.trials, results.curves, results.factors
    parts = [part for part in [verdicts(results)] if part is not None]
    parts.append(Section("Ablation per arm", ABLATION_NOTE, format_ablation(arms)))
    parts += [part for part in [reference_section(results, arms)] if part is not None]
    if results.design == "factorial" and factors:
        parts.append(Section("Per factor level", table=format_ablation(tables.factor_level_table(trials, curves, factors))))
        parts.append(
            Section(
                "Main effects",
                "Each level against the factor's first level, averaged over the other factors, paired by seed and cell.",
                format_comparisons(tables.main_effects(trials, curves, factors)),
            )
        )
    if results.design == "one_at_a_time" and not tables.missing_baselines(trials["arm"]):
        versus = format_comparisons(tables.versus_baseline(trials, curves))
        parts.append(Section("Each arm against the baseline", COMPARISON_NOTE, versus))
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
        Section("Actor-path Q", ACTOR_Q_NOTE, figure="actor_q.png"),
        Section("Return curves", figure="returns.png"),
        Section("Explosion rate", figure="explosion.png"),
        Section("Trials", table=format_numbers(trials.set_index(["arm", "seed"]))),
    ]
    return parts


def explosion_table(results: StudyResults, arms: pd.DataFrame) -> pd.DataFrame:
    """What the explosion plot shows: per factor level for factorial designs, else per arm."""
    if results.design == "factorial" and results.factors:
        return tables.factor_level_table(results.trials, results.curves, results.factors)
    return arms


# --- rendering --------------------------------------------------------------------------------


def render_markdown(results: StudyResults, summary: str, parts: Sequence[Section]) -> str:
    lines = [f"# Study `{results.name}` ({results.design})", "", _intro(results), "", summary, ""]
    for part in parts:
        lines += [f"## {part.title}", ""]
        if part.lines:
            lines += [f"- {line}" for line in part.lines] + [""]
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
        if part.lines:
            body.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in part.lines) + "</ul>")
        if part.note:
            body.append(f"<p>{html.escape(part.note)}</p>")
        if part.table is not None:
            body.append(f"<div class='table'>{part.table.reset_index().to_html(border=0, index=False)}</div>")
        if part.figure is not None:
            body.append(f'<img src="{part.figure}" alt="{html.escape(part.title)}">')
    # Numbers stay on one line and align right; the first column (the row's name) and the last (a
    # verdict, the outcomes) are text. Wide tables scroll in their box instead of squeezing.
    style = "body{font-family:sans-serif;max-width:1300px;margin:auto} table{border-collapse:collapse;font-size:13px}"
    style += " td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right} td{white-space:nowrap}"
    style += " td:first-child,th:first-child,td:last-child,th:last-child{text-align:left} td:last-child{white-space:normal;min-width:12em}"
    style += " .table{overflow-x:auto} img{max-width:100%} li{margin:4px 0}"
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
    and the ablation table (computed once: the headline, a section and the printout read it)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arms = tables.ablation_table(results.trials, results.curves)
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
    arms_url = publish_or_say(results, path.parent)  # the files above stand without the store
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 40):
        print(format_ablation(arms).to_string())
    print(f"\nreport: {path}\n        {path.with_suffix('.html')}")
    if results.mlflow is not None:
        print("\n".join(how_to_open(results.mlflow.tracking_uri, arms_url)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
