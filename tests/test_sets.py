"""Signed SETs: signing, verification and every refusal, side by side (no broker)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from detector.engine import Detector, EngineState
from detector.model import load_model
from detector.policy import Action
from detector.sets import (
    REFUSAL_REASONS,
    SET_FIELD,
    SET_TYP,
    SIGNAL_CLAIM,
    ReplayCache,
    SetError,
    SetSigner,
    SetVerifier,
    b64url_decode,
    b64url_encode,
    generate_private_key,
    jwk_thumbprint,
    load_jwks,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_jwk,
    render_jwks,
    signed_record,
)
from detector.signals import CAEP_SESSION_REVOKED, to_signal
from detector.stream.settings import WorkerSettings
from detector.stream.signing import load_signer, signal_encoder
from tests.conftest import START_MS, make_auth

ISS, AUD = "https://detector.example", "https://idp.example"
NOW = 1_767_225_600
KEY = generate_private_key()
OTHER = generate_private_key()

SIGNAL: dict[str, Any] = {
    "schema": "zt-detector.signal/1", "signal_id": "0123456789abcdef0123456789abcdef",
    "action": "revoke", "entity": "ana", "entity_kind": "user", "entity_class": "employee",
    "session_id": "s-1", "risk": 0.97, "reasons": [{"code": "impossible_travel", "text": "x"}],
    "model_version": "m1", "event_id": "e1", "event_time": "2026-01-01T00:00:00.000Z",
    "event_ts_ms": 1767225600000, "kind": "auth",
}


def _signer(key: ec.EllipticCurvePrivateKey = KEY, **kw: Any) -> SetSigner:
    return SetSigner(key, kw.pop("issuer", ISS), kw.pop("audience", AUD), **kw)


def _verifier(*keys: ec.EllipticCurvePrivateKey, **kw: Any) -> SetVerifier:
    jwks = render_jwks([(k, None) for k in (keys or (KEY,))])
    return SetVerifier(load_jwks(jwks), kw.pop("issuer", ISS), kw.pop("audience", AUD), **kw)


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    h, p, s = token.split(".")
    return orjson.loads(b64url_decode(h)), orjson.loads(b64url_decode(p)), b64url_decode(s)


def _assemble(header: dict[str, Any], claims: dict[str, Any], sig: bytes) -> str:
    return ".".join(b64url_encode(x) for x in (orjson.dumps(header), orjson.dumps(claims), sig))


def _resign(header: dict[str, Any], claims: dict[str, Any],
            key: ec.EllipticCurvePrivateKey = KEY) -> str:
    """Sign arbitrary header and claims with ``key`` (an attacker holding a key)."""
    h = b64url_encode(orjson.dumps(header))
    p = b64url_encode(orjson.dumps(claims))
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(key.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{h}.{p}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


# ------------------------------------------------------------------ signing
def test_token_has_the_set_header_and_claims() -> None:
    signer = _signer()
    header, claims, sig = _parts(signer.sign(SIGNAL, iat=NOW))
    assert header == {"alg": "ES256", "kid": jwk_thumbprint(KEY), "typ": SET_TYP}
    assert {"iss", "aud", "iat", "jti", "sub_id", "events", SIGNAL_CLAIM} == set(claims)
    assert (claims["iss"], claims["aud"], claims["iat"]) == (ISS, AUD, NOW)
    assert claims["jti"] == SIGNAL["signal_id"], "redelivery keeps the id"
    assert claims[SIGNAL_CLAIM] == SIGNAL, "every signal field is in the signed payload"
    assert claims["sub_id"]["user"] == {"format": "opaque", "id": "ana"}
    assert CAEP_SESSION_REVOKED in claims["events"]
    assert len(sig) == 64, "ES256 signatures are raw r || s, not DER"


def test_signature_is_raw_r_s_that_verifies_as_der() -> None:
    token = _signer().sign(SIGNAL, iat=NOW)
    h, p, s = token.split(".")
    raw = b64url_decode(s)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    KEY.public_key().verify(der, f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256()))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_openssl_verifies_our_signature(tmp_path: Path) -> None:
    """An independent ECDSA implementation accepts the token (interop, not self-consistency)."""
    token = _signer().sign(SIGNAL, iat=NOW)
    h, p, s = token.split(".")
    raw = b64url_decode(s)
    (tmp_path / "in").write_bytes(f"{h}.{p}".encode())
    (tmp_path / "sig").write_bytes(encode_dss_signature(
        int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")))
    (tmp_path / "pub.pem").write_bytes(KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"),
         "-signature", str(tmp_path / "sig"), str(tmp_path / "in")],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0 and "Verified OK" in out.stdout, out.stderr


def test_signed_record_appends_the_token_to_the_unchanged_record() -> None:
    rec = orjson.loads(signed_record(SIGNAL, _signer(), iat=NOW))
    assert list(rec) == [*SIGNAL, SET_FIELD], "signal fields are append only"
    assert {k: v for k, v in rec.items() if k != SET_FIELD} == SIGNAL
    assert _verifier().verify_record(rec, now=NOW).signal == SIGNAL
    assert orjson.loads(signed_record(SIGNAL, None, iat=NOW)) == SIGNAL


def test_the_key_is_never_in_repr() -> None:
    signer = _signer()
    pem = private_key_pem(KEY).decode()
    body = "".join(pem.splitlines()[1:-1])
    assert body[:20] not in repr(signer) and "PRIVATE" not in repr(signer)
    assert str(KEY.private_numbers().private_value) not in repr(signer)


# ------------------------------------------------------------------ keys and JWKS
def test_thumbprint_is_rfc7638() -> None:
    jwk = public_jwk(KEY)
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")},
                           sort_keys=True, separators=(",", ":"))
    want = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest())
    assert jwk_thumbprint(KEY) == want.rstrip(b"=").decode() == jwk["kid"]
    assert len(b64url_decode(jwk["x"])) == 32 and "d" not in jwk


def test_pem_round_trips_and_public_key_loads_from_either_pem() -> None:
    pem = private_key_pem(KEY)
    assert jwk_thumbprint(load_private_key(pem)) == jwk_thumbprint(KEY)
    pub = KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    assert jwk_thumbprint(load_public_key(pub)) == jwk_thumbprint(load_public_key(pem))


@pytest.mark.parametrize(
    "make_pem",
    [
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()),
        lambda: ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()),
        lambda: private_key_pem(KEY).replace(b"A", b"B", 3),
        lambda: b"not a key",
    ],
    ids=["rsa", "p384", "corrupt", "garbage"],
)
def test_unsuitable_keys_are_refused_without_echoing_them(make_pem: Callable[[], bytes]) -> None:
    pem = make_pem()
    with pytest.raises(ValueError) as info:
        load_private_key(pem)
    body = [ln for ln in pem.decode(errors="replace").splitlines() if not ln.startswith("-")]
    assert not any(ln[:20] in str(info.value) for ln in body if len(ln) >= 20)
    assert "BEGIN" not in str(info.value)


def test_jwks_rotation_two_kids_verify_and_a_dropped_kid_is_unknown() -> None:
    old, new = _signer(KEY), _signer(OTHER, kid="2026-02")
    both = _verifier(KEY, OTHER)
    assert set(both.keys) == {jwk_thumbprint(KEY), jwk_thumbprint(OTHER)}
    keys = load_jwks(render_jwks([(KEY, None), (OTHER, "2026-02")]))
    v = SetVerifier(keys, ISS, AUD)
    for signer in (old, new):
        assert v.verify(signer.sign(SIGNAL, NOW), NOW).signal == SIGNAL
    after = SetVerifier(load_jwks(render_jwks([(OTHER, "2026-02")])), ISS, AUD)
    with pytest.raises(SetError) as info:
        after.verify(old.sign(SIGNAL, NOW), NOW)
    assert info.value.reason == "unknown_kid"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda j: j.update(d="AAAA"), "private key material"),
        (lambda j: j.update(x=b64url_encode(b"\x01" * 32)), "not a valid P-256 key"),
        (lambda j: j.update(x="AAA="), "not a valid P-256 key"),
        (lambda j: j.pop("kid"), "without a kid"),
    ],
    ids=["private", "off_curve", "padded", "no_kid"],
)
def test_bad_jwks_are_refused(mutate: Callable[[dict[str, Any]], Any], message: str) -> None:
    doc = render_jwks([(KEY, None)])
    mutate(doc["keys"][0])
    with pytest.raises(ValueError, match=message):
        load_jwks(doc)


def test_jwks_skips_other_key_types_and_refuses_duplicates_and_empty() -> None:
    doc = render_jwks([(KEY, "a")])
    doc["keys"].append({"kty": "RSA", "kid": "r", "n": "x", "e": "AQAB"})
    assert list(load_jwks(orjson.dumps(doc))) == ["a"]
    with pytest.raises(ValueError, match="duplicate"):
        render_jwks([(KEY, "a"), (OTHER, "a")])
    with pytest.raises(ValueError, match="duplicate"):
        load_jwks({"keys": [public_jwk(KEY, "a"), public_jwk(OTHER, "a")]})
    with pytest.raises(ValueError, match="no ES256 key"):
        load_jwks({"keys": []})
    with pytest.raises(ValueError, match="not JSON"):
        load_jwks(b"{")


# ------------------------------------------------------------------ refusals
def _tamper_payload(token: str) -> str:
    h, p, s = token.split(".")
    claims = orjson.loads(b64url_decode(p))
    claims[SIGNAL_CLAIM]["action"] = "step_up"
    return f"{h}.{b64url_encode(orjson.dumps(claims))}.{s}"


def _alg_none(token: str) -> str:
    header, claims, _ = _parts(token)
    return _assemble({**header, "alg": "none"}, claims, b"")


def _alg_hs256(token: str) -> str:
    """The classic confusion: HMAC keyed with the public key's bytes."""
    header, claims, _ = _parts(token)
    h = b64url_encode(orjson.dumps({**header, "alg": "HS256"}))
    p = b64url_encode(orjson.dumps(claims))
    mac = hmac.HMAC(orjson.dumps(public_jwk(KEY)), hashes.SHA256())
    mac.update(f"{h}.{p}".encode())
    return f"{h}.{p}.{b64url_encode(mac.finalize())}"


