"""The worker's signal signing: load the key from the settings, encode signals.

The key comes from ``--signing-key-file`` / ``DETECTOR_SIGNING_KEY_FILE`` or
from the PEM text in ``DETECTOR_SIGNING_KEY`` (already read into the frozen
settings by the entry point). It is never logged: only its ``kid`` is.
``iat`` is the send time, read here because the core never reads the clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from detector.engine import Decision
from detector.sets import SetSigner, load_private_key, signed_record
from detector.signals import to_signal
from detector.stream.settings import WorkerSettings

logger = logging.getLogger(__name__)


def load_signer(settings: WorkerSettings) -> SetSigner | None:
    """Return the signer configured in ``settings``, or None when none is.

    Raises ``ValueError`` (naming the source, never the key) for an
    unreadable or unsuitable key.
    """
    if settings.signing_key_file is not None:
        path = settings.signing_key_file
        source = str(path)
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read signing key {path}: {exc.strerror}") from None
        if path.stat().st_mode & 0o077:
            logger.warning("signing key file %s is readable by group or others: chmod 600", path)
    elif settings.signing_key is not None:
        source = "DETECTOR_SIGNING_KEY"
        # an environment variable often carries the PEM with escaped newlines
        pem = settings.signing_key.replace("\\n", "\n").encode()
    else:
        return None
    try:
        key = load_private_key(pem)
    except ValueError as exc:
        raise ValueError(f"signing key from {source}: {exc}") from None
    return SetSigner(key, settings.issuer, settings.audience, settings.signing_kid)


def signal_encoder(
    settings: WorkerSettings, clock: Callable[[], float] = time.time
) -> Callable[[Decision], bytes]:
    """Return ``decision -> response-topic bytes``: the signal record plus its SET.

    Without a signing key the records go out unsigned (logged as a warning
    once, at start).
    """
    signer = load_signer(settings)

    def announce() -> None:
        if signer is None:
            logger.warning(
                "no signing key configured: signals are published UNSIGNED and verifying "
                "consumers will refuse them (see docs/signals.md)"
            )
        else:
            logger.info("signing signals kid=%s iss=%s aud=%s",
                        signer.kid, signer.issuer, signer.audience)

    announce()  # at start (before the worker's log handlers exist: WARNING shows)
    first = [True]

    def encode(decision: Decision) -> bytes:
        if first[0]:  # and again with the first signal, into the worker's log
            first[0] = False
            announce()
        return signed_record(to_signal(decision), signer, int(clock()))

    return encode
