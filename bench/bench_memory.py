"""Memory benchmark: per-entity state, resident and serialised, and the RocksDB store size.

How the 100k entities are made realistic:

1. generated events are replayed through ``models/default`` (the engine, as
   ``detector replay`` does), which leaves one real baseline per user and
   device (a few hundred);
2. each is serialised with the worker's own table codec
   (:func:`detector.stream.stages.encode_state`: the versioned dict as JSON);
3. ``N`` distinct entity keys (``user:bench-0000000`` ...) are given those
   values round-robin, so the distribution of sizes is the replayed one.

Figures, for ``N`` entities (default 100,000):

* **decoded**: RSS growth and tracemalloc-traced bytes of a dict of ``N``
  :class:`~detector.baseline.Baseline` objects, each decoded from its own
  bytes (``Baseline.from_dict(orjson.loads(blob))``, as the worker decodes a
  table value), so nothing is shared between entities but what Python itself
  interns. This is what ``detector replay`` and the engine hold;
* **table**: the same for a dict of ``N`` serialised values (what the
  worker's ``memory://`` table holds between batches);
* **native**: RSS growth of a ``BaselineMap`` (``Detector.new_state``: the
  baselines held as Rust values, what the compiled engine, ``detector
  replay`` and the demo hold) of ``N`` entities, each decoded from its own
  bytes and stored (tracemalloc does not see Rust's allocations: RSS only);
* serialised bytes per entity (mean, p99) over the replayed baselines;
* **RocksDB**: the ``N`` values written with rocksdict (the worker's store
  driver), with faust's own RocksDB options, flushed and compacted; the
  directory's size on disk.

RSS is measured in a fresh child process (``--child``) so that memory freed
by earlier benchmarks in the same process cannot hide growth, and
tracemalloc in a second pass (it inflates RSS while it runs).

Usage::

    python bench/bench_memory.py [--entities 100000] [--users 200] [--days 14]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from common import generated_lines

from detector import native
from detector.baseline import Baseline
from detector.engine import Detector
from detector.events import parse_event
from detector.model import Model, load_model
from detector.stream.stages import encode_state


def template_values(model: Model, lines: Sequence[bytes]) -> list[bytes]:
    """Replay ``lines`` through ``model``; return every entity's serialised baseline."""
    det = Detector(model)
    state = det.new_state()
    for i in range(0, len(lines), 1000):
        det.process([parse_event(raw) for raw in lines[i : i + 1000]], state)
    return [encode_state(b) for b in state.baselines.values()]


def _rss_bytes() -> int:
    # Resident set size from /proc (pages * page size): no dependency, no sampling lag.
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _key(i: int) -> str:
    return f"user:bench-{i:07d}"


def _build(blobs: Sequence[bytes], n: int, form: str) -> Any:
    out: Any = {}
    if form == "native":
        module = native.load()
        assert module is not None, "the native form needs detector._native"
        out = module.BaselineMap()
    m = len(blobs)
    for i in range(n):
        blob = blobs[i % m]
        if form == "table":
            # bytes(...) copies, so each entity owns its own buffer like a table value does.
            out[_key(i)] = bytes(bytearray(blob))
        else:
            out[_key(i)] = Baseline.from_dict(orjson.loads(blob))
    return out


def child(blobs: Sequence[bytes], n: int, form: str) -> dict[str, float]:
    """Measure RSS growth, then tracemalloc-traced bytes, of ``n`` entities in one form.

    Run once per form in a fresh process: memory freed by one measurement
    would be reused by the next and hide its growth. Returns bytes per entity
    (no traced figure for the native form: Rust allocates outside tracemalloc).
    """
    gc.collect()
    before = _rss_bytes()
    held = _build(blobs, n, form)
    gc.collect()
    rss = (_rss_bytes() - before) / n
    del held
    gc.collect()
    if form == "native":
        return {"native_rss_per_entity": rss}
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    held = _build(blobs, n, form)
    gc.collect()
    traced = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()
    del held
    return {f"{form}_rss_per_entity": rss, f"{form}_traced_per_entity": traced}


