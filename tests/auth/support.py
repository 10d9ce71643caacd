"""Offline Clerk test kit: RSA keys, a signer for the clerk.md §8.4 base token, the §3.2 attack
matrix as data, and ``JwksServer``, a TEST DOUBLE of Clerk's JWKS endpoint on loopback that
counts its fetches and misbehaves on demand (no test fetches Clerk's real JWKS).

Tokens are signed with PyJWT's algorithm objects over hand-built headers and payloads, so a
malformed token (a numeric ``kid``, duplicate members, an array payload) is still properly
signed and is refused for the reason under test, not for a bad signature.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm, get_default_algorithms

from agent_server.auth.clerk import ClerkConfig

ISSUER = "https://clerk.example.com"
APP_ORIGIN = "https://app.example.com"
LOCAL_ORIGIN = "http://localhost:3000"
AUTHORIZED_PARTIES = (APP_ORIGIN, LOCAL_ORIGIN)
KID = "ins_test"
USER = "user_test"
SESSION = "sess_test"
MACHINE_ID = "mch_ours"  # our machine: M2M JWTs must name it
CALLER_MACHINE = "mch_caller"  # the machine presenting the M2M JWT
NOW = 1_750_000_000.0  # the fixed clock of the unit tests

SESSION_CAT = "cl_B7d4PD111AAA"
TEMPLATE_CAT = "cl_B7d4PD222AAA"
M2M_CAT = "cl_B7d4PD333AAA"
IGNORE_CAT = "cl_I7d4PD111III"


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP: Any = _Drop()  # as an override value: leave the claim (or header member) out


# Keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RsaKey:
    private: rsa.RSAPrivateKey

    @functools.cached_property
    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def jwk(self, kid: str = KID, **extra: Any) -> dict[str, Any]:
        """The public key as a Clerk JWKS entry; ``extra`` overrides members (DROP removes)."""
        entry = {**RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)}
        entry.update({"use": "sig", "kid": kid, "alg": "RS256"})
        return _apply(entry, extra)


@functools.cache
def rsa_key(name: str = "a", bits: int = 2048) -> RsaKey:
    """One RSA key per name and size for the whole test session (key A signs by default)."""
    del name  # only the cache key
    return RsaKey(rsa.generate_private_key(public_exponent=65537, key_size=bits))


@functools.cache
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# Signing ----------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(part: Mapping[str, Any] | bytes) -> str:
    return b64url(part if isinstance(part, bytes) else json.dumps(part).encode())


def sign(
    header: Mapping[str, Any] | bytes,
    payload: Mapping[str, Any] | bytes,
    key: Any = None,
    alg: str = "RS256",
) -> str:
    """A compact JWS of exactly these header and payload (raw bytes are used as given),
    signed with ``alg`` (key A by default; ``none``/``None``: no signature; HS256: ``key``
    is the secret)."""
    signing_input = f"{_segment(header)}.{_segment(payload)}".encode()
    if alg in ("none", "None"):
        return signing_input.decode() + "."
    if alg.startswith("HS"):
        signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    else:
        if key is None:
            key = rsa_key().private
        elif isinstance(key, RsaKey):
            key = key.private
        signature = get_default_algorithms()[alg].sign(signing_input, key)
    return f"{signing_input.decode()}.{b64url(signature)}"


def _apply(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    for name, value in overrides.items():
        if value is DROP:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def session_header(**overrides: Any) -> dict[str, Any]:
    return _apply({"alg": "RS256", "kid": KID, "typ": "JWT", "cat": SESSION_CAT}, overrides)


def session_claims(now: float = NOW, **overrides: Any) -> dict[str, Any]:
    """The §8.4 base fixture: a v2 session token issued ``now``, valid 60 s."""
    t = int(now)
    claims = {
        "azp": APP_ORIGIN,
        "exp": t + 60,
        "iat": t,
        "iss": ISSUER,
        "nbf": t - 10,
        "sid": SESSION,
        "sub": USER,
        "v": 2,
        "jti": "jti_test",
    }
    return _apply(claims, overrides)


def make_token(
    *,
    now: float = NOW,
    header: Mapping[str, Any] | None = None,
    key: Any = None,
    alg: str = "RS256",
    **claims: Any,
) -> str:
    """A signed session token: the base fixture with ``claims`` overridden (DROP removes) and
    ``header`` members overridden the same way."""
    header = {"alg": alg, **(header or {})}
    return sign(session_header(**header), session_claims(now, **claims), key, alg)


def machine_claims(now: float = NOW, **overrides: Any) -> dict[str, Any]:
    """An M2M JWT as Clerk's JS fixtures show it: ``sub`` mch_…, ``scopes``, no sid/azp."""
    t = int(now)
    claims = {
        "exp": t + 300,
        "iat": t,
        "iss": ISSUER,
        "nbf": t - 10,
        "sub": CALLER_MACHINE,
        "jti": "mt_test",
        "scopes": f"{MACHINE_ID} mch_elsewhere",
    }
    return _apply(claims, overrides)


