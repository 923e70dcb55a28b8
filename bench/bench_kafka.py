"""Benchmark the streaming worker on a real local broker, side by side with a bare consumer.

The worker is a black box run through its CLI (``detector worker``, flags in
docs/streaming.md); progress is read from its ``/metrics``
(``detector_decisions_total``) and its CPU time from ``/proc/<pid>/stat``.

Figures, in one run:

1. **worker throughput** -- one worker drains a pre-filled input topic;
   sustained events/s is the slope of decided events over time between 10 %
   and 90 % of the topic (after the worker is ready and a settle period), with
   CPU seconds per event over the same window;
2. **bare consumer** -- an aiokafka consumer that reads the same topic and
   ``orjson.loads`` every value, in the same run; the worker / bare ratio;
3. **latency** -- a fresh worker (new app id) is fed at 25 %, 50 % and 75 %
   of the worker throughput measured in (1), one phase after the other (one
   producer for the warm-up and the phases, 1 s apart); for
   every event, the output record's broker timestamp (CreateTime, set by the
   worker's producer when it sends) minus the input record's (set by our
   producer, ``bench/LoadGen.java`` on the Kafka Java client, when it sends;
   its 1 ms linger counts as worker latency):
   p50/p99/p99.9 on the decisions audit topic
   (every event) and on the response topic (signals only);
4. **scaling** (:func:`measure_scaling`) -- one worker, then two workers of
   one app id, each on a fresh copy of the pre-filled topic; events/s, ratio
   and CPU seconds per event summed over the workers;
5. **trace** (``--trace``, :func:`measure_trace`) -- where an event's latency
   goes at a low load: the timestamps of its input record, of the internal
   records that carry it (by-ip, by-session, by-entity) and of its decision,
   hop by hop, with the worker's CPU share while it is fed.

The latency figures are only as good as the CPU the worker gets: on a
shared machine a worker that gets less CPU than the offered load needs
queues, and its latency is the queue's. The trace reports the CPU share.

Usage (broker from ``scripts/kafka-local start``)::

    python bench/bench_kafka.py --bootstrap 127.0.0.1:19092 [--batch-within-s 0.02]
    python bench/bench_kafka.py --trace [--trace-rate 20] [--worker-arg=--batch-idle-s
                                --worker-arg=0]

Prints one JSON object with every figure and the parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer
from common import REPO, generated_lines
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from detector.events import parse_event
from detector.stream.stages import decode_records

DETECTOR = str(Path(sys.executable).with_name("detector"))
_TICK = os.sysconf("SC_CLK_TCK")


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create ``topics`` (name -> partitions, replication 1) and wait until they exist."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
        admin.wait_for_topics(list(topics), timeout_ms=15_000)
    finally:
        admin.close()


def keyed(values: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """Return (entity key, value) pairs, as ``detector produce`` keys events."""
    return [(parse_event(v).entity_key.encode(), v) for v in values]


#: The paced producer's linger (ms); counted in the measured latency.
PACED_LINGER_MS: Final = 1


def _java_libs() -> str:
    """Return the directory of the Kafka jars (``scripts/kafka-local libs`` fetches them)."""
    out = subprocess.run(  # noqa: S603
        [str(REPO / "scripts" / "kafka-local"), "libs"], capture_output=True, text=True,
        timeout=900, check=False,
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise SystemExit(f"scripts/kafka-local libs failed: {out.stderr[-2000:]}")
    return out.stdout.strip()


def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]],
            rate: float | None) -> float:
    """Send ``records`` to ``topic`` at ``rate`` events/s (as fast as possible if None).

    Returns the achieved send rate (events/s), which can fall short of the
    offered one when the producer cannot keep up on a busy machine.

    Paced sends (the latency phases and the trace) go through
    ``bench/LoadGen.java``, the Apache Kafka Java client: a record's
    timestamp is taken when ``send`` is called, and its
    :data:`PACED_LINGER_MS` linger counts as worker latency. A Python
    producer needed about a core at 3,500 events/s on the two-core machine
    and fell behind, its records queueing in the client after their
    timestamps were taken: that queue was measured as the worker's latency.
    Unpaced fills use kafka-python (5 ms linger).
    """
    if rate:
        return float(_produce_paced(bootstrap, topic, records, rate)["achieved_eps"])
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    start = time.monotonic()
    for k, v in records:
        producer.send(topic, key=k, value=v)
    sent_s = time.monotonic() - start
    producer.flush(120)
    producer.close(10)
    return len(records) / max(sent_s, 1e-9)


def _loadgen() -> list[str]:
    """Return the command that runs ``bench/LoadGen.java``, compiled once into a cache.

    The JVM runs with its first-tier compiler only: the C2 compiler's work on
    the Kafka client took several CPU seconds in the first seconds of each
    phase, beside the worker under measurement. With one JVM for a warm-up
    and the phases (session 18) it still does: traces at 11,500 events/s
    gave the producer 0.48 of a core with C2 against 0.22 without, and the
    worker's p99 93-98 ms against 80-81.
    """
    java, javac = shutil.which("java"), shutil.which("javac")
    if java is None or javac is None:
        raise SystemExit("the latency benchmark's producer needs a JDK 17 (java, javac on PATH)")
    libs = _java_libs()
    source = REPO / "bench" / "LoadGen.java"
    # One directory per version of the source: checkouts of two versions
    # (a CI clone, a worktree) share the cache, and a modification time
    # would let one run the other's class.
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    classes = Path(libs).parent / "loadgen" / digest
    compiled = classes / "LoadGen.class"
    if not compiled.exists():
        classes.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=classes.parent, prefix=".build-"))
        built = subprocess.run(  # noqa: S603
            [javac, "-cp", f"{libs}/*", "-d", str(building), str(source)],
            capture_output=True, text=True, timeout=600, check=False,
        )
        if built.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            raise SystemExit(f"javac LoadGen.java failed: {built.stderr[-2000:]}")
        try:  # whole or not at all: another run may be compiling the same source
            building.rename(classes)
        except OSError:
            shutil.rmtree(building, ignore_errors=True)
            if not compiled.exists():
                raise
    return [java, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xmx1g",
            "-cp", f"{classes}:{libs}/*", "LoadGen"]


def _produce_paced(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]],
                   rate: float, schedule: Sequence[tuple[int, float, float]] = (),
                   on_segment: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Send ``records`` at ``rate`` with ``LoadGen.java``; return its figures (see there).

    With a ``schedule`` of ``(count, rate, pause_s)`` segments (counts adding
    up to ``len(records)``), one producer sends them one after the other, each
    paced from its own start and followed by ``pause_s`` idle seconds; the
    figures then hold ``segments``, one dict per segment. A warm-up and the
    measured phases share one JVM: a fresh one's first second (class loading,
    first compilations, new connections) otherwise ran beside the worker at
    the start of every measured phase. ``on_segment(i)`` is called as
    segment ``i`` starts.
    """
    if schedule and sum(c for c, _, _ in schedule) != len(records):
        raise ValueError("the schedule's counts must add up to the records")
    spec = ",".join(f"{c}:{r:g}:{p:g}" for c, r, p in schedule)
    lines: list[str] = []
    with tempfile.NamedTemporaryFile(suffix=".records") as f, \
            tempfile.TemporaryFile(mode="w+") as err:
        for k, v in records:
            f.write(struct.pack(">i", len(k)) + k + struct.pack(">i", len(v)) + v)
        f.flush()
        with subprocess.Popen(  # noqa: S603
            [*_loadgen(), bootstrap, topic, f.name, f"{rate:g}", str(PACED_LINGER_MS),
             *([spec] if spec else [])],
            stdout=subprocess.PIPE, stderr=err, text=True,
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if not line.startswith("{"):
                    continue
                lines.append(line)
                started = json.loads(line).get("segment_starts")
                if started is not None and on_segment is not None:
                    on_segment(started)
            rc = proc.wait(timeout=3600)
        err.seek(0)
        if rc != 0 or not lines:
            raise SystemExit(f"LoadGen.java failed ({rc}): {err.read()[-2000:]}")
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def checkout_launcher(checkout: Path) -> tuple[str, ...]:
    """Return a command that runs ``detector`` from another checkout of the project.

    This interpreter without its site initialisation (``-S``: the editable
    install's import hook would load this checkout's ``detector``), with the
    other checkout first and this environment's packages after it on
    ``sys.path``. Its compiled module must be built there
    (``scripts/build-native``).
    """
    packages = next(p for p in sys.path if p.endswith("site-packages"))
    code = (f"import sys; sys.path[:0] = [{str(checkout.resolve())!r}, {packages!r}]; "
            "from detector.cli import main; sys.exit(main())")
    return (sys.executable, "-S", "-c", code)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class WorkerConfig:
    """The worker flags the benchmark varies (the rest are the CLI's defaults)."""

    bootstrap: str
    partitions: int = 4
    store: str = "rocksdb://"
    batch_max: int = 500
    batch_within_s: float = 0.02
    model: Path = REPO / "models" / "default"
    #: More worker flags, appended as given (e.g. ``("--fetch-max-wait-ms", "20")``).
    extra: tuple[str, ...] = ()
    #: The command that starts ``detector`` (see :func:`checkout_launcher`).
    launcher: tuple[str, ...] = (DETECTOR,)


class Worker:
    """One ``detector worker`` subprocess, observed through its web port and /proc."""

    def __init__(self, cfg: WorkerConfig, app_id: str, topics: dict[str, str],
                 state: Path, name: str | None = None) -> None:
        self.port = _free_port()
        self.log = (state / f"{name or app_id}.log").open("wb")
        self.proc = subprocess.Popen(  # noqa: S603
            [*cfg.launcher, "worker", "--model", str(cfg.model),
             "--bootstrap-servers", cfg.bootstrap, "--app-id", app_id,
             "--input-topics", topics["in"], "--response-topic", topics["resp"],
             "--dlq-topic", topics["dlq"], "--decisions-topic", topics["dec"],
             "--partitions", str(cfg.partitions), "--store", cfg.store,
             "--state-dir", str(state / (name or app_id)), "--web-host", "127.0.0.1",
             "--web-port", str(self.port), "--batch-max", str(cfg.batch_max),
             "--batch-within-s", str(cfg.batch_within_s), *cfg.extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
        )

    def _get(self, path: str) -> bytes | None:
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310
                body: bytes = r.read()
                return body
        except OSError:
            return None

    def ready(self) -> bool:
        """Return whether ``/health`` says the worker is ready."""
        body = self._get("/health")
        return bool(body) and bool(orjson.loads(body or b"{}").get("ready", False))

    def decided(self) -> float:
        """Return the worker's ``detector_decisions_total`` summed over actions."""
        return self.scrape()[0]

    def scrape(self) -> tuple[float, float]:
        """Return ``detector_decisions_total`` and the collector's pause ms, from one scrape."""
        body = self._get("/metrics") or b""
        decided = gc_ms = 0.0
        for line in body.splitlines():
            if line.startswith(b"detector_decisions_total"):
                decided += float(line.rsplit(b" ", 1)[1])
            elif line.startswith(b"detector_gc_pause_ms_sum"):
                gc_ms += float(line.rsplit(b" ", 1)[1])
        return decided, gc_ms

    def batch_figures(self) -> dict[str, dict[str, float]]:
        """Return count, mean and largest bucket bound of the worker's batch histograms.

        Keys: ``batch:<stage>`` (``detector_batch_latency_ms``, with the mean
        batch size from ``detector_batch_size``) and ``state_flush``
        (``detector_state_flush_ms``). ``le_ms`` is the upper bound of the
        highest non-empty bucket (an upper bound of the slowest one).
        """
        body = (self._get("/metrics") or b"").decode()
        counts: dict[str, float] = {}
        sums: dict[str, float] = {}
        buckets: dict[str, list[tuple[float, float]]] = {}
        for line in body.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name_labels, value = line.rsplit(" ", 1)
            name, _, labels = name_labels.partition("{")
            stage = labels.split('stage="', 1)[1].split('"', 1)[0] if 'stage="' in labels else ""
            for metric, key in (("detector_batch_latency_ms", f"batch:{stage}"),
                                ("detector_batch_size", f"size:{stage}"),
                                ("detector_state_flush_ms", "state_flush")):
                part = name.removeprefix(metric + "_")
                if part == "count":
                    counts[key] = float(value)
                elif part == "sum":
                    sums[key] = float(value)
                elif part == "bucket":
                    le = float(labels.split('le="', 1)[1].split('"', 1)[0])
                    buckets.setdefault(key, []).append((le, float(value)))
        out: dict[str, dict[str, float]] = {}
        for key, count in counts.items():
            if key.startswith("size:") or not count:
                continue
            # Cumulative buckets: the first bound holding every observation.
            top = min((le for le, v in buckets.get(key, []) if v >= count), default=float("inf"))
            fig = {"count": count, "mean_ms": sums.get(key, 0.0) / count, "slowest_le_ms": top}
            size = "size:" + key.removeprefix("batch:")
            if key.startswith("batch:") and counts.get(size):
                fig["mean_events"] = sums.get(size, 0.0) / counts[size]
            out[key] = fig
        return out

    def cpu_seconds(self) -> float:
        """Return the worker process's user + system CPU seconds so far."""
        return _process_cpu_seconds(self.proc.pid)

    def peak_rss_bytes(self) -> int:
        """Return the worker process's peak resident memory so far (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def check_alive(self, what: str) -> None:
        """Raise ``SystemExit`` if the worker process has exited."""
        if self.proc.poll() is not None:
            raise SystemExit(f"worker exited (code {self.proc.returncode}) while {what}; "
                             f"log: {self.log.name}")

    def stop(self) -> None:
        """SIGTERM the worker and wait for it to exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def _process_cpu_seconds(pid: int) -> float:
    """Return a process's user + system CPU seconds so far (OSError if it is gone)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def broker_cpu_seconds() -> float:
    """Return the CPU seconds so far of this machine's Kafka brokers (``kafka.Kafka`` JVMs).

    The broker shares the two cores with the worker and the producer; its
    share while a trace is fed tells how much of the machine was left.
    """
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:  # a process may end while the list is read
            if b"kafka.Kafka\x00" in (proc / "cmdline").read_bytes():
                total += _process_cpu_seconds(int(proc.name))
        except OSError:
            continue
    return total


def wait_for(check: Callable[[], bool], workers: Sequence[Worker], timeout_s: float,
             what: str) -> float:
    """Poll ``check`` until true; return the monotonic time it became true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for w in workers:
            w.check_alive(what)
        if check():
            return time.monotonic()
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout_s:.0f}s waiting for {what}")


@dataclass
class Drain:
    """Samples (time, decided, CPU seconds) of a group of workers draining a topic."""

    samples: list[tuple[float, float, float]] = field(default_factory=list)
    ready_at: float = 0.0
    #: The workers' peak resident memory at the end of the drain, summed.
    peak_rss_bytes: int = 0
    #: Milliseconds in the cyclic collector so far, one per sample, summed over workers.
    gc_ms: list[float] = field(default_factory=list)

    def window(self, n: int, settle_s: float) -> dict[str, float]:
        """Return sustained events/s and CPU seconds per event between 10 % and 90 % of ``n``.

        The window opens at the first sample after readiness + ``settle_s``
        with at least 10 % decided (so start-up and the first rebalance are
        left out) and closes at the last sample with at most 90 % decided.
        Falls back to the whole drain if that leaves fewer than two samples.
        """
        s = self.samples
        inside = [x for x in s if x[0] >= self.ready_at + settle_s and 0.1 * n <= x[1] <= 0.9 * n]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] <= 0:
            inside = [s[0], s[-1]]
        (t0, d0, c0), (t1, d1, c1) = inside[0], inside[-1]
        # gc_ms[i] was scraped with samples[i].
        gc_window = (self.gc_ms[s.index(inside[-1])] - self.gc_ms[s.index(inside[0])]
                     if self.gc_ms else 0.0)
        done = next((t for t, d, _ in s if d >= n), s[-1][0])
        cpu_done = next((c for _, d, c in s if d >= n), s[-1][2])
        return {"events_per_s": (d1 - d0) / (t1 - t0), "cpu_s_per_event": (c1 - c0) / (d1 - d0),
                "window_s": t1 - t0, "window_events": d1 - d0,
                "ready_to_done_events_per_s": n / max(done - self.ready_at, 1e-9),
                # The whole drain (every stage's share of every event, start-up
                # included): the fair figure when stages run at uneven speeds.
                "ready_to_done_cpu_s_per_event": (cpu_done - s[0][2]) / n,
                "peak_rss_mb": self.peak_rss_bytes / 2**20,
                # The collector's share of the window's CPU (its pauses are CPU).
                "gc_share": gc_window / 1000.0 / max(c1 - c0, 1e-9)}