def _claims_edit(edit: Callable[[dict[str, Any]], Any], key: ec.EllipticCurvePrivateKey = KEY
                 ) -> Callable[[str], str]:
    def apply(token: str) -> str:
        header, claims, _ = _parts(token)
        edit(claims)
        return _resign(header, claims, key)
    return apply


def _header_edit(edit: Callable[[dict[str, Any]], Any]) -> Callable[[str], str]:
    def apply(token: str) -> str:
        header, claims, _ = _parts(token)
        edit(header)
        return _resign(header, claims)
    return apply


def _forged_with_embedded_jwk(token: str) -> str:
    """The attacker's own key, offered in the header: keys come only from the JWKS."""
    header, claims, _ = _parts(token)
    header = {**header, "jwk": public_jwk(OTHER)}
    return _resign(header, claims, OTHER)


CASES: list[tuple[str, Callable[[str], str], str]] = [
    ("forged_other_key_same_kid", _claims_edit(lambda c: None, OTHER), "bad_signature"),
    ("forged_other_key_own_kid",
     lambda t: _resign({**_parts(t)[0], "kid": jwk_thumbprint(OTHER)}, _parts(t)[1], OTHER),
     "unknown_kid"),
    ("forged_embedded_jwk", _forged_with_embedded_jwk, "bad_signature"),
    ("tampered_payload", _tamper_payload, "bad_signature"),
    ("tampered_signature", lambda t: t[:-4] + ("AAAA" if t[-4:] != "AAAA" else "BBBB"),
     "bad_signature"),
    ("short_signature", lambda t: t.rsplit(".", 1)[0] + "." + b64url_encode(b"x" * 70),
     "bad_signature"),
    ("alg_none", _alg_none, "bad_alg"),
    ("alg_hs256", _alg_hs256, "bad_alg"),
    ("typ_jwt", _header_edit(lambda h: h.update(typ="JWT")), "bad_typ"),
    ("no_kid", _header_edit(lambda h: h.pop("kid")), "unknown_kid"),
    ("crit", _header_edit(lambda h: h.update(crit=["exp"])), "malformed"),
    ("wrong_issuer", _claims_edit(lambda c: c.update(iss="https://evil.example")),
     "wrong_issuer"),
    ("wrong_audience", _claims_edit(lambda c: c.update(aud="https://other-idp.example")),
     "wrong_audience"),
    ("no_audience", _claims_edit(lambda c: c.pop("aud")), "wrong_audience"),
    ("expired", _claims_edit(lambda c: c.update(iat=NOW - 901)), "expired"),
    ("future_iat", _claims_edit(lambda c: c.update(iat=NOW + 61)), "future_iat"),
    ("iat_string", _claims_edit(lambda c: c.update(iat="now")), "malformed"),
    ("iat_bool", _claims_edit(lambda c: c.update(iat=True)), "malformed"),
    ("jti_differs", _claims_edit(lambda c: c.update(jti="another")), "mismatch"),
    ("no_signal_claim", _claims_edit(lambda c: c.pop(SIGNAL_CLAIM)), "malformed"),
    ("no_events", _claims_edit(lambda c: c.pop("events")), "malformed"),
    ("two_parts", lambda t: t.rsplit(".", 1)[0], "malformed"),
    ("padded_base64", lambda t: t.split(".")[0] + "=." + ".".join(t.split(".")[1:]),
     "malformed"),
    ("payload_not_json", lambda t: ".".join([t.split(".")[0], "bm90IGpzb24", t.split(".")[2]]),
     "bad_signature"),
    ("empty", lambda t: "", "malformed"),
]


