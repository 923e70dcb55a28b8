"""`detector evaluate`: metrics, curves, plots, report, CLI, and the analysis helpers."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.config import DAY_MS
from detector.engine import Detector
from detector.evaluate import (
    EvaluationError,
    ForestParams,
    add_parser,
    budget_threshold,
    coverage,
    entity_history,
    evaluate_files,
    feature_contributions,
    hour_of_week_share,
    labelled_rows,
    load_dataset,
    load_decisions,
    load_labels,
    parse_time,
    render_report,
    run,
    run_model,
    summarize,
    sweep_forests,
    top_shares,
    with_thresholds,
)
from detector.metrics import (
    Outcome,
    operating_curve,
    pr_auc,
    pr_curve,
    quality,
    roc_auc,
    roc_curve,
    since,
)
from detector.model import load_model
from detector.replay import replay
from detector.train import KIND_FEATURES
from tests.conftest import START_MS

PNG = b"\x89PNG\r\n\x1a\n"


def _o(eid: str, risk: float, label: str = "normal", action: str = "allow",
       campaign: str | None = None, scenario: str | None = None, ts: int = START_MS,
       entity: str = "user:x") -> Outcome:
    return Outcome(eid, entity, ts, action, risk, label, scenario, campaign)


# ------------------------------------------------------------------------ inputs
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1767225600000", 1_767_225_600_000),
        (" 1767225600000 ", 1_767_225_600_000),
        ("2026-01-01T00:00:00Z", 1_767_225_600_000),
        ("2026-01-01T01:00:00+01:00", 1_767_225_600_000),
        ("2026-01-01T00:00:00", 1_767_225_600_000),  # no zone: UTC
        ("2026-01-02", 1_767_225_600_000 + DAY_MS),
    ],
)
def test_parse_time_accepts_ms_and_iso(text: str, expected: int) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "-5", "2026-13-01", "12:00"])
def test_parse_time_rejects_garbage(text: str) -> None:
    with pytest.raises(EvaluationError):
        parse_time(text)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"label":"normal"}', "missing event_id"),
        (b'{"event_id":"e1","label":"weird"}', "label must be one of"),
        (b'{"event_id":"e1","label":"attack","scenario":"x"}', "without a campaign"),
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
    ],
)
def test_load_labels_rejects_bad_records(tmp_path: Path, line: bytes, message: str) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b'{"event_id":"e0","label":"normal"}\n' + line + b"\n")
    with pytest.raises(EvaluationError, match=message) as info:
        load_labels(path)
    assert "labels.jsonl" in str(info.value)


def test_load_decisions_needs_the_contract_fields(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"event_id":"e1","entity":"a","action":"allow"}\n')
    with pytest.raises(EvaluationError, match="missing risk"):
        load_decisions(path)
    path.write_bytes(b'{"event_id":"e1","entity":"a","action":"block","risk":0.1}\n')
    with pytest.raises(EvaluationError, match="unknown action"):
        load_decisions(path)
    for risk in (b'"0.5"', b"true", b"1.5", b"-0.1"):
        path.write_bytes(b'{"event_id":"e1","entity":"a","action":"allow","risk":' + risk + b"}")
        with pytest.raises(EvaluationError, match="risk must be a number"):
            load_decisions(path)


def test_coverage_counts_attacks_without_decision() -> None:
    cov = coverage(
        [{"event_id": "a"}, {"event_id": "z"}],
        {"a": {"label": "normal"}, "b": {"label": "attack"}, "c": {"label": "benign"}},
    )
    assert cov == {"decisions": 2, "labels": 3, "decisions_without_label": 1,
                   "attack_labels_without_decision": 1}


# ----------------------------------------------------------------------- metrics
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=2, max_size=60))
def test_roc_curve_area_equals_roc_auc(pairs: list[tuple[bool, int]]) -> None:
    y = np.array([int(a) for a, _ in pairs])
    s = np.array([b / 6 for _, b in pairs])
    auc = roc_auc(y, s)
    fpr, tpr, _ = roc_curve(y, s)
    if auc is None:
        assert len(fpr) == 0
        return
    assert fpr[0] == 0.0 and tpr[0] == 0.0 and fpr[-1] == 1.0 and tpr[-1] == 1.0
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert float(np.trapezoid(tpr, fpr)) == pytest.approx(auc)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=1, max_size=60))
def test_pr_curve_steps_sum_to_average_precision(pairs: list[tuple[bool, int]]) -> None:
    y = np.array([int(a) for a, _ in pairs])
    s = np.array([b / 6 for _, b in pairs])
    ap = pr_auc(y, s)
    precision, recall, _ = pr_curve(y, s)
    if ap is None:
        assert len(recall) == 0
        return
    assert recall[-1] == 1.0
    assert float(np.sum(np.diff(np.r_[0.0, recall]) * precision)) == pytest.approx(ap)


def test_operating_curve_is_monotonic_and_counts_campaigns() -> None:
    outs = [
        _o("n1", 0.1), _o("n2", 0.5), _o("n3", 0.95, ts=START_MS + DAY_MS),
        _o("a1", 0.3, "attack", campaign="c1", scenario="s"),
        _o("a2", 0.99, "attack", campaign="c1", scenario="s"),
        _o("b1", 0.6, "attack", campaign="c2", scenario="s"),
    ]
    curve = operating_curve(outs, [0.0, 0.4, 0.55, 0.9, 0.995])
    assert [p.threshold for p in curve] == [0.995, 0.9, 0.55, 0.4, 0.0]
    assert [p.campaign_recall for p in curve] == [0.0, 0.5, 1.0, 1.0, 1.0]
    alerts = [p.alerts_per_day for p in curve]
    assert alerts == sorted(alerts)
    # 1 day span; entity-days: (user:x, day 0) and (user:x, day 1)
    assert curve[1].false_alerts_per_100_entity_days == pytest.approx(50.0)  # n3 only
    default = operating_curve(outs)
    assert {0.99, 0.6} <= {p.threshold for p in default}


def test_quality_appended_fields_and_benign_rates() -> None:
    outs = [
        _o("n1", 0.1),
        _o("n2", 0.9, action="step_up", entity="user:y"),
        _o("a1", 0.99, "attack", "revoke", campaign="c1", scenario="ato"),
        _o("a2", 0.2, "attack", campaign="c2", scenario="ato", ts=START_MS + DAY_MS),
        _o("t1", 0.5, "benign", "step_up", campaign="t", scenario="travel", entity="user:z"),
        _o("t2", 0.4, "benign", campaign="t", scenario="travel", entity="user:z",
           ts=START_MS + DAY_MS),
    ]
    rep = quality(outs)
    assert (rep.campaigns, rep.campaigns_caught) == (2, 1)
    assert (rep.false_step_up, rep.false_revoke) == (2, 0)
    assert rep.actions == {"allow": 3, "revoke": 1, "step_up": 2}
    assert sum(rep.alerts_by_day.values()) == 3
    travel = rep.benign["travel"]
    assert travel["entity_days"] == 2 and travel["campaigns_with_step_up"] == 1
    assert travel["step_up_per_100_entity_days"] == pytest.approx(50.0)
    # The original keys are a contract.
    for key in ("roc_auc", "pr_auc", "false_step_up_per_100_entity_days",
                "false_revoke_per_1000_user_days", "scenarios", "benign", "alerts_per_day"):
        assert key in rep.to_dict()


def test_since_drops_the_warmup() -> None:
    outs = [_o("a", 0.1, ts=10), _o("b", 0.1, ts=20)]
    assert [o.event_id for o in since(outs, 15)] == ["b"]


def test_render_report_has_the_tables_and_plots() -> None:
    outs = [_o("n", 0.1), _o("a", 0.99, "attack", "revoke", "c1", "account_takeover")]
    text = render_report(summarize(outs), {"risk": "risk.png"})
    assert "| account_takeover | 1 | 1 | 1.00 | 1.0 |" in text
    assert "![Risk distributions of normal, benign and attack events](risk.png)" in text


# ------------------------------------------------------------ end to end + CLI
@pytest.fixture(scope="module")
def decisions_file(
    small_dataset: Path, small_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("eval") / "decisions.jsonl"
    with out.open("wb") as fh:
        replay(Detector(load_model(small_model_dir)), [small_dataset / "events.jsonl"], fh, None)
    return out


def _args(**kw: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="detector")
    add_parser(parser.add_subparsers(dest="command", required=True))
    argv = ["evaluate"]
    for k, v in kw.items():
        if v is not None:
            argv += [f"--{k.replace('_', '-')}", v]
    return parser.parse_args(argv)


def test_cli_writes_metrics_plots_and_report(
    decisions_file: Path, small_dataset: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "eval"
    args = _args(decisions=str(decisions_file), labels=str(small_dataset / "labels.jsonl"),
                 out=str(out), warmup_until="2026-01-05T00:00:00Z")
    assert args.func is run
    assert run(args) == 0
    headline = orjson.loads(capsys.readouterr().out)
    assert headline["campaigns"] > 0 and 0.5 < headline["roc_auc"] <= 1.0
    metrics = orjson.loads((out / "metrics.json").read_bytes())
    assert metrics["setup"]["warmup_until_ms"] == START_MS + 4 * DAY_MS
    assert metrics["coverage"]["attack_labels_without_decision"] == 0
    assert metrics["operating_curve"] and metrics["scenarios"]
    for png in ("roc_pr.png", "risk.png", "recall_alerts.png"):
        assert (out / png).read_bytes()[:8] == PNG
    report = (out / "report.md").read_text()
    assert report.startswith("# Detection quality") and "](recall_alerts.png)" in report


def test_warmup_scores_fewer_events(
    decisions_file: Path, small_dataset: Path, tmp_path: Path
) -> None:
    labels = small_dataset / "labels.jsonl"
    full = evaluate_files(decisions_file, labels, tmp_path / "all")
    late = evaluate_files(decisions_file, labels, tmp_path / "late", START_MS + 4 * DAY_MS)
    assert late["events"] < full["events"]
    assert late["campaigns"] == full["campaigns"]  # attacks start on day 4


@pytest.mark.parametrize(
    "bad",
    [
        {"decisions": "missing.jsonl"},
        {"warmup_until": "soon"},
        {"warmup_until": "2100-01-01"},  # nothing left to score
    ],
)
def test_cli_errors_exit_2(
    decisions_file: Path, small_dataset: Path, tmp_path: Path, bad: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    kw: dict[str, str | None] = {
        "decisions": str(decisions_file),
        "labels": str(small_dataset / "labels.jsonl"),
        "out": str(tmp_path / "o"),
    }
    kw.update({k: (str(tmp_path / v) if k == "decisions" else v) for k, v in bad.items()})
    assert run(_args(**kw)) == 2
    assert "detector evaluate: error:" in capsys.readouterr().err


# ------------------------------------------------------------- analysis helpers
@pytest.mark.parametrize(
    ("risks", "days", "budget", "expected"),
    [
        ([0.1, 0.5, 0.9, 0.95, 0.99], 100, 2, 0.95),
        ([0.1, 0.5, 0.9, 0.95, 0.99], 100, 0, float(np.nextafter(0.99, 1.0))),
        ([0.1, 0.5, 0.9, 0.9, 0.99], 100, 2, float(np.nextafter(0.9, 1.0))),  # tie: stay under
        ([0.1, 0.5], 100, 50, 0.1),
        ([], 100, 1, 1.0),
    ],
)
def test_budget_threshold(risks: list[float], days: float, budget: float,
                          expected: float) -> None:
    r = np.array(risks)
    t = budget_threshold(r, days, 100, budget)
    assert t == pytest.approx(expected)
    assert int((r >= t).sum()) <= max(budget * days / 100, 0) or len(r) == 0


def test_with_thresholds_validates(small_model_dir: Path) -> None:
    m = load_model(small_model_dir)
    assert with_thresholds(m, 0.9, 0.99).thresholds.revoke == 0.99
    with pytest.raises(ValueError):
        with_thresholds(m, 0.99, 0.9)


def test_explain_helpers_on_a_signal(small_dataset: Path, small_model_dir: Path) -> None:
    ds = load_dataset(small_dataset)
    model = load_model(small_model_dir)
    decisions, state = run_model(model, ds.events, keep_features=True)
    signal = next(d for d in decisions if d.action.value != "allow" and d.model_risk > 0.99)
    contrib = feature_contributions(model, signal)
    assert list(contrib["feature"]) == sorted(
        contrib["feature"], key=lambda f: (-float(contrib.set_index("feature")["risk_drop"][f]), f)
    )
    assert set(contrib["feature"]) == set(model.kinds[signal.event.kind].features)
    hist = entity_history(decisions, signal.event.entity_key, signal.event.ts_ms, 12)
    assert signal.event.event_id in set(hist["event_id"])
    b = state.baselines[signal.event.entity_key]
    assert hour_of_week_share(b).sum() == pytest.approx(1.0)
    shares = top_shares(b, "service")
    assert list(shares.values()) == sorted(shares.values(), reverse=True)


def test_labelled_rows_and_sweep(small_dataset: Path, small_model_dir: Path) -> None:
    ds = load_dataset(small_dataset)
    model = load_model(small_model_dir).without_forests()
    decisions, _ = run_model(model, ds.events, keep_features=True)
    start = ds.start_ms + 4 * DAY_MS
    train = labelled_rows(decisions, ds.labels, None)
    test = labelled_rows(decisions, ds.labels, start)
    assert sum(int(r.y.sum()) for r in test.values()) > 0
    grid = [ForestParams(n_estimators=10, max_samples=64, name="small"),
            ForestParams(n_estimators=10, max_samples=64, features=("hour_rarity",
                                                                    "country_rarity"))]
    df = sweep_forests(train, test, grid, KIND_FEATURES, seed=1)
    assert list(df["name"]) == ["small", "p1"]
    assert df["roc_auc"].between(0.0, 1.0).all()
    with pytest.raises(ValueError, match="keep_features"):
        labelled_rows(run_model(model, ds.events[:5])[0], ds.labels)
