"""Compare worker configurations side by side: the same pre-filled topic, rotating order.

One topic is filled once; an unmeasured drain warms the broker (its first heavy
load runs on a cold JIT); then each round drains the topic once per
configuration, each with a fresh worker and consumer group, the order rotating
from round to round so that no configuration always runs first or last. Prints
one line per drain: the sustained window (events/s and CPU per event, as the
suite's Kafka rows) and the whole drain from ready to the last decision.

Usage (broker from ``scripts/kafka-local start``)::

    python bench/bench_worker_ab.py --events 60000 --rounds 3 \\
        --variant default= --variant thread=--faust-consumer,thread \\
        --variant batch=--state-writes,batch \\
        --variant "gc20k=--gc-threshold 20000,20,20"

``--checkout NAME=DIR`` runs variant NAME's worker from another checkout of
the project (``bench_kafka.checkout_launcher``; build its compiled module
there with ``scripts/build-native``), to measure a change before and after
in one run: ``git worktree add /tmp/before HEAD~3``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kafka import (  # noqa: E402  (the bench directory is not a package)
    WorkerConfig,
    _drain_alone,
    checkout_launcher,
    create_topics,
    keyed,
    produce,
)
from common import generated_lines  # noqa: E402


def main() -> None:
    """Run the rounds and print one line per drain."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS",
                                                         "127.0.0.1:19092"))
    p.add_argument("--events", type=int, default=60_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--variant", action="append", default=[],
                   help="NAME=FLAG,FLAG,... (worker flags, comma-separated, or space-separated "
                        "when a value holds a comma; may be empty)")
    p.add_argument("--checkout", action="append", default=[],
                   help="NAME=DIR: run variant NAME's worker from the checkout in DIR")
    args = p.parse_args()
    checkouts = dict(spec.split("=", 1) for spec in args.checkout)
    variants = {}
    for spec in args.variant or ["default="]:
        name, _, flags = spec.partition("=")
        # Flags separated by spaces when a flag's value holds a comma
        # ("g=--gc-threshold 20000,20,20"), else by commas.
        variants[name] = tuple(shlex.split(flags) if " " in flags
                               else (f for f in flags.split(",") if f))
    tag = uuid.uuid4().hex[:6]
    topics = {"in": f"ab-in-{tag}", "resp": f"ab-resp-{tag}", "dlq": f"ab-dlq-{tag}",
              "dec": f"ab-dec-{tag}"}
    create_topics(args.bootstrap, {topics["in"]: args.partitions, topics["resp"]: 1,
                                   topics["dlq"]: 1, topics["dec"]: 1})
    n = args.events
    produce(args.bootstrap, topics["in"], keyed(generated_lines(300, 14, 11)[:n]), None)
    names = list(variants)
    with tempfile.TemporaryDirectory() as tmp:

        def run(flags: tuple[str, ...], app_id: str, checkout: str | None = None
                ) -> dict[str, float]:
            cfg = WorkerConfig(args.bootstrap, args.partitions, "rocksdb://", 500, 0.2,
                               extra=flags)
            if checkout is not None:
                cfg = replace(cfg, launcher=checkout_launcher(Path(checkout)))
            return _drain_alone(cfg, app_id, topics, Path(tmp), n).window(n, 3.0)

        run((), f"ab-warm-{tag}")
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                x = run(variants[name], f"ab-{r}-{name}-{tag}", checkouts.get(name))
                print(f"round {r} {name:12s} sustained {x['events_per_s']:7,.0f} events/s "
                      f"{x['cpu_s_per_event'] * 1e3:.3f} ms CPU/event | ready to done "
                      f"{x['ready_to_done_events_per_s']:7,.0f} events/s "
                      f"{x['ready_to_done_cpu_s_per_event'] * 1e3:.3f} ms | peak RSS "
                      f"{x['peak_rss_mb']:,.0f} MB | GC {x['gc_share']:.1%} of CPU", flush=True)


if __name__ == "__main__":
    main()
