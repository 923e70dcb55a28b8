"""``detector evaluate``: measured detection quality, with plots and a report.

Reads the decisions written by ``detector replay`` and a labels file (the
generator's ``labels.jsonl`` or any JSONL of ``{"event_id", "label",
"scenario", "campaign"}``), joins them by event id, and writes to ``--out``:

* ``metrics.json``: every figure of :func:`detector.metrics.quality` (event
  ROC-AUC and PR-AUC on ``risk``, recall and events-to-detect per scenario,
  false ``step_up``/``revoke`` rates per entity-day and per user-day, the
  benign look-alikes on their own, alert volume per day), the coverage of
  the join, and the operating curve (recall against alerts per day);
* ``roc_pr.png``, ``risk.png``, ``recall_alerts.png`` (matplotlib, Agg);
* ``report.md``: the figures and the plots together.

The second half of the module holds the analysis helpers that the notebooks
(``notebooks/``) and the peer comparison (``bench/compare_peers.py``) share:
run a model over events, collect labelled feature rows, sweep forest
settings, pick thresholds for an alert budget, explain a decision. There is
no detection logic here: every decision still comes from
:class:`detector.engine.Detector`.

The entry point is :func:`run`; the lead wires :func:`add_parser` into the
``detector`` command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import orjson

from detector.baseline import Baseline, hour_of_week
from detector.config import DAY_MS, HOUR_MS
from detector.engine import Decision, Detector, EngineState
from detector.events import Event, EventKind
from detector.features import FEATURE_INDEX, FEATURE_NAMES
from detector.metrics import (
    OperatingPoint,
    Outcome,
    join,
    operating_curve,
    pr_curve,
    quality,
    roc_curve,
    since,
)
from detector.model import Model
from detector.policy import Thresholds
from detector.replay import Reject, batched_events, iter_lines, parse_lines

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

LABELS: Final = ("normal", "attack", "benign")
#: Files written by :func:`evaluate_files`, relative to the output directory.
PLOT_FILES: Final = {
    "roc_pr": "roc_pr.png",
    "risk": "risk.png",
    "recall_alerts": "recall_alerts.png",
}
# Risks are percentiles; the interesting part is the last few nines. Plots use
# the "tail level" -log10(1 - risk), floored so that risk 1.0 stays finite.
_TAIL_FLOOR: Final = 1e-7


class EvaluationError(ValueError):
    """An input file is missing or malformed; the message names file and line."""


# =========================================================================== input
def parse_time(text: str) -> int:
    """Return epoch milliseconds from epoch milliseconds or an ISO 8601 time.

    A time without a zone is taken as UTC.

    Examples
    --------
    >>> parse_time("1767225600000")
    1767225600000
    >>> parse_time("2026-01-01T00:00:00Z")
    1767225600000
    >>> parse_time("2026-01-04")
    1767484800000
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise EvaluationError(f"not epoch ms or ISO 8601: {text!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def read_jsonl(
    path: Path, progress: Callable[[int], None] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSONL file; blank lines are skipped.

    Raises :class:`EvaluationError` naming the file and line of a line that
    is not a JSON object. ``progress`` is called with the bytes read so far.
    """
    done = 0
    with path.open("rb") as fh:
        for n, line in enumerate(fh, start=1):
            done += len(line)
            if progress is not None and n % 20_000 == 0:
                progress(done)
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise EvaluationError(f"{path}:{n}: not valid JSON") from exc
            if not isinstance(rec, dict):
                raise EvaluationError(f"{path}:{n}: not a JSON object")
            yield rec
    if progress is not None:
        progress(done)


def load_labels(path: Path) -> dict[str, dict[str, Any]]:
    """Return label records by event id, validated.

    Every record needs a string ``event_id`` and a ``label`` in
    ``normal``/``attack``/``benign``; attack and benign records need a
    ``campaign`` (recall is counted per campaign).
    """
    out: dict[str, dict[str, Any]] = {}
    for n, rec in enumerate(read_jsonl(path), start=1):
        eid = rec.get("event_id")
        label = rec.get("label")
        if not isinstance(eid, str):
            raise EvaluationError(f"{path}: record {n}: missing event_id")
        if label not in LABELS:
            raise EvaluationError(f"{path}: record {n}: label must be one of {LABELS}")
        if label != "normal" and not isinstance(rec.get("campaign"), str):
            raise EvaluationError(f"{path}: record {n}: {label} event without a campaign")
        out[eid] = rec
    return out


_DECISION_FIELDS: Final = ("event_id", "entity", "action", "risk")


def load_decisions(
    path: Path, progress: Callable[[int], None] | None = None
) -> list[dict[str, Any]]:
    """Return the decision records of a ``detector replay`` output, validated."""
    out = []
    for n, rec in enumerate(read_jsonl(path, progress), start=1):
        missing = [f for f in _DECISION_FIELDS if f not in rec]
        if missing:
            raise EvaluationError(f"{path}: record {n}: missing {', '.join(missing)}")
        if rec["action"] not in ("allow", "step_up", "revoke"):
            raise EvaluationError(f"{path}: record {n}: unknown action {rec['action']!r}")
        risk = rec["risk"]
        if type(risk) not in (int, float) or not 0.0 <= risk <= 1.0:
            raise EvaluationError(f"{path}: record {n}: risk must be a number in [0, 1]")
        out.append(rec)
    return out


# ========================================================================= metrics
def coverage(
    decisions: Sequence[Mapping[str, Any]], labels: Mapping[str, Mapping[str, Any]]
) -> dict[str, int]:
    """Return how well decisions and labels match.

    An attack event without a decision (rejected by the parser, or missing
    from the file) cannot be caught, so it is counted, never ignored.

    Examples
    --------
    >>> coverage([{"event_id": "a"}], {"b": {"label": "attack"}})["attack_labels_without_decision"]
    1
    """
    ids = {d["event_id"] for d in decisions}
    return {
        "decisions": len(decisions),
        "labels": len(labels),
        "decisions_without_label": sum(1 for i in ids if i not in labels),
        "attack_labels_without_decision": sum(
            1 for i, lab in labels.items() if lab.get("label") == "attack" and i not in ids
        ),
    }


def summarize(outcomes: Sequence[Outcome], curve_points: int = 60) -> dict[str, Any]:
    """Return the metrics dict written to ``metrics.json``.

    It is :meth:`QualityReport.to_dict` plus the operating curve, thinned to
    about ``curve_points`` points (always keeping every change of recall).
    """
    out = quality(list(outcomes)).to_dict()
    curve = operating_curve(outcomes)
    out["operating_curve"] = [dataclasses.asdict(p) for p in _thin(curve, curve_points)]
    return out


def _thin(curve: Sequence[OperatingPoint], n: int) -> list[OperatingPoint]:
    if len(curve) <= n:
        return list(curve)
    keep = set(np.linspace(0, len(curve) - 1, n).round().astype(int).tolist())
    for i in range(1, len(curve)):
        if curve[i].campaign_recall != curve[i - 1].campaign_recall:
            keep.add(i)
    return [curve[i] for i in sorted(keep)]


# =========================================================================== plots
def tail_level(risk: np.ndarray) -> np.ndarray:
    """Return ``-log10(1 - risk)``: 2 for the top 1 %, 3 for the top 0.1 %, ...

    Examples
    --------
    >>> tail_level(np.array([0.0, 0.99, 1.0])).round(3).tolist()
    [-0.0, 2.0, 7.0]
    """
    result: np.ndarray = -np.log10(np.maximum(1.0 - risk, _TAIL_FLOOR))
    return result


def _figure(ncols: int = 1, width: float = 6.0) -> tuple[Figure, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    # A bare Figure (no pyplot): no global state, nothing left open.
    fig = Figure(figsize=(width * ncols, 4.5), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def plot_roc_pr(outcomes: Sequence[Outcome], title: str = "") -> Figure:
    """Return a figure of the ROC curve (linear and log false-positive axis) and PR curve."""
    y, s = _arrays(outcomes)
    fig, (ax_roc, ax_log, ax_pr) = _figure(3, 4.5)
    fpr, tpr, _ = roc_curve(y, s)
    precision, recall, _ = pr_curve(y, s)
    if len(fpr):
        ax_roc.plot(fpr, tpr, drawstyle="steps-post")
        ax_log.plot(np.maximum(fpr, 1e-6), tpr, drawstyle="steps-post")
    ax_roc.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax_log.set(xscale="log", xlabel="false positive rate (log)", ylabel="true positive rate",
               title="ROC, low false-positive end")
    if len(recall):
        ax_pr.plot(recall, precision, drawstyle="steps-post")
    ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    if title:
        fig.suptitle(title)
    return fig


def plot_risk(outcomes: Sequence[Outcome], title: str = "") -> Figure:
    """Return a figure of the risk distributions of normal, benign and attack events."""
    fig, (ax,) = _figure(1, 8.0)
    bins = np.linspace(0.0, -math.log10(_TAIL_FLOOR), 50)
    for label, color in (("normal", "tab:blue"), ("benign", "tab:green"),
                         ("attack", "tab:red")):
        r = np.array([o.risk for o in outcomes if o.label == label], dtype=np.float64)
        if len(r):
            ax.hist(tail_level(r), bins=bins, density=True, histtype="step", linewidth=1.6,
                    color=color, label=f"{label} ({len(r):,})")
    ax.set(yscale="log", xlabel="risk tail level, -log10(1 - risk): 3 = top 0.1 %",
           ylabel="density", title=title or "risk: normal vs attack")
    ax.legend()
    return fig


def plot_recall_alerts(
    outcomes: Sequence[Outcome], extra: Mapping[str, Sequence[OperatingPoint]] | None = None,
    title: str = "",
) -> Figure:
    """Return a figure of campaign recall against alerts per day as the threshold moves.

    The policy's actual operating point (its step_up/revoke actions) is
    marked; ``extra`` adds other curves (peers) to the same axes.
    """
    fig, (ax,) = _figure(1, 8.0)
    curves: dict[str, Sequence[OperatingPoint]] = {"this run": operating_curve(outcomes)}
    curves.update(extra or {})
    for name, curve in curves.items():
        pts = [p for p in curve if p.alerts_per_day > 0]
        if pts:
            ax.plot([p.alerts_per_day for p in pts], [p.campaign_recall for p in pts],
                    drawstyle="steps-post", label=name)
    rep = quality(list(outcomes))
    if rep.campaigns and rep.alerts_per_day > 0:
        ax.scatter([rep.alerts_per_day], [rep.campaigns_caught / rep.campaigns], color="black",
                   zorder=3, label="policy (step_up + revoke)")
    ax.set(xscale="log", xlabel="alerts per day (all entities)", ylabel="campaign recall",
           ylim=(0, 1.02), title=title or "recall against alert volume")
    ax.legend(loc="lower right")
    return fig


def _arrays(outcomes: Sequence[Outcome]) -> tuple[np.ndarray, np.ndarray]:
    y = np.array([1 if o.label == "attack" else 0 for o in outcomes], dtype=np.int64)
    s = np.array([o.risk for o in outcomes], dtype=np.float64)
    return y, s


def write_plots(outcomes: Sequence[Outcome], out_dir: Path) -> dict[str, Path]:
    """Write the PNG plots into ``out_dir``; return their paths by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = {
        "roc_pr": plot_roc_pr(outcomes),
        "risk": plot_risk(outcomes),
        "recall_alerts": plot_recall_alerts(outcomes),
    }
    paths = {}
    for name, fig in figs.items():
        path = out_dir / PLOT_FILES[name]
        fig.savefig(path, dpi=100)
        paths[name] = path
    return paths


# ========================================================================== report
def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def render_report(metrics: Mapping[str, Any], plots: Mapping[str, str] | None = None,
                  title: str = "Detection quality") -> str:
    """Return the Markdown report of a metrics dict (from :func:`summarize`).

    Examples
    --------
    >>> o = [Outcome("a", "user:x", 0, "allow", 0.1, "normal", None, None),
    ...      Outcome("b", "user:x", 1, "revoke", 0.99, "attack", "ato", "c1")]
    >>> print(render_report(summarize(o)).splitlines()[0])
    # Detection quality
    """
    m = metrics
    lines = [f"# {title}", ""]
    setup = m.get("setup")
    if setup:
        lines += ["| input | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in setup.items()]
        lines.append("")
    lines += [
        "## Summary",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| events scored | {m['events']:,} ({m['attack_events']:,} attack) |",
        f"| event ROC-AUC / PR-AUC on `risk` | {_fmt(m['roc_auc'])} / {_fmt(m['pr_auc'])} |",
        f"| attack campaigns caught | {m.get('campaigns_caught', 0)} of {m.get('campaigns', 0)} |",
        f"| false `step_up` per 100 entity-days | {_fmt(m['false_step_up_per_100_entity_days'], 2)}"
        f" ({_fmt(m['false_step_up_per_100_user_days'], 2)} per 100 user-days) |",
        f"| false `revoke` per 1,000 entity-days | "
        f"{_fmt(m['false_revoke_per_1000_entity_days'], 2)}"
        f" ({_fmt(m['false_revoke_per_1000_user_days'], 2)} per 1,000 user-days) |",
        f"| entity-days / user-days | {m['entity_days']:,.0f} / {m['user_days']:,.0f} |",
        f"| alerts per day | {_fmt(m['alerts_per_day'], 1)} |",
        "",
        "## Attack scenarios",
        "",
        "A campaign is caught when any of its events got `step_up` or `revoke`; time to "
        "detect is the number of the campaign's events up to and including the first action.",
        "",
        "| scenario | campaigns | caught | recall | median events to detect |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, s in m["scenarios"].items():
        lines.append(f"| {name} | {s['campaigns']} | {s['caught']} | {s['recall']:.2f} | "
                     f"{_fmt(s['median_events_to_detect'], 1)} |")
    if m["benign"]:
        lines += [
            "",
            "## Benign look-alikes on their own",
            "",
            "| scenario | campaigns | events | step_up | revoke | step_up per 100 entity-days "
            "| revoke per 1,000 entity-days |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, b in m["benign"].items():
            lines.append(
                f"| {name} | {b['campaigns']} | {b['events']} | {b['step_up']} | {b['revoke']} | "
                f"{_fmt(b.get('step_up_per_100_entity_days'), 2)} | "
                f"{_fmt(b.get('revoke_per_1000_entity_days'), 2)} |"
            )
    by_day = m.get("alerts_by_day") or {}
    if by_day:
        lines += ["", "## Alerts per day", "", "| day (UTC) | step_up + revoke |",
                  "| --- | ---: |"]
        lines += [f"| {d} | {n} |" for d, n in by_day.items()]
    cov = m.get("coverage")
    if cov:
        lines += ["", "## Join", "", "| count | value |", "| --- | ---: |"]
        lines += [f"| {k.replace('_', ' ')} | {v:,} |" for k, v in cov.items()]
    if plots:
        lines += ["", "## Plots", ""]
        captions = {
            "roc_pr": "ROC and precision-recall curves of event risk",
            "risk": "Risk distributions of normal, benign and attack events",
            "recall_alerts": "Campaign recall against alerts per day",
        }
        for name, path in plots.items():
            lines += [f"![{captions.get(name, name)}]({path})", ""]
    return "\n".join(lines).rstrip() + "\n"


# ============================================================================= run
def evaluate_files(
    decisions_path: Path,
    labels_path: Path,
    out_dir: Path,
    warmup_until_ms: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a decisions file against labels; write metrics, plots and report.

    Parameters
    ----------
    decisions_path : JSONL written by ``detector replay``
    labels_path : JSONL of ``{"event_id", "label", "scenario", "campaign"}``
    out_dir : where ``metrics.json``, the PNGs and ``report.md`` go (created)
    warmup_until_ms : score only events at or after this time (baselines
        need history; the warm-up is replayed but not scored)
    progress : called with (bytes read, total bytes) while reading decisions

    Returns
    -------
    dict
        The metrics written to ``metrics.json``.
    """
    for p in (decisions_path, labels_path):
        if not p.is_file():
            raise EvaluationError(f"no such file: {p}")
    total = decisions_path.stat().st_size
    labels = load_labels(labels_path)
    decisions = load_decisions(
        decisions_path, None if progress is None else (lambda n: progress(n, total))
    )
    outcomes = join(decisions, labels)
    if warmup_until_ms is not None:
        outcomes = since(outcomes, warmup_until_ms)
    if not outcomes:
        raise EvaluationError("no decisions to evaluate (after the warm-up)")
    metrics = summarize(outcomes)
    metrics["coverage"] = coverage(decisions, labels)
    logger.info(
        "evaluate decisions=%d labels=%d scored=%d attack_labels_without_decision=%d",
        len(decisions), len(labels), len(outcomes),
        metrics["coverage"]["attack_labels_without_decision"],
    )
    metrics["setup"] = {
        "decisions": str(decisions_path),
        "labels": str(labels_path),
        "warmup_until_ms": warmup_until_ms,
        "first_scored_ts": datetime.fromtimestamp(min(o.ts for o in outcomes) / 1000, UTC)
        .isoformat(timespec="seconds"),
        "last_scored_ts": datetime.fromtimestamp(max(o.ts for o in outcomes) / 1000, UTC)
        .isoformat(timespec="seconds"),
        "model_versions": ", ".join(sorted({str(d.get("model_version")) for d in decisions})),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(outcomes, out_dir)
    metrics["plots"] = {k: p.name for k, p in plots.items()}
    (out_dir / "metrics.json").write_bytes(
        orjson.dumps(metrics, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
    )
    (out_dir / "report.md").write_text(render_report(metrics, metrics["plots"]))
    return metrics


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command to a ``detector`` sub-parser set.

    Examples
    --------
    >>> p = argparse.ArgumentParser(prog="detector")
    >>> e = add_parser(p.add_subparsers(dest="command"))
    >>> p.parse_args(["evaluate", "--decisions", "d", "--labels", "l", "--out", "o"]).func is run
    True
    """
    e: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate",
        help="measure detection quality of replay decisions against labels",
        description="Join replay decisions with labels; write metrics.json, PNG plots and "
        "report.md.",
    )
    e.add_argument("--decisions", required=True, help="JSONL written by `detector replay`")
    e.add_argument("--labels", required=True, help="labels JSONL (the generator's labels.jsonl)")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument(
        "--warmup-until",
        default=None,
        help="score only events at or after this time (epoch ms or ISO 8601, UTC)",
    )
    e.set_defaults(func=run)
    return e


def run(args: argparse.Namespace) -> int:
    """Run ``detector evaluate``; print the headline figures as JSON; return 0 or 2."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        warmup = None if args.warmup_until is None else parse_time(str(args.warmup_until))
        with Progress(
            TextColumn("[bold]evaluate"),
            BarColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
            transient=True,
            disable=not sys.stderr.isatty(),
        ) as bar:
            task = bar.add_task("evaluate", total=None)
            metrics = evaluate_files(
                Path(args.decisions),
                Path(args.labels),
                Path(args.out),
                warmup,
                progress=lambda n, total: bar.update(task, completed=n, total=total),
            )
    except EvaluationError as exc:
        print(f"detector evaluate: error: {exc}", file=sys.stderr)
        return 2
    headline = {
        k: metrics[k]
        for k in (
            "events", "attack_events", "roc_auc", "pr_auc", "campaigns", "campaigns_caught",
            "false_step_up_per_100_entity_days", "false_revoke_per_1000_entity_days",
            "false_step_up_per_100_user_days", "false_revoke_per_1000_user_days",
            "alerts_per_day",
        )
    }
    headline["recall"] = {k: v["recall"] for k, v in metrics["scenarios"].items()}
    headline["out"] = str(args.out)
    print(orjson.dumps(headline, option=orjson.OPT_INDENT_2).decode())
    return 0


# ================================================= analysis helpers (notebooks, peers)
@dataclass(frozen=True)
class Dataset:
    """A generated (or any labelled) dataset: parsed events and labels by event id."""

    events: list[Event]
    labels: dict[str, dict[str, Any]]
    rejects: list[Reject]
    path: Path | None = None

    @property
    def start_ms(self) -> int:
        """Return the UTC midnight at or before the first event."""
        return (min(e.ts_ms for e in self.events) // DAY_MS) * DAY_MS


def load_dataset(directory: Path) -> Dataset:
    """Parse ``events.jsonl`` and read ``labels.jsonl`` (if present) of a directory."""
    rejects: list[Reject] = []
    events: list[Event] = []
    items = parse_lines(iter_lines([directory / "events.jsonl"]))
    for batch in batched_events(items, 10_000, rejects.append):
        events.extend(batch)
    lab = directory / "labels.jsonl"
    labels = load_labels(lab) if lab.is_file() else {}
    return Dataset(events, labels, rejects, directory)


def run_model(
    model: Model,
    events: Sequence[Event],
    keep_features: bool = False,
    batch_size: int = 1000,
    state: EngineState | None = None,
) -> tuple[list[Decision], EngineState]:
    """Decide ``events`` in order with a fresh (or given) state; return decisions and state.

    Examples
    --------
    >>> from detector.events import parse_event
    >>> from detector.model import load_model
    >>> e = parse_event(b'{"kind":"auth","id":"e1","ts":1767225600000,"user":"ana","ok":true}')
    >>> decisions, state = run_model(load_model("models/default"), [e])
    >>> decisions[0].action.value, sorted(state.baselines)
    ('allow', ['user:ana'])
    """
    det = Detector(model)
    state = state if state is not None else det.new_state()
    out: list[Decision] = []
    for start in range(0, len(events), batch_size):
        out.extend(det.process(events[start : start + batch_size], state, keep_features))
    return out, state


def outcomes_of(
    decisions: Iterable[Decision], labels: Mapping[str, Mapping[str, Any]],
    start_ms: int | None = None,
) -> list[Outcome]:
    """Join engine decisions with labels (optionally only those at or after ``start_ms``)."""
    records = [d.to_dict() for d in decisions if start_ms is None or d.event.ts_ms >= start_ms]
    return join(records, labels)


def with_thresholds(model: Model, step_up: float, revoke: float) -> Model:
    """Return a copy of ``model`` deciding with other base risk thresholds.

    Examples
    --------
    >>> from detector.model import load_model
    >>> with_thresholds(load_model("models/default"), 0.99, 0.999).thresholds
    Thresholds(step_up=0.99, revoke=0.999)
    """
    if not 0.0 < step_up <= revoke <= 1.0:
        raise ValueError("thresholds must satisfy 0 < step_up <= revoke <= 1")
    return dataclasses.replace(model, thresholds=Thresholds(step_up, revoke))


def budget_threshold(risks: np.ndarray, entity_days: float, per: float, budget: float) -> float:
    """Return the lowest risk threshold whose alerts stay within a budget.

    ``budget`` alerts per ``per`` entity-days, counted on ``risks`` (risks
    of events that should not alert: normal traffic of a validation set).

    Examples
    --------
    >>> r = np.array([0.1, 0.5, 0.9, 0.95, 0.99])
    >>> budget_threshold(r, entity_days=100, per=100, budget=2)
    0.95
    """
    allowed = int(math.floor(budget * entity_days / per))
    if len(risks) == 0:
        return 1.0
    ranked = np.sort(risks)[::-1]
    if allowed >= len(ranked):
        return float(max(ranked[-1], 1e-9))
    if allowed == 0:
        return float(min(np.nextafter(ranked[0], np.inf), 1.0))
    # Alerting on risk >= ranked[allowed - 1] fires on at least `allowed`
    # events; ties with the next one would go over, so step just above them.
    t = float(ranked[allowed - 1])
    if ranked[allowed] >= t:
        t = float(min(np.nextafter(t, np.inf), 1.0))
    return t


def entity_days_of(events: Iterable[Event]) -> float:
    """Return the number of (entity, UTC day) pairs with activity."""
    return float(len({(e.entity_key, e.ts_ms // DAY_MS) for e in events}))


@dataclass(frozen=True)
class Rows:
    """Labelled feature rows of one event kind (``FEATURE_NAMES`` columns)."""

    kind: EventKind
    x: np.ndarray
    y: np.ndarray  # 1 = attack
    label: list[str]
    campaign: list[str | None]
    entity: list[str]
    ts: np.ndarray

    def columns(self, names: Sequence[str]) -> np.ndarray:
        """Return the columns of the named features."""
        idx = [FEATURE_INDEX[n] for n in names]
        out: np.ndarray = self.x[:, idx]
        return out


def labelled_rows(
    decisions: Sequence[Decision], labels: Mapping[str, Mapping[str, Any]],
    start_ms: int | None = None,
) -> dict[EventKind, Rows]:
    """Return the feature rows of decisions (made with ``keep_features``) by event kind."""
    acc: dict[EventKind, list[Decision]] = {k: [] for k in EventKind}
    for d in decisions:
        if d.features is None:
            raise ValueError("decisions need feature rows: run the model with keep_features")
        if start_ms is None or d.event.ts_ms >= start_ms:
            acc[d.event.kind].append(d)
    out = {}
    for kind, ds in acc.items():
        labs = [labels.get(d.event.event_id) or {} for d in ds]
        out[kind] = Rows(
            kind=kind,
            x=np.asarray([d.features for d in ds], dtype=np.float64).reshape(
                -1, len(FEATURE_NAMES)
            ),
            y=np.array([lab.get("label") == "attack" for lab in labs], dtype=np.int64),
            label=[str(lab.get("label", "normal")) for lab in labs],
            campaign=[lab.get("campaign") for lab in labs],
            entity=[d.event.entity_key for d in ds],
            ts=np.array([d.event.ts_ms for d in ds], dtype=np.int64),
        )
    return out


@dataclass(frozen=True)
class ForestParams:
    """One point of a forest sweep."""

    n_estimators: int = 100
    max_samples: int = 256
    max_features: float = 1.0
    features: tuple[str, ...] | None = None  # None: the model's own subset per kind
    name: str = ""


def fit_score(
    train_x: np.ndarray, test_x: np.ndarray, params: ForestParams, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a scikit-learn IsolationForest on ``train_x``; return (train risk, test risk).

    Missing values are imputed with the training median, as in
    :func:`detector.train.train`. Risk is the score's percentile among the
    training scores, so risks of different kinds (and of peers) compare.
    Higher is more anomalous.
    """
    from sklearn.ensemble import IsolationForest

    with np.errstate(all="ignore"):
        med = np.nanmedian(np.where(np.isnan(train_x).all(axis=0), 0.0, train_x), axis=0)
    med = np.where(np.isnan(med), 0.0, med)
    tr = np.where(np.isnan(train_x), med, train_x)
    te = np.where(np.isnan(test_x), med, test_x)
    forest = IsolationForest(
        n_estimators=params.n_estimators,
        max_samples=min(params.max_samples, len(tr)),
        max_features=params.max_features,
        random_state=seed,
    ).fit(tr)
    # sklearn: "the lower, the more abnormal"; negate once, here.
    train_s = -forest.score_samples(tr)
    test_s = -forest.score_samples(te) if len(te) else np.zeros(0)
    return percentile_risk(train_s, train_s), percentile_risk(train_s, test_s)


def percentile_risk(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Return each score's percentile (share of reference scores strictly below it).

    Examples
    --------
    >>> percentile_risk(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 3.5, 9.0])).tolist()
    [0.0, 0.75, 1.0]
    """
    ref = np.sort(reference)
    if len(ref) == 0:
        return np.zeros(len(scores))
    out: np.ndarray = np.searchsorted(ref, scores, side="left") / len(ref)
    return out


def sweep_forests(
    train_rows: Mapping[EventKind, Rows],
    test_rows: Mapping[EventKind, Rows],
    grid: Sequence[ForestParams],
    kind_features: Mapping[EventKind, Sequence[str]],
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Fit one forest per kind for each grid point; return event ROC/PR-AUC on test rows.

    The test risks of both kinds are pooled (they are percentiles of their
    own training scores, like the model's calibrated risk), so ``roc_auc``
    is the event-level figure of :func:`detector.metrics.quality` for the
    forest alone, without the rules.
    """
    import pandas as pd

    from detector.metrics import pr_auc, roc_auc

    records = []
    for i, params in enumerate(grid):
        ys, rs = [], []
        rec: dict[str, Any] = {
            "name": params.name or f"p{i}",
            "n_estimators": params.n_estimators,
            "max_samples": params.max_samples,
            "max_features": params.max_features,
            "features": "model" if params.features is None else ",".join(params.features),
        }
        for kind, test in test_rows.items():
            feats = [
                f for f in (params.features or kind_features[kind]) if f in kind_features[kind]
            ] or list(kind_features[kind])
            _, risk = fit_score(
                train_rows[kind].columns(feats), test.columns(feats), params, seed
            )
            rec[f"{kind.value}_roc_auc"] = roc_auc(test.y, risk)
            ys.append(test.y)
            rs.append(risk)
        y = np.concatenate(ys)
        r = np.concatenate(rs)
        rec["roc_auc"] = roc_auc(y, r)
        rec["pr_auc"] = pr_auc(y, r)
        records.append(rec)
        if progress is not None:
            progress(i + 1, len(grid))
    return pd.DataFrame.from_records(records)


# ------------------------------------------------------------------ explanation
def feature_contributions(model: Model, decision: Decision) -> pd.DataFrame:
    """Return how much each feature raised a decision's model risk.

    Occlusion: each of the forest's features in turn is replaced by its
    training median, and the row is rescored; ``risk_drop`` is the model
    risk minus the risk without that feature's value. Large drops are the
    features that made the event look anomalous; ``tail_drop`` is the same
    in tail levels (:func:`tail_level`), which separates features near risk
    1. Sorted by ``risk_drop``. Features are occluded one at a time, so when
    several are each enough to make an event anomalous, every single drop is
    small: read the ranking, not the sum.
    """
    import pandas as pd

    if decision.features is None:
        raise ValueError("the decision has no feature row: run the model with keep_features")
    km = model.kinds[decision.event.kind]
    row = list(decision.features)
    variants = [row]
    for name, med in zip(km.features, km.stats.median, strict=True):
        v = list(row)
        v[FEATURE_INDEX[name]] = med
        variants.append(v)
    _, risks = km.score(variants)
    base = float(risks[0])
    recs = []
    for j, (name, med, p99) in enumerate(
        zip(km.features, km.stats.median, km.stats.p99, strict=True)
    ):
        recs.append({
            "feature": name,
            "value": row[FEATURE_INDEX[name]],
            "training_median": med,
            "training_p99": p99,
            "risk_without": float(risks[j + 1]),
            "risk_drop": base - float(risks[j + 1]),
            # Near risk 1 plain drops are tiny; in tail levels (nines) they show.
            "tail_drop": float(
                tail_level(np.array([base]))[0] - tail_level(risks[j + 1 : j + 2])[0]
            ),
        })
    df = pd.DataFrame.from_records(recs)
    return df.sort_values(["risk_drop", "feature"], ascending=[False, True]).reset_index(
        drop=True
    )


def entity_history(
    decisions: Sequence[Decision], entity_key: str, around_ms: int, hours: float = 24.0
) -> pd.DataFrame:
    """Return an entity's decisions within ``hours`` either side of ``around_ms``."""
    import pandas as pd

    lo, hi = around_ms - hours * HOUR_MS, around_ms + hours * HOUR_MS
    recs = []
    for d in decisions:
        e = d.event
        if e.entity_key != entity_key or not lo <= e.ts_ms <= hi:
            continue
        recs.append({
            "time": datetime.fromtimestamp(e.ts_ms / 1000, UTC),
            "event_id": e.event_id,
            "kind": e.kind.value,
            "action": d.action.value,
            "risk": d.risk,
            "model_risk": d.model_risk,
            "success": e.success,
            "country": e.src_country,
            "city": e.src_city,
            "asn": e.src_asn,
            "device": e.device_id,
            "service": e.service,
            "dst": e.dst_hostname or e.dst_ip,
            "bytes_out": e.bytes_out,
            "reasons": ", ".join(r.code for r in d.reasons),
        })
    return pd.DataFrame.from_records(recs)


# -------------------------------------------------------------------- baselines
def hour_of_week_share(b: Baseline) -> np.ndarray:
    """Return a baseline's decayed activity share per UTC hour of week (7 x 24, Monday first).

    Examples
    --------
    >>> hour_of_week_share(Baseline()).shape
    (7, 24)
    """
    grid = np.zeros(168)
    for h, w in b.hours.items():
        grid[h] = w
    total = grid.sum()
    return (grid / total if total else grid).reshape(7, 24)


def top_shares(b: Baseline, dimension: str, n: int = 6) -> dict[str, float]:
    """Return up to ``n`` values of a baseline dimension with their decayed shares.

    Examples
    --------
    >>> top_shares(Baseline(), "country")
    {}
    """
    entries = b.seen.get(dimension) or {}
    total = sum(w for w, _ in entries.values()) or 1
    ranked = sorted(entries.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n]
    return {k: w / total for k, (w, _) in ranked}


def events_frame(events: Iterable[Event]) -> pd.DataFrame:
    """Return a DataFrame of the fields the notebooks plot, one row per event."""
    import pandas as pd

    recs = [
        {
            "ts": e.ts_ms,
            "day": e.ts_ms // DAY_MS,
            "hour_of_week": hour_of_week(e.ts_ms),
            "entity": e.entity_key,
            "entity_class": e.entity_class.value,
            "kind": e.kind.value,
            "success": e.success,
            "country": e.src_country,
            "city": e.src_city,
            "device": e.device_id,
            "service": e.service,
            "dst": e.dst_hostname or e.dst_ip,
            "bytes_out": e.bytes_out,
            "bytes_in": e.bytes_in,
        }
        for e in events
    ]
    return pd.DataFrame.from_records(recs)
