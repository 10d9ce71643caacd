"""Our verifier against Clerk's own Python SDK (``clerk-backend-api`` 7.0.0) as an oracle, per
clerk.md §3.3: PEM mode, ``accepts_token=['session_token']``, the same issuer-less options Clerk
documents, offline (the network guard in conftest.py fails any other connection).

Not "must agree". Over every case of the matrix:

- on the agreement rows of §3.3 both give the same verdict;
- whatever we accept, the SDK accepts too, except the allow-listed rows 20 (``aud`` present:
  PyJWT's default refuses it) and 54 (``bearer`` in lower case: the HTTP layer's, not here);
- the SDK's verdicts are pinned per case, and the set of cases where we are stricter is pinned
  by name, so an upgrade of the SDK or of PyJWT that moves anything shows up here.

The SDK reads the real time (PyJWT's ``datetime.now``), so each case runs with the clock
frozen by time-machine at a real timestamp, and our verifier reads the same frozen clock.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import time_machine
from clerk_backend_api.security import AuthenticateRequestOptions, authenticate_request

from agent_server.auth.clerk import ClerkVerifier, InvalidToken
from tests.auth.support import AUTHORIZED_PARTIES, MATRIX, Case, make_token, pem_config, rsa_key

AGREEMENT_ROWS = frozenset(
    {*range(1, 8), 9, 12, 13, 14, 19, 22, 23, *range(26, 38), 39, *range(42, 50), 52, 53}
)  # and 56-59, which are the HTTP layer's
OURS_MAY_ACCEPT_MORE = frozenset({20, 54})

# Every case we refuse and the SDK accepts: our deliberate strictness (clerk.md §1.4, §8.1).
STRICTER_THAN_THE_SDK = frozenset(
    {
        # §3.2 rows 8, 10, 11, 15-18, 21, 25, 38, 40, 41, 50, 51
        "exp_missing",
        "exp_plus_1_year",
        "iat_missing",
        "iss_wrong",
        "iss_missing",
        "sid_missing",
        "sub_missing",
        "sts_pending",
        "kid_missing",
        "typ_at_jwt",
        "m2m_jwt_with_our_azp",
        "template_token",
        "duplicate_sub",
        "token_100kb",
        # §8.4 extras
        "cat_unknown",
        "exp_numeric_string",
        "lifetime_over_max",
        "exp_before_iat",
        "sub_org_prefix",
        "sub_machine_prefix",
        "sub_path",
        "sid_bad_prefix",
        "sid_not_string",
        "iss_not_string",
        "iss_trailing_slash",
        "kid_too_long",
        "kid_path_traversal",
        "kid_empty",
        "typ_lowercase",
        "duplicate_header_alg",
        "token_over_8kb",
    }
)

# A real moment, whole seconds (tokens carry whole seconds too), frozen for every case.
FROZEN_AT = float(int(time.time()))


def sdk_accepts(token: str) -> bool:
    request = SimpleNamespace(headers={"Authorization": f"Bearer {token}"})
    options = AuthenticateRequestOptions(
        jwt_key=rsa_key().public_pem,
        authorized_parties=list(AUTHORIZED_PARTIES),
        accepts_token=["session_token"],
    )
    return authenticate_request(request, options).is_signed_in


async def ours_accepts(token: str) -> bool:
    verifier = ClerkVerifier(pem_config(), clock=time.time)
    try:
        await verifier.verify_session(token)
    except InvalidToken:
        return False
    return True


async def verdicts(case: Case) -> tuple[bool, bool]:
    """(ours, sdk) for ``case``, both on the same frozen clock."""
    with time_machine.travel(FROZEN_AT, tick=False):
        token = case.build(time.time())
        return await ours_accepts(token), sdk_accepts(token)


@pytest.mark.parametrize("case", MATRIX, ids=lambda c: f"row{c.row}-{c.id}" if c.row else c.id)
async def test_against_the_sdk(case: Case) -> None:
    ours, sdk = await verdicts(case)
    assert ours is (case.ours is None), case.ours
    assert sdk is case.sdk, "clerk-backend-api changed its verdict: re-check clerk.md §3.2"
    if case.row in AGREEMENT_ROWS:
        assert ours is sdk
    if ours and case.row not in OURS_MAY_ACCEPT_MORE:
        assert sdk, "we accept a token Clerk's own SDK refuses"


def test_our_divergences_are_pinned() -> None:
    stricter = {case.id for case in MATRIX if case.sdk and case.ours is not None}
    laxer = {case.row for case in MATRIX if not case.sdk and case.ours is None}
    assert stricter == STRICTER_THAN_THE_SDK
    assert laxer <= OURS_MAY_ACCEPT_MORE
    assert laxer == {20}


async def test_the_oracle_is_awake() -> None:
    """The oracle can say both yes and no on the real clock (no time-machine): a guard
    against a differential that passes because the SDK refuses or accepts everything."""
    assert sdk_accepts(make_token(now=time.time()))
    assert not sdk_accepts(make_token(now=time.time(), key=rsa_key("b")))
    assert await ours_accepts(make_token(now=time.time()))