def test_every_refusal_reason_is_covered() -> None:
    covered = {reason for _, _, reason in CASES} | {"unsigned", "replayed"}
    assert covered == set(REFUSAL_REASONS)


@pytest.mark.parametrize(("name", "attack", "reason"), CASES, ids=[c[0] for c in CASES])
def test_refusals(name: str, attack: Callable[[str], str], reason: str) -> None:
    good = _signer().sign(SIGNAL, iat=NOW)
    v = _verifier()
    assert v.verify(good, now=NOW).signal == SIGNAL, "the untouched token verifies"
    with pytest.raises(SetError) as info:
        v.verify(attack(good), now=NOW)
    assert info.value.reason == reason, info.value


def test_freshness_window_boundaries() -> None:
    v = _verifier(max_age_s=900, future_skew_s=60)
    token = _signer().sign(SIGNAL, iat=NOW)
    assert v.verify(token, now=NOW + 900).jti == SIGNAL["signal_id"]
    assert v.verify(token, now=NOW - 60).jti == SIGNAL["signal_id"]
    for now, reason in ((NOW + 901, "expired"), (NOW - 61, "future_iat")):
        with pytest.raises(SetError) as info:
            v.verify(token, now=now)
        assert info.value.reason == reason
    assert v.valid_until(v.verify(token, now=NOW)) == NOW + 900


