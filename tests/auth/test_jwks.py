"""The JWKS path against a real HTTP server on 127.0.0.1 that counts its fetches (clerk.md §6,
§8.2, §8.5): caching, single flight, TTL, rotation, the unknown-kid cooldown, stale keys on
failure, fail closed before the first load, no redirects, only RSA signing keys, and header
URLs (``jku``/``x5u``) never fetched.

The verifier's clock (also the cache's) is fake, so TTL and cooldown pass without sleeping;
only the timeout cases wait, for fractions of a second, on a server that does not answer at
all until the test releases it (so only a timeout can end the wait).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from jwt.algorithms import RSAAlgorithm

from agent_server.auth.clerk import ClerkVerifier, InvalidToken
from agent_server.auth.jwks import parse_jwks, usable_key
from bench.servers import free_port
from tests.auth.support import (
    DROP,
    KID,
    USER,
    FakeClock,
    JwksServer,
    jwks_config,
    make_token,
    pem_config,
    rsa_key,
)
from tests.support.waiting import PATIENCE

TTL = 300.0
COOLDOWN = 30.0
# A short jwks_timeout_s, and what a wait it bounds must end within: five times longer (only
# a stalled machine takes that long), yet under the default timeout, so a setting that is
# not applied fails the test.
SHORT_TIMEOUT = 0.5
WITHIN_THE_SHORT_TIMEOUT = 2.5

Factory = Callable[..., ClerkVerifier]


@pytest.fixture
async def verifier_for(clock: FakeClock) -> AsyncIterator[Factory]:
    """Builds JWKS-mode verifiers on the fake clock; closes them after the test."""
    made: list[ClerkVerifier] = []

    def build(url: str, **overrides: Any) -> ClerkVerifier:
        settings = {"jwks_cache_ttl_s": TTL, "jwks_refresh_cooldown_s": COOLDOWN, **overrides}
        verifier = ClerkVerifier(jwks_config(url, **settings), clock=clock)
        made.append(verifier)
        return verifier

    yield build
    for verifier in made:
        await verifier.aclose()


def test_the_bound_on_short_timeouts_is_under_the_default() -> None:
    assert SHORT_TIMEOUT < WITHIN_THE_SHORT_TIMEOUT < pem_config().jwks_timeout_s


async def reason(verifier: ClerkVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as error:
        await verifier.verify_session(token)
    return error.value.reason


async def test_many_tokens_cost_one_fetch(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    verifier = verifier_for(jwks_server.url)
    for i in range(10):
        principal = await verifier.verify_session(make_token(now=clock.now, jti=f"jti_{i}"))
        assert principal.user_id == USER
    assert (jwks_server.hits, verifier.jwks_fetches) == (1, 1)


async def test_warm_up_fetches_once(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    verifier = verifier_for(jwks_server.url)
    await verifier.warm_up()
    assert jwks_server.hits == 1
    await verifier.verify_session(make_token(now=clock.now))
    assert jwks_server.hits == 1


async def test_warm_up_never_raises_and_failure_backs_off(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    jwks_server.status = 500
    verifier = verifier_for(jwks_server.url)
    await verifier.warm_up()
    assert await reason(verifier, make_token(now=clock.now)) == "keys_unavailable"
    assert jwks_server.hits == 1  # the failure is not retried on every request
    jwks_server.status = 200
    clock.advance(5)
    assert (await verifier.verify_session(make_token(now=clock.now))).user_id == USER
    assert jwks_server.hits == 2


async def test_keys_are_refetched_after_the_ttl(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    verifier = verifier_for(jwks_server.url)
    await verifier.verify_session(make_token(now=clock.now))
    clock.advance(TTL - 1)
    await verifier.verify_session(make_token(now=clock.now))
    assert jwks_server.hits == 1
    clock.advance(2)
    await verifier.verify_session(make_token(now=clock.now))
    await verifier.verify_session(make_token(now=clock.now))
    assert jwks_server.hits == 2


async def test_a_rotated_key_is_accepted_after_the_cooldown(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    verifier = verifier_for(jwks_server.url)
    await verifier.warm_up()
    new_key = rsa_key("b")
    jwks_server.keys = [new_key.jwk("ins_new")]

    def rotated() -> str:
        return make_token(now=clock.now, key=new_key, header={"kid": "ins_new"})

    assert await reason(verifier, rotated()) == "unknown_kid"  # within the cooldown
    assert jwks_server.hits == 1
    clock.advance(COOLDOWN)
    assert (await verifier.verify_session(rotated())).user_id == USER
    assert jwks_server.hits == 2
    # the old key left the set: its tokens are refused, and cost no fetch
    assert await reason(verifier, make_token(now=clock.now)) == "unknown_kid"
    assert jwks_server.hits == 2


async def test_a_flood_of_unknown_kids_costs_at_most_one_fetch_per_cooldown(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    verifier = verifier_for(jwks_server.url)
    await verifier.warm_up()

    def forged(i: int) -> str:
        return make_token(now=clock.now, header={"kid": f"ins_forged_{i}"})

    for i in range(50):
        assert await reason(verifier, forged(i)) == "unknown_kid"
    assert jwks_server.hits == 1
    clock.advance(COOLDOWN + 1)
    results = await asyncio.gather(
        *(verifier.verify_session(forged(i)) for i in range(50)), return_exceptions=True
    )
    assert {r.reason for r in results if isinstance(r, InvalidToken)} == {"unknown_kid"}
    assert len(results) == 50
    for i in range(50):
        assert await reason(verifier, forged(i)) == "unknown_kid"
    assert jwks_server.hits == 2


async def test_forged_signatures_with_a_known_kid_cost_no_fetch(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    verifier = verifier_for(jwks_server.url)
    attacker = rsa_key("attacker")
    for _ in range(20):
        token = make_token(now=clock.now, key=attacker)
        assert await reason(verifier, token) == "bad_signature"
    assert jwks_server.hits == 1


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (lambda t: make_token(now=t), None),
        (lambda t: make_token(now=t, key=rsa_key("b")), "bad_signature"),  # row 22
        (lambda t: make_token(now=t, key=rsa_key("b"), header={"kid": "ins_other"}),
         "unknown_kid"),  # row 23
        (lambda t: make_token(now=t, header={"kid": "ins_other"}), "unknown_kid"),  # row 24
        (lambda t: make_token(now=t, header={"kid": DROP}), "kid_missing"),  # row 25
    ],
    ids=["valid", "row22_other_key_known_kid", "row23_other_key_unknown_kid",
         "row24_right_key_unknown_kid", "row25_kid_missing"],
)  # fmt: skip
async def test_kid_rows_in_jwks_mode(
    token: Callable[[float], str],
    expected: str | None,
    jwks_server: JwksServer,
    verifier_for: Factory,
    clock: FakeClock,
) -> None:
    verifier = verifier_for(jwks_server.url)
    await verifier.warm_up()
    if expected is None:
        assert (await verifier.verify_session(token(clock.now))).user_id == USER
    else:
        assert await reason(verifier, token(clock.now)) == expected
    assert jwks_server.hits == 1


@pytest.mark.parametrize("failure", ["status_500", "not_json", "no_keys"])
async def test_stale_keys_are_served_when_a_refresh_fails(
    failure: str, jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    verifier = verifier_for(jwks_server.url)
    await verifier.warm_up()
    if failure == "status_500":
        jwks_server.status = 500
    else:
        jwks_server.body = b"<html>" if failure == "not_json" else b'{"keys": []}'
    clock.advance(TTL + 1)
    for _ in range(3):
        assert (await verifier.verify_session(make_token(now=clock.now))).user_id == USER
    assert jwks_server.hits == 2  # one failed refresh, then a back-off
    clock.advance(5)
    await verifier.verify_session(make_token(now=clock.now))
    assert jwks_server.hits == 3


async def test_stale_keys_are_served_when_a_refresh_times_out(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    verifier = verifier_for(jwks_server.url, jwks_timeout_s=SHORT_TIMEOUT)
    await verifier.warm_up()
    jwks_server.hold()  # the refresh gets no answer: only its timeout can end it
    clock.advance(TTL + 1)
    async with asyncio.timeout(WITHIN_THE_SHORT_TIMEOUT):
        assert (await verifier.verify_session(make_token(now=clock.now))).user_id == USER
    assert jwks_server.hits == 2


async def test_a_refresh_in_flight_does_not_hold_other_requests(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    verifier = verifier_for(jwks_server.url, jwks_timeout_s=30.0)
    await verifier.warm_up()
    jwks_server.hold()  # the refresh is in flight until the test releases it
    jwks_server.requested.clear()
    clock.advance(TTL + 1)
    refreshing = asyncio.create_task(verifier.verify_session(make_token(now=clock.now)))
    try:
        assert await asyncio.to_thread(jwks_server.requested.wait, 5)
        # Held by the refresh, this would wait for the release, which comes after it.
        async with asyncio.timeout(PATIENCE):
            assert (await verifier.verify_session(make_token(now=clock.now))).user_id == USER
        assert not refreshing.done()
    finally:
        jwks_server.release()
    assert (await refreshing).user_id == USER
    assert jwks_server.hits == 2


async def test_never_loaded_and_nobody_listening_fails_closed(
    verifier_for: Factory, clock: FakeClock
) -> None:
    verifier = verifier_for(f"http://127.0.0.1:{free_port()}/.well-known/jwks.json")
    async with asyncio.timeout(WITHIN_THE_SHORT_TIMEOUT):  # refused: no timeout waited out
        assert await reason(verifier, make_token(now=clock.now)) == "keys_unavailable"
        assert await reason(verifier, make_token(now=clock.now)) == "keys_unavailable"
    assert verifier.jwks_fetches == 1  # the second request waited for the back-off


async def test_never_loaded_and_a_hanging_server_fails_closed_within_the_timeout(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    jwks_server.hold()
    verifier = verifier_for(jwks_server.url, jwks_timeout_s=SHORT_TIMEOUT)
    async with asyncio.timeout(WITHIN_THE_SHORT_TIMEOUT):
        assert await reason(verifier, make_token(now=clock.now)) == "keys_unavailable"


async def test_redirects_are_not_followed(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    jwks_server.redirect_to = "/elsewhere/jwks.json"
    verifier = verifier_for(jwks_server.url)
    assert await reason(verifier, make_token(now=clock.now)) == "keys_unavailable"
    assert jwks_server.paths == ["/.well-known/jwks.json"]


async def test_a_following_client_is_not_followed_either(
    jwks_server: JwksServer, clock: FakeClock
) -> None:
    """Even a shared client configured to follow redirects does not follow them here."""
    jwks_server.redirect_to = "/elsewhere/jwks.json"
    async with httpx.AsyncClient(follow_redirects=True) as http:
        verifier = ClerkVerifier(jwks_config(jwks_server.url), http=http, clock=clock)
        assert await reason(verifier, make_token(now=clock.now)) == "keys_unavailable"
        await verifier.aclose()
        assert not http.is_closed  # a client it was given is not its to close
    assert jwks_server.paths == ["/.well-known/jwks.json"]


async def test_a_cold_cache_fetches_once_for_concurrent_requests(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    jwks_server.delay = 0.1
    verifier = verifier_for(jwks_server.url)
    principals = await asyncio.gather(
        *(verifier.verify_session(make_token(now=clock.now, jti=f"j{i}")) for i in range(20))
    )
    assert {p.user_id for p in principals} == {USER}
    assert jwks_server.hits == 1


def _unusable_entries() -> dict[str, dict[str, Any]]:
    """JWKS entries that must not be trusted; most carry key A, which would verify."""
    a = rsa_key()
    private = {**RSAAlgorithm.to_jwk(a.private, as_dict=True), "kid": "ins_private"}
    return {
        "oct": {"kty": "oct", "kid": "ins_oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"},
        "ec": {"kty": "EC", "kid": "ins_ec", "crv": "P-256", "x": "AA", "y": "AA"},
        "enc": a.jwk("ins_enc", use="enc"),
        "rs512": a.jwk("ins_rs512", alg="RS512"),
        "key_ops_encrypt": a.jwk("ins_ops", key_ops=["encrypt"]),
        "private": private,
        "small": rsa_key("small", 1024).jwk("ins_small"),
        "bad_kid": a.jwk("../ins"),
        "kid_number": a.jwk(7),
        "no_modulus": a.jwk("ins_nomod", n=DROP),
        "not_an_object": "ins_test",  # type: ignore[dict-item]
    }


@pytest.mark.parametrize("name", list(_unusable_entries()))
def test_unusable_jwks_entries_are_skipped(name: str) -> None:
    assert usable_key(_unusable_entries()[name]) is None


def test_a_usable_entry_without_alg_or_use_is_rs256() -> None:
    key = usable_key(rsa_key().jwk(use=DROP, alg=DROP))
    assert key is not None and key.algorithm_name == "RS256"


async def test_only_rsa_signing_keys_are_trusted(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    entries = _unusable_entries()
    jwks_server.keys = [*entries.values(), rsa_key().jwk()]
    verifier = verifier_for(jwks_server.url)
    assert (await verifier.verify_session(make_token(now=clock.now))).user_id == USER
    for kid in ("ins_enc", "ins_rs512", "ins_ops", "ins_private"):
        token = make_token(now=clock.now, header={"kid": kid})  # signed by key A
        assert await reason(verifier, token) == "unknown_kid"
    assert jwks_server.hits == 1
    response = httpx.Response(200, json={"keys": jwks_server.keys})
    assert set(parse_jwks(response)) == {KID}


@pytest.mark.parametrize(
    "body", [b'{"keys": []}', b"[]", b'{"keys": "x"}', b"not json", b"[" * 100_000]
)
async def test_a_document_without_usable_keys_is_a_failed_load(
    body: bytes, jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    jwks_server.body = body
    verifier = verifier_for(jwks_server.url)
    assert await reason(verifier, make_token(now=clock.now)) == "keys_unavailable"


async def test_header_urls_are_never_fetched(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    """``jku``/``x5u`` pointing at an attacker's JWKS (on loopback, so the network guard would
    not notice): the attacker's server sees no request, whatever the kid."""
    attacker_key = rsa_key("attacker")
    with JwksServer([attacker_key.jwk(), attacker_key.jwk("ins_evil")]) as attacker:
        verifier = verifier_for(jwks_server.url)
        urls = {"jku": attacker.url, "x5u": attacker.url}
        token = make_token(now=clock.now, key=attacker_key, header=urls)
        assert await reason(verifier, token) == "bad_signature"
        clock.advance(COOLDOWN)
        token = make_token(now=clock.now, key=attacker_key, header={**urls, "kid": "ins_evil"})
        assert await reason(verifier, token) == "unknown_kid"
        assert attacker.hits == 0
    assert jwks_server.hits == 2


