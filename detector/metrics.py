"""Detection-quality metrics from decisions and labels (pure, no I/O).

Labels are records ``{"event_id", "label", "scenario", "campaign"}`` where
``label`` is ``normal``, ``attack`` or ``benign`` (a benign look-alike such as
legitimate travel or a new laptop). A campaign counts as caught when any of
its events got ``step_up`` or ``revoke``.

Besides the summary (:func:`quality`), the curves behind the plots of
``detector evaluate`` live here: :func:`roc_curve`, :func:`pr_curve` and
:func:`operating_curve` (campaign recall against alert volume when the risk
threshold moves), so that the report, the notebooks and the peer comparison
compute every figure the same way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from detector.config import DAY_MS


@dataclass(frozen=True, slots=True)
class Outcome:
    """One decision joined with its label."""

    event_id: str
    entity: str
    ts: int
    action: str
    risk: float
    label: str
    scenario: str | None
    campaign: str | None


@dataclass
class QualityReport:
    """Detection quality of one run."""

    events: int
    attack_events: int
    roc_auc: float | None
    pr_auc: float | None
    entity_days: float
    user_days: float
    false_step_up_per_100_entity_days: float
    false_revoke_per_1000_entity_days: float
    false_step_up_per_100_user_days: float
    false_revoke_per_1000_user_days: float
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)
    benign: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts_per_day: float = 0.0
    # Appended fields (the keys above are a contract; add new ones below).
    campaigns: int = 0
    campaigns_caught: int = 0
    false_step_up: int = 0
    false_revoke: int = 0
    days: float = 0.0
    alerts_by_day: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return dict(self.__dict__)


def roc_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """Return the ROC-AUC (rank statistic, ties averaged), None without both classes.

    Examples
    --------
    >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def _counts_by_threshold(
    y: np.ndarray, s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (true positives, false positives, threshold) at each distinct score, highest first.

    Ties are evaluated together, at the last index of each distinct score.
    """
    order = np.argsort(-s, kind="mergesort")
    ys = y[order]
    ss = s[order]
    last = np.r_[np.nonzero(np.diff(ss))[0], len(ss) - 1]
    return np.cumsum(ys)[last], np.cumsum(1 - ys)[last], ss[last]


def pr_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """Return average precision (area under the precision-recall curve)."""
    pos = int(y.sum())
    if pos == 0:
        return None
    tp, fp, _ = _counts_by_threshold(y, s)
    precision = tp / (tp + fp)
    recall = tp / pos
    prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev) * precision))


def roc_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (false positive rate, true positive rate, threshold) at each distinct score.

    The first point is (0, 0) at threshold ``+inf``; tied scores move
    together, so the curve's trapezoid area equals :func:`roc_auc`.

    Examples
    --------
    >>> fpr, tpr, thr = roc_curve(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        empty = np.zeros(0)
        return empty, empty, empty
    tp, fp, thresholds = _counts_by_threshold(y, s)
    return np.r_[0.0, fp / neg], np.r_[0.0, tp / pos], np.r_[np.inf, thresholds]


def pr_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (precision, recall, threshold) at each distinct score, highest first.

    Examples
    --------
    >>> p, r, t = pr_curve(np.array([0, 1, 1]), np.array([0.2, 0.9, 0.5]))
    >>> p.round(3).tolist(), r.tolist()
    ([1.0, 1.0, 0.667], [0.5, 1.0, 1.0])
    """
    pos = int(y.sum())
    if pos == 0 or len(y) == 0:
        empty = np.zeros(0)
        return empty, empty, empty
    tp, fp, thresholds = _counts_by_threshold(y, s)
    return tp / (tp + fp), tp / pos, thresholds


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Alerting on every event with ``risk >= threshold``: what it catches and costs."""

    threshold: float
    campaign_recall: float  # attack campaigns with at least one alert
    alerts_per_day: float  # all alerts (true and false) per day of data
    false_alerts_per_100_entity_days: float


def operating_curve(
    outcomes: Sequence[Outcome], thresholds: Sequence[float] | None = None
) -> list[OperatingPoint]:
    """Return campaign recall and alert volume as the risk threshold moves.

    Each threshold ``t`` alerts on the events with ``risk >= t`` (whatever
    the policy decided): the curve shows what a different alert budget
    would buy. By default the thresholds are the distinct risks of attack
    events plus a log-spaced grid of tail levels, so every step of the
    recall curve is on it.

    Parameters
    ----------
    outcomes : joined decisions and labels
    thresholds : risk thresholds to evaluate (any order)

    Returns
    -------
    list of OperatingPoint
        Sorted by threshold, highest (fewest alerts) first.

    Examples
    --------
    >>> o = [Outcome("a", "user:x", 0, "allow", 0.2, "normal", None, None),
    ...      Outcome("b", "user:x", 1, "revoke", 0.99, "attack", "ato", "c1")]
    >>> [(p.threshold, p.campaign_recall) for p in operating_curve(o, [0.5, 0.1])]
    [(0.5, 1.0), (0.1, 1.0)]
    """
    if not outcomes:
        return []
    risk = np.array([o.risk for o in outcomes], dtype=np.float64)
    bad = np.array([o.label != "attack" for o in outcomes])
    camp_ids: dict[str, int] = {}
    camp = np.full(len(outcomes), -1, dtype=np.int64)
    for i, o in enumerate(outcomes):
        if o.label == "attack" and o.campaign is not None:
            camp[i] = camp_ids.setdefault(o.campaign, len(camp_ids))
    # A campaign is caught at t when its highest risk is >= t.
    best = np.full(len(camp_ids), -np.inf)
    np.maximum.at(best, camp[camp >= 0], risk[camp >= 0])
    if thresholds is None:
        tail = 1.0 - np.logspace(-7, 0, 57)
        thresholds = sorted(set(best.tolist()) | set(tail.round(9).tolist()))
    ts = np.array([o.ts for o in outcomes], dtype=np.int64)
    span_days = max((int(ts.max()) - int(ts.min())) / DAY_MS, 1.0)
    n_entity_days = float(len({(o.entity, o.ts // DAY_MS) for o in outcomes})) or 1.0
    sorted_risk = np.sort(risk)
    sorted_false = np.sort(risk[bad])
    out = []
    for t in sorted(thresholds, reverse=True):
        n_alerts = len(sorted_risk) - int(np.searchsorted(sorted_risk, t, side="left"))
        n_false = len(sorted_false) - int(np.searchsorted(sorted_false, t, side="left"))
        recall = float((best >= t).mean()) if len(best) else 0.0
        out.append(
            OperatingPoint(
                threshold=float(t),
                campaign_recall=recall,
                alerts_per_day=n_alerts / span_days,
                false_alerts_per_100_entity_days=100.0 * n_false / n_entity_days,
            )
        )
    return out


def since(outcomes: Iterable[Outcome], start_ms: int) -> list[Outcome]:
    """Return the outcomes of events at or after ``start_ms`` (drop a warm-up).

    Examples
    --------
    >>> o = Outcome("a", "user:x", 5, "allow", 0.1, "normal", None, None)
    >>> len(since([o], 5)), len(since([o], 6))
    (1, 0)
    """
    return [o for o in outcomes if o.ts >= start_ms]


def join(
    decisions: Iterable[Mapping[str, Any]], labels: Mapping[str, Mapping[str, Any]]
) -> list[Outcome]:
    """Join decision records with labels by event id (unlabelled events are normal)."""
    out = []
    for d in decisions:
        lab = labels.get(d["event_id"]) or {}
        out.append(
            Outcome(
                event_id=d["event_id"],
                entity=f"{d.get('entity_kind', 'user')}:{d['entity']}",
                ts=int(d.get("ts", 0)),
                action=d["action"],
                risk=float(d["risk"]),
                label=str(lab.get("label", "normal")),
                scenario=lab.get("scenario"),
                campaign=lab.get("campaign"),
            )
        )
    return out


def quality(outcomes: list[Outcome]) -> QualityReport:
    """Compute ROC/PR-AUC, per-scenario recall and time to detect, and false alarms."""
    y = np.array([1 if o.label == "attack" else 0 for o in outcomes], dtype=np.int64)
    s = np.array([o.risk for o in outcomes], dtype=np.float64)
    days = {(o.entity, o.ts // DAY_MS) for o in outcomes}
    user_days = {d for d in days if d[0].startswith("user:")}
    n_days = float(len(days)) or 1.0
    n_user_days = float(len(user_days)) or 1.0
    false_step = sum(1 for o in outcomes if o.label != "attack" and o.action == "step_up")
    false_revoke = sum(1 for o in outcomes if o.label != "attack" and o.action == "revoke")
    false_step_u = sum(
        1
        for o in outcomes
        if o.label != "attack" and o.action == "step_up" and o.entity.startswith("user:")
    )
    false_revoke_u = sum(
        1
        for o in outcomes
        if o.label != "attack" and o.action == "revoke" and o.entity.startswith("user:")
    )
    campaigns: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        if o.campaign is not None:
            campaigns[o.campaign].append(o)
    per: dict[str, dict[str, list[Any]]] = defaultdict(lambda: {"caught": [], "ttd": []})
    benign: dict[str, dict[str, Any]] = {}
    for evs in campaigns.values():
        label = evs[0].label
        scenario = evs[0].scenario or "unknown"
        if label == "attack":
            first = next((i for i, o in enumerate(evs) if o.action != "allow"), None)
            per[scenario]["caught"].append(first is not None)
            if first is not None:
                per[scenario]["ttd"].append(first + 1)
        else:
            b = benign.setdefault(
                scenario,
                {
                    "campaigns": 0,
                    "events": 0,
                    "step_up": 0,
                    "revoke": 0,
                    "campaigns_with_step_up": 0,
                    "campaigns_with_revoke": 0,
                    "entity_days": 0,
                },
            )
            n_step = sum(1 for o in evs if o.action == "step_up")
            n_revoke = sum(1 for o in evs if o.action == "revoke")
            b["campaigns"] += 1
            b["events"] += len(evs)
            b["step_up"] += n_step
            b["revoke"] += n_revoke
            b["campaigns_with_step_up"] += int(n_step > 0)
            b["campaigns_with_revoke"] += int(n_revoke > 0)
            b["entity_days"] += len({(o.entity, o.ts // DAY_MS) for o in evs})
    # The look-alikes on their own: the same rates, over the entity-days
    # that the benign campaigns cover.
    for b in benign.values():
        nd = float(b["entity_days"]) or 1.0
        b["step_up_per_100_entity_days"] = 100.0 * b["step_up"] / nd
        b["revoke_per_1000_entity_days"] = 1000.0 * b["revoke"] / nd
    scenarios = {
        name: {
            "campaigns": len(v["caught"]),
            "caught": int(sum(v["caught"])),
            "recall": sum(v["caught"]) / len(v["caught"]),
            "median_events_to_detect": float(np.median(v["ttd"])) if v["ttd"] else None,
        }
        for name, v in sorted(per.items())
    }
    span_days = (
        (max(o.ts for o in outcomes) - min(o.ts for o in outcomes)) / DAY_MS if outcomes else 0.0
    )
    alerts = sum(1 for o in outcomes if o.action != "allow")
    by_day: dict[str, int] = defaultdict(int)
    actions: dict[str, int] = defaultdict(int)
    for o in outcomes:
        actions[o.action] += 1
        if o.action != "allow":
            by_day[_iso_day(o.ts)] += 1
    return QualityReport(
        events=len(outcomes),
        attack_events=int(y.sum()),
        roc_auc=roc_auc(y, s),
        pr_auc=pr_auc(y, s),
        entity_days=n_days,
        user_days=n_user_days,
        false_step_up_per_100_entity_days=100.0 * false_step / n_days,
        false_revoke_per_1000_entity_days=1000.0 * false_revoke / n_days,
        false_step_up_per_100_user_days=100.0 * false_step_u / n_user_days,
        false_revoke_per_1000_user_days=1000.0 * false_revoke_u / n_user_days,
        scenarios=scenarios,
        benign=benign,
        alerts_per_day=alerts / max(span_days, 1.0),
        campaigns=sum(v["campaigns"] for v in scenarios.values()),
        campaigns_caught=sum(v["caught"] for v in scenarios.values()),
        false_step_up=false_step,
        false_revoke=false_revoke,
        days=span_days,
        alerts_by_day=dict(sorted(by_day.items())),
        actions=dict(sorted(actions.items())),
    )


def _iso_day(ts_ms: int) -> str:
    """Return the UTC calendar day of epoch milliseconds, ``YYYY-MM-DD``.

    Examples
    --------
    >>> _iso_day(0)
    '1970-01-01'
    """
    return datetime.fromtimestamp(ts_ms // 1000, UTC).date().isoformat()
