"""Benchmark the streaming worker on a real local broker.

Three figures, measured in one run against the same input topic:

1. **worker throughput** -- events/s of one ``detector worker`` process (all
   four stages in it) draining a pre-filled input topic: decided events divided
   by the time from "worker ready" to "last event decided";
2. **bare consumer** -- events/s of an aiokafka consumer that only reads the
   same topic and JSON-decodes every value (the floor any Python consumer
   pays), and the worker / bare ratio;
3. **event-to-signal latency** at a fixed offered rate: a second worker (new
   app id) is fed at ``--rate`` events/s; latency is the output record's
   broker timestamp (CreateTime, set by the worker when it sends) minus the
   input record's (set by the producer), on the same clock. Reported for the
   decision audit topic (every event) and the response topic (signals only).

Usage (broker from ``scripts/kafka-local start``)::

    .venv/bin/python bench/bench_kafka.py --bootstrap 127.0.0.1:19092

Prints one JSON object with every figure and the parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from detector.events import parse_event
from detector.generate import GeneratorConfig, generate

REPO = Path(__file__).resolve().parents[1]
DETECTOR = str(Path(sys.executable).with_name("detector"))


def _topics(bootstrap: str, topics: dict[str, int]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
        admin.wait_for_topics(list(topics), timeout_ms=15_000)
    finally:
        admin.close()


def _events(users: int, days: int, seed: int) -> list[bytes]:
    return [orjson.dumps(e) for e, _ in generate(GeneratorConfig(users=users, days=days,
                                                                 seed=seed))]


def _produce(bootstrap: str, topic: str, values: list[bytes], rate: float | None) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    start = time.monotonic()
    for i, v in enumerate(values):
        if rate:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        producer.send(topic, key=parse_event(v).entity_key.encode(), value=v)
    producer.flush(60)
    producer.close(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    def __init__(self, bootstrap: str, app_id: str, inp: str, resp: str, dlq: str, dec: str,
                 partitions: int, store: str, state: Path, batch_max: int) -> None:
        self.port = _free_port()
        self.log = (state / f"{app_id}.log").open("wb")
        self.proc = subprocess.Popen(  # noqa: S603
            [DETECTOR, "worker", "--model", str(REPO / "models" / "default"),
             "--bootstrap-servers", bootstrap, "--app-id", app_id, "--input-topics", inp,
             "--response-topic", resp, "--dlq-topic", dlq, "--decisions-topic", dec,
             "--partitions", str(partitions), "--store", store,
             "--state-dir", str(state / app_id), "--web-host", "127.0.0.1",
             "--web-port", str(self.port), "--batch-max", str(batch_max)],
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
        body = self._get("/health")
        return bool(body) and orjson.loads(body or b"{}").get("ready", False)

    def decided(self) -> float:
        body = self._get("/metrics") or b""
        return sum(float(line.rsplit(b" ", 1)[1]) for line in body.splitlines()
                   if line.startswith(b"detector_decisions_total"))

    def wait(self, check: Any, timeout_s: float, what: str) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"worker exited while waiting for {what}")
            if check():
                return time.monotonic()
            time.sleep(0.05)
        raise SystemExit(f"timed out waiting for {what}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        self.log.close()


async def _bare(bootstrap: str, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"bare-{uuid.uuid4().hex[:8]}", enable_auto_commit=False)
    await consumer.start()
    got = 0
    try:
        # Start the clock at the first record, as the worker's clock starts when it is ready.
        first = await consumer.getmany(timeout_ms=10_000, max_records=1)
        start = time.perf_counter()
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
        return got / (time.perf_counter() - start)
    finally:
        await consumer.stop()


def _timestamps(bootstrap: str, topic: str, n: int, key: str) -> dict[str, int]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=5_000)
    out: dict[str, int] = {}
    for r in consumer:
        if key == "input":
            out[parse_event(r.value).event_id] = r.timestamp
        else:
            out[orjson.loads(r.value)["event_id"]] = r.timestamp
        if len(out) >= n:
            break
    consumer.close()
    return out


def _pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"n": len(values), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1),
            "max_ms": round(float(a.max()), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS",
                                                         "127.0.0.1:19092"))
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--store", default="rocksdb://", choices=["rocksdb://", "memory://"])
    p.add_argument("--batch-max", type=int, default=500)
    p.add_argument("--rate", type=float, default=500.0, help="offered rate for latency")
    p.add_argument("--latency-seconds", type=float, default=30.0)
    args = p.parse_args()

    run = uuid.uuid4().hex[:8]
    inp, resp, dlq, dec = (f"bench-{x}-{run}" for x in ("in", "resp", "dlq", "dec"))
    lat_in, lat_resp, lat_dec = (f"bench-{x}-{run}" for x in ("lin", "lresp", "ldec"))
    _topics(args.bootstrap, {inp: args.partitions, resp: 1, dlq: 1, dec: 1,
                             lat_in: args.partitions, lat_resp: 1, lat_dec: 1})
    values = _events(args.users, args.days, seed=11)
    n = len(values)
    _produce(args.bootstrap, inp, values, rate=None)

    out: dict[str, Any] = {"events": n, "partitions": args.partitions, "store": args.store,
                           "batch_max": args.batch_max, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        w = Worker(args.bootstrap, f"bench-{run}", inp, resp, dlq, dec, args.partitions,
                   args.store, state, args.batch_max)
        try:
            t_ready = w.wait(w.ready, 120, "ready")
            t_done = w.wait(lambda: w.decided() >= n, 1800, "all decided")
        finally:
            w.stop()
        worker_eps = n / (t_done - t_ready)
        bare_eps = asyncio.run(_bare(args.bootstrap, inp, n))
        out.update(worker_events_per_s=round(worker_eps), bare_consumer_events_per_s=round(
            bare_eps), worker_to_bare_ratio=round(worker_eps / bare_eps, 4))

        n_lat = int(args.rate * args.latency_seconds)
        lat_values = values[:n_lat]
        w = Worker(args.bootstrap, f"bench-lat-{run}", lat_in, lat_resp, dlq, lat_dec,
                   args.partitions, args.store, state, args.batch_max)
        try:
            w.wait(w.ready, 120, "ready")
            _produce(args.bootstrap, lat_in, lat_values, rate=args.rate)
            w.wait(lambda: w.decided() >= len(lat_values), 600, "latency run decided")
        finally:
            w.stop()
    sent = _timestamps(args.bootstrap, lat_in, len(lat_values), "input")
    decided = _timestamps(args.bootstrap, lat_dec, len(lat_values), "output")
    signals = _timestamps(args.bootstrap, lat_resp, len(lat_values), "output")
    out["offered_rate_events_per_s"] = args.rate
    out["event_to_decision"] = _pct([decided[k] - sent[k] for k in decided if k in sent])
    if signals:
        out["event_to_signal"] = _pct([signals[k] - sent[k] for k in signals if k in sent])
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
