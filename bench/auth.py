"""The access layer's cost: ``python -m bench.auth [--seconds S]``.

1. **Verification per request**, keys cached, in this process: Citadel's
   ``ClerkVerifier.verify_session`` beside Clerk's own Python SDK (``clerk-backend-api``,
   ``verify_token`` with the PEM) and PyJWT's bare ``jwt.decode`` (the floor: signature and
   times only), on the same valid session token; median µs per call over 2,000 calls.
2. **A flood of bad tokens** against one worker (``bench.servers citadel_clerk``): 20
   signed-in users each send ``GET /threads`` ten times a second from 127.0.0.1 (200
   requests/s in all) and we record their latency, first alone, then while 64 connections
   from 127.0.0.2 send well-formed tokens signed with another key as fast as the server
   answers them, three times each, alternating; the ratio is of the median p99s. Twice: with
   the failed-authentication guard (``CITADEL_RATE_AUTH_FAILURES`` 60/min: the flooding
   address is refused before any verification, its answers held back) and without it (a limit
   nobody reaches: every bad token's signature is checked). Goal: the users' p99 rises by less
   than 2x.

Prints markdown. The flood runs in its own process so that it does not share the users'
event loop; server, users and flood share the machine's cores.

A flood that got no answers or answers other than 401/429 (a forged token accepted, a server
error), a user request that failed, or a verifier figure missing (Clerk's SDK absent) breaks
the benchmark: the goal line says FAIL, the process exits 1 (bench/verdicts.py). ``--smoke``:
one 0.5 s phase of each kind, 50 verifications; the goal is not evaluated.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from agent_server.auth.clerk import ClerkConfig, ClerkVerifier
from bench.servers import HOST, running
from bench.verdicts import finish, verdict
from tests.support.clerk import APP, ISSUER, PUBLIC_PEM, session_token

USERS = 20
USER_INTERVAL = 0.1  # seconds between one user's requests
FLOOD_CONNECTIONS = 64
GOAL_P99_RATIO = 2.0
FLOOD_SOURCE = "127.0.0.2"
NO_AUD = {"verify_aud": False}
VERIFIERS = ("citadel ClerkVerifier", "PyJWT jwt.decode (floor)", "clerk-backend-api verify_token")
FLOOD_STATUSES = {"guard on": {401, 429}, "guard off": {401}}  # what a forged token may get


# 1. Verification per request -----------------------------------------------------------------


def median_us(calls: int, call: object) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


async def verification_costs(calls: int = 2000) -> dict[str, float]:
    token = session_token()
    verifier = ClerkVerifier(
        ClerkConfig(issuer=ISSUER, authorized_parties=(APP,), jwt_key=PUBLIC_PEM)
    )
    loop_times = []
    await verifier.verify_session(token)
    for _ in range(calls):
        started = time.perf_counter()
        await verifier.verify_session(token)
        loop_times.append(time.perf_counter() - started)
    costs = {"citadel ClerkVerifier": statistics.median(loop_times) * 1e6}
    key = _public_key()
    costs["PyJWT jwt.decode (floor)"] = median_us(
        calls, lambda: jwt.decode(token, key, algorithms=["RS256"], leeway=5, options=NO_AUD)
    )
    try:
        from clerk_backend_api.security import verify_token
        from clerk_backend_api.security.types import VerifyTokenOptions
    except ImportError:
        return costs
    options = VerifyTokenOptions(jwt_key=PUBLIC_PEM, authorized_parties=[APP])
    costs["clerk-backend-api verify_token"] = median_us(calls, lambda: verify_token(token, options))
    return costs


def _public_key() -> rsa.RSAPublicKey:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    loaded = load_pem_public_key(PUBLIC_PEM.encode())
    assert isinstance(loaded, rsa.RSAPublicKey)
    return loaded


# 2. A flood of bad tokens ------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    latencies_ms: list[float]
    flood_rate: float  # bad-token responses per second (0 without a flood)
    flood_statuses: dict[int, int]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def users(url: str, seconds: float) -> list[float]:
    """``USERS`` signed-in users, each a request every ``USER_INTERVAL``, for ``seconds``."""
    latencies: list[float] = []
    tokens = [session_token(f"user{i}") for i in range(USERS)]
    deadline = time.monotonic() + seconds

    async def one(client: httpx.AsyncClient, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        await asyncio.sleep(USER_INTERVAL * tokens.index(token) / len(tokens))  # spread out
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = await client.get("/threads", headers=headers)
            took = time.perf_counter() - started
            latencies.append(took * 1000)
            assert response.status_code == 200, response.text
            await asyncio.sleep(max(0.0, USER_INTERVAL - took))

    limits = httpx.Limits(max_connections=USERS, max_keepalive_connections=USERS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        await asyncio.gather(*(one(client, token) for token in tokens))
    return latencies


def forged_token() -> str:
    """A well-formed session token signed by a key that is not the instance's."""
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": ISSUER, "azp": APP, "sub": "user_x", "sid": "sess_x", "iat": now}
    return jwt.encode(
        claims | {"exp": now + 600}, other_key, algorithm="RS256", headers={"kid": "ins_test"}
    )