def make_machine_token(
    *, now: float = NOW, header: Mapping[str, Any] | None = None, key: Any = None, **claims: Any
) -> str:
    return sign(
        session_header(**{"cat": M2M_CAT, **(header or {})}), machine_claims(now, **claims), key
    )


def pem_config(**overrides: Any) -> ClerkConfig:
    """PEM mode (key A), the §3.2 issuer and allow-list, our machine id."""
    settings: dict[str, Any] = {
        "issuer": ISSUER,
        "authorized_parties": AUTHORIZED_PARTIES,
        "jwt_key": rsa_key().public_pem,
        "machine_id": MACHINE_ID,
    }
    settings.update(overrides)
    return ClerkConfig(**settings)


def jwks_config(url: str, **overrides: Any) -> ClerkConfig:
    settings: dict[str, Any] = {
        "issuer": ISSUER,
        "authorized_parties": AUTHORIZED_PARTIES,
        "jwks_url": url,
        "machine_id": MACHINE_ID,
    }
    settings.update(overrides)
    return ClerkConfig(**settings)


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# The §3.2 attack matrix (rows 1-53) and the §8.4 extras, as data ---------------------------


@dataclass(frozen=True)
class Case:
    """One token and its pinned verdicts.

    ``ours``: None if accepted, else the reason code. ``sdk``: whether clerk-backend-api 7.0.0
    accepts it in PEM mode with ``accepts_token=['session_token']`` (clerk.md §3.2).
    """

    id: str
    build: Callable[[float], str]  # now -> token
    ours: str | None
    sdk: bool
    row: int | None = None  # the §3.2 row, None for the §8.4 extras


def _m2m_session_path(now: float, **claims: Any) -> str:
    return sign(session_header(cat=M2M_CAT), machine_claims(now, **claims))


def _raw_payload(now: float, text: str) -> str:
    return sign(session_header(), text.encode())


def _with_duplicate_sub(now: float) -> str:
    body = json.dumps(session_claims(now))[:-1] + ', "sub": "user_admin"}'
    return _raw_payload(now, body)


def _bit_flipped(now: float) -> str:
    head, body, signature = make_token(now=now).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{body}.{b64url(bytes(raw))}"


def _padded_to(size: int) -> Callable[[float], str]:
    """A valid token of exactly ``size`` characters: a ``pad`` claim fills it up, and since
    unpadded base64 never has a length of 4k+1, a header member may be left out to get there."""

    def build(now: float) -> str:
        for header in ({}, {"typ": DROP}, {"cat": DROP}, {"typ": DROP, "cat": DROP}):
            guess = (size - len(make_token(now=now, header=header, pad=""))) * 3 // 4
            for pad in range(max(0, guess - 4), guess + 8):
                token = make_token(now=now, header=header, pad="x" * pad)
                if len(token) == size:
                    return token
        raise AssertionError(f"no token of {size} characters")

    return build


def _truncated(now: float) -> str:
    head, body, signature = make_token(now=now).split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return f"{head}.{body}.{b64url(raw[:-3])}"