def rocksdb_size(blobs: Sequence[bytes], n: int) -> dict[str, float]:
    """Write ``n`` entities to a RocksDB store (rocksdict, faust's options); return its size.

    The store is flushed and fully compacted before its directory is measured
    (every file, including the WAL, logs and manifest).
    """
    from faust.stores.rocksdb import RocksDBOptions
    from rocksdict import WriteBatch

    m = len(blobs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "baselines.db"
        db = RocksDBOptions(use_rocksdict=True).open(path)
        t = time.perf_counter()
        for start in range(0, n, 10_000):
            wb = WriteBatch(raw_mode=True)
            for i in range(start, min(n, start + 10_000)):
                wb.put(_key(i).encode(), blobs[i % m])
            db.write(wb)
        db.flush(True)
        db.compact_range(None, None)
        write_s = time.perf_counter() - t
        files = [p for p in path.rglob("*") if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        sst = sum(p.stat().st_size for p in files if p.suffix == ".sst")
        got = db.get(_key(n - 1).encode())
        assert got == blobs[(n - 1) % m], "RocksDB read-back differs"
        db.close()
    return {"dir_bytes": total, "sst_bytes": sst, "write_s": write_s}


def measure_memory(model: Model, lines: Sequence[bytes], entities: int) -> dict[str, Any]:
    """Run every memory figure for ``entities`` entities built from replayed ``lines``.

    Returns a dict of per-entity figures, serialised size statistics, the
    RocksDB size and a 1,000,000-entity extrapolation.
    """
    blobs = template_values(model, lines)
    sizes = np.array([len(b) for b in blobs], dtype=np.float64)
    with tempfile.TemporaryDirectory() as tmp:
        tfile = Path(tmp) / "templates.json"
        tfile.write_bytes(orjson.dumps([b.decode() for b in blobs]))
        res: dict[str, Any] = {}
        for form in ("decoded", "table", "native"):
            proc = subprocess.run(  # noqa: S603
                [sys.executable, str(Path(__file__).resolve()), "--child", str(tfile),
                 "--form", form, "--entities", str(entities)],
                check=False, capture_output=True, text=True,
            )
            if proc.returncode != 0:  # its reason, not only its exit status
                raise SystemExit(f"bench_memory.py --child --form {form} failed "
                                 f"({proc.returncode}): {proc.stderr[-2000:]}")
            res.update(json.loads(proc.stdout))
    rocks = rocksdb_size(blobs, entities)
    per_1m = 1_000_000 / entities
    res.update(
        entities=entities, templates=len(blobs),
        serialised_mean=float(sizes.mean()), serialised_p99=float(np.percentile(sizes, 99)),
        serialised_max=float(sizes.max()),
        rocksdb_bytes_per_100k=rocks["dir_bytes"] * 100_000 / entities,
        rocksdb_sst_bytes_per_100k=rocks["sst_bytes"] * 100_000 / entities,
        rocksdb_write_s=rocks["write_s"],
        decoded_rss_per_100k=res["decoded_rss_per_entity"] * 100_000,
        table_rss_per_100k=res["table_rss_per_entity"] * 100_000,
        native_rss_per_100k=res["native_rss_per_entity"] * 100_000,
        native_rss_1m_gb=res["native_rss_per_entity"] * entities * per_1m / 1e9,
        decoded_rss_1m_gb=res["decoded_rss_per_entity"] * entities * per_1m / 1e9,
        table_rss_1m_gb=res["table_rss_per_entity"] * entities * per_1m / 1e9,
        rocksdb_1m_gb=rocks["dir_bytes"] * per_1m / 1e9,
    )
    return res


def main() -> int:
    """Run the memory benchmark alone (or, with ``--child``, the measuring child)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--form", choices=["decoded", "table", "native"], help=argparse.SUPPRESS)
    p.add_argument("--entities", type=int, default=100_000)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--seed", type=int, default=99)
    p.add_argument("--model", default="models/default")
    args = p.parse_args()
    if args.child:
        blobs = [s.encode() for s in orjson.loads(Path(args.child).read_bytes())]
        print(json.dumps(child(blobs, args.entities, args.form)))
        return 0
    res = measure_memory(load_model(args.model), generated_lines(args.users, args.days,
                                                                 args.seed), args.entities)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
