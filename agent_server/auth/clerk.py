"""Clerk session tokens and M2M JWTs, verified offline (clerk.md §8.1, §8.3).

Why it looks the way it does:

- **Cheap refusals first.** Size, shape, header (``alg`` RS256 only, ``typ``, ``cat``, a
  ``kid`` of 1-128 characters from ``[A-Za-z0-9_.-]``, no ``crit``/``b64``) and duplicate JSON
  members are checked before any crypto or I/O, and Clerk's opaque machine tokens
  (``mt_``/``ak_``/``oat_``/``m2m_``) never reach the network from here.
  ``jku``/``x5u``/``jwk``/``x5c`` are ignored: keys come from config only.
- **M2M JWTs** (``verify_machine``) have their own path: ``cat`` absent or M2M, ``sub``
  ``mch_…``, no ``sid``, the same issuer and lifetime cap, and our ``machine_id`` among the
  ``scopes`` or in ``aud``; off (``machine_auth_off``) without a ``machine_id``.
- **Stricter than Clerk's SDKs** (§1.4, §3.2): exact ``iss``; ``exp``/``iat``/``sub``/``sid``
  required; ``azp`` required and exact when an allow-list is set; a lifetime cap; ``cat`` keeps
  template, M2M and OAuth tokens off the session path; pending sessions refused.
- **Our own clock.** PyJWT checks the signature, the required claims and ``iss``; ``exp``,
  ``nbf`` and ``iat`` are checked here against ``clock()`` with the skew, using PyJWT's
  boundaries (expired once ``exp <= now - skew``), so tests need no patched time.
- **Keys parsed once.** The PEM (``jwt_key``) is loaded at construction and pinned, with no
  network ever; a JWKS is cached per ``kid`` by :class:`~agent_server.auth.jwks.JwksCache`.
  In PEM mode the token must still name a well-formed ``kid``, but its value is not compared:
  the PEM carries no kid, and the pinned key is the only one that can verify anyway.
- **A reason per refusal** (:attr:`InvalidToken.reason`) for logs and tests; clients only
  ever see a 401.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import textwrap
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from agent_server.auth.jwks import KID, MIN_RSA_BITS, JwksCache, KeysUnavailable
from agent_server.auth.principals import Principal
from agent_server.scopes import AGENTS

logger = logging.getLogger(__name__)

ALGORITHMS = ["RS256"]
SESSION_CATEGORY = "cl_B7d4PD111AAA"
TEMPLATE_CATEGORY = "cl_B7d4PD222AAA"
M2M_CATEGORY = "cl_B7d4PD333AAA"
IGNORE_CATEGORY = "cl_I7d4PD111III"
SESSION_CATEGORIES = frozenset({SESSION_CATEGORY, IGNORE_CATEGORY})
MACHINE_CATEGORIES = frozenset({M2M_CATEGORY})
OPAQUE_PREFIXES = ("mt_", "ak_", "oat_", "m2m_")
MAX_CLOCK_SKEW_S = 60.0
MAX_PEEK_BYTES = 65_536  # names_a_machine reads no further (the size cap comes later)
SESSION_CLAIMS = ("exp", "iat", "iss", "sub", "sid")
MACHINE_CLAIMS = ("exp", "iat", "iss", "sub")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_USER = re.compile(r"user_[A-Za-z0-9_-]{1,120}")
_SESSION = re.compile(r"sess_[A-Za-z0-9_-]{1,120}")
_MACHINE = re.compile(r"mch_[A-Za-z0-9_-]{1,120}")
_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", re.S)
# Signature, required claims and iss by PyJWT; times, aud and the rest below.
_JWT = jwt.PyJWT(
    {"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False}
)


class InvalidToken(Exception):
    """The token is refused; ``reason`` is a short stable code for logs and tests."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ClerkConfig:
    issuer: str  # exact iss
    authorized_parties: tuple[str, ...] = ()  # exact azp allow-list; empty: not checked (dev)
    jwt_key: str | None = None  # PEM; literal "\n" escapes and a bare base64 body are fine
    jwks_url: str | None = None  # used when there is no jwt_key
    clock_skew_s: float = 5.0  # clamped to [0, 60]
    max_token_lifetime_s: int = 600
    max_token_bytes: int = 8192
    jwks_cache_ttl_s: float = 300.0
    jwks_refresh_cooldown_s: float = 30.0
    jwks_timeout_s: float = 3.0
    reject_pending_sessions: bool = True
    admin_org_role: str | None = "org:admin"  # normalised (``org:`` prefix added if missing)
    admin_claim_path: str | None = None  # e.g. "metadata.role"
    admin_claim_value: str = "admin"
    admin_max_factor_age_min: int | None = None  # step-up for admins, from ``fva``
    machine_id: str | None = None  # our ``mch_…``: M2M JWTs must name it in scopes or aud

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("a Clerk issuer (exact iss) is required")
        if not self.jwt_key and not self.jwks_url:
            raise ValueError("a Clerk PEM key (jwt_key) or a JWKS URL is required")
        if self.jwks_url and not self.jwt_key:
            _check_jwks_url(self.jwks_url)
        if self.max_token_lifetime_s <= 0 or self.max_token_bytes <= 0:
            raise ValueError("token lifetime and size limits must be positive")
        skew = float(self.clock_skew_s)
        if not math.isfinite(skew):
            raise ValueError("clock skew must be a number of seconds")
        object.__setattr__(self, "clock_skew_s", min(max(skew, 0.0), MAX_CLOCK_SKEW_S))
        object.__setattr__(self, "authorized_parties", tuple(self.authorized_parties))


