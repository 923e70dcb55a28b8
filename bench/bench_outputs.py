"""Decision records: their JSON and their sends, the compiled and batched ways against the old.

The entity stage writes one decision record per event (the decisions
topic) and its signals, keyed by entity. This script replays generated
events through ``models/default`` to get real decision records, then hands
them to one aiokafka producer on the local broker (acks=all, the worker's
partitioner) in chunks the size of a stage batch, in alternating rounds:

* ``send``: ``await producer.send(...)`` per record (``--output-sends record``);
* ``batches``: :class:`detector.stream.batches.KeyedBatches` (the default).

Each chunk waits for its deliveries, as a stage batch does. It prints CPU
and wall microseconds per record (medians over the rounds) and the ratios,
and checks that both ways put every key in the same partition.

Before that, in process, it times writing the same decisions as JSON both
ways, alternating: ``orjson.dumps(decision.to_dict())`` and the compiled
encoder (``detector.engine.decision_json``), and checks they give equal bytes.

Usage::

    python bench/bench_outputs.py [--bootstrap HOST:PORT] [--events 30000]
        [--chunk 500] [--partitions 1] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import orjson
from aiokafka import AIOKafkaProducer
from bench_kafka import create_topics
from common import REPO, generated_lines
from run import bootstrap_servers

from detector.engine import Decision, Detector, decision_json, use_native_decision_json
from detector.events import ParseError, parse_event
from detector.gctune import DEFAULT_THRESHOLD, apply_threshold
from detector.model import load_model
from detector.stream.batches import KeyedBatches
from detector.stream.stages import KeyPartitioner

Records = list[tuple[bytes, bytes]]


def decisions(events: int) -> list[Decision]:
    """Return the decisions of ``models/default`` on ``events`` generated events."""
    parsed = []
    for line in generated_lines(300, 7, 11):
        try:
            parsed.append(parse_event(line))
        except ParseError:
            continue
        if len(parsed) == events:
            break
    detector = Detector(load_model(REPO / "models" / "default"))
    state = detector.new_state()
    out: list[Decision] = []
    for i in range(0, len(parsed), 500):
        out.extend(detector.process(parsed[i:i + 500], state))
    return out


def measure_encoding(made: list[Decision], rounds: int) -> tuple[dict[str, list[float]], bool]:
    """CPU µs per decision of each way of writing its JSON (alternating rounds); equal bytes?"""
    ways: dict[str, Callable[[Decision], bytes]] = {
        "to_dict + orjson": lambda d: orjson.dumps(d.to_dict()), "compiled": decision_json}
    if not use_native_decision_json(True):
        raise SystemExit("detector._native is not built: nothing to compare")
    same = all(decision_json(d) == orjson.dumps(d.to_dict()) for d in made)
    results: dict[str, list[float]] = {name: [] for name in ways}
    order = list(ways)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            write = ways[name]
            cpu = time.process_time()
            for d in made:
                write(d)
            results[name].append((time.process_time() - cpu) / len(made) * 1e6)
    return results, same


async def _per_record(producer: AIOKafkaProducer, topic: str, chunk: Records) -> list[int]:
    futures = [await producer.send(topic, value, key=key) for key, value in chunk]
    return [m.partition for m in await asyncio.gather(*futures)]


async def _batched(producer: AIOKafkaProducer, topic: str, chunk: Records) -> list[int]:
    outcomes = await KeyedBatches(producer).send(topic, chunk)
    for _, error in outcomes:
        if error is not None:
            raise error
    return [m.partition for m in await asyncio.gather(*(f for f, _ in outcomes if f is not None))]


async def _measure(bootstrap: str, records: Records, chunk: int, partitions: int,
                   rounds: int) -> tuple[dict[str, list[tuple[float, float]]], bool]:
    topic = f"bench-outputs-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {topic: partitions})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=-1,
                                partitioner=KeyPartitioner())
    await producer.start()
    ways: dict[str, Callable[[AIOKafkaProducer, str, Records], Awaitable[list[int]]]] = {
        "send": _per_record, "batches": _batched}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    try:
        # Where each way put each record (also the warm-up of both ways).
        same = (await _per_record(producer, topic, records[:chunk])
                == await _batched(producer, topic, records[:chunk]))
        order = list(ways)
        for r in range(rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                cpu, wall = time.process_time(), time.perf_counter()
                for i in range(0, len(records), chunk):
                    await ways[name](producer, topic, records[i:i + chunk])
                n = len(records)
                results[name].append(((time.process_time() - cpu) / n * 1e6,
                                      (time.perf_counter() - wall) / n * 1e6))
    finally:
        await producer.stop()
    return results, same


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    """Print the figures; return 0, or 1 when the two ways disagree (bytes or partitions)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap")
    p.add_argument("--events", type=int, default=30_000)
    p.add_argument("--chunk", type=int, default=500, help="records per stage batch")
    p.add_argument("--partitions", type=int, default=1,
                   help="partitions of the output topic (the bench's decisions topic has 1)")
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args(argv)
    bootstrap = bootstrap_servers(args.bootstrap)
    apply_threshold(DEFAULT_THRESHOLD)  # the worker's collector settings
    made = decisions(args.events)
    encoded, same_bytes = measure_encoding(made, args.rounds)
    print(f"{len(made):,} decisions written as JSON, {args.rounds} alternating rounds; "
          "CPU µs per decision, median (rounds)")
    for name, rows in encoded.items():
        print(f"  {name:18} {_median(rows):7.2f}   " + " ".join(f"{c:.2f}" for c in rows))
    print(f"  ratio {_median(encoded['to_dict + orjson']) / _median(encoded['compiled']):.1f}×; "
          f"equal bytes: {'yes' if same_bytes else 'NO'}")
    print()
    records: Records = [(d.event.entity_key.encode(), decision_json(d)) for d in made]
    mean_bytes = sum(len(k) + len(v) for k, v in records) / len(records)
    results, same = asyncio.run(_measure(bootstrap, records, args.chunk, args.partitions,
                                         args.rounds))
    print(f"{len(records):,} decision records ({mean_bytes:.0f} B mean), chunks of "
          f"{args.chunk}, {args.partitions} partition(s), {args.rounds} alternating rounds, "
          f"acks=all; medians")
    print(f"{'':10} {'CPU µs/record':>14} {'wall µs/record':>15}   rounds (CPU)")
    med = {}
    for name, rows in results.items():
        med[name] = (_median([c for c, _ in rows]), _median([w for _, w in rows]))
        print(f"{name:10} {med[name][0]:14.2f} {med[name][1]:15.2f}   "
              + " ".join(f"{c:.1f}" for c, _ in rows))
    print(f"{'send / batches':10} {med['send'][0] / med['batches'][0]:13.2f}× "
          f"{med['send'][1] / med['batches'][1]:14.2f}×")
    print("same partitions as send:", "yes" if same else "NO")
    return 0 if same and same_bytes else 1


if __name__ == "__main__":
    sys.exit(main())
