"""The ``detector`` command line: generate, train, replay, demo, evaluate, worker, produce,
responses, keys.

This is an entry point: it configures logging and progress output and calls
the pure core. Nothing here decides anything.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from detector.gctune import (
    DEFAULT_THRESHOLD,
    THRESHOLD_HELP,
    apply_threshold,
    format_threshold,
    parse_threshold,
)

logger = logging.getLogger("detector")

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default"


def _default_model() -> Path:
    # Installed in place (pip install -e .), models/ sits beside the package;
    # otherwise use ./models/default.
    return DEFAULT_MODEL if DEFAULT_MODEL.is_dir() else Path("models/default")


def _progress(description: str, total: int | None = None):  # type: ignore[no-untyped-def]
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        disable=not sys.stderr.isatty(),
    )


def cmd_generate(args: argparse.Namespace) -> int:
    """Write a synthetic workforce dataset."""
    from detector.generate import GeneratorConfig, write_dataset

    cfg = GeneratorConfig(
        users=args.users,
        days=args.days,
        seed=args.seed,
        attacks=not args.no_attacks,
        attack_days_from=args.attack_days_from,
    )
    started = time.perf_counter()
    summary = write_dataset(cfg, Path(args.out))
    elapsed = time.perf_counter() - started
    print(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2).decode())
    print(f"wrote {summary.events} events to {args.out} in {elapsed:.1f}s", file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model directory from event files."""
    from detector.train import TrainConfig, train

    tcfg = TrainConfig(
        n_estimators=args.trees,
        max_samples=args.max_samples,
        seed=args.seed,
        step_up_budget=args.step_up_budget,
        revoke_budget=args.revoke_budget,
        step_up_risk=args.step_up_risk,
        revoke_risk=args.revoke_risk,
        name=args.name or Path(args.out).name,
    )
    paths = [Path(p) for p in args.events]
    report = train(paths, Path(args.out), tcfg, log=lambda m: print(m, file=sys.stderr))
    print(
        orjson.dumps(
            {
                "model_dir": str(report.model_dir),
                "version": report.version,
                "events": report.events,
                "rejected": report.rejected,
                "by_kind": report.by_kind,
                "entities": report.entities,
                "entity_days": report.entity_days,
                "thresholds": {
                    "step_up": report.thresholds.step_up,
                    "revoke": report.thresholds.revoke,
                },
            },
            option=orjson.OPT_INDENT_2,
        ).decode()
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay event files through a model; write decisions and rejects; return the exit code."""
    # Restored on return: main() also runs inside notebooks and tests.
    previous = apply_threshold(args.gc_threshold)
    try:
        return _replay(args)
    finally:
        apply_threshold(previous)


def _replay(args: argparse.Namespace) -> int:
    from detector.engine import Detector
    from detector.model import load_model
    from detector.replay import replay

    paths = [Path(p) for p in args.events]
    total_bytes = sum(p.stat().st_size for p in paths)
    det = Detector(load_model(args.model))
    rejects_fh = open(args.rejects, "wb") if args.rejects else None  # noqa: SIM115
    try:
        with open(args.decisions, "wb") as out, _progress("replay") as bar:
            task = bar.add_task("replay", total=None)
            stats = replay(
                det,
                paths,
                out,
                rejects_fh,
                batch_size=args.batch_size,
                progress=lambda n: bar.update(task, completed=n),
            )
    finally:
        if rejects_fh is not None:
            rejects_fh.close()
    rate = stats.accepted / stats.seconds if stats.seconds else 0.0
    summary = {
        "lines": stats.lines,
        "accepted": stats.accepted,
        "rejected": stats.rejected,
        "reject_reasons": dict(stats.reject_reasons),
        "actions": dict(stats.actions),
        "signals": stats.signals,
        "seconds": round(stats.seconds, 3),
        "events_per_s": round(rate),
        "input_mb": round(total_bytes / 1e6, 2),
        "model_version": det.model.version,
    }
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the embedded demo (no broker)."""
    from detector.demo import run_demo

    return run_demo(
        model_dir=Path(args.model) if args.model else _default_model(),
        users=args.users,
        seed=args.seed,
        warmup_days=args.warmup_days,
        show=args.show,
    )


# ------------------------------------------------------------------ streaming
#
# Settings come from flags and DETECTOR_* environment variables (flags win);
# this entry point is the only place that reads the environment.

_CONN_FIELDS = (
    "bootstrap_servers",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "ssl_cafile",
)
_WORKER_FIELDS = (
    "app_id",
    "input_topics",
    "response_topic",
    "dlq_topic",
    "decisions_topic",
    "partitions",
    "replication_factor",
    "state_dir",
    "store",
    "batch_max",
    "batch_within_s",
    "web_host",
    "web_port",
    "model_poll_s",
    "commit_interval_s",
    "log_level",
    "fetch_max_wait_ms",
    "fetch_min_bytes",
    "max_future_skew_s",
    "batch_idle_s",
    "ingest",
    "topology",
    "faust_consumer",
    "state_writes",
    "output_sends",
    "changelog_sends",
    "gc_threshold",
    "rocksdb_write_buffer_mb",
    "rocksdb_block_cache_mb",
    "rocksdb_memory_mb",
    "signing_key_file",
    "signing_kid",
    "issuer",
    "audience",
    "producer_request_timeout_ms",
)


def _connection(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Build the connection settings and check them against the brokers.

    A refused password or an untrusted broker certificate fails here, with a
    message that names the cause (``BrokerConnectionError``, printed by
    :func:`main`), instead of as a client's retry loop ending in a timeout.
    """
    import os

    from detector.stream.preflight import check_connection
    from detector.stream.settings import KafkaConnection

    conn = KafkaConnection.from_env(os.environ, **{f: getattr(args, f) for f in _CONN_FIELDS})
    check_connection(conn)
    return conn


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a streaming worker until SIGTERM."""
    import os

    from detector.stream.preflight import check_connection
    from detector.stream.settings import WorkerSettings
    from detector.stream.worker import run_worker

    overrides = {f: getattr(args, f) for f in (*_CONN_FIELDS, *_WORKER_FIELDS)}
    model = args.model or os.environ.get("DETECTOR_MODEL_DIR") or str(_default_model())
    settings = WorkerSettings.from_env(os.environ, model_dir=model, **overrides)
    # Fail fast and clearly on refused credentials or an untrusted certificate
    # (Faust would retry them forever, and kafka-python time out vaguely).
    check_connection(settings.kafka)
    return run_worker(settings, json_logs=args.log_format == "json")


def cmd_produce(args: argparse.Namespace) -> int:
    """Publish events from JSONL files or the generator."""
    from detector.stream.producer import EventProducer, iter_generated, iter_jsonl

    if bool(args.events) == bool(args.generate):
        raise ValueError("give --events FILE (repeatable) or --generate")
    lines = (
        iter_jsonl(args.events)
        if args.events
        else iter_generated(args.users, args.days, args.seed, attacks=not args.no_attacks)
    )
    producer = EventProducer(_connection(args), args.auth_topic, args.network_topic)
    try:
        with _progress("produce") as bar:
            task = bar.add_task("produce", total=None)
            stats = producer.publish(
                lines, rate=args.rate, progress=lambda s: bar.update(task, completed=s.read)
            )
    finally:
        producer.close()
    print(orjson.dumps(stats.to_dict(), option=orjson.OPT_INDENT_2).decode())
    return 1 if stats.failed else 0


def cmd_responses(args: argparse.Namespace) -> int:
    """Tail the response topic and act on every signal."""
    import os
    import signal
    import threading

    from detector.sets import SetVerifier, load_jwks
    from detector.stream.responses import (
        FileHandler,
        HandlerFailed,
        HttpPostHandler,
        PrintHandler,
        ResponseConsumer,
    )

    verifier = None
    if args.jwks:
        if args.allow_unsigned:
            raise ValueError("--jwks and --allow-unsigned exclude each other")
        verifier = SetVerifier(
            load_jwks(Path(args.jwks).read_bytes()),
            issuer=args.issuer,
            audience=args.audience,
            max_age_s=args.max_age_s,
            future_skew_s=args.future_skew_s,
        )
        logger.info("verifying signals: kids=%s iss=%s aud=%s max_age_s=%s",
                    ",".join(sorted(verifier.keys)), args.issuer, args.audience, args.max_age_s)
    elif args.allow_unsigned:
        logger.warning("--allow-unsigned: acting on signals WITHOUT verifying them")
    else:
        raise ValueError(
            "give --jwks FILE to verify signed signals, or --allow-unsigned to act on "
            "unverified ones (see docs/signals.md)"
        )
    if args.body == "set" and verifier is None:
        raise ValueError("--body set needs --jwks (only verified SETs are forwarded)")

    handler: PrintHandler | FileHandler | HttpPostHandler
    if args.handler == "print":
        handler = PrintHandler()
    elif args.handler == "file":
        if not args.file:
            raise ValueError("--handler file needs --file PATH")
        handler = FileHandler(args.file)
    else:
        if not args.url:
            raise ValueError("--handler http needs --url URL")
        handler = HttpPostHandler(
            args.url,
            body=args.body,
            issuer=args.issuer,
            token=os.environ.get("DETECTOR_RESPONSES_TOKEN") or None,
            timeout_s=args.http_timeout,
        )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    consumer = ResponseConsumer(
        _connection(args),
        args.topic,
        args.group_id,
        handler,
        max_attempts=args.max_attempts,
        backoff_s=args.backoff,
        backoff_max_s=args.backoff_max,
        verifier=verifier,
        allow_unsigned=args.allow_unsigned,
    )
    try:
        stats = consumer.run(stop, idle_timeout_s=args.idle_timeout)
    except HandlerFailed as exc:
        print(f"detector responses: {exc}", file=sys.stderr)
        return 1
    finally:
        consumer.close()
    print(orjson.dumps(stats.to_dict()).decode(), file=sys.stderr)
    return 0


def _write_private(path: Path, data: bytes) -> None:
    # O_EXCL: never overwrite a key; 0600 from the start, not chmod afterwards.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """Write a new ES256 (P-256) signing key as a 0600 PEM file; print its kid."""
    from detector.sets import (
        generate_private_key,
        jwk_thumbprint,
        load_private_key,
        private_key_pem,
    )

    out = Path(args.out)
    if out.exists():
        if not args.keep_existing:
            raise ValueError(f"{out} exists: refusing to overwrite a key (--keep-existing)")
        key = load_private_key(out.read_bytes())
        created = False
    else:
        key = generate_private_key()
        _write_private(out, private_key_pem(key))
        created = True
    kid = args.kid or jwk_thumbprint(key)
    print(orjson.dumps({"out": str(out), "kid": kid, "created": created}).decode())
    return 0


def cmd_keys_jwks(args: argparse.Namespace) -> int:
    """Write the JWKS (public keys only) of one or more signing keys."""
    from detector.sets import load_public_key, render_jwks

    kids = args.kid or []
    if kids and len(kids) != len(args.key):
        raise ValueError("give one --kid per --key, in the same order, or none")
    keys = [load_public_key(Path(p).read_bytes()) for p in args.key]
    doc = render_jwks(zip(keys, kids or [None] * len(keys), strict=True))
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    if args.out in (None, "-"):
        sys.stdout.write(data.decode())
        return 0
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)  # public by design
    tmp.replace(out)  # readers never see a half-written JWKS
    print(orjson.dumps({"out": str(out), "kids": [k["kid"] for k in doc["keys"]]}).decode())
    return 0


def _add_connection_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Kafka connection (or DETECTOR_<NAME> environment variables)")
    g.add_argument("--bootstrap-servers", help="host:port[,host:port]")
    g.add_argument(
        "--security-protocol", choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
    )
    g.add_argument("--sasl-mechanism", choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    g.add_argument("--sasl-username")
    g.add_argument(
        "--sasl-password", help="prefer DETECTOR_SASL_PASSWORD: flags show up in ps"
    )
    g.add_argument("--ssl-cafile", type=Path, help="CA bundle to verify the brokers")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``detector`` command."""
    p = argparse.ArgumentParser(
        prog="detector",
        description="Streaming behavioral anomaly detector for zero-trust authorization.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a synthetic workforce with labelled attacks")
    g.add_argument("--users", type=int, default=200)
    g.add_argument("--days", type=int, default=7)
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--no-attacks", action="store_true", help="benign traffic only")
    g.add_argument(
        "--attack-days-from", type=int, default=0, help="attacks start on this day index"
    )
    g.set_defaults(func=cmd_generate)

    t = sub.add_parser("train", help="fit isolation forests on replayed history")
    t.add_argument("--events", action="append", required=True, help="JSONL file (repeatable)")
    t.add_argument("--out", required=True, help="model directory, e.g. models/mine")
    t.add_argument("--trees", type=int, default=100)
    t.add_argument("--max-samples", type=int, default=256)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--step-up-budget", type=float, default=0.5, help="per 100 entity-days")
    t.add_argument("--revoke-budget", type=float, default=0.2, help="per 1,000 entity-days")
    t.add_argument("--step-up-risk", type=float, default=None, help="explicit risk threshold")
    t.add_argument("--revoke-risk", type=float, default=None, help="explicit risk threshold")
    t.add_argument("--name", default=None)
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("replay", help="decide every event of JSONL files, in order")
    r.add_argument("--model", required=True, help="model directory")
    r.add_argument("--events", action="append", required=True, help="JSONL file (repeatable)")
    r.add_argument("--decisions", required=True, help="output JSONL, one decision per event")
    r.add_argument("--rejects", default=None, help="output JSONL of rejected lines")
    r.add_argument("--batch-size", type=int, default=1000)
    r.add_argument("--gc-threshold", type=parse_threshold,
                   default=format_threshold(DEFAULT_THRESHOLD), help=THRESHOLD_HELP)
    r.set_defaults(func=cmd_replay)

    d = sub.add_parser("demo", help="embedded demo: a small organisation, a day with attacks")
    d.add_argument("--model", default=None, help="model directory (default: models/default)")
    d.add_argument("--users", type=int, default=120)
    d.add_argument("--seed", type=int, default=2026)
    d.add_argument("--warmup-days", type=int, default=7)
    d.add_argument("--show", type=int, default=25, help="signals to print as they fire")
    d.set_defaults(func=cmd_demo)

    from detector import evaluate

    evaluate.add_parser(sub)

    w = sub.add_parser("worker", help="run a streaming worker (Faust) on Kafka")
    _add_connection_flags(w)
    w.add_argument("--model", default=None, help="model directory (or DETECTOR_MODEL_DIR)")
    w.add_argument("--app-id", help="consumer group and internal topic prefix")
    w.add_argument("--input-topics", help="comma-separated input topics")
    w.add_argument("--response-topic")
    w.add_argument("--dlq-topic", help="dead-letter topic")
    w.add_argument("--decisions-topic", help="optional audit topic of every decision")
    w.add_argument("--partitions", type=int, help="partitions of internal topics and tables")
    w.add_argument("--replication-factor", type=int)
    w.add_argument("--state-dir", type=Path, help="table store directory")
    w.add_argument("--store", choices=["rocksdb://", "memory://"])
    w.add_argument("--batch-max", type=int, help="events per micro-batch at most")
    w.add_argument("--batch-within-s", type=float, help="seconds to wait for a batch")
    w.add_argument("--web-host")
    w.add_argument("--web-port", type=int, help="/metrics and /health port")
    w.add_argument("--model-poll-s", type=float, help="model change poll interval, 0 = off")
    w.add_argument("--commit-interval-s", type=float)
    w.add_argument("--fetch-max-wait-ms", type=int,
                   help="longest a fetch waits for data (ms); bounds the per-hop latency")
    w.add_argument("--fetch-min-bytes", type=int,
                   help="least data an input fetch waits for, up to --fetch-max-wait-ms "
                        "(default 1: answer at once); fewer, fuller fetches on a live feed")
    w.add_argument("--max-future-skew-s", type=float,
                   help="reject events timed this far after their record timestamp (0 = off)")
    w.add_argument("--producer-request-timeout-ms", type=int,
                   help="how long the producer retries a send before the worker resends it "
                        "itself (back-pressure, never dropped); default 30000")
    w.add_argument("--batch-idle-s", type=float,
                   help="hand a batch on once no event arrived for this long "
                        "(0 = fixed --batch-within-s window)")
    w.add_argument("--ingest", choices=["direct", "faust"],
                   help="read the input topics with a batched aiokafka consumer (direct, "
                        "default) or a Faust agent (faust)")
    w.add_argument("--topology", choices=["fused", "staged"],
                   help="run the stateful stages in process after the parse whenever this "
                        "worker owns all their partitions (fused, default; staged otherwise) "
                        "or always as Faust agents behind internal topics (staged)")
    w.add_argument("--faust-consumer", choices=["loop", "thread"],
                   help="run Faust's consumer on the worker's event loop (loop, default) or "
                        "in Faust's own thread (thread)")
    w.add_argument("--state-writes", choices=["commit", "batch"],
                   help="write changed states to the tables once per offset commit (commit, "
                        "default) or after every batch (batch)")
    w.add_argument("--output-sends", choices=["partition", "record"],
                   help="hand keyed outputs (decisions, signals, dead letters) to the producer "
                        "as one batch per partition (partition, default) or one send per "
                        "record (record)")
    w.add_argument("--changelog-sends", choices=["partition", "table"],
                   help="write changed states to the store and hand their changelog records "
                        "to the producer as one batch per partition (partition, default), or "
                        "through Faust's Table API, one send per key (table)")
    w.add_argument("--gc-threshold", help=THRESHOLD_HELP)
    w.add_argument("--rocksdb-write-buffer-mb", type=int,
                   help="RocksDB write buffer per table partition, MB (up to 3 each; default 64)")
    w.add_argument("--rocksdb-block-cache-mb", type=int,
                   help="RocksDB block cache per table partition, MB (default 2048); "
                        "used only with --rocksdb-memory-mb 0")
    w.add_argument("--rocksdb-memory-mb", type=int,
                   help="one RocksDB memory budget for all table partitions of the worker, MB: "
                        "a shared block cache holding memtables, index and filter blocks "
                        "(default 512; 0: faust's per-partition caches)")
    w.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    w.add_argument("--log-format", choices=["json", "text"], default="json")
    ws = w.add_argument_group(
        "signing (docs/signals.md); the PEM itself may come in DETECTOR_SIGNING_KEY")
    ws.add_argument("--signing-key-file", type=Path, help="EC P-256 private key (PEM, 0600)")
    ws.add_argument("--signing-kid", help="kid of the key (default: RFC 7638 thumbprint)")
    ws.add_argument("--issuer", help="SET iss claim (default urn:zt-detector)")
    ws.add_argument("--audience", help="SET aud claim (default urn:zt-detector:responses)")
    w.set_defaults(func=cmd_worker)

    pr = sub.add_parser("produce", help="publish events to the input topics, keyed by entity")
    _add_connection_flags(pr)
    pr.add_argument("--events", action="append", help="JSONL file (repeatable)")
    pr.add_argument("--generate", action="store_true", help="publish generated events")
    pr.add_argument("--users", type=int, default=50)
    pr.add_argument("--days", type=int, default=1)
    pr.add_argument("--seed", type=int, default=42)
    pr.add_argument("--no-attacks", action="store_true")
    pr.add_argument("--auth-topic", default="zt.auth")
    pr.add_argument("--network-topic", default="zt.network")
    pr.add_argument("--rate", type=float, default=None, help="events/s (default: max)")
    pr.set_defaults(func=cmd_produce)

    rs = sub.add_parser("responses", help="reference revocation consumer of the response topic")
    _add_connection_flags(rs)
    rs.add_argument("--topic", default="zt.responses")
    rs.add_argument("--group-id", default="zt-responses")
    rs.add_argument("--handler", choices=["print", "file", "http"], default="print")
    rs.add_argument("--file", help="file handler: JSONL file to append to")
    rs.add_argument("--url", help="http handler: endpoint to POST each signal to")
    rs.add_argument("--body", choices=["signal", "caep", "set"], default="signal",
                    help="http handler: the record, the CAEP payload, or the signed SET")
    rs.add_argument("--issuer", default="urn:zt-detector",
                    help="expected SET iss (and the CAEP iss of --body caep)")
    rv = rs.add_argument_group("verification (docs/signals.md)")
    rv.add_argument("--jwks", help="JWKS file of the workers' public keys: verify every signal")
    rv.add_argument("--audience", default="urn:zt-detector:responses", help="expected SET aud")
    rv.add_argument("--max-age-s", type=float, default=900.0,
                    help="freshness window: older signals are refused as expired")
    rv.add_argument("--future-skew-s", type=float, default=60.0,
                    help="tolerated clock skew for an iat in the future")
    rv.add_argument("--allow-unsigned", action="store_true",
                    help="act on signals without verifying them (no --jwks)")
    rs.add_argument("--http-timeout", type=float, default=10.0)
    rs.add_argument("--max-attempts", type=int, default=0, help="0 = retry forever")
    rs.add_argument("--backoff", type=float, default=0.5, help="first retry delay (s)")
    rs.add_argument("--backoff-max", type=float, default=30.0)
    rs.add_argument("--idle-timeout", type=float, default=None,
                    help="exit after this many seconds without a record")
    rs.set_defaults(func=cmd_responses)

    k = sub.add_parser("keys", help="signing keys and the JWKS published to consumers")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kg = ksub.add_parser("generate", help="write a new ES256 signing key (PEM, mode 0600)")
    kg.add_argument("--out", required=True, help="private key file to create")
    kg.add_argument("--kid", help="key id to report (default: RFC 7638 thumbprint); a custom "
                    "kid must also be given to the worker (--signing-kid) and to keys jwks")
    kg.add_argument("--keep-existing", action="store_true",
                    help="if --out exists, keep it and report its kid")
    kg.set_defaults(func=cmd_keys_generate)
    kj = ksub.add_parser("jwks", help="write the JWKS (public keys only) of signing keys")
    kj.add_argument("--key", action="append", required=True,
                    help="private or public key PEM (repeatable: old and new key for rotation)")
    kj.add_argument("--kid", action="append", help="kid per --key, same order (default: "
                    "thumbprints)")
    kj.add_argument("--out", default=None, help="JWKS file (default: stdout)")
    kj.set_defaults(func=cmd_keys_jwks)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``detector`` command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        code: int = args.func(args)
    except (OSError, ValueError) as exc:
        print(f"detector {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