class ClerkVerifier:
    """Verifies Clerk JWTs into :class:`Principal`; one per process, shared by all requests."""

    def __init__(
        self,
        config: ClerkConfig,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._clock = clock
        self._pinned: jwt.PyJWK | None = None
        self._jwks: JwksCache | None = None
        self._own_http: httpx.AsyncClient | None = None
        if config.jwt_key:
            self._pinned = pinned_key(config.jwt_key)
            return
        assert config.jwks_url is not None  # ClerkConfig requires one of the two
        if http is None:
            http = self._own_http = httpx.AsyncClient(
                timeout=config.jwks_timeout_s, follow_redirects=False
            )
        self._jwks = JwksCache(
            config.jwks_url,
            http,
            ttl_s=config.jwks_cache_ttl_s,
            cooldown_s=config.jwks_refresh_cooldown_s,
            timeout_s=config.jwks_timeout_s,
            clock=clock,
        )

    @property
    def jwks_fetches(self) -> int:
        """HTTP fetches of the JWKS so far (0 in PEM mode)."""
        return self._jwks.fetches if self._jwks is not None else 0

    async def warm_up(self) -> None:
        """Fetch the JWKS once, so the first request does not wait; failures are logged only."""
        if self._jwks is None:
            return
        try:
            loaded = await self._jwks.refresh()
        except Exception:  # start-up must not fail on it: requests retry the fetch
            logger.exception("Clerk JWKS warm-up failed")
            loaded = False
        if not loaded:
            logger.warning("Clerk JWKS not loaded at start-up; will retry on first use")

    async def aclose(self) -> None:
        if self._own_http is not None:
            await self._own_http.aclose()

    async def verify_session(self, token: str) -> Principal:
        """A Clerk session token (header or cookie) → the signed-in user."""
        header = _precheck(token, self._config.max_token_bytes, SESSION_CATEGORIES)
        claims = await self._decode(token, header["kid"], SESSION_CLAIMS)
        exp = self._check_times(claims)
        if not _matches(_USER, claims["sub"]):
            raise InvalidToken("bad_claim:sub")
        if not _matches(_SESSION, claims["sid"]):
            raise InvalidToken("bad_claim:sid")
        parties = self._config.authorized_parties
        if parties:
            azp = claims.get("azp")
            if azp is None:
                raise InvalidToken("azp_missing")
            if not isinstance(azp, str) or azp not in parties:
                raise InvalidToken("azp_not_allowed")
        if self._config.reject_pending_sessions and claims.get("sts") == "pending":
            raise InvalidToken("pending_session")
        return self._user(claims, exp)

    async def verify_machine(self, token: str) -> Principal:
        """A Clerk M2M JWT naming our machine → that machine, limited to running agents."""
        machine_id = self._config.machine_id
        if machine_id is None:
            raise InvalidToken("machine_auth_off")
        header = _precheck(token, self._config.max_token_bytes, MACHINE_CATEGORIES)
        claims = await self._decode(token, header["kid"], MACHINE_CLAIMS)
        exp = self._check_times(claims)
        if "sid" in claims:
            raise InvalidToken("unexpected_claim:sid")  # a person's token
        if not _matches(_MACHINE, claims["sub"]):
            raise InvalidToken("bad_claim:sub")
        if not _names_machine(claims, machine_id):
            raise InvalidToken("machine_not_in_scope")
        return Principal(
            claims["sub"],
            kind="machine",
            scopes=frozenset({AGENTS}),
            expires_at=exp,
            issued_at=_time_claim(claims, "iat"),
        )

    # Steps shared by both paths ----------------------------------------------------------

    async def _key(self, kid: str) -> jwt.PyJWK:
        if self._pinned is not None:
            return self._pinned
        assert self._jwks is not None
        try:
            key = await self._jwks.get(kid)
        except KeysUnavailable:
            raise InvalidToken("keys_unavailable") from None
        if key is None:
            raise InvalidToken("unknown_kid")
        return key

    async def _decode(self, token: str, kid: str, required: tuple[str, ...]) -> dict[str, Any]:
        key = await self._key(kid)
        try:
            return _JWT.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                issuer=self._config.issuer,
                options={"require": list(required)},
            )
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad_signature") from None
        except jwt.MissingRequiredClaimError as missing:
            raise InvalidToken(f"missing_claim:{missing.claim}") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("wrong_issuer") from None
        except InvalidSubjectError:
            raise InvalidToken("bad_claim:sub") from None
        except InvalidJTIError:
            raise InvalidToken("bad_claim:jti") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken("alg_not_allowed") from None
        except jwt.DecodeError:
            raise InvalidToken("malformed") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("invalid") from None

    def _check_times(self, claims: Mapping[str, Any]) -> float:
        """``exp``/``nbf``/``iat`` against our clock (PyJWT's boundaries); returns ``exp``."""
        exp = _time_claim(claims, "exp")
        iat = _time_claim(claims, "iat")
        nbf = _time_claim(claims, "nbf") if "nbf" in claims else None
        now, skew = self._clock(), self._config.clock_skew_s
        if exp <= now - skew:
            raise InvalidToken("expired")
        if nbf is not None and nbf > now + skew:
            raise InvalidToken("not_yet_valid")
        if iat > now + skew:
            raise InvalidToken("iat_in_future")
        if exp <= iat:
            raise InvalidToken("bad_claim:exp")
        if exp - iat > self._config.max_token_lifetime_s:
            raise InvalidToken("lifetime_too_long")
        return float(exp)

    def _user(self, claims: Mapping[str, Any], exp: float) -> Principal:
        org_id, org_role, permissions = _organization(claims)
        actor = claims.get("act")
        actor_sub = actor.get("sub") if isinstance(actor, dict) else None
        return Principal(
            claims["sub"],
            kind="user",
            session_id=claims["sid"],
            org_id=org_id,
            org_role=org_role,
            permissions=permissions,
            admin=self._is_admin(claims, org_role),
            actor=actor_sub if isinstance(actor_sub, str) else None,
            expires_at=exp,
            issued_at=_time_claim(claims, "iat"),
        )

    def _is_admin(self, claims: Mapping[str, Any], org_role: str | None) -> bool:
        config = self._config
        by_role = config.admin_org_role is not None and org_role == normalise_role(
            config.admin_org_role
        )
        by_claim = (
            config.admin_claim_path is not None
            and _claim_at(claims, config.admin_claim_path) == config.admin_claim_value
        )
        if not (by_role or by_claim):
            return False
        limit = config.admin_max_factor_age_min
        return limit is None or _factor_age(claims.get("fva")) <= limit


