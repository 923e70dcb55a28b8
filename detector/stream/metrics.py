"""The worker's own Prometheus metrics, in a registry owned by one app.

Faust's Prometheus sensor (messages, sends, table operations, rebalances,
commit latency) is registered into the same :class:`CollectorRegistry`, so one
``/metrics`` page serves both. No process-global registry is used: two
workers in one process (tests) do not collide.

Latency histograms are in milliseconds with millisecond buckets (Faust's
``MS_LATENCY_BUCKETS`` note: second buckets would put everything in ``+Inf``).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: Batch latency buckets (ms): a 500-event batch scores in ~5-50 ms.
BATCH_MS_BUCKETS: Final = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
BATCH_SIZE_BUCKETS: Final = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000)
#: Collector pause buckets (ms): a young pass is well under a millisecond,
#: a full pass over a loaded worker's objects took 60-70 ms.
GC_MS_BUCKETS: Final = (0.1, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000)

#: (topic, partition) -> offset
OffsetMap = Mapping[tuple[str, int], int]


class LagCollector(Collector):
    """Consumer lag per assigned partition, computed at scrape time.

    ``offsets`` returns (end offsets, last read offsets); lag is
    ``end - read - 1`` (the end offset is the next offset to be written).
    """

    def __init__(self, offsets: Callable[[], tuple[OffsetMap, OffsetMap]]) -> None:
        self._offsets = offsets

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the lag gauge family."""
        family = GaugeMetricFamily(
            "detector_consumer_lag",
            "Messages between the last read offset and the end of each partition.",
            labels=["topic", "partition"],
        )
        end, read = self._offsets()
        for (topic, partition), end_offset in sorted(end.items()):
            last = read.get((topic, partition))
            lag = end_offset if last is None else max(0, end_offset - last - 1)
            family.add_metric([topic, str(partition)], float(lag))
        yield family

    def describe(self) -> list[GaugeMetricFamily]:
        """Return no description: collected lazily (it needs a running consumer)."""
        return []