def drain(workers: Sequence[Worker], n: int, timeout_s: float = 1800,
          poll_s: float = 0.5, stall_s: float = 120.0) -> Drain:
    """Wait until every worker is ready, then sample them until ``n`` events are decided.

    Each sample scrapes ``/metrics``, which costs the worker CPU (a full
    Prometheus exposition): every 0.5 s, not faster. Stops with an error
    when no decision came for ``stall_s`` seconds (events lost or stuck)
    instead of waiting out ``timeout_s``.
    """
    out = Drain()
    out.ready_at = wait_for(lambda: all(w.ready() for w in workers), workers, 180, "ready")
    deadline = time.monotonic() + timeout_s
    progress_at, last = time.monotonic(), -1.0
    while True:
        for w in workers:
            w.check_alive("draining")
        t = time.monotonic()
        scraped = [w.scrape() for w in workers]
        decided = sum(d for d, _ in scraped)
        cpu = sum(w.cpu_seconds() for w in workers)
        out.samples.append((t, decided, cpu))
        out.gc_ms.append(sum(g for _, g in scraped))
        if decided >= n:
            out.peak_rss_bytes = sum(w.peak_rss_bytes() for w in workers)
            return out
        if t > deadline:
            raise SystemExit(f"timed out: {decided:.0f} of {n} decided")
        if decided > last:
            progress_at, last = t, decided
        elif t - progress_at > stall_s:
            raise SystemExit(f"stalled: {decided:.0f} of {n} decided, none for {stall_s:.0f} s")
        time.sleep(poll_s)