@pytest.mark.parametrize("token", ["mt_abc123", "m2m_abc", "ak_abc", "oat_abc"])
async def test_opaque_machine_tokens_never_reach_the_network(
    token: str, jwks_server: JwksServer, verifier_for: Factory
) -> None:
    verifier = verifier_for(jwks_server.url)
    assert await reason(verifier, token) == "opaque_token"
    assert (jwks_server.hits, verifier.jwks_fetches) == (0, 0)


async def test_a_cancelled_fetch_leaves_the_fetching_to_a_waiter(
    jwks_server: JwksServer, verifier_for: Factory, clock: FakeClock
) -> None:
    """A client that goes away mid-fetch does not make the requests queued behind it fail."""
    jwks_server.hold()  # the first fetch is still in flight when it is cancelled
    verifier = verifier_for(jwks_server.url)
    first = asyncio.create_task(verifier.verify_session(make_token(now=clock.now)))
    try:
        assert await asyncio.to_thread(jwks_server.requested.wait, 5)
        second = asyncio.create_task(verifier.verify_session(make_token(now=clock.now)))
        await asyncio.sleep(0)  # let it queue on the lock
        first.cancel()
        await asyncio.wait([first])
    finally:
        jwks_server.release()
    assert (await second).user_id == USER
    assert first.cancelled()
    assert jwks_server.hits == 2