# Pre-checks (no crypto, no I/O) ------------------------------------------------------------


def names_a_machine(token: str) -> bool:
    """Whether ``token`` presents itself as an M2M JWT (its header's category, or a machine
    subject): which path verifies it. Deciding before verification is safe, because each path
    checks everything it needs; a token too malformed to tell takes the session path, which
    refuses it."""
    segments = token.split(".")
    if len(segments) != 3 or len(token) > MAX_PEEK_BYTES:
        return False
    try:
        if _json_object(segments[0]).get("cat") in MACHINE_CATEGORIES:
            return True
        return _matches(_MACHINE, _json_object(segments[1]).get("sub"))
    except InvalidToken:
        return False


def _precheck(token: str, max_bytes: int, categories: frozenset[str]) -> dict[str, Any]:
    """The header of a well-shaped token of an accepted category, else InvalidToken."""
    if not isinstance(token, str) or not token:
        raise InvalidToken("malformed")
    if len(token) > max_bytes:
        raise InvalidToken("too_large")
    if token.startswith(OPAQUE_PREFIXES):
        raise InvalidToken("opaque_token")
    segments = token.split(".")
    if len(segments) != 3 or not segments[0] or not segments[1]:
        raise InvalidToken("malformed")
    if not all(_SEGMENT.fullmatch(s) for s in segments):  # an empty signature fails later
        raise InvalidToken("malformed")
    header = _json_object(segments[0])
    _json_object(segments[1])  # refuse duplicate members before PyJWT (last wins) reads it
    if header.get("alg") != "RS256":
        raise InvalidToken("alg_not_allowed")
    if "crit" in header:
        raise InvalidToken("crit_not_allowed")
    if "b64" in header:
        raise InvalidToken("b64_not_allowed")
    if header.get("typ", "JWT") != "JWT":
        raise InvalidToken("typ_not_allowed")
    if "cat" in header and header["cat"] not in categories:
        raise InvalidToken("wrong_token_class")
    if "kid" not in header:
        raise InvalidToken("kid_missing")
    if not _matches(KID, header["kid"]):
        raise InvalidToken("kid_invalid")
    return header