def _matrix() -> list[Case]:
    b = rsa_key("b")
    attacker = rsa_key("attacker")
    long_kid = "ins_" + "k" * 125
    cases = [
        Case("valid_v2", lambda t: make_token(now=t), None, True, 1),
        Case(
            "valid_v1",
            lambda t: make_token(
                now=t,
                v=DROP,
                org_id="org_1",
                org_role="org:admin",
                org_permissions=["org:sys_memberships:read"],
            ),
            None,
            True,
            2,
        ),
        Case("exp_minus_3s", lambda t: make_token(now=t, iat=t - 57, nbf=t - 67, exp=t - 3),
             None, True, 3),
        Case("exp_minus_30s", lambda t: make_token(now=t, iat=t - 90, nbf=t - 100, exp=t - 30),
             "expired", False, 4),
        Case("nbf_plus_3s", lambda t: make_token(now=t, nbf=t + 3), None, True, 5),
        Case("nbf_plus_60s", lambda t: make_token(now=t, nbf=t + 60), "not_yet_valid", False, 6),
        Case("iat_plus_60s", lambda t: make_token(now=t, iat=t + 60, exp=t + 120, nbf=DROP),
             "iat_in_future", False, 7),
        Case("exp_missing", lambda t: make_token(now=t, exp=DROP), "missing_claim:exp", True, 8),
        Case("exp_not_numeric", lambda t: make_token(now=t, exp="soon"), "bad_claim:exp",
             False, 9),
        Case("exp_plus_1_year", lambda t: make_token(now=t, exp=t + 365 * 86400),
             "lifetime_too_long", True, 10),
        Case("iat_missing", lambda t: make_token(now=t, iat=DROP), "missing_claim:iat", True, 11),
        Case("nbf_missing", lambda t: make_token(now=t, nbf=DROP), None, True, 12),
        Case("azp_wrong", lambda t: make_token(now=t, azp="https://evil.example.com"),
             "azp_not_allowed", False, 13),
        Case("azp_missing", lambda t: make_token(now=t, azp=DROP), "azp_missing", False, 14),
        Case("iss_wrong", lambda t: make_token(now=t, iss="https://clerk.other.example.com"),
             "wrong_issuer", True, 15),
        Case("iss_missing", lambda t: make_token(now=t, iss=DROP), "missing_claim:iss", True, 16),
        Case("sid_missing", lambda t: make_token(now=t, sid=DROP), "missing_claim:sid", True, 17),
        Case("sub_missing", lambda t: make_token(now=t, sub=DROP), "missing_claim:sub", True, 18),
        Case("sub_not_string", lambda t: make_token(now=t, sub=123), "bad_claim:sub", False, 19),
        Case("aud_present", lambda t: make_token(now=t, aud="https://api.example.com"), None,
             False, 20),
        Case("sts_pending", lambda t: make_token(now=t, sts="pending"), "pending_session",
             True, 21),
        Case("other_key_known_kid", lambda t: make_token(now=t, key=b), "bad_signature",
             False, 22),
        Case("other_key_unknown_kid",
             lambda t: make_token(now=t, key=b, header={"kid": "ins_other"}), "bad_signature",
             False, 23),
        # PEM mode pins the key, so a kid it does not know is not refused (JWKS mode refuses
        # it: test_jwks.py); see the clerk module docstring.
        Case("right_key_unknown_kid_pem",
             lambda t: make_token(now=t, header={"kid": "ins_other"}), None, True, 24),
        Case("kid_missing", lambda t: make_token(now=t, header={"kid": DROP}), "kid_missing",
             True, 25),
        Case("kid_number", lambda t: make_token(now=t, header={"kid": 42}), "kid_invalid",
             False, 26),
        Case("alg_none", lambda t: make_token(now=t, alg="none"), "alg_not_allowed", False, 27),
        Case("alg_None", lambda t: make_token(now=t, alg="None"), "alg_not_allowed", False, 28),
        Case("signature_stripped", lambda t: make_token(now=t).rsplit(".", 1)[0] + ".",
             "bad_signature", False, 29),
        Case("hs256_with_pem_secret",
             lambda t: make_token(now=t, alg="HS256", key=rsa_key().public_pem.encode()),
             "alg_not_allowed", False, 30),
        Case("rs384", lambda t: make_token(now=t, alg="RS384"), "alg_not_allowed", False, 31),
        Case("ps256", lambda t: make_token(now=t, alg="PS256"), "alg_not_allowed", False, 32),
        Case("es256", lambda t: make_token(now=t, alg="ES256", key=ec_key()),
             "alg_not_allowed", False, 33),
        Case("jku_attacker",
             lambda t: make_token(now=t, key=attacker,
                                  header={"jku": "https://attacker.example/jwks.json"}),
             "bad_signature", False, 34),
        Case("x5u_right_key",
             lambda t: make_token(now=t, header={"x5u": "https://attacker.example/cert.pem"}),
             None, True, 35),
        Case("jwk_embedded_attacker",
             lambda t: make_token(now=t, key=attacker, header={"jwk": attacker.jwk()}),
             "bad_signature", False, 36),
        Case("crit_exp", lambda t: make_token(now=t, header={"crit": ["exp"]}),
             "crit_not_allowed", False, 37),
        Case("typ_at_jwt", lambda t: make_token(now=t, header={"typ": "at+jwt"}),
             "typ_not_allowed", True, 38),
        Case("m2m_jwt", lambda t: _m2m_session_path(t), "wrong_token_class", False, 39),
        Case("m2m_jwt_with_our_azp", lambda t: _m2m_session_path(t, azp=APP_ORIGIN),
             "wrong_token_class", True, 40),
        Case("template_token",
             lambda t: make_token(now=t, header={"cat": TEMPLATE_CAT}, sid=DROP, exp=t + 3600),
             "wrong_token_class", True, 41),
        Case("cat_session", lambda t: make_token(now=t, header={"cat": SESSION_CAT}), None,
             True, 42),
        Case("cat_missing", lambda t: make_token(now=t, header={"cat": DROP}), None, True, 43),
        Case("typ_missing", lambda t: make_token(now=t, header={"typ": DROP}), None, True, 44),
        Case("two_segments", lambda t: make_token(now=t).rsplit(".", 1)[0], "malformed",
             False, 45),
        Case("four_segments", lambda t: make_token(now=t) + ".e30", "malformed", False, 46),
        Case("bad_base64",
             lambda t: "{}.{}.{}".format(*_with_segment(make_token(now=t), 1, "eyJzdWIi0")),
             "malformed", False, 47),
        Case("array_payload", lambda t: _raw_payload(t, json.dumps([session_claims(t)])),
             "malformed", False, 48),
        Case("empty", lambda t: "", "malformed", False, 49),
        Case("duplicate_sub", _with_duplicate_sub, "duplicate_member", True, 50),
        Case("token_100kb", lambda t: make_token(now=t, pad="x" * 100_000), "too_large",
             True, 51),
        Case("exp_float", lambda t: make_token(now=t, exp=t + 60.5), None, True, 52),
        Case("exp_true", lambda t: make_token(now=t, exp=True), "bad_claim:exp", False, 53),
        # §8.4 extras
        Case("iat_plus_3s", lambda t: make_token(now=t, iat=t + 3, exp=t + 63), None, True),
        Case("cat_ignore", lambda t: make_token(now=t, header={"cat": IGNORE_CAT}), None, True),
        Case("cat_unknown", lambda t: make_token(now=t, header={"cat": "cl_unknown"}),
             "wrong_token_class", True),
        Case("exp_false", lambda t: make_token(now=t, exp=False), "bad_claim:exp", False),
        Case("exp_numeric_string", lambda t: make_token(now=t, exp=str(int(t) + 60)),
             "bad_claim:exp", True),
        Case("exp_nan", lambda t: _raw_payload(
             t, json.dumps(session_claims(t)).replace(f'"exp": {int(t) + 60}', '"exp": NaN')),
             "malformed", False),
        Case("lifetime_over_max", lambda t: make_token(now=t, exp=t + 601), "lifetime_too_long",
             True),
        Case("lifetime_at_max", lambda t: make_token(now=t, exp=t + 600), None, True),
        Case("exp_before_iat", lambda t: make_token(now=t, iat=t + 2, exp=t + 1, nbf=DROP),
             "bad_claim:exp", True),
        Case("nbf_not_numeric", lambda t: make_token(now=t, nbf="now"), "bad_claim:nbf", False),
        Case("iat_not_numeric", lambda t: make_token(now=t, iat="now"), "bad_claim:iat", False),
        Case("sub_org_prefix", lambda t: make_token(now=t, sub="org_123"), "bad_claim:sub",
             True),
        Case("sub_machine_prefix", lambda t: make_token(now=t, sub="mch_123"), "bad_claim:sub",
             True),
        Case("sub_path", lambda t: make_token(now=t, sub="user_../admin"), "bad_claim:sub",
             True),
        Case("sid_bad_prefix", lambda t: make_token(now=t, sid="sid_123"), "bad_claim:sid",
             True),
        Case("sid_not_string", lambda t: make_token(now=t, sid=["sess_1"]), "bad_claim:sid",
             True),
        Case("iss_not_string", lambda t: make_token(now=t, iss=[ISSUER]), "wrong_issuer", True),
        Case("iss_trailing_slash", lambda t: make_token(now=t, iss=ISSUER + "/"),
             "wrong_issuer", True),
        Case("azp_localhost", lambda t: make_token(now=t, azp=LOCAL_ORIGIN), None, True),
        Case("azp_trailing_slash", lambda t: make_token(now=t, azp=APP_ORIGIN + "/"),
             "azp_not_allowed", False),
        Case("azp_not_string", lambda t: make_token(now=t, azp=[APP_ORIGIN]), "azp_not_allowed",
             False),
        Case("sts_active", lambda t: make_token(now=t, sts="active"), None, True),
        Case("jti_not_string", lambda t: make_token(now=t, jti=7), "bad_claim:jti", False),
        Case("kid_too_long", lambda t: make_token(now=t, header={"kid": long_kid}),
             "kid_invalid", True),
        Case("kid_path_traversal",
             lambda t: make_token(now=t, header={"kid": "../../../etc/passwd"}), "kid_invalid",
             True),
        Case("kid_empty", lambda t: make_token(now=t, header={"kid": ""}), "kid_invalid", True),
        Case("typ_lowercase", lambda t: make_token(now=t, header={"typ": "jwt"}),
             "typ_not_allowed", True),
        Case("b64_false", lambda t: make_token(now=t, header={"b64": False}), "b64_not_allowed",
             False),
        Case("duplicate_header_alg",
             lambda t: sign(b'{"alg":"RS256","kid":"ins_test","alg":"RS256"}',
                            session_claims(t)),
             "duplicate_member", True),
        Case("signature_truncated", _truncated, "bad_signature", False),
        Case("signature_bit_flipped", _bit_flipped, "bad_signature", False),
        Case("token_over_8kb", _padded_to(8193), "too_large", True),
        Case("token_at_8kb", _padded_to(8192), None, True),
        Case("opaque_mt", lambda t: "mt_abc123", "opaque_token", False),
        Case("opaque_m2m", lambda t: "m2m_abc123", "opaque_token", False),
        Case("opaque_ak", lambda t: "ak_abc123", "opaque_token", False),
        Case("opaque_oat", lambda t: "oat_abc123", "opaque_token", False),
        Case("opaque_prefixed_jwt", lambda t: "mt_" + make_token(now=t), "opaque_token", False),
    ]  # fmt: skip
    return cases


