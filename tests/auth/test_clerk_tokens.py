"""ClerkVerifier in PEM mode (never any network) on a fake clock: the clerk.md §3.2 attack matrix
("Ours" column, rows 1-53) and the §8.4 extras, the exact clock-skew boundaries, the Principal
built from v1/v2 claims, the M2M path (§8.3) and the configuration.

Every refusal is checked by its reason code, so a token refused for the wrong reason fails.

Rows 54-59 (``bearer`` in lower case, no scheme, ``Basic``, the ``__session`` cookie, a
suffixed ``__session_<s>`` cookie, a bad header beside a good cookie) are about extracting the
token from the request: they are covered by the HTTP layer, not here.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from agent_server.auth.clerk import (
    ClerkConfig,
    ClerkVerifier,
    InvalidToken,
    names_a_machine,
    normalise_pem,
    org_permissions,
)
from agent_server.auth.principals import Principal
from tests.auth.support import (
    CALLER_MACHINE,
    DROP,
    ISSUER,
    M2M_CAT,
    MACHINE_ID,
    MATRIX,
    NOW,
    ROWS_FOR_THE_HTTP_LAYER,
    SESSION,
    TEMPLATE_CAT,
    USER,
    Case,
    FakeClock,
    ec_key,
    make_machine_token,
    make_token,
    pem_config,
    rsa_key,
    session_claims,
    session_header,
    sign,
)


def case_id(case: Case) -> str:
    return f"row{case.row}-{case.id}" if case.row else case.id


@pytest.fixture
def verifier(clock: FakeClock) -> ClerkVerifier:
    return ClerkVerifier(pem_config(), clock=clock)


async def refused(verifier: ClerkVerifier, token: str, *, machine: bool = False) -> str:
    """The reason ``token`` is refused (the test fails if it is accepted)."""
    verify = verifier.verify_machine if machine else verifier.verify_session
    with pytest.raises(InvalidToken) as error:
        await verify(token)
    return error.value.reason


# The attack matrix ------------------------------------------------------------------------


@pytest.mark.parametrize("case", MATRIX, ids=case_id)
async def test_attack_matrix(case: Case, verifier: ClerkVerifier, clock: FakeClock) -> None:
    token = case.build(clock.now)
    if case.ours is None:
        principal = await verifier.verify_session(token)
        assert (principal.user_id, principal.session_id, principal.kind) == (
            USER,
            SESSION,
            "user",
        )
    else:
        assert await refused(verifier, token) == case.ours


def test_the_matrix_has_every_row_the_verifier_owns() -> None:
    rows = {case.row for case in MATRIX if case.row is not None}
    assert rows == set(range(1, 54))
    assert not rows & set(ROWS_FOR_THE_HTTP_LAYER)
    assert len({case.id for case in MATRIX}) == len(MATRIX)


def test_the_network_guard_refuses_other_hosts(no_network: list[object]) -> None:
    """The autouse guard is real: a connection elsewhere raises and is recorded."""
    with pytest.raises(OSError):
        socket.create_connection(("192.0.2.1", 443), timeout=0.1)
    with pytest.raises(OSError):
        socket.getaddrinfo("clerk.example.com", 443)
    assert no_network == [("192.0.2.1", 443), ("clerk.example.com",)]
    no_network.clear()  # this test's attempts were on purpose


# Clock boundaries (skew 5 s; PyJWT's: expired once exp <= now - skew) -----------------------


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": NOW - 5, "iat": NOW - 60, "nbf": DROP}, "expired"),
        ({"exp": NOW - 4.999, "iat": NOW - 60, "nbf": DROP}, None),
        ({"nbf": NOW + 5}, None),
        ({"nbf": NOW + 5.001}, "not_yet_valid"),
        ({"iat": NOW + 5, "exp": NOW + 65, "nbf": DROP}, None),
        ({"iat": NOW + 5.001, "exp": NOW + 65, "nbf": DROP}, "iat_in_future"),
    ],
    ids=["exp_at_skew", "exp_inside_skew", "nbf_at_skew", "nbf_past_skew", "iat_at_skew",
         "iat_past_skew"],
)  # fmt: skip
async def test_skew_boundaries(
    claims: dict[str, Any], reason: str | None, verifier: ClerkVerifier
) -> None:
    token = make_token(**claims)
    if reason is None:
        assert (await verifier.verify_session(token)).user_id == USER
    else:
        assert await refused(verifier, token) == reason


async def test_a_token_expires_as_the_clock_moves(
    verifier: ClerkVerifier, clock: FakeClock
) -> None:
    token = make_token()
    clock.advance(64.9)
    await verifier.verify_session(token)
    clock.advance(0.1)
    assert await refused(verifier, token) == "expired"


@pytest.mark.parametrize(("skew", "effective"), [(0, 0.0), (-3, 0.0), (30, 30.0), (120, 60.0)])
async def test_skew_is_clamped_to_0_60(skew: float, effective: float, clock: FakeClock) -> None:
    verifier = ClerkVerifier(pem_config(clock_skew_s=skew), clock=clock)
    assert pem_config(clock_skew_s=skew).clock_skew_s == effective
    limit = NOW - effective
    await verifier.verify_session(make_token(exp=limit + 0.5, iat=limit - 50, nbf=DROP))
    token = make_token(exp=limit, iat=limit - 50, nbf=DROP)
    assert await refused(verifier, token) == "expired"


# The Principal ----------------------------------------------------------------------------

V2_ORG = {
    "id": "org_1",
    "slg": "acme",
    "rol": "admin",
    "per": "read,manage",
    "fpm": "3,2",
}


async def test_v2_claims_make_the_principal(verifier: ClerkVerifier) -> None:
    token = make_token(o=V2_ORG, fea="o:dashboard,o:impersonation", fva=[3, -1])
    assert await verifier.verify_session(token) == Principal(
        USER,
        kind="user",
        session_id=SESSION,
        org_id="org_1",
        org_role="org:admin",
        permissions=frozenset(
            {"org:dashboard:read", "org:dashboard:manage", "org:impersonation:manage"}
        ),
        admin=True,
        scopes=None,
        actor=None,
        expires_at=NOW + 60,
        issued_at=NOW,
    )


async def test_v1_claims_make_the_principal(verifier: ClerkVerifier) -> None:
    token = make_token(
        v=DROP, org_id="org_2", org_role="org:member", org_permissions=["org:docs:read", 3]
    )
    principal = await verifier.verify_session(token)
    assert (principal.org_id, principal.org_role, principal.permissions, principal.admin) == (
        "org_2",
        "org:member",
        frozenset({"org:docs:read"}),
        False,
    )


@pytest.mark.parametrize(
    ("claims", "role"),
    [
        ({"o": {**V2_ORG, "rol": "org:admin"}}, "org:admin"),  # already prefixed: kept
        ({"v": DROP, "org_role": "admin"}, "org:admin"),  # v1 without the prefix: added
        ({"o": {**V2_ORG, "rol": 7}}, None),
        ({"o": "org_1"}, None),
        ({}, None),
    ],
)
async def test_roles_are_normalised(
    claims: dict[str, Any], role: str | None, verifier: ClerkVerifier
) -> None:
    assert (await verifier.verify_session(make_token(**claims))).org_role == role


@pytest.mark.parametrize(
    ("fea", "per", "fpm", "expected"),
    [
        ("o:dashboard,o:impersonation", "read,manage", "3,2",
         {"org:dashboard:read", "org:dashboard:manage", "org:impersonation:manage"}),
        # user-scoped features take no mask (as @clerk/shared's parser)
        ("u:free,o:dashboard", "read,manage", "2", {"org:dashboard:manage"}),
        ("uo:reports", "read", "1", {"org:reports:read"}),
        ("o:a,o:b,o:c", "read,manage", "x,-1,1", {"org:c:read"}),
        ("o:a", "read,manage", "7", {"org:a:read", "org:a:manage"}),  # extra bits: no perm
        ("o:a", "read", "9" * 40, set()),  # absurd masks are ignored
        ("o:a", "", "1", set()),
        (None, "read", "1", set()),
        ("o:a", "read", None, set()),
    ],
)  # fmt: skip
def test_v2_feature_permission_masks(fea: Any, per: Any, fpm: Any, expected: set[str]) -> None:
    assert org_permissions(fea, per, fpm) == frozenset(expected)


async def test_actor_comes_from_act_sub(verifier: ClerkVerifier) -> None:
    token = make_token(act={"iss": ISSUER, "sid": "sess_support", "sub": "user_support"})
    assert (await verifier.verify_session(token)).actor == "user_support"
    assert (await verifier.verify_session(make_token(act="user_x"))).actor is None


@pytest.mark.parametrize(
    ("config", "claims", "admin"),
    [
        ({}, {"o": V2_ORG}, True),
        ({}, {"o": {**V2_ORG, "rol": "member"}}, False),
        ({"admin_org_role": None}, {"o": V2_ORG}, False),
        ({"admin_org_role": "owner"}, {"o": {**V2_ORG, "rol": "owner"}}, True),
        ({"admin_claim_path": "metadata.role"}, {"metadata": {"role": "admin"}}, True),
        ({"admin_claim_path": "metadata.role"}, {"metadata": {"role": "user"}}, False),
        ({"admin_claim_path": "metadata.role"}, {"metadata": "admin"}, False),
        ({"admin_claim_path": "metadata.role", "admin_claim_value": "boss"},
         {"metadata": {"role": "boss"}}, True),
        # step-up: the second factor's age if one was used, else the first's
        ({"admin_max_factor_age_min": 10}, {"o": V2_ORG, "fva": [5, -1]}, True),
        ({"admin_max_factor_age_min": 10}, {"o": V2_ORG, "fva": [10, -1]}, True),
        ({"admin_max_factor_age_min": 10}, {"o": V2_ORG, "fva": [11, -1]}, False),
        ({"admin_max_factor_age_min": 10}, {"o": V2_ORG, "fva": [30, 2]}, True),
        ({"admin_max_factor_age_min": 10}, {"o": V2_ORG, "fva": [1, 30]}, False),
        ({"admin_max_factor_age_min": 10}, {"o": V2_ORG, "fva": [-1, -1]}, False),
        ({"admin_max_factor_age_min": 10}, {"o": V2_ORG, "fva": DROP}, False),
        ({"admin_max_factor_age_min": 10}, {"o": V2_ORG, "fva": [True, -1]}, False),
        ({"admin_max_factor_age_min": 10}, {"o": {**V2_ORG, "rol": "member"}, "fva": [0, 0]},
         False),
    ],
)  # fmt: skip
async def test_admin_by_role_or_claim_with_step_up(
    config: dict[str, Any], claims: dict[str, Any], admin: bool, clock: FakeClock
) -> None:
    verifier = ClerkVerifier(pem_config(**config), clock=clock)
    assert (await verifier.verify_session(make_token(**claims))).admin is admin


async def test_pending_sessions_may_be_allowed(clock: FakeClock) -> None:
    verifier = ClerkVerifier(pem_config(reject_pending_sessions=False), clock=clock)
    assert (await verifier.verify_session(make_token(sts="pending"))).user_id == USER


@pytest.mark.parametrize("azp", [DROP, "https://evil.example.com"])
async def test_no_allow_list_means_no_azp_check(azp: Any, clock: FakeClock) -> None:
    verifier = ClerkVerifier(pem_config(authorized_parties=()), clock=clock)
    assert (await verifier.verify_session(make_token(azp=azp))).user_id == USER


# The machine path (M2M JWTs) --------------------------------------------------------------


@pytest.mark.parametrize(
    "claims",
    [
        {},  # our id in the space-separated scopes
        {"scopes": DROP, "aud": MACHINE_ID},
        {"scopes": DROP, "aud": ["mch_elsewhere", MACHINE_ID]},
        {"scopes": MACHINE_ID},
    ],
    ids=["scopes", "aud_string", "aud_list", "scopes_alone"],
)
async def test_machine_tokens_naming_us_are_accepted(
    claims: dict[str, Any], verifier: ClerkVerifier
) -> None:
    assert await verifier.verify_machine(make_machine_token(**claims)) == Principal(
        CALLER_MACHINE,
        kind="machine",
        scopes=frozenset({"agents"}),
        expires_at=NOW + 300,
        issued_at=NOW,
    )


async def test_machine_tokens_without_a_category_are_accepted(verifier: ClerkVerifier) -> None:
    principal = await verifier.verify_machine(make_machine_token(header={"cat": DROP}))
    assert principal.user_id == CALLER_MACHINE


def _session_token_on_the_machine_path(now: float) -> str:
    return make_token(now=now, header={"cat": DROP})


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: make_machine_token(scopes="mch_elsewhere"), "machine_not_in_scope"),
        (lambda: make_machine_token(scopes=f"{MACHINE_ID}x"), "machine_not_in_scope"),
        (lambda: make_machine_token(scopes=[MACHINE_ID]), "machine_not_in_scope"),
        (lambda: make_machine_token(scopes=DROP, aud="mch_elsewhere"), "machine_not_in_scope"),
        (lambda: make_machine_token(header={"cat": "cl_B7d4PD111AAA"}), "wrong_token_class"),
        (lambda: make_machine_token(header={"cat": TEMPLATE_CAT}), "wrong_token_class"),
        (lambda: make_token(), "wrong_token_class"),  # a session token (cat session)
        (lambda: _session_token_on_the_machine_path(NOW), "unexpected_claim:sid"),
        (lambda: make_machine_token(sid=SESSION), "unexpected_claim:sid"),
        (lambda: make_machine_token(exp=NOW - 30, iat=NOW - 90), "expired"),
        (lambda: make_machine_token(exp=NOW + 3600), "lifetime_too_long"),
        (lambda: make_machine_token(sub=USER), "bad_claim:sub"),
        (lambda: make_machine_token(iss="https://clerk.other.example.com"), "wrong_issuer"),
        (lambda: make_machine_token(iat=DROP), "missing_claim:iat"),
        (lambda: make_machine_token(exp=DROP), "missing_claim:exp"),
        (lambda: make_machine_token(header={"typ": "at+jwt"}), "typ_not_allowed"),
        (lambda: make_machine_token(key=rsa_key("b")), "bad_signature"),
        (lambda: sign(session_header(cat=M2M_CAT, alg="ES256"), {}, ec_key(), "ES256"),
         "alg_not_allowed"),
        (lambda: "mt_abc123", "opaque_token"),
    ],
    ids=["scope_missing", "scope_prefix_only", "scopes_not_string", "aud_other",
         "cat_session", "cat_template", "session_token", "session_token_without_cat",
         "sid_present", "expired", "lifetime", "sub_user", "wrong_issuer", "iat_missing",
         "exp_missing", "typ_at_jwt", "other_key", "es256", "opaque"],
)  # fmt: skip
async def test_machine_tokens_refused(build: Any, reason: str, verifier: ClerkVerifier) -> None:
    assert await refused(verifier, build(), machine=True) == reason


async def test_machine_auth_off_without_a_machine_id(clock: FakeClock) -> None:
    verifier = ClerkVerifier(pem_config(machine_id=None), clock=clock)
    assert await refused(verifier, make_machine_token(), machine=True) == "machine_auth_off"


# Configuration ----------------------------------------------------------------------------


def _body(pem: str) -> str:
    return "".join(line for line in pem.splitlines() if "-----" not in line)


@pytest.mark.parametrize(
    "shape",
    ["pem", "escaped_newlines", "one_line", "crlf", "bare_body", "quoted", "indented"],
)
async def test_pem_shapes_from_env_files(shape: str, clock: FakeClock) -> None:
    pem = rsa_key().public_pem
    text = {
        "pem": pem,
        "escaped_newlines": pem.replace("\n", "\\n"),
        "one_line": pem.replace("\n", ""),
        "crlf": pem.replace("\n", "\r\n"),
        "bare_body": _body(pem),
        "quoted": f'"{pem}"',
        "indented": "\n".join("   " + line for line in pem.splitlines()),
    }[shape]
    verifier = ClerkVerifier(pem_config(jwt_key=text), clock=clock)
    assert (await verifier.verify_session(make_token())).user_id == USER
    assert normalise_pem(text) == pem


@pytest.mark.parametrize(
    "jwt_key",
    ["not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "ec", "small"],
)
def test_unusable_pem_keys_fail_at_start(jwt_key: str) -> None:
    from cryptography.hazmat.primitives import serialization

    if jwt_key == "ec":
        jwt_key = (
            ec_key()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
    elif jwt_key == "small":
        jwt_key = rsa_key("small", 1024).public_pem
    with pytest.raises(ValueError, match="CLERK_JWT_KEY"):
        ClerkVerifier(pem_config(jwt_key=jwt_key))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"issuer": ISSUER}, "PEM key"),
        ({"issuer": "", "jwks_url": "https://clerk.example.com/.well-known/jwks.json"},
         "issuer"),
        ({"issuer": ISSUER, "jwks_url": "http://clerk.example.com/.well-known/jwks.json"},
         "https"),
        ({"issuer": ISSUER, "jwks_url": "file:///etc/passwd"}, "https"),
        ({"issuer": ISSUER, "jwks_url": "https://x.example", "max_token_bytes": 0}, "limits"),
    ],
)  # fmt: skip
def test_invalid_configs(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClerkConfig(**settings)


async def test_pem_wins_over_a_jwks_url(clock: FakeClock) -> None:
    verifier = ClerkVerifier(
        pem_config(jwks_url="https://clerk.example.com/.well-known/jwks.json"), clock=clock
    )
    await verifier.warm_up()  # nothing to fetch
    assert (await verifier.verify_session(make_token())).user_id == USER
    assert verifier.jwks_fetches == 0
    await verifier.aclose()


def test_allow_list_is_kept_as_a_tuple() -> None:
    config = pem_config(authorized_parties=["https://a.example.com"])
    assert config.authorized_parties == ("https://a.example.com",)
    with pytest.raises(AttributeError):
        config.issuer = "https://evil.example.com"  # type: ignore[misc]


def test_session_claims_fixture_is_the_84_base() -> None:
    """The shared fixture others build on: v2, 60 s, nbf 10 s early, cat session."""
    claims = session_claims()
    assert claims["exp"] - claims["iat"] == 60 and claims["iat"] - claims["nbf"] == 10
    assert session_header() == {
        "alg": "RS256",
        "kid": "ins_test",
        "typ": "JWT",
        "cat": "cl_B7d4PD111AAA",
    }


@pytest.mark.parametrize(
    ("token", "machine"),
    [
        (make_machine_token(), True),  # category M2M
        (make_machine_token(header={"cat": DROP}), True),  # no category, a machine subject
        (make_token(), False),
        (make_token(header={"cat": DROP}), False),
        ("not.a.token", False),
        ("mt_opaque", False),
    ],
)
def test_which_path_verifies_a_token(token: str, machine: bool) -> None:
    assert names_a_machine(token) is machine