class RocksDBMemoryCollector(Collector):
    """RocksDB memory under the worker's budget (``--rocksdb-memory-mb``), read at scrape time.

    ``usage`` returns bytes by kind (detector.stream.store.SharedMemory.usage).

    Examples
    --------
    >>> from prometheus_client import generate_latest
    >>> r = CollectorRegistry()
    >>> r.register(RocksDBMemoryCollector(lambda: {"block_cache": 5, "memtables": 2}))
    >>> b'detector_rocksdb_memory_bytes{kind="memtables"} 2.0' in generate_latest(r)
    True
    """

    def __init__(self, usage: Callable[[], Mapping[str, int]]) -> None:
        self._usage = usage

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the memory gauge family."""
        family = GaugeMetricFamily(
            "detector_rocksdb_memory_bytes",
            "RocksDB memory of every table partition of this worker, by kind: block_cache "
            "(memtables, index and filter blocks included), memtables, pinned, and "
            "block_cache_capacity (the --rocksdb-memory-mb budget).",
            labels=["kind"],
        )
        for kind, value in sorted(self._usage().items()):
            family.add_metric([kind], float(value))
        yield family

    def describe(self) -> list[GaugeMetricFamily]:
        """Return no description: collected at scrape time."""
        return []


class StreamMetrics:
    """Counters, gauges and histograms of one worker.

    Examples
    --------
    >>> from prometheus_client import generate_latest
    >>> m = StreamMetrics()
    >>> m.rejects.labels(stage="parse", reason="not_json").inc()
    >>> b'detector_rejects_total{reason="not_json",stage="parse"} 1.0' in generate_latest(
    ...     m.registry)
    True
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "detector_events_in", "Messages read from the input topics.", ["topic"], registry=r
        )
        self.rejects = Counter(
            "detector_rejects",
            "Messages sent to the dead-letter topic, by stage and reason code.",
            ["stage", "reason"],
            registry=r,
        )
        self.decisions = Counter(
            "detector_decisions", "Events decided, by action.", ["action"], registry=r
        )
        self.signals = Counter(
            "detector_signals",
            "Signals sent to the response topic (after deduplication), by action.",
            ["action"],
            registry=r,
        )
        self.cold_start = Counter(
            "detector_cold_start", "Events decided in cold start (rules only).", registry=r
        )
        self.engine_errors = Counter(
            "detector_engine_errors",
            "Batches the engine raised on (their events went to the dead-letter topic).",
            ["stage", "error"],
            registry=r,
        )
        self.state_resets = Counter(
            "detector_state_resets",
            "Stored state values that did not decode and were restarted empty.",
            ["table"],
            registry=r,
        )
        self.state_writes = Counter(
            "detector_state_writes",
            "State values written to a table, one changelog record each (with "
            "--state-writes commit, once per changed key per offset commit).",
            ["table"],
            registry=r,
        )
        self.input_gaps = Counter(
            "detector_input_gap_offsets",
            "Offsets a stage never received within one assignment (messages skipped "
            "before the stage: a defect, or a transactional producer's markers).",
            ["stage"],
            registry=r,
        )
        self.redelivered = Counter(
            "detector_redelivered_skipped",
            "Redelivered events skipped because their state already held them.",
            ["stage"],
            registry=r,
        )
        self.delivery_retries = Counter(
            "detector_delivery_retries",
            "Outputs resent after a retriable delivery failure (the topic was "
            "unavailable past the producer's own retries): back-pressure, nothing dropped.",
            ["topic"],
            registry=r,
        )
        self.stage_paths = Counter(
            "detector_stage_path_batches",
            "Input batches by how their stateful stages ran: fused (in process, "
            "--topology fused) or staged (forwarded to the internal topics).",
            ["path"], registry=r,
        )
        self.batch_ms = Histogram(
            "detector_batch_latency_ms",
            "Wall time to process one micro-batch, per stage (ms).",
            ["stage"],
            buckets=BATCH_MS_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "detector_batch_size",
            "Events per micro-batch, per stage.",
            ["stage"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.state_flush_ms = Histogram(
            "detector_state_flush_ms",
            "Wall time to write the states held since the last offset commit to "
            "their tables and changelogs (ms), before a commit or a revocation. "
            "The fused stages' periodic write runs beside the next batches; "
            "the other writes hold the input meanwhile.",
            buckets=BATCH_MS_BUCKETS,
            registry=r,
        )
        self.gc_pause_ms = Histogram(
            "detector_gc_pause_ms",
            "Passes of the cyclic garbage collector in the worker process (ms), by "
            "generation (2 = a full pass); the event loop waits meanwhile.",
            ["generation"],
            buckets=GC_MS_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "detector_model_info", "The loaded model (value 1).", ["version"], registry=r
        )
        self.model_reloads = Counter(
            "detector_model_reloads",
            "Model reload attempts, by result (loaded, unchanged, failed).",
            ["result"],
            registry=r,
        )

    def set_model(self, version: str) -> None:
        """Record ``version`` as the one loaded model."""
        self.model_info.clear()
        self.model_info.labels(version=version).set(1)

    def add_lag(self, offsets: Callable[[], tuple[OffsetMap, OffsetMap]]) -> None:
        """Register the consumer-lag gauge, read from ``offsets`` at scrape time."""
        self.registry.register(LagCollector(offsets))

    def add_rocksdb_memory(self, usage: Callable[[], Mapping[str, int]]) -> None:
        """Register the RocksDB memory gauge, read from ``usage`` at scrape time."""
        self.registry.register(RocksDBMemoryCollector(usage))


class GcPauses:
    """Times every pass of the cyclic garbage collector into a histogram, while entered.

    A ``gc.callbacks`` hook: the collector calls it before and after each
    pass, on the thread that triggered it. The cost is two clock reads per
    pass, and passes are rare with the worker's thresholds (detector.gctune).

    Examples
    --------
    >>> m = StreamMetrics()
    >>> with GcPauses(m.gc_pause_ms):
    ...     _ = gc.collect()
    >>> m.registry.get_sample_value("detector_gc_pause_ms_count", {"generation": "2"}) >= 1
    True
    """

    def __init__(self, histogram: Histogram) -> None:
        self._by_generation = [histogram.labels(generation=str(g)) for g in range(3)]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """Record the start of a pass, or observe its duration at its end."""
        if phase == "start":
            self._started = time.perf_counter()
        else:
            pause_ms = (time.perf_counter() - self._started) * 1000.0
            self._by_generation[info["generation"]].observe(pause_ms)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        gc.callbacks.remove(self)
