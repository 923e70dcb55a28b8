"""The RocksDB store under one memory budget (detector.stream.store, ``--rocksdb-memory-mb``)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from faust.stores import rocksdb as faust_rocksdb
from prometheus_client import generate_latest

from detector.stream.metrics import StreamMetrics
from detector.stream.settings import WorkerSettings
from detector.stream.store import MEMTABLE_SHARE, SharedMemory, Store, _Options
from detector.stream.worker import ModelHolder, build_app

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "default"
MB = 1024 * 1024
TABLES = ("ip-context", "session-context", "baselines")


def _worker_stores(tmp_path: Path, **flags: Any) -> tuple[list[Any], StreamMetrics]:
    async def build() -> tuple[list[Any], StreamMetrics]:
        settings = WorkerSettings(model_dir=MODEL_DIR, state_dir=tmp_path, store="rocksdb://",
                                  **flags)
        metrics = StreamMetrics()
        app = build_app(settings, ModelHolder(settings.model_dir, metrics), metrics)
        return [app.tables[name].data for name in TABLES], metrics

    return asyncio.run(build())


def _fill(db: Any, prefix: bytes, n: int, size: int = 4000) -> None:
    value = os.urandom(size)
    for i in range(n):
        db[prefix + b"%06d" % i] = value


def test_by_default_every_table_shares_one_budget_and_it_is_exposed(tmp_path: Path) -> None:
    stores, metrics = _worker_stores(tmp_path)
    assert all(type(s) is Store for s in stores)
    memory = stores[0].rocksdb_options.memory
    assert isinstance(memory, SharedMemory) and memory.budget_bytes == 512 * MB
    assert all(s.rocksdb_options.memory is memory for s in stores), "one budget, not one per table"
    sample = metrics.registry.get_sample_value
    assert sample("detector_rocksdb_memory_bytes", {"kind": "block_cache_capacity"}) == 512 * MB
    assert sample("detector_rocksdb_memory_bytes", {"kind": "memtables"}) is not None


def test_budget_zero_keeps_faust_store_with_a_cache_per_partition(tmp_path: Path) -> None:
    stores, metrics = _worker_stores(tmp_path, rocksdb_memory_mb=0, rocksdb_block_cache_mb=32)
    assert all(type(s) is faust_rocksdb.Store for s in stores)
    assert all(s.rocksdb_options.block_cache_size == 32 * MB for s in stores)
    assert "detector_rocksdb_memory_bytes" not in generate_latest(metrics.registry).decode()


def test_databases_of_different_tables_fill_one_cache_which_stays_bounded(tmp_path: Path) -> None:
    stores, _ = _worker_stores(tmp_path, rocksdb_memory_mb=16)
    memory: SharedMemory = stores[0].rocksdb_options.memory
    # Each table partition is its own database, opened as the store opens it.
    dbs = [s.rocksdb_options.open(s.partition_path(0)) for s in stores[:2]]
    for i, db in enumerate(dbs):
        _fill(db, b"t%d-" % i, 3000)  # 12 MB each: together more than the budget
        db.flush()

    def read_all(db: Any, prefix: bytes) -> None:
        for k in range(3000):
            assert db[prefix + b"%06d" % k] is not None

    read_all(dbs[0], b"t0-")
    after_first = memory.usage()["block_cache"]
    read_all(dbs[1], b"t1-")
    after_second = memory.usage()
    # Reading the second table's database used the same cache, which evicted
    # to stay within the budget (separate caches would have 24 MB between them).
    assert after_first > 4 * MB
    assert after_second["block_cache"] <= 16 * MB * 1.05
    assert after_second["block_cache_capacity"] == 16 * MB
    for db in dbs:
        db.close()


def test_memtables_are_charged_to_the_shared_cache(tmp_path: Path) -> None:
    memory = SharedMemory(64 * MB)
    db = _Options(memory, write_buffer_size=16 * MB).open(tmp_path / "one.db")
    before = memory.usage()
    _fill(db, b"k", 1000)  # 4 MB, below one write buffer: stays in the memtable
    usage = memory.usage()
    assert usage["memtables"] - before["memtables"] >= 2 * MB
    # Charged: the cache's usage includes the memtables (nothing was read).
    assert usage["block_cache"] >= usage["memtables"]
    db.close()


def test_options_keep_faust_sizes_and_add_the_shared_parts(tmp_path: Path) -> None:
    memory = SharedMemory(32 * MB)
    options = _Options(memory, write_buffer_size=8 * MB, block_cache_size=2048 * MB)
    assert options.write_buffer_size == 8 * MB
    assert int(memory.write_buffers.get_buffer_size()) == int(32 * MB * MEMTABLE_SHARE)
    db = options.open(tmp_path / "x.db")
    db[b"a"] = b"1"
    assert db[b"a"] == b"1"
    db.close()


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SharedMemory(0)


@pytest.mark.parametrize("flags", [{}, {"rocksdb_memory_mb": 0}], ids=["batches", "faust"])
def test_state_writes_land_in_each_keys_partition_database(
    tmp_path: Path, flags: dict[str, int]
) -> None:
    """The worker's state write: our store's write batches store what faust's per-key sets do."""
    from detector.stream.worker import _KeyBinding, _Pipeline

    async def run() -> tuple[Any, list[tuple[int, bytes, bytes]], dict[int, dict[bytes, bytes]],
                             list[bytes]]:
        settings = WorkerSettings(model_dir=MODEL_DIR, state_dir=tmp_path, store="rocksdb://",
                                  partitions=4, **flags)
        metrics = StreamMetrics()
        app = build_app(settings, ModelHolder(settings.model_dir, metrics), metrics)
        table = app.tables["baselines"]
        topic = settings.internal_topic("by-entity")
        entries = [(b"k%d" % i, b"v%d" % i, _KeyBinding(topic, i % 4)) for i in range(50)]
        entries.append((b"k3", b"v3-again", _KeyBinding(topic, 3)))  # the last value wins
        sensed: list[bytes] = []
        table._sensor_on_set = lambda _table, key, _value: sensed.append(key)
        records = _Pipeline._to_store(None, table, entries)  # type: ignore[arg-type]
        store = table.data
        stored = {p: {bytes(k): bytes(v) for k, v in store._db_for_partition(p).items()}
                  for p in range(4)}
        return store, records, stored, sensed

    store, records, stored, sensed = asyncio.run(run())
    assert (type(store) is Store) == (flags == {})
    if type(store) is Store:
        assert store.writes_raw_batches(), "the write-batch path is the one taken"
    want_records = [(i % 4, b"k%d" % i, b"v%d" % i) for i in range(50)] + [(3, b"k3", b"v3-again")]
    assert records == want_records
    want: dict[int, dict[bytes, bytes]] = {p: {} for p in range(4)}
    for p, k, v in want_records:
        want[p][k] = v
    assert stored == want
    assert store._key_index[b"k7"] == 3
    assert sensed == [k for _, k, _ in want_records], "the table sensor sees every set"
