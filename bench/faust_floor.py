"""The floor of Faust's per-message path: an agent that does nothing with its events.

One stock faust-streaming app (aiokafka driver, ``memory://``, raw values) with
one agent over ``--topic`` that takes micro-batches (``stream.take(500,
within=0.2)``) and only counts them. It reads ``--events`` records, then
prints one JSON object (events/s from the first batch to the last, CPU
seconds per event) and exits. ``bench_kafka.measure_kafka`` runs it on the
worker's own pre-filled topic, beside the bare aiokafka consumer: what is
left between the two is Faust's own cost per message, which no work in an
agent's body can remove.

Usage::

    python bench/faust_floor.py --bootstrap 127.0.0.1:19092 --topic T --events 20000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from typing import Any

import faust


def main() -> None:
    """Run the empty agent until it has read ``--events`` records; print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--batch-max", type=int, default=500)
    p.add_argument("--batch-within-s", type=float, default=0.2)
    args = p.parse_args()
    datadir = tempfile.mkdtemp(prefix="faust-floor-")
    app = faust.App(f"bench-floor-{uuid.uuid4().hex[:8]}", broker=f"kafka://{args.bootstrap}",
                    store="memory://", datadir=datadir, web_enabled=False,
                    consumer_auto_offset_reset="earliest", topic_disable_leader=True,
                    autodiscover=False)
    topic = app.topic(args.topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                      value_serializer="raw")
    state: dict[str, Any] = {"n": 0}

    async def empty(stream: Any) -> None:
        async for batch in stream.take(args.batch_max, within=args.batch_within_s):
            if state["n"] == 0:
                state["t0"], state["c0"] = time.perf_counter(), time.process_time()
            state["n"] += len(batch)
            if state["n"] >= args.events:
                n = state["n"]
                print(json.dumps({
                    "events": n,
                    "events_per_s": n / (time.perf_counter() - state["t0"]),
                    "cpu_s_per_event": (time.process_time() - state["c0"]) / n,
                }), flush=True)
                sys.stderr.flush()
                os._exit(0)  # the figures are out; Faust's shutdown is not measured

    app.agent(topic, name="empty")(empty)
    worker = faust.Worker(app, loglevel="WARN", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