def flood(port: int, seconds: float, token: str, results: Connection) -> None:
    """In a child process: ``token`` from ``FLOOD_SOURCE`` over keep-alive connections; sends
    the count of answers by status when done."""
    counts: dict[int, int] = {}
    request = (
        f"GET /threads HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()

    async def connection(deadline: float) -> None:
        """Requests one after another; a new connection whenever the server closes one."""
        while time.monotonic() < deadline:
            reader, writer = await asyncio.open_connection(HOST, port, local_addr=(FLOOD_SOURCE, 0))
            try:
                while time.monotonic() < deadline:
                    writer.write(request)
                    head = (await reader.readuntil(b"\r\n\r\n")).lower()
                    status = int(head.split(b" ", 2)[1])
                    length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    counts[status] = counts.get(status, 0) + 1
                    if b"connection: close" in head:
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

    async def main() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(connection(deadline) for _ in range(FLOOD_CONNECTIONS)))

    asyncio.run(main())
    results.send(counts)


async def phase(url: str, port: int, seconds: float, flooded: bool) -> Phase:
    if not flooded:
        return Phase(await users(url, seconds), 0.0, {})
    receiver, sender = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.Process(target=flood, args=(port, seconds + 1, forged_token(), sender))
    child.start()
    await asyncio.sleep(0.5)  # the flood is under way before the users are measured
    latencies = await users(url, seconds)
    statuses: dict[int, int] = await asyncio.to_thread(receiver.recv)
    child.join()
    return Phase(latencies, sum(statuses.values()) / (seconds + 1), statuses)


@dataclass(frozen=True)
class Flood:
    alone: list[Phase]
    flooded: list[Phase]

    def broken(self, label: str) -> list[str]:
        """Why this configuration's figures mean nothing (empty: they do)."""
        found = []
        allowed = FLOOD_STATUSES[label]
        for phase in self.flooded:
            if not phase.flood_statuses:
                found.append(f"{label}: the flood got no answer at all")
            odd = {s: n for s, n in phase.flood_statuses.items() if s not in allowed}
            if odd:
                found.append(f"{label}: the forged tokens got {odd} (only {sorted(allowed)})")
        found += [
            f"{label}: a phase without user requests"
            for phase in self.alone + self.flooded
            if not phase.latencies_ms
        ]
        return found

    @staticmethod
    def median(phases: list[Phase], q: float) -> float:
        return statistics.median(phase.percentile(q) for phase in phases)

    @property
    def ratio(self) -> float:
        return self.median(self.flooded, 0.99) / self.median(self.alone, 0.99)