def _with_segment(token: str, index: int, value: str) -> list[str]:
    parts = token.split(".")
    parts[index] = value
    return parts


MATRIX: list[Case] = _matrix()
ROWS_FOR_THE_HTTP_LAYER = (54, 55, 56, 57, 58, 59)  # header and cookie extraction


# A JWKS endpoint on loopback ---------------------------------------------------------------


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 (any path) that counts its hits and misbehaves on demand:
    ``status`` (e.g. 500), ``delay`` (seconds before answering), ``redirect_to`` (a path),
    ``body`` (raw bytes instead of the keys), and :meth:`hold` (no answer until
    :meth:`release`: a server that hangs for as long as the test wants)."""

    def __init__(self, keys: list[dict[str, Any]] | None = None) -> None:
        self.keys = list(keys) if keys is not None else [rsa_key().jwk()]
        self.status = 200
        self.delay = 0.0
        self.redirect_to: str | None = None
        self.body: bytes | None = None
        self.paths: list[str] = []
        self.requested = threading.Event()  # set on every request
        self._answering = threading.Event()
        self._answering.set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.paths)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return self.base_url + "/.well-known/jwks.json"

    def hold(self) -> None:
        """Requests from now on are counted, then get no answer until :meth:`release`."""
        self._answering.clear()

    def release(self) -> None:
        self._answering.set()

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.paths.append(self.path)
                server.requested.set()
                server._answering.wait()
                if server.delay:
                    time.sleep(server.delay)
                if server.redirect_to is not None and self.path != server.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", server.base_url + server.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.body
                if body is None:
                    body = json.dumps({"keys": server.keys}).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
