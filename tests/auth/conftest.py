"""Auth tests run offline: any connection that is not to this machine fails the test."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.auth.support import FakeClock, JwksServer

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost", "::ffff:127.0.0.1"})


class NonLoopbackConnection(ConnectionRefusedError):
    """Raised (as an OSError, so the code under test sees an offline machine) and recorded
    (so the test fails even if that code swallows it)."""


@pytest.fixture(autouse=True)
def no_network(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[list[object]]:
    """Refuses, records and fails every connection or name lookup other than loopback or a
    unix socket; yields the list of attempts. Opt-in tests against real services, marked
    ``opt_in``, are let through."""
    attempts: list[object] = []
    if request.node.get_closest_marker("opt_in"):
        yield attempts
        return

    def check(address: Any) -> None:
        if isinstance(address, str | bytes):  # a unix socket path
            return
        host = address[0] if isinstance(address, tuple) and address else address
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        if host not in LOOPBACK:
            attempts.append(address)
            raise NonLoopbackConnection(f"test tried to reach {address!r}")

    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_create_connection = socket.create_connection
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        check(address)
        return real_create_connection(address, *args, **kwargs)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None:
            check((host,))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    if attempts:
        pytest.fail(f"non-loopback network access: {attempts!r}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server
