"""The two lanes of the suite (docs/testing.md): outside ``e2e`` a test cannot start a process or listen
on a socket, and a test that requests a server fixture is ``e2e`` whatever its module says."""

from __future__ import annotations

import multiprocessing
import socket
import subprocess
import sys

import pytest

from .conftest import E2E_FIXTURES

Failed = pytest.fail.Exception


def test_fast_lane_refuses_subprocesses() -> None:
    with pytest.raises(Failed, match="starts a subprocess but is not marked e2e"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_fast_lane_refuses_other_processes() -> None:
    with pytest.raises(Failed, match="starts a process"):
        multiprocessing.get_context("spawn").Process(target=print).start()


def test_fast_lane_refuses_listening_sockets() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # binding alone (a free port) is fine
        with pytest.raises(Failed, match="listens on a socket"):
            sock.listen()


@pytest.mark.e2e
def test_e2e_tests_may_start_processes() -> None:
    out = subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True, text=True, check=True)
    assert out.stdout == "ok\n"


def test_server_fixtures_mark_their_tests_e2e(request: pytest.FixtureRequest) -> None:
    """Every collected test that (transitively) requests a server fixture carries the marker."""
    unmarked = [
        item.nodeid
        for item in request.session.items
        if E2E_FIXTURES.intersection(getattr(item, "fixturenames", ())) and item.get_closest_marker("e2e") is None
    ]
    assert unmarked == []
    assert request.node.get_closest_marker("e2e") is None  # this test itself requests none
