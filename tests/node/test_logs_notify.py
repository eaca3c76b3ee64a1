"""Journald-friendly log lines and the sd_notify protocol (a real AF_UNIX datagram socket)."""

import io
import os
import socket

import pytest
import trio

from firmware.logs import Log
from firmware.sdnotify import Notifier


def test_journald_lines_have_priority_and_no_timestamp():
    out = io.StringIO()
    log = Log("info", stream=out, journald=True)
    log.info("serving", address="127.0.0.1:7070", messages=3, note="two words", raw=b"\x01\xff")
    log.warning("slow", took=0.12345)
    log.debug("hidden")
    assert out.getvalue().splitlines() == [
        '<6>info serving address=127.0.0.1:7070 messages=3 note="two words" raw=01ff',
        "<4>warning slow took=0.123",
    ]


def test_terminal_lines_start_with_a_utc_timestamp():
    out = io.StringIO()
    Log("debug", stream=out, journald=False, clock=lambda: 1_800_000_000.25).debug("x", a="")
    assert out.getvalue() == '2027-01-15T08:00:00.250Z debug x a=""\n'


def test_journald_is_detected_from_the_environment(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    assert Log("info", stream=io.StringIO()).journald
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not Log("info", stream=io.StringIO()).journald


def test_a_closed_log_stream_never_raises():
    out = io.StringIO()
    out.close()
    Log("info", stream=out).error("still_running")


@pytest.fixture
def listener(tmp_path):
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    yield path, s
    s.close()


def test_ready_status_stopping(listener):
    path, s = listener
    n = Notifier(path, watchdog_usec=0)
    n.ready("serving on 127.0.0.1:7070")
    n.status("busy")
    n.stopping("bye")
    n.close()
    assert s.recv(4096) == b"READY=1\nSTATUS=serving on 127.0.0.1:7070"
    assert s.recv(4096) == b"STATUS=busy"
    assert s.recv(4096) == b"STOPPING=1\nSTATUS=bye"


def test_abstract_socket_address():
    name = f"homenode-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2)
    try:
        Notifier("@" + name, watchdog_usec=0).ready()
        assert s.recv(100) == b"READY=1"
    finally:
        s.close()


def test_without_notify_socket_everything_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    n.ready("x")
    n.stopping()


def test_watchdog_env_for_another_pid_is_ignored(monkeypatch, listener):
    path, _ = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier().watchdog_usec == 0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_usec == 2_000_000


async def test_watchdog_pings_at_half_the_interval(listener, autojump_clock):
    path, s = listener
    s.setblocking(False)
    n = Notifier(path, watchdog_usec=1_000_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(n.run_watchdog)
        await trio.sleep(2.2)
        nursery.cancel_scope.cancel()
    pings = []
    while True:
        try:
            pings.append(s.recv(100))
        except BlockingIOError:
            break
    assert pings == [b"WATCHDOG=1"] * 5  # t = 0, 0.5, 1.0, 1.5, 2.0