def _json_object(segment: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _DuplicateMember:
        raise InvalidToken("duplicate_member") from None
    except (binascii.Error, ValueError, RecursionError):
        raise InvalidToken("malformed") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed")
    return value


class _DuplicateMember(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateMember
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Claims -----------------------------------------------------------------------------------


def _matches(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _time_claim(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken(f"bad_claim:{name}")
    return float(value)


def _names_machine(claims: Mapping[str, Any], machine_id: str) -> bool:
    """Our machine id among the space-separated ``scopes``, or in ``aud``."""
    scopes = claims.get("scopes")
    if isinstance(scopes, str) and machine_id in scopes.split():
        return True
    aud = claims.get("aud")
    if isinstance(aud, str):
        return aud == machine_id
    return isinstance(aud, list) and machine_id in [a for a in aud if isinstance(a, str)]


def normalise_role(role: object) -> str | None:
    """Clerk's v2 ``o.rol`` lacks the ``org:`` prefix that v1 and the JS SDK use: add it."""
    if not isinstance(role, str) or not role:
        return None
    return role if role.startswith("org:") else f"org:{role}"


def _organization(claims: Mapping[str, Any]) -> tuple[str | None, str | None, frozenset[str]]:
    """Active organisation id, normalised role and permissions, from v2 ``o`` or v1 claims."""
    if claims.get("v") == 2:
        org = claims.get("o")
        if not isinstance(org, dict):
            return None, None, frozenset()
        org_id = org.get("id")
        return (
            org_id if isinstance(org_id, str) else None,
            normalise_role(org.get("rol")),
            org_permissions(claims.get("fea"), org.get("per"), org.get("fpm")),
        )
    org_id = claims.get("org_id")
    listed = claims.get("org_permissions")
    return (
        org_id if isinstance(org_id, str) else None,
        normalise_role(claims.get("org_role")),
        frozenset(p for p in listed if isinstance(p, str))
        if isinstance(listed, list)
        else frozenset(),
    )


def org_permissions(fea: object, per: object, fpm: object) -> frozenset[str]:
    """Decode v2 ``o.fpm``: one decimal bitmask per org-scoped feature of ``fea`` (in order),
    bit ``i`` granting permission ``i`` of ``o.per`` (as ``@clerk/shared``'s
    ``jwtPayloadParser`` does: features whose scope has no ``o`` take no mask)."""
    if not (isinstance(fea, str) and isinstance(per, str) and isinstance(fpm, str)):
        return frozenset()
    if not per or not fpm:
        return frozenset()
    features = []
    for item in fea.split(","):
        scope, _, name = item.strip().partition(":")
        if "o" in scope:
            features.append(name)
    permissions = [p.strip() for p in per.split(",")]
    granted = set()
    for feature, mask in zip(features, fpm.split(","), strict=False):
        mask = mask.strip()
        if not feature or not mask.isdigit() or not mask.isascii() or len(mask) > 30:
            continue
        bits = int(mask)
        granted.update(
            f"org:{feature}:{permission}"
            for i, permission in enumerate(permissions)
            if permission and bits >> i & 1
        )
    return frozenset(granted)


def _claim_at(claims: Mapping[str, Any], path: str) -> object:
    value: object = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _factor_age(fva: object) -> float:
    """Minutes since the last factor verification: the second factor's if one was ever used
    (``fva[1] >= 0``), else the first's; infinite when unknown."""
    if not isinstance(fva, list) or len(fva) != 2:
        return math.inf
    if not all(isinstance(m, int) and not isinstance(m, bool) for m in fva):
        return math.inf
    age = fva[1] if fva[1] >= 0 else fva[0]
    return age if age >= 0 else math.inf


# Keys -------------------------------------------------------------------------------------


def normalise_pem(text: str) -> str:
    """``CLERK_JWT_KEY`` as a PEM block, whether given with literal ``\\n`` escapes, on one
    line, with CRLFs, in quotes or as a bare base64 body."""
    text = text.strip().strip("\"'").replace("\\r", "").replace("\\n", "\n")
    match = _PEM.search(text)
    label, body = (match.group(1), match.group(2)) if match else ("PUBLIC KEY", text)
    lines = textwrap.wrap("".join(body.split()), 64)
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def pinned_key(text: str) -> jwt.PyJWK:
    """The RSA public key of ``text`` (see :func:`normalise_pem`) as an RS256 PyJWK."""
    try:
        public = serialization.load_pem_public_key(normalise_pem(text).encode())
    except (ValueError, TypeError) as error:
        raise ValueError("CLERK_JWT_KEY is not a PEM public key") from error
    if not isinstance(public, RSAPublicKey):
        raise ValueError("CLERK_JWT_KEY must be an RSA public key")
    if public.key_size < MIN_RSA_BITS:
        raise ValueError(f"CLERK_JWT_KEY must have at least {MIN_RSA_BITS} bits")
    return jwt.PyJWK(RSAAlgorithm.to_jwk(public, as_dict=True), algorithm="RS256")


def _check_jwks_url(url: str) -> None:
    """https only, except plain http to this machine (tests, a local proxy)."""
    parts = urlsplit(url)
    loopback = parts.hostname in {"127.0.0.1", "::1", "localhost"}
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError(f"the Clerk JWKS URL must use https: {url!r}")
