"""The worker's Prometheus sensor exports what Faust's own does, with its label lookups cached."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import CollectorRegistry

from detector.stream.worker import _CachedPrometheusMonitor


class _Table:
    """A table (or a task owner) as the sensor hooks see it: a named object."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Stream:
    def __init__(self, label: str) -> None:
        self.shortlabel = f"Stream: {label}"
        self.task_owner = _Table("task")  # weakly referenced by Faust's Monitor

    def __str__(self) -> str:
        return self.shortlabel


def _drive(monitor: PrometheusMonitor) -> None:
    tables = [_Table("baselines"), _Table("session-context")]
    tps = [TP("in", 0), TP("in", 3)]
    streams = [_Stream("in-a"), _Stream("in-b")]
    for i in range(30):
        tp = tps[i % 2]
        monitor.on_message_in(tp, i, SimpleNamespace())  # type: ignore[arg-type]
        monitor.on_stream_event_in(tp, i, streams[i % 2], None)  # type: ignore[arg-type]
        monitor.on_table_get(tables[i % 2], b"k%d" % i)  # type: ignore[arg-type]
        monitor.on_table_set(tables[i % 3 % 2], b"k%d" % i, b"v")  # type: ignore[arg-type]


def _samples(registry: CollectorRegistry) -> dict[tuple[str, Any], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect() for s in metric.samples
            if not s.name.endswith("_created")}


def test_cached_monitor_exports_the_same_series_as_fausts() -> None:
    got, expected = CollectorRegistry(), CollectorRegistry()
    cached = _CachedPrometheusMonitor(metrics=FaustMetrics.create(got, "app"))
    plain = PrometheusMonitor(metrics=FaustMetrics.create(expected, "app"))
    _drive(cached)
    _drive(plain)
    samples = _samples(got)
    assert samples == _samples(expected)
    # The per-key table series are there, per table and operation.
    assert samples[("app_table_operations_total", (("operation", "keys_updated"),
                                                   ("table", "table.baselines")))] == 20
    assert samples[("app_table_operations_total", (("operation", "keys_retrieved"),
                                                   ("table", "table.session-context")))] == 15
    # One labelled child per table and operation, looked up once.
    assert len(cached._by_table) == 4
    # Faust's own bookkeeping (its web views read it) is kept too.
    assert cached.tables["baselines"].keys_updated == plain.tables["baselines"].keys_updated
    assert cached.tables["baselines"].keys_retrieved == 15


def test_decisions_and_signals_are_counted_per_action() -> None:
    from detector.policy import Action
    from detector.stream.metrics import StreamMetrics
    from detector.stream.worker import _Pipeline

    pipe: Any = object.__new__(_Pipeline)
    pipe.metrics = StreamMetrics()
    plan = [(Action.ALLOW, None, True)] * 5 + [(Action.STEP_UP, "s1", False)] * 3 + [
        (Action.STEP_UP, None, False), (Action.REVOKE, "s2", True)]
    decisions = [SimpleNamespace(action=a, signal_id=s, cold_start=c) for a, s, c in plan]
    pipe._count_decisions(decisions)
    pipe._count_decisions(decisions[:2])
    sample = pipe.metrics.registry.get_sample_value
    assert sample("detector_decisions_total", {"action": "allow"}) == 7
    assert sample("detector_decisions_total", {"action": "step_up"}) == 4
    assert sample("detector_decisions_total", {"action": "revoke"}) == 1
    assert sample("detector_signals_total", {"action": "step_up"}) == 3
    assert sample("detector_signals_total", {"action": "revoke"}) == 1
    assert sample("detector_signals_total", {"action": "allow"}) in (None, 0)
    assert sample("detector_cold_start_total") == 8
