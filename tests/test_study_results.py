"""The results contract: one trial summary from a reported history, parameters that read back."""

from __future__ import annotations

import math

from study import metrics as m
from study import results as r
from study.results import TrialSummary, decode_param, encode_param, summarize, summary_from_metrics


def test_a_summary_reads_the_history_and_ignores_nan_and_infinite_values() -> None:
    history = {
        m.EVAL_RETURN: [math.nan, -900.0, -300.0, -400.0],
        m.ACTOR_Q_MAX: [1.0, 7.0, math.inf, 3.0],
        m.ACTOR_Q_MIN: [-5.0, -2_000.0, -math.inf],
        m.Q_LOW: [-1_600.0],
        m.Q_HIGH: [0.0],
    }
    summary = summarize(history, env_steps=1_500, stop_reason="q_explosion", stop_step=1_500)
    assert (summary.final_return, summary.best_return) == (-400.0, -300.0)
    assert (summary.max_actor_q, summary.min_actor_q) == (7.0, -2_000.0)
    assert (summary.q_low, summary.q_high) == (-1_600.0, 0.0) and math.isnan(summary.final_return_std)
    assert summary.as_json()["final_return_std"] is None and summary.as_json()["stop_step"] == 1_500


def test_a_summary_survives_mlflow_metrics_and_tags() -> None:
    summary = summarize({m.EVAL_RETURN: [-200.0], m.ACTOR_Q_MAX: [3.0]}, env_steps=2_000, stop_reason="asha",
                        stop_step=2_000)
    read = summary_from_metrics(summary.metrics(), stop_reason="asha", stop_step="2000")
    assert isinstance(read, TrialSummary) and read.as_json() == summary.as_json()
    assert summary_from_metrics({}, stop_reason=None, stop_step=None) is None  # died before its summary


def test_parameters_read_back_as_the_values_they_were() -> None:
    for value in (None, True, False, 0.01, 3, "coupled", [256, 256]):
        assert decode_param(encode_param(value)) == value
    assert decode_param(encode_param((64, 64))) == [64, 64]
    assert decode_param("not json") == "not json"
    # Strings as themselves, so the MLflow UI filters on params.weight_decay_mode = 'coupled'.
    assert encode_param("coupled") == "coupled" and encode_param(None) == "null"


def test_parameters_from_a_store_written_with_str_read_back_as_values() -> None:
    assert [decode_param(text) for text in ("None", "True", "False", "0.01")] == [None, True, False, 0.01]


def test_a_reported_history_ends_as_its_last_written_row_says_and_keeps_the_later_report_of_each_step() -> None:
    # A first attempt reached 400; its retry, from the checkpoint at 200, stopped at 300.
    rows = [{m.ENV_STEPS: step, m.EVAL_RETURN: ret, r.STOP_REASON: reason}
            for step, ret, reason in [(100, -9.0, ""), (200, -8.0, ""), (300, -7.0, ""), (400, -6.0, ""), (300, -6.5, "q_explosion")]]  # fmt: skip
    reported = r.reported_history(rows, errored=False)
    assert (reported.stop_reason, reported.last[m.ENV_STEPS]) == ("q_explosion", 300)
    assert [row[m.ENV_STEPS] for row in reported.steps] == [100, 200, 300, 400]
    assert reported.series([m.EVAL_RETURN, m.ACTOR_Q_MAX]) == {m.EVAL_RETURN: [-9.0, -8.0, -6.5, -6.0]}


def test_a_trial_that_errored_is_an_error_unless_its_last_row_says_it_ended() -> None:
    running, ended = {m.ENV_STEPS: 100, r.STOP_REASON: ""}, {m.ENV_STEPS: 200, r.STOP_REASON: "completed"}
    assert r.reported_history([running], errored=True).stop_reason == "error"
    assert r.reported_history([running, ended], errored=True).stop_reason == "completed"
    assert r.reported_history([], errored=True).stop_reason == "error"
    assert r.reported_history([running], errored=False).stop_reason is None  # unfinished
    assert r.reported_history([], errored=False).last == {}


def test_a_reported_series_is_nan_where_a_row_lacks_the_key() -> None:
    rows = [{m.ENV_STEPS: 100}, {m.ENV_STEPS: 200, m.EVAL_RETURN: 5.0}, {m.ENV_STEPS: 300, m.EVAL_RETURN: None}]
    (values,) = r.reported_history(rows, errored=False).series([m.EVAL_RETURN]).values()
    assert math.isnan(values[0]) and values[1] == 5.0 and math.isnan(values[2])


def test_a_reported_history_read_from_a_dataframe_treats_nan_reasons_as_none_and_equal_steps_as_one() -> None:
    # pandas fills a missing reason with NaN and may read a step as 100.0 where another row says 100.
    rows = [{m.ENV_STEPS: 100, r.STOP_REASON: math.nan, m.EVAL_RETURN: 1.0}, {m.ENV_STEPS: math.nan, r.STOP_REASON: math.nan},
            {m.ENV_STEPS: 100.0, r.STOP_REASON: math.nan, m.EVAL_RETURN: 2.0}]  # fmt: skip
    reported = r.reported_history(rows, errored=False)
    assert reported.stop_reason is None
    assert reported.series([m.EVAL_RETURN]) == {m.EVAL_RETURN: [2.0]}
    assert r.reported_history(rows, errored=True).stop_reason == "error"