def broken(costs: dict[str, float], floods: dict[str, Flood]) -> list[str]:
    found = [f"verification: no figure for {name}" for name in VERIFIERS if name not in costs]
    found += [problem for label, flood in floods.items() for problem in flood.broken(label)]
    return found


async def flood_results(seconds: float, repetitions: int = 3) -> dict[str, Flood]:
    env = {"BENCH_CLERK_ISSUER": ISSUER, "BENCH_CLERK_JWT_KEY": PUBLIC_PEM, "BENCH_CLERK_APP": APP}
    results = {}
    for label, failures in (("guard on", "60/min"), ("guard off", "1000000/s")):
        with running("citadel_clerk", env={**env, "BENCH_AUTH_FAILURES": failures}) as server:
            url = f"http://{HOST}:{server.port}"
            await users(url, min(1.0, seconds))  # warm-up
            result = Flood([], [])
            for _ in range(repetitions):
                result.alone.append(await phase(url, server.port, seconds, flooded=False))
                result.flooded.append(await phase(url, server.port, seconds, flooded=True))
            results[label] = result
    return results


def report(
    costs: dict[str, float], floods: dict[str, Flood], smoke: bool = False, calls: int = 2000
) -> str:
    ours = costs["citadel ClerkVerifier"]
    problems = bool(broken(costs, floods))
    lines = [
        f"Verification of one valid session token, keys cached, in process (median of {calls:,}):",
        "",
        "| verifier | µs per token | vs Citadel |",
        "|---|---:|---:|",
    ]
    for name, cost in costs.items():
        lines.append(f"| {name} | {cost:.0f} | {cost / ours:.2f}x |")
    lines += [
        "",
        f"A flood of bad tokens ({FLOOD_CONNECTIONS} keep-alive connections from {FLOOD_SOURCE},"
        f" each a well-formed RS256 token signed by another key) while {USERS} signed-in users "
        f"call `GET /threads` every {USER_INTERVAL * 1000:g} ms each:",
        "",
        "| guard | users p99 alone, ms | users p99 in the flood, ms | ratio of medians "
        "| users p50 alone / flood, ms | bad tokens answered/s | goal | |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for label, result in floods.items():
        shown = verdict(result.ratio < GOAL_P99_RATIO, broken=problems, smoke=smoke)
        goal = f"< {GOAL_P99_RATIO:g}x | {shown}" if label == "guard on" else "(ablation) |"
        alone = ", ".join(f"{phase.percentile(0.99):.1f}" for phase in result.alone)
        flooded = ", ".join(f"{phase.percentile(0.99):.1f}" for phase in result.flooded)
        rate = statistics.median(phase.flood_rate for phase in result.flooded)
        lines.append(
            f"| {label} | {alone} | {flooded} | {result.ratio:.2f}x "
            f"| {Flood.median(result.alone, 0.5):.1f} / {Flood.median(result.flooded, 0.5):.1f} "
            f"| {rate:,.0f} | {goal} |"
        )
    statuses: dict[int, int] = {}
    for phase in floods["guard on"].flooded:
        for status, count in phase.flood_statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    lines += [
        "",
        "With the guard, the flood's answers were "
        + ", ".join(f"{count:,} x {status}" for status, count in sorted(statuses.items()))
        + ": the first failures in each minute are verified (401), then the address is refused "
        "(429) and each answer held for about a second.",
    ]
    return "\n".join(lines)


async def _main(seconds: float, smoke: bool) -> None:
    calls = 50 if smoke else 2000
    costs = await verification_costs(calls)
    floods = await flood_results(0.5 if smoke else seconds, 1 if smoke else 3)
    finish(report(costs, floods, smoke, calls), broken(costs, floods))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--smoke", action="store_true", help="0.5 s phases: does it work?")
    args = parser.parse_args()
    asyncio.run(_main(args.seconds, args.smoke))


if __name__ == "__main__":
    main()