async def _bare(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"bare-{uuid.uuid4().hex[:8]}", enable_auto_commit=False)
    await consumer.start()
    got = 0
    try:
        # Start the clock at the first record, as the worker's clock starts when it is ready.
        first = await consumer.getmany(timeout_ms=10_000, max_records=1)
        start, cpu0 = time.perf_counter(), time.process_time()
        for records in first.values():
            for r in records:
                orjson.loads(r.value)
                got += 1
        while got < n:
            batches = await consumer.getmany(timeout_ms=1_000, max_records=2_000)
            for records in batches.values():
                for r in records:
                    orjson.loads(r.value)
                    got += 1
        return {"events_per_s": got / (time.perf_counter() - start),
                "cpu_s_per_event": (time.process_time() - cpu0) / got}
    finally:
        await consumer.stop()


def faust_floor(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    """Run ``faust_floor.py`` (an agent that only counts) over ``topic``; return its figures."""
    out = subprocess.run(  # noqa: S603
        [sys.executable, str(Path(__file__).with_name("faust_floor.py")), "--bootstrap",
         bootstrap, "--topic", topic, "--events", str(n)],
        capture_output=True, text=True, timeout=900, check=False,
    )
    # Faust's worker writes terminal control codes to stdout before the figures.
    lines = [line[line.index('{"events"'):] for line in out.stdout.splitlines()
             if '{"events"' in line]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"faust_floor.py failed ({out.returncode}): {out.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(lines[-1])
    return figures


def bare_consumer(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    """Read ``n`` records of ``topic`` with aiokafka and JSON-decode each; return events/s."""
    return asyncio.run(_bare(bootstrap, topic, n))


def timestamps(bootstrap: str, topic: str, n: int, is_input: bool) -> dict[str, int]:
    """Return event id -> broker timestamp (ms) of up to ``n`` records of ``topic``."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=5_000)
    out: dict[str, int] = {}
    for r in consumer:
        eid = parse_event(r.value).event_id if is_input else orjson.loads(r.value)["event_id"]
        out[eid] = r.timestamp
        if len(out) >= n:
            break
    consumer.close()
    return out


def routed_timestamps(bootstrap: str, topic: str, n: int) -> dict[str, int]:
    """Return event id -> broker timestamp (ms) of the packed internal records of ``topic``.

    An internal record carries several routed events (one batch, one
    partition); each of them gets the record's timestamp.
    """
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=5_000)
    out: dict[str, int] = {}
    for r in consumer:
        for routed in decode_records(r.value):
            out.setdefault(routed.event.event_id, r.timestamp)
        if len(out) >= n:
            break
    consumer.close()
    return out


def latency_stats(values: Sequence[float]) -> dict[str, float]:
    """Return n, p50, p99, p99.9 and max of ``values`` (ms); NaN figures when empty."""
    if not values:
        nan = float("nan")
        return {"n": 0, "p50_ms": nan, "p99_ms": nan, "p999_ms": nan, "max_ms": nan}
    a = np.asarray(values, dtype=np.float64)
    return {"n": len(a), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "p999_ms": float(np.percentile(a, 99.9)),
            "max_ms": float(a.max())}


def _reached(w: Worker, n: int) -> Callable[[], bool]:
    return lambda: w.decided() >= n


def _topic_set(run: str, tag: str) -> dict[str, str]:
    return {x: f"bench-{tag}-{x}-{run}" for x in ("in", "resp", "dlq", "dec")}


def _drain_alone(cfg: WorkerConfig, app_id: str, topics: dict[str, str], state: Path,
                 n: int) -> Drain:
    """Start one worker, let it decide ``n`` events of ``topics['in']``, stop it; its samples."""
    w = Worker(cfg, app_id, topics, state)
    try:
        return drain([w], n)
    finally:
        w.stop()


def measure_kafka(cfg: WorkerConfig, values: Sequence[bytes], throughput_events: int,
                  loads: Sequence[float] = (0.25, 0.5, 0.75), phase_s: float = 20.0,
                  settle_s: float = 3.0, log: Any = None, with_faust_rows: bool = True
                  ) -> dict[str, Any]:
    """Measure one worker's throughput, the bare consumer and latency at fractions of it.

    With ``with_faust_rows``, also the same worker with ``--ingest faust``,
    with ``--topology staged``, with ``--faust-consumer thread``, with
    ``--state-writes batch``, with ``--gc-threshold python``, with
    ``--output-sends record --changelog-sends table``, and an empty Faust
    agent (:func:`faust_floor`) on the same topic.

    ``values`` is the pool of events: the first ``throughput_events`` fill the
    throughput topic, the rest feed the latency phases (each phase offers
    ``load x throughput`` events/s for up to ``phase_s`` seconds, fewer if the
    pool runs out), after :data:`WARM_UP_S` seconds of unmeasured events at
    the first load, :data:`PHASE_PAUSE_S` apart, all from one producer.
    Returns a dict of figures and parameters.
    """
    say = log or (lambda _m: None)
    run = uuid.uuid4().hex[:8]
    tp, lt = _topic_set(run, "tp"), _topic_set(run, "lat")
    create_topics(cfg.bootstrap, {tp["in"]: cfg.partitions, tp["resp"]: 1, tp["dlq"]: 1,
                                  tp["dec"]: 1, lt["in"]: cfg.partitions, lt["resp"]: 1,
                                  lt["dec"]: 1})
    n = min(throughput_events, len(values))
    records = keyed(values)
    produce(cfg.bootstrap, tp["in"], records[:n], rate=None)
    say(f"kafka: {n} events in {tp['in']}")
    out: dict[str, Any] = {"events": n, "partitions": cfg.partitions, "store": cfg.store,
                           "batch_max": cfg.batch_max, "batch_within_s": cfg.batch_within_s}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        # An unmeasured drain first: the first heavy load after the broker
        # starts runs on its cold JIT, which cost whichever row came first
        # up to half its rate in session 8's runs.
        _drain_alone(cfg, f"bench-warm-{run}", tp, state, n)
        say("kafka: warm-up drain done")
        out["worker"] = _drain_alone(cfg, f"bench-tp-{run}", tp, state, n).window(n, settle_s)
        say(f"kafka: worker {out['worker']['events_per_s']:,.0f} events/s")
        out["bare"] = bare_consumer(cfg.bootstrap, tp["in"], n)
        out["worker_to_bare"] = out["worker"]["events_per_s"] / out["bare"]["events_per_s"]
        say(f"kafka: bare consumer {out['bare']['events_per_s']:,.0f} events/s")
        if with_faust_rows:
            # The same worker with one setting as before: its input through a
            # Faust agent (before the direct ingest; its stages are staged),
            # the stateful stages always staged behind their internal topics
            # (before session 13: a lone worker now fuses them), Faust's
            # consumer in its own thread, a state write per changed key per
            # batch (before session 8), the interpreter's GC thresholds (before
            # session 9), outputs and changelog records sent one by one (before
            # session 11). Then an agent that does nothing: Faust's own per-message floor.
            # Same topic, same run.
            for key, flags in (("worker_faust_ingest", ("--ingest", "faust")),
                               ("worker_staged", ("--topology", "staged")),
                               ("worker_faust_thread", ("--faust-consumer", "thread")),
                               ("worker_state_batch", ("--state-writes", "batch")),
                               ("worker_gc_python", ("--gc-threshold", "python")),
                               ("worker_record_sends", ("--output-sends", "record",
                                                        "--changelog-sends", "table")),
                               ):
                variant = replace(cfg, extra=(*cfg.extra, *flags))
                out[key] = _drain_alone(
                    variant, f"bench-{key[7:].replace('_', '')}-{run}", tp, state, n
                ).window(n, settle_s)
                say(f"kafka: worker, {' '.join(flags)} {out[key]['events_per_s']:,.0f} events/s")
            out["faust_floor"] = faust_floor(cfg.bootstrap, tp["in"], n)
            say(f"kafka: empty Faust agent {out['faust_floor']['events_per_s']:,.0f} events/s")

        pool = records[n:]
        max_eps = out["worker"]["events_per_s"]
        w = Worker(cfg, f"bench-lat-{run}", lt, state)
        phases: list[dict[str, Any]] = []
        try:
            wait_for(w.ready, [w], 180, "latency worker ready")
            # One producer for the warm-up and the phases (see _produce_paced),
            # each phase offered from its own start, PHASE_PAUSE_S apart.
            warm = min(int(loads[0] * max_eps * WARM_UP_S), len(pool) // 10)
            schedule = [(warm, loads[0] * max_eps, PHASE_PAUSE_S)]
            offset = warm
            for i, load in enumerate(loads):
                rate = load * max_eps
                k = min(int(rate * phase_s), (len(pool) - offset) // (len(loads) - i))
                phases.append({"load": load, "offered_eps": rate, "events": k,
                               "ids": {parse_event(v).event_id
                                       for _, v in pool[offset : offset + k]}})
                offset += k
                schedule.append((k, rate, PHASE_PAUSE_S if i + 1 < len(loads) else 0.0))
            total = offset

            def started(segment: int) -> None:
                if segment:
                    ph = phases[segment - 1]
                    say(f"kafka: latency phase {ph['load']:.0%} ({ph['offered_eps']:,.0f} "
                        f"events/s, {ph['events']} events) starts")

            sent = _produce_paced(cfg.bootstrap, lt["in"], pool[:total], loads[0] * max_eps,
                                  schedule=schedule, on_segment=started)
            for ph, seg in zip(phases, sent["segments"][1:], strict=True):
                ph["achieved_eps"] = seg["achieved_eps"]
            wait_for(_reached(w, total), [w], 900, "latency phases decided")
        finally:
            w.stop()
    sent = timestamps(cfg.bootstrap, lt["in"], total, is_input=True)
    decided = timestamps(cfg.bootstrap, lt["dec"], total, is_input=False)
    signals = timestamps(cfg.bootstrap, lt["resp"], total, is_input=False)
    out["latency"] = []
    for ph in phases:
        ids = ph.pop("ids")
        ph["event_to_decision"] = latency_stats(
            [decided[i] - sent[i] for i in ids if i in decided and i in sent])
        ph["event_to_signal"] = latency_stats(
            [signals[i] - sent[i] for i in ids if i in signals and i in sent])
        out["latency"].append(ph)
    return out


HOPS = ("in", "by-ip", "by-session", "by-entity", "dec")
#: Seconds of events a fresh worker is fed, and not measured, before a
#: latency measurement: its first events pay one-off costs (first fetches of
#: each topic, producer metadata, state stores opening), up to seconds.
WARM_UP_S = 2.0
#: Idle seconds between a warm-up and a measured phase, and between phases.
PHASE_PAUSE_S = 1.0


def _warm_up(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]], rate: float,
             w: Worker) -> None:
    """Feed ``records`` at ``rate`` and wait until the worker decided them."""
    before = w.decided()
    produce(bootstrap, topic, records, rate=rate)
    wait_for(_reached(w, before + len(records)), [w], 300, "warm-up events decided")


def measure_trace(cfg: WorkerConfig, values: Sequence[bytes], rate: float = 20.0,
                  seconds: float = 15.0, log: Any = None, fresh_producer: bool = False
                  ) -> dict[str, Any]:
    """Trace where an event's latency goes, hop by hop, at a low offered load.

    A fresh worker is fed ``rate`` events/s for ``seconds`` (after
    :data:`WARM_UP_S` seconds of unmeasured warm-up events, then
    :data:`PHASE_PAUSE_S` idle, from the same producer; with
    ``fresh_producer`` as before session 18, a producer for the warm-up and
    another for the measured events). Every record
    timestamp is the sender's clock when it called ``send`` (CreateTime): the
    input's is our producer's, the internal topics' and the decision's are the
    worker's producer's, all on this machine. For every event, the delta
    between consecutive topics is the time one stage took: broker round trip,
    fetch, Faust's delivery, the batch window, the stage's own work up to its
    send. A fused worker (``--topology fused``, the default when alone)
    has only the one hop, input to decision. Returns p50/p99/max per hop
    and end to end, the worker's, the producer's and the broker's CPU shares
    (CPU seconds per second) while it is fed, and its batch histograms
    (:meth:`Worker.batch_figures`).
    """
    say = log or (lambda _m: None)
    run = uuid.uuid4().hex[:8]
    t = _topic_set(run, "tr")
    app_id = f"bench-tr-{run}"
    create_topics(cfg.bootstrap, {t["in"]: cfg.partitions, t["resp"]: 1, t["dlq"]: 1,
                                  t["dec"]: 1})
    pool = keyed(values)
    warm = int(rate * WARM_UP_S)
    warm_up, records = pool[:warm], pool[warm : warm + int(rate * seconds)]
    with tempfile.TemporaryDirectory() as tmp:
        w = Worker(cfg, app_id, t, Path(tmp))
        try:
            wait_for(w.ready, [w], 180, "trace worker ready")
            marks: list[tuple[float, float, float]] = []  # worker CPU, broker CPU, time
            if fresh_producer:
                _warm_up(cfg.bootstrap, t["in"], warm_up, rate, w)
                marks.append((w.cpu_seconds(), broker_cpu_seconds(), time.monotonic()))
                sent = _produce_paced(cfg.bootstrap, t["in"], records, rate)
            else:
                def mark(segment: int) -> None:
                    if segment == 1:
                        marks.append((w.cpu_seconds(), broker_cpu_seconds(), time.monotonic()))

                sent = _produce_paced(cfg.bootstrap, t["in"], [*warm_up, *records], rate,
                                      schedule=[(len(warm_up), rate, PHASE_PAUSE_S),
                                                (len(records), rate, 0.0)],
                                      on_segment=mark)
                sent = sent["segments"][1]
            cpu0, broker0, t0 = marks[0]
            achieved = sent["achieved_eps"]
            # The producer's CPU while it fed the worker (it shares the machine).
            producer_cpu = sent["send_cpu_s"] / max(sent["send_s"], 1e-9)
            wait_for(_reached(w, warm + len(records)), [w], 300, "trace events decided")
            elapsed = time.monotonic() - t0
            cpu = (w.cpu_seconds() - cpu0) / elapsed
            broker_cpu = (broker_cpu_seconds() - broker0) / elapsed
            batches = w.batch_figures()
        finally:
            w.stop()
    n = len(records)
    total = warm + n
    ts = {"in": timestamps(cfg.bootstrap, t["in"], total, is_input=True),
          "dec": timestamps(cfg.bootstrap, t["dec"], total, is_input=False)}
    for hop in HOPS[1:-1]:
        ts[hop] = routed_timestamps(cfg.bootstrap, f"{app_id}-{hop}", total)
    # A fused worker (the default when alone) writes nothing to the internal
    # topics: its trace has the one hop from input to decision.
    hops = [h for h in HOPS if ts[h]]
    traced = {parse_event(v).event_id for _, v in records}
    ids = [i for i in ts["in"] if i in traced and all(i in ts[h] for h in hops)]
    out: dict[str, Any] = {"rate": rate, "achieved_eps": achieved, "events": n,
                           "traced": len(ids), "worker_cpu_share": cpu,
                           "cpu_s_per_event": cpu / rate, "producer_cpu_share": producer_cpu,
                           "broker_cpu_share": broker_cpu,
                           "batches": batches, "hops": {}}
    for a, b in zip(hops, hops[1:], strict=False):
        out["hops"][f"{a} -> {b}"] = latency_stats([ts[b][i] - ts[a][i] for i in ids])
    out["hops"]["in -> dec (end to end)"] = latency_stats([ts["dec"][i] - ts["in"][i]
                                                           for i in ids])
    # The worst end-to-end latency per second of feed: shows whether the tail
    # is a warm-up (first fetches of a fresh worker) or spread over the run.
    t0 = min(ts["in"][i] for i in ids) if ids else 0
    worst: dict[int, int] = {}
    for i in ids:
        sec = (ts["in"][i] - t0) // 1000
        worst[sec] = max(worst.get(sec, 0), ts["dec"][i] - ts["in"][i])
    out["worst_ms_by_second"] = [worst[k] for k in sorted(worst)]
    say(f"trace: {len(ids)} of {n} events traced")
    return out


def measure_scaling(cfg: WorkerConfig, values: Sequence[bytes], settle_s: float = 3.0,
                    log: Any = None) -> dict[str, Any]:
    """Drain the same pre-filled topic (two fresh copies) with one worker, then with two.

    The two workers share an app id (one consumer group). Returns events/s,
    CPU seconds per event (summed over workers) and the two/one ratio.
    """
    say = log or (lambda _m: None)
    run = uuid.uuid4().hex[:8]
    one, two = _topic_set(run, "s1"), _topic_set(run, "s2")
    create_topics(cfg.bootstrap, {t[x]: (cfg.partitions if x == "in" else 1)
                                  for t in (one, two) for x in t})
    records = keyed(values)
    for t in (one, two):
        produce(cfg.bootstrap, t["in"], records, rate=None)
    n = len(records)
    out: dict[str, Any] = {"events": n, "partitions": cfg.partitions,
                           "batch_within_s": cfg.batch_within_s}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        for label, topics, count in (("one", one, 1), ("two", two, 2)):
            app = f"bench-{label}-{run}"
            ws = [Worker(cfg, app, topics, state, name=f"{app}-{i}") for i in range(count)]
            try:
                d = drain(ws, n)
            finally:
                for w in ws:
                    w.stop()
            out[label] = d.window(n, settle_s)
            say(f"scaling: {count} worker(s) {out[label]['events_per_s']:,.0f} events/s")
    out["ratio"] = out["two"]["events_per_s"] / out["one"]["events_per_s"]
    return out


def main() -> None:
    """Run the Kafka benchmark alone and print its figures as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS",
                                                         "127.0.0.1:19092"))
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--days", type=int, default=6)
    p.add_argument("--throughput-events", type=int, default=20_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--store", default="rocksdb://", choices=["rocksdb://", "memory://"])
    p.add_argument("--batch-max", type=int, default=500)
    p.add_argument("--batch-within-s", type=float, default=0.02)
    p.add_argument("--phase-seconds", type=float, default=20.0)
    p.add_argument("--scaling", action="store_true", help="also one vs two workers")
    p.add_argument("--trace", action="store_true",
                   help="only the per-hop latency trace at a low load (--trace-rate)")
    p.add_argument("--trace-rate", type=float, default=20.0, help="events/s of the trace")
    p.add_argument("--trace-seconds", type=float, default=15.0)
    p.add_argument("--trace-fresh-producer", action="store_true",
                   help="the trace's measured events from a second producer JVM, started "
                        "after the warm-up (as before session 18), not the warm-up's")
    p.add_argument("--worker-arg", action="append", default=[],
                   help="one more worker flag or value, e.g. --worker-arg=--fetch-max-wait-ms "
                        "--worker-arg=20 (repeatable)")
    p.add_argument("--checkout", type=Path, default=None,
                   help="run the worker from another checkout of the project (its compiled "
                        "module built there), e.g. to trace two versions in turns")
    args = p.parse_args()
    cfg = WorkerConfig(args.bootstrap, args.partitions, args.store, args.batch_max,
                       args.batch_within_s, extra=tuple(args.worker_arg))
    if args.checkout is not None:
        cfg = replace(cfg, launcher=checkout_launcher(args.checkout))
    values = generated_lines(args.users, args.days, seed=11)
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.trace:
        trace = measure_trace(cfg, values, args.trace_rate, args.trace_seconds, log=say,
                              fresh_producer=args.trace_fresh_producer)
        print(json.dumps({"trace": trace}, indent=2))
        return
    res = {"kafka": measure_kafka(cfg, values, args.throughput_events,
                                  phase_s=args.phase_seconds, log=say)}
    if args.scaling:
        res["scaling"] = measure_scaling(cfg, values[: args.throughput_events], log=say)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
