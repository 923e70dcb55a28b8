"""Detection-quality metrics from decisions and labels (pure, no I/O).

Labels are records ``{"event_id", "label", "scenario", "campaign"}`` where
``label`` is ``normal``, ``attack`` or ``benign`` (a benign look-alike such as
legitimate travel or a new laptop). A campaign counts as caught when any of
its events got ``step_up`` or ``revoke``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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


def pr_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """Return average precision (area under the precision-recall curve)."""
    pos = int(y.sum())
    if pos == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    ys = y[order]
    ss = s[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(1 - ys)
    # evaluate at the last index of each distinct score (ties together)
    last = np.r_[np.nonzero(np.diff(ss))[0], len(ss) - 1]
    precision = tp[last] / (tp[last] + fp[last])
    recall = tp[last] / pos
    prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev) * precision))


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
                scenario, {"campaigns": 0, "events": 0, "step_up": 0, "revoke": 0}
            )
            b["campaigns"] += 1
            b["events"] += len(evs)
            b["step_up"] += sum(1 for o in evs if o.action == "step_up")
            b["revoke"] += sum(1 for o in evs if o.action == "revoke")
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
    )