def test_audience_list_and_string() -> None:
    token = _claims_edit(lambda c: c.update(aud=["x", AUD]))(_signer().sign(SIGNAL, NOW))
    assert _verifier().verify(token, NOW).signal == SIGNAL


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (dict(SIGNAL), "unsigned"),
        ({**SIGNAL, SET_FIELD: None}, "unsigned"),
        ({**SIGNAL, SET_FIELD: 42}, "malformed"),
        ({**SIGNAL, "action": "step_up", SET_FIELD: "TOKEN"}, "mismatch"),
        ({**SIGNAL, "entity": "bob", SET_FIELD: "TOKEN"}, "mismatch"),
        ({**SIGNAL, "extra": 1, SET_FIELD: "TOKEN"}, "mismatch"),
        ({k: v for k, v in SIGNAL.items() if k != "risk"} | {SET_FIELD: "TOKEN"}, "mismatch"),
    ],
    ids=["no_set", "null_set", "set_not_string", "outer_action", "outer_entity",
         "outer_extra", "outer_missing"],
)
def test_records_act_only_on_signed_content(record: dict[str, Any], reason: str) -> None:
    token = _signer().sign(SIGNAL, iat=NOW)
    record = {k: (token if v == "TOKEN" else v) for k, v in record.items()}
    with pytest.raises(SetError) as info:
        _verifier().verify_record(record, now=NOW)
    assert info.value.reason == reason


def test_set_error_accepts_only_known_reasons() -> None:
    with pytest.raises(ValueError, match="unknown refusal reason"):
        SetError("nope")


def test_replay_cache_keeps_the_later_expiry_and_prunes() -> None:
    cache = ReplayCache()
    cache.remember("a", until=100)
    cache.remember("a", until=50)
    cache.remember("b", until=10)
    assert cache.seen("a", now=99) and not cache.seen("b", now=11)
    cache.remember("c", until=20)
    cache.prune(now=30)
    assert len(cache) == 1 and cache.seen("a", now=30)


def test_b64url_is_strict() -> None:
    for bad in ("a", "ab=", "a b", "a+b", "a/b"):
        with pytest.raises(ValueError):
            b64url_decode(bad)
    assert b64url_decode(b64url_encode(b"\x00\xff\xfe")) == b"\x00\xff\xfe"


# ------------------------------------------------------------------ the worker's key loading
@pytest.fixture(scope="module")
def revoke_decision(small_model_dir: Path) -> Any:
    det = Detector(load_model(small_model_dir))
    t = START_MS + 9 * 3_600_000
    events = [make_auth(id="open", ts=t, session="s-1"),
              make_auth(id="hijack", ts=t + 60_000, session="s-1", country="BR", city="Recife",
                        lat=-8.05, lon=-34.9, asn=14061, ip="203.0.113.1")]
    d = det.process(events, EngineState())[1]
    assert d.action is Action.REVOKE
    return d


def _key_file(tmp_path: Path, key: ec.EllipticCurvePrivateKey = KEY) -> Path:
    path = tmp_path / "signing.pem"
    path.write_bytes(private_key_pem(key))
    path.chmod(0o600)
    return path


