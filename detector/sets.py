"""Signed Security Event Tokens: ES256 JWS over the CAEP SET of a signal.

A signal on the response topic is only as trustworthy as the topic's ACLs
unless it is signed: a forged ``revoke`` is a denial of service. This module
signs each signal as a Security Event Token (RFC 8417) in JWS compact
serialisation (RFC 7515) with ES256 (ECDSA P-256 / SHA-256, RFC 7518), and
verifies one.

Header: ``{"alg": "ES256", "kid": ..., "typ": "secevent+jwt"}``.
Claims: ``iss``, ``aud``, ``iat``, ``jti`` (= the ``signal_id``, so a
redelivered event keeps its id), ``sub_id`` and the CAEP ``events`` (from
:func:`detector.signals.to_caep_set`), plus the private claim ``zt_signal``:
the complete response-topic record, so a verifier gets every signal field
from the signed payload and never has to trust the unsigned envelope.

``kid`` is the RFC 7638 JWK thumbprint of the public key unless one is given;
verifiers look keys up by ``kid`` in a JWKS, which is how keys rotate.

Verification refuses with a :class:`SetError` whose ``reason`` is one of
:data:`REFUSAL_REASONS` (stable codes, append only). Replays are detected by
the caller with a :class:`ReplayCache`, because a ``jti`` may only be
remembered once its signal has been acted on.

Pure: nothing here reads the clock or the environment. Callers pass ``iat``
and ``now`` (epoch seconds); key material comes in as PEM bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from detector.signals import to_caep_set

ALG: Final = "ES256"
SET_TYP: Final = "secevent+jwt"
#: The private claim carrying the complete response-topic record.
SIGNAL_CLAIM: Final = "zt_signal"
#: The response-record field carrying the compact JWS (appended to the
#: signal fields, which are an append-only API).
SET_FIELD: Final = "set"
DEFAULT_ISSUER: Final = "urn:zt-detector"
DEFAULT_AUDIENCE: Final = "urn:zt-detector:responses"
#: Freshness window. A signal older than this is refused: it bounds how long
#: a captured token can be replayed to a consumer that has forgotten its
#: ``jti`` (e.g. after a restart) and how long ``jti`` must be remembered.
#: The price: a consumer lagging more than this refuses genuine signals.
DEFAULT_MAX_AGE_S: Final = 900.0
#: Tolerated clock skew for an ``iat`` in the future.
DEFAULT_FUTURE_SKEW_S: Final = 60.0

#: Stable refusal reason codes (append only).
REFUSAL_REASONS: Final = (
    "unsigned",        # the record carries no token
    "malformed",       # not a compact JWS, bad base64url/JSON, missing or mistyped claims
    "bad_alg",         # alg other than ES256 (``none`` included)
    "bad_typ",         # typ other than secevent+jwt
    "unknown_kid",     # no key with this kid in the JWKS
    "bad_signature",   # the signature does not verify
    "wrong_issuer",
    "wrong_audience",
    "expired",         # iat older than the freshness window
    "future_iat",      # iat further in the future than the allowed skew
    "replayed",        # jti already acted on within the freshness window
    "mismatch",        # the unsigned envelope disagrees with the signed signal
)

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_COORD_BYTES: Final = 32  # P-256 coordinates and r, s are 32 bytes each


class SetError(ValueError):
    """A token was refused; ``reason`` is one of :data:`REFUSAL_REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- encoding
def b64url_encode(data: bytes) -> str:
    """Return unpadded base64url text (RFC 7515 section 2).

    Examples
    --------
    >>> b64url_encode(b"\\xfb\\xff")
    '-_8'
    """
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Return the bytes of unpadded base64url text; ``ValueError`` if not strict.

    Padding, whitespace and characters outside the URL-safe alphabet are
    refused (a lenient decoder lets two different tokens mean the same).

    Examples
    --------
    >>> b64url_decode("-_8")
    b'\\xfb\\xff'
    """
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not unpadded base64url") from exc


def _int_b64(value: int) -> str:
    return b64url_encode(value.to_bytes(_COORD_BYTES, "big"))


# ---------------------------------------------------------------- keys
def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """Return a new P-256 signing key."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Return ``key`` as an unencrypted PKCS#8 PEM (protect the file, not the bytes)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _check_p256(key: object) -> None:
    curve = getattr(key, "curve", None)
    if not isinstance(curve, ec.SECP256R1):
        raise ValueError("ES256 needs an EC P-256 key")


def load_private_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Return the P-256 private key in a PEM (PKCS#8 or SEC1, unencrypted).

    Raises ``ValueError`` (whose message never contains key material) for
    anything else.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # cryptography's messages name the problem, never the key bytes.
        raise ValueError(f"not an unencrypted PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("ES256 needs an EC P-256 key")
    _check_p256(key)
    return key


def load_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    """Return the P-256 public key of a PEM holding a public or a private key."""
    if b"PRIVATE KEY" in pem:
        return load_private_key(pem).public_key()
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM public key ({type(exc).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("ES256 needs an EC P-256 key")
    _check_p256(key)
    return key


def _public(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey
            ) -> ec.EllipticCurvePublicKey:
    return key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key


def jwk_thumbprint(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> str:
    """Return the RFC 7638 JWK SHA-256 thumbprint of a P-256 key (its default ``kid``).

    The hash input is the required members ``crv, kty, x, y`` in that
    (lexicographic) order, without whitespace.

    Examples
    --------
    >>> k = load_private_key(private_key_pem(generate_private_key()))
    >>> len(jwk_thumbprint(k)), jwk_thumbprint(k) == jwk_thumbprint(k.public_key())
    (43, True)
    """
    numbers = _public(key).public_numbers()
    # orjson keeps insertion order; these are the required members, sorted.
    canonical = orjson.dumps(
        {"crv": "P-256", "kty": "EC", "x": _int_b64(numbers.x), "y": _int_b64(numbers.y)}
    )
    return b64url_encode(hashlib.sha256(canonical).digest())


def public_jwk(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey,
               kid: str | None = None) -> dict[str, str]:
    """Return the public JWK of a P-256 key (never the private part).

    ``kid`` defaults to :func:`jwk_thumbprint`.
    """
    numbers = _public(key).public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _int_b64(numbers.x),
        "y": _int_b64(numbers.y),
        "kid": kid or jwk_thumbprint(key),
        "use": "sig",
        "alg": ALG,
    }


def render_jwks(
    keys: Iterable[tuple[ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey, str | None]],
) -> dict[str, Any]:
    """Return a JWKS document ``{"keys": [...]}`` of public keys, one per ``(key, kid)``.

    Several keys (by ``kid``) is how rotation works: publish the new key
    next to the old one, switch the workers, drop the old key once no
    signal signed with it can still be fresh. Raises ``ValueError`` on a
    duplicate ``kid``.

    Examples
    --------
    >>> a, b = generate_private_key(), generate_private_key()
    >>> doc = render_jwks([(a, "2026-01"), (b, None)])
    >>> [k["kid"] for k in doc["keys"]][0], "d" in doc["keys"][0]
    ('2026-01', False)
    >>> sorted(load_jwks(doc))[0] in {"2026-01", jwk_thumbprint(b)}
    True
    """
    out = [public_jwk(k, kid) for k, kid in keys]
    kids = [j["kid"] for j in out]
    if len(set(kids)) != len(kids):
        raise ValueError("duplicate kid in JWKS")
    return {"keys": out}


def load_jwks(doc: Mapping[str, Any] | bytes) -> dict[str, ec.EllipticCurvePublicKey]:
    """Return ``kid -> public key`` of the ES256 keys of a JWKS document.

    Keys of other types or algorithms are skipped; a malformed EC key, a
    duplicate ``kid`` or a key carrying private material (``d``) is an error
    (``ValueError``): a JWKS must never publish a private key.
    """
    if isinstance(doc, bytes | bytearray):
        try:
            doc = orjson.loads(doc)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"JWKS is not JSON: {exc}") from None
    keys = doc.get("keys") if isinstance(doc, Mapping) else None
    if not isinstance(keys, list):
        raise ValueError('JWKS needs a "keys" list')
    out: dict[str, ec.EllipticCurvePublicKey] = {}
    for jwk in keys:
        if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            continue
        if jwk.get("alg", ALG) != ALG or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise ValueError("JWKS EC key without a kid")
        if "d" in jwk:
            raise ValueError(f"JWKS key {kid} contains private key material")
        if kid in out:
            raise ValueError(f"duplicate kid {kid} in JWKS")
        try:
            x = b64url_decode(str(jwk["x"]))
            y = b64url_decode(str(jwk["y"]))
            if len(x) != _COORD_BYTES or len(y) != _COORD_BYTES:
                raise ValueError("coordinate length")
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            )
            out[kid] = numbers.public_key()  # checks the point is on the curve
        except (KeyError, ValueError) as exc:
            raise ValueError(f"JWKS key {kid} is not a valid P-256 key: {exc}") from None
    if not out:
        raise ValueError("JWKS holds no ES256 key")
    return out


# ---------------------------------------------------------------- signing
def set_claims(signal: Mapping[str, Any], issuer: str, audience: str, iat: int
               ) -> dict[str, Any]:
    """Return the SET claims of a signal record: CAEP claims plus ``zt_signal``.

    ``jti`` is the ``signal_id``; ``iat`` is the signing time (epoch seconds),
    passed in because the core never reads the clock.
    """
    claims = to_caep_set(dict(signal), issuer, audience, iat=int(iat))
    claims[SIGNAL_CLAIM] = dict(signal)
    return claims


class SetSigner:
    """Sign signal records as ES256 Security Event Tokens.

    Parameters
    ----------
    key : the P-256 private key
    issuer, audience : the ``iss`` and ``aud`` claims
    kid : key id in the header; defaults to the RFC 7638 thumbprint

    The key never appears in ``repr``.

    Examples
    --------
    >>> signer = SetSigner(generate_private_key(), "urn:det", "urn:idp")
    >>> sig = {"signal_id": "abc", "action": "revoke", "entity": "ana",
    ...        "entity_kind": "user", "session_id": None, "event_ts_ms": 0,
    ...        "risk": 1.0, "reasons": []}
    >>> token = signer.sign(sig, iat=1_767_225_600)
    >>> token.count("."), "PRIVATE" in repr(signer)
    (2, False)
    >>> v = SetVerifier({signer.kid: signer.public_key}, "urn:det", "urn:idp")
    >>> v.verify(token, now=1_767_225_601).signal == sig
    True
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey, issuer: str, audience: str,
                 kid: str | None = None) -> None:
        _check_p256(key)
        if not issuer or not audience:
            raise ValueError("issuer and audience must not be empty")
        self._key = key
        self.issuer = issuer
        self.audience = audience
        self.kid = kid or jwk_thumbprint(key)
        self._header = b64url_encode(
            orjson.dumps({"alg": ALG, "kid": self.kid, "typ": SET_TYP})
        )

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """Return the public half of the signing key."""
        return self._key.public_key()

    def __repr__(self) -> str:
        return f"SetSigner(kid={self.kid!r}, issuer={self.issuer!r}, audience={self.audience!r})"

    def sign_claims(self, claims: Mapping[str, Any]) -> str:
        """Return the compact JWS of arbitrary ``claims`` with this key."""
        signing_input = f"{self._header}.{b64url_encode(orjson.dumps(dict(claims)))}"
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        # JWS wants the raw r || s (RFC 7518 section 3.4), not DER.
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(_COORD_BYTES, "big") + s.to_bytes(_COORD_BYTES, "big")
        return f"{signing_input}.{b64url_encode(raw)}"

    def sign(self, signal: Mapping[str, Any], iat: int) -> str:
        """Return the compact JWS SET of a signal record, issued at ``iat``."""
        return self.sign_claims(set_claims(signal, self.issuer, self.audience, iat))


def signed_record(signal: Mapping[str, Any], signer: SetSigner | None, iat: int) -> bytes:
    """Return the response-topic bytes of a signal: its record plus the ``set`` token.

    Without a signer the record goes out unsigned (consumers refuse it
    unless they explicitly allow unsigned signals).
    """
    if signer is None:
        return orjson.dumps(dict(signal))
    return orjson.dumps({**signal, SET_FIELD: signer.sign(signal, iat)})


# ---------------------------------------------------------------- verifying
@dataclass(frozen=True, slots=True)
class VerifiedSet:
    """A token that passed verification: its signal record, claims and ``kid``."""

    signal: dict[str, Any]
    claims: dict[str, Any]
    kid: str
    token: str

    @property
    def jti(self) -> str:
        """Return the token id (the ``signal_id``)."""
        jti: str = self.claims["jti"]
        return jti

    @property
    def iat(self) -> float:
        """Return the issued-at time (epoch seconds)."""
        return float(self.claims["iat"])


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(b64url_decode(part))
    except (ValueError, orjson.JSONDecodeError):
        raise SetError("malformed", f"{what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise SetError("malformed", f"{what} is not a JSON object")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value
    )


class SetVerifier:
    """Verify signal SETs against a JWKS, an issuer, an audience and a freshness window.

    Parameters
    ----------
    keys : ``kid -> public key`` (see :func:`load_jwks`); several kids = rotation
    issuer : the expected ``iss``
    audience : the expected ``aud`` (a string, or a member of a list ``aud``)
    max_age_s : a token with ``iat`` older than ``now - max_age_s`` is ``expired``
    future_skew_s : a token with ``iat`` later than ``now + future_skew_s`` is ``future_iat``

    Only ``alg: ES256`` is accepted (``none`` and every other algorithm are
    refused before any key is touched), keys come only from ``keys`` (never
    from ``jwk``/``jku``/``x5u`` headers), and a ``crit`` header is refused.
    """

    def __init__(
        self,
        keys: Mapping[str, ec.EllipticCurvePublicKey],
        issuer: str,
        audience: str,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        future_skew_s: float = DEFAULT_FUTURE_SKEW_S,
    ) -> None:
        if not keys:
            raise ValueError("a verifier needs at least one key")
        if max_age_s <= 0 or future_skew_s < 0:
            raise ValueError("max_age_s must be > 0 and future_skew_s >= 0")
        self.keys = dict(keys)
        self.issuer = issuer
        self.audience = audience
        self.max_age_s = max_age_s
        self.future_skew_s = future_skew_s

    def verify(self, token: str, now: float) -> VerifiedSet:
        """Return the verified token's content, or raise :class:`SetError`.

        Checks, in order: shape, header (alg, typ, crit, kid), signature,
        claims (types, iss, aud, iat window, jti = signal_id).
        """
        if not isinstance(token, str):
            raise SetError("malformed", "token is not a string")
        parts = token.split(".")
        if len(parts) != 3:
            raise SetError("malformed", "not a compact JWS")
        head_b64, body_b64, sig_b64 = parts
        header = _json_part(head_b64, "header")
        alg = header.get("alg")
        if alg != ALG:
            raise SetError("bad_alg", f"alg {str(alg)[:16]!r}")
        if header.get("typ") != SET_TYP:
            raise SetError("bad_typ", f"typ {str(header.get('typ'))[:32]!r}")
        if "crit" in header:
            raise SetError("malformed", "crit header not supported")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise SetError("unknown_kid", "no kid")
        key = self.keys.get(kid)
        if key is None:
            raise SetError("unknown_kid", f"kid {kid[:64]!r}")
        try:
            raw = b64url_decode(sig_b64)
        except ValueError:
            raise SetError("malformed", "signature is not base64url") from None
        if len(raw) != 2 * _COORD_BYTES:
            raise SetError("bad_signature", "signature is not 64 bytes (r || s)")
        der = encode_dss_signature(
            int.from_bytes(raw[:_COORD_BYTES], "big"), int.from_bytes(raw[_COORD_BYTES:], "big")
        )
        try:
            key.verify(der, f"{head_b64}.{body_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SetError("bad_signature") from None
        claims = _json_part(body_b64, "payload")
        self._check_claims(claims, now)
        return VerifiedSet(claims[SIGNAL_CLAIM], claims, kid, token)

    def _check_claims(self, claims: dict[str, Any], now: float) -> None:
        signal = claims.get(SIGNAL_CLAIM)
        if not isinstance(signal, dict) or not isinstance(signal.get("signal_id"), str):
            raise SetError("malformed", f"no {SIGNAL_CLAIM} claim")
        if not isinstance(claims.get("jti"), str) or not _number(claims.get("iat")):
            raise SetError("malformed", "jti or iat missing")
        if not isinstance(claims.get("events"), dict) or "sub_id" not in claims:
            raise SetError("malformed", "events or sub_id missing")
        if claims.get("iss") != self.issuer:
            raise SetError("wrong_issuer")
        aud = claims.get("aud")
        if not (aud == self.audience or (isinstance(aud, list) and self.audience in aud)):
            raise SetError("wrong_audience")
        iat = float(claims["iat"])
        if iat < now - self.max_age_s:
            raise SetError("expired", f"{now - iat:.0f}s old, max {self.max_age_s:.0f}s")
        if iat > now + self.future_skew_s:
            raise SetError("future_iat", f"{iat - now:.0f}s ahead")
        if claims["jti"] != signal["signal_id"]:
            raise SetError("mismatch", "jti differs from signal_id")

    def verify_record(self, record: Mapping[str, Any], now: float) -> VerifiedSet:
        """Verify a response-topic record: its ``set`` token, then its envelope.

        The envelope (every field but ``set``) must equal the signed signal
        exactly, else ``mismatch``: a consumer acts only on signed content,
        and a disagreement means someone edited the record.
        """
        token = record.get(SET_FIELD)
        if token is None:
            raise SetError("unsigned")
        verified = self.verify(token, now)
        envelope = {k: v for k, v in record.items() if k != SET_FIELD}
        if envelope != verified.signal:
            raise SetError("mismatch", "the record differs from the signed signal")
        return verified

    def valid_until(self, verified: VerifiedSet) -> float:
        """Return when ``verified`` stops being fresh (its jti may be forgotten then)."""
        return verified.iat + self.max_age_s


class ReplayCache:
    """Remember acted-on ``jti`` values until their token can no longer be fresh.

    A ``jti`` is kept until the ``until`` given to :meth:`remember` (for a
    verified token: ``iat + max_age_s``); after that the token is refused as
    ``expired`` anyway. Memory is therefore bounded by the signal rate times
    the freshness window, not by a count: evicting a fresh jti early would
    reopen the replay window.

    Examples
    --------
    >>> cache = ReplayCache()
    >>> cache.remember("j1", until=100.0)
    >>> cache.seen("j1", now=50.0), cache.seen("j1", now=101.0), len(cache)
    (True, False, 0)
    """

    def __init__(self) -> None:
        self._until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def prune(self, now: float) -> None:
        """Forget every jti whose ``until`` has passed."""
        expired = [j for j, until in self._until.items() if until < now]
        for j in expired:
            del self._until[j]

    def seen(self, jti: str, now: float) -> bool:
        """Return True when ``jti`` was remembered and has not yet expired at ``now``."""
        until = self._until.get(jti)
        if until is None:
            return False
        if until < now:
            del self._until[jti]
            return False
        return True

    def remember(self, jti: str, until: float) -> None:
        """Remember ``jti`` until ``until`` (kept at the later of two expiries)."""
        self._until[jti] = max(until, self._until.get(jti, until))
