"""The streaming runtime: Kafka in and out around the pure core.

* :mod:`detector.stream.settings` -- frozen settings built from CLI flags and
  the environment (entry points only).
* :mod:`detector.stream.stages` -- the pure, broker-free stage logic the worker
  runs (parse, per-IP, per-session, per-entity) and its wire records.
* :mod:`detector.stream.worker` -- the Faust adapter (the only module that
  imports ``faust``).
* :mod:`detector.stream.producer` / :mod:`detector.stream.responses` --
  kafka-python producer and reference revocation consumer.

Importing this package imports nothing heavy; no module builds an app or a
client at import time.
"""