def test_worker_signs_every_signal_with_the_configured_key(
    tmp_path: Path, revoke_decision: Any
) -> None:
    settings = WorkerSettings.from_env(
        {"DETECTOR_SIGNING_KEY_FILE": str(_key_file(tmp_path)), "DETECTOR_ISSUER": ISS,
         "DETECTOR_AUDIENCE": AUD},
        model_dir="m",
    )
    encode = signal_encoder(settings, clock=lambda: NOW + 0.7)
    record = orjson.loads(encode(revoke_decision))
    verified = _verifier().verify_record(record, now=NOW)
    assert verified.signal == to_signal(revoke_decision)
    assert verified.iat == NOW and verified.kid == jwk_thumbprint(KEY)


def test_worker_key_from_the_environment_value(revoke_decision: Any) -> None:
    escaped = private_key_pem(KEY).decode().replace("\n", "\\n")
    settings = WorkerSettings.from_env(
        {"DETECTOR_SIGNING_KEY": escaped, "DETECTOR_SIGNING_KID": "k-2026"}, model_dir="m")
    assert escaped[40:80] not in repr(settings), "the key never shows in repr"
    signer = load_signer(settings)
    assert signer is not None and signer.kid == "k-2026"
    assert (signer.issuer, signer.audience) == ("urn:zt-detector", "urn:zt-detector:responses")


def test_worker_without_key_publishes_the_plain_record(revoke_decision: Any) -> None:
    settings = WorkerSettings(model_dir=Path("m"))
    assert not settings.signs and load_signer(settings) is None
    assert orjson.loads(signal_encoder(settings)(revoke_decision)) == to_signal(revoke_decision)


def test_worker_refuses_a_bad_key_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="bad.pem") as info:
        load_signer(WorkerSettings(model_dir=Path("m"), signing_key_file=path))
    assert "c2VjcmV0" not in str(info.value)


# ------------------------------------------------------------------ the CLI
def test_cli_keys_generate_and_jwks_for_rotation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from detector.cli import main

    old, new, jwks = tmp_path / "old.pem", tmp_path / "new.pem", tmp_path / "jwks.json"
    assert main(["keys", "generate", "--out", str(old)]) == 0
    kid_old = orjson.loads(capsys.readouterr().out)["kid"]
    assert old.stat().st_mode & 0o777 == 0o600
    assert kid_old == jwk_thumbprint(load_private_key(old.read_bytes()))
    assert main(["keys", "generate", "--out", str(old)]) == 2, "never overwrite a key"
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["keys", "generate", "--out", str(old), "--keep-existing"]) == 0
    assert orjson.loads(capsys.readouterr().out) == {"out": str(old), "kid": kid_old,
                                                      "created": False}
    assert main(["keys", "generate", "--out", str(new)]) == 0
    kid_new = orjson.loads(capsys.readouterr().out)["kid"]

    assert main(["keys", "jwks", "--key", str(old), "--key", str(new), "--out", str(jwks)]) == 0
    capsys.readouterr()
    doc = orjson.loads(jwks.read_bytes())
    assert [k["kid"] for k in doc["keys"]] == [kid_old, kid_new]
    assert all("d" not in k for k in doc["keys"]), "public keys only"
    v = SetVerifier(load_jwks(jwks.read_bytes()), ISS, AUD)
    for path in (old, new):
        signer = SetSigner(load_private_key(path.read_bytes()), ISS, AUD)
        assert v.verify(signer.sign(SIGNAL, NOW), NOW).kid == signer.kid

    assert main(["keys", "jwks", "--key", str(new), "--kid", "2026-02"]) == 0
    assert [k["kid"] for k in orjson.loads(capsys.readouterr().out)["keys"]] == ["2026-02"]
    assert main(["keys", "jwks", "--key", str(new), "--kid", "a", "--kid", "b"]) == 2


def test_cli_responses_refuses_to_start_without_jwks_or_allow_unsigned(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from detector.cli import main

    assert main(["responses"]) == 2
    err = capsys.readouterr().err
    assert "--jwks FILE" in err and "--allow-unsigned" in err
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(orjson.dumps(render_jwks([(KEY, None)])))
    assert main(["responses", "--jwks", str(jwks), "--allow-unsigned"]) == 2
    assert "exclude" in capsys.readouterr().err
    assert main(["responses", "--allow-unsigned", "--handler", "http", "--url",
                 "http://x.invalid", "--body", "set"]) == 2
    assert "--body set needs --jwks" in capsys.readouterr().err
