"""ConnPolicy and ConnTable: events and times in, exact decisions out (no sockets, no clock)."""

import math

import pytest

from firmware.serve.conn_policy import (
    HANDSHAKE,
    IDLE,
    SLOW_FRAME,
    STALLED,
    ConnLimits,
    ConnPolicy,
)
from firmware.serve.conn_table import (
    ACTIVE,
    FRESH,
    HANDSHAKING,
    IDLE_CLIENT,
    ConnTable,
    TableLimits,
    subnet_of,
)

LIM = ConnLimits(handshake_timeout=5, idle_timeout=30, frame_timeout=10, min_rate=1000,
                 stall_timeout=20, max_inflight=4)


def test_a_connection_must_finish_its_handshake_in_time():
    p = ConnPolicy(LIM, 100.0)
    assert p.deadline(0, None) == 105.0
    assert p.check(104.9, 0, None) is None
    assert p.check(105.0, 0, None) == HANDSHAKE
    p.handshake_done(103.0)
    assert p.check(105.0, 0, None) is None and p.deadline(0, None) == 133.0


def test_time_the_node_held_a_handshakes_reads_is_not_the_peers():
    p = ConnPolicy(LIM, 100.0)
    assert p.deadline(0, None, held=3.5) == 108.5  # pacing the cap held its reads 3.5 s
    assert p.check(107.0, 0, None, held=3.5) is None
    assert p.check(108.5, 0, None, held=3.5) == HANDSHAKE


def test_silence_with_nothing_in_flight_is_idle_but_busy_is_not():
    p = ConnPolicy(LIM, 0.0, handshaken=True)
    p.received(1.0, None)
    assert p.deadline(0, None) == 31.0
    assert p.check(30.9, 0, None) is None and p.check(31.0, 0, None) == IDLE
    assert p.check(100.0, 2, None) is None  # two requests being answered: not idle
    assert p.deadline(2, None) == math.inf
    p.answered(90.0)
    assert p.check(100.0, 0, None) is None and p.deadline(0, None) == 120.0


def test_a_trickled_frame_is_closed_at_its_size_dependent_deadline():
    p = ConnPolicy(LIM, 0.0, handshaken=True)
    p.received(1.0, 60_000)  # a header announcing 60 kB arrived
    assert p.deadline(0, None) == 31.0  # silence would make it idle first
    for t in range(2, 71, 3):  # one byte every 3 s keeps the link from idling ...
        p.received(float(t), 60_000)
        assert p.check(float(t), 0, None) is None
    assert p.deadline(0, None) == 1.0 + 10 + 60.0  # frame_timeout + size / min_rate
    assert p.check(71.0, 0, None) == SLOW_FRAME  # ... but not the frame from its deadline
    p.received(50.0, None)  # had it completed, the deadline would be gone
    assert p.check(71.0, 0, None) is None


def test_a_partial_header_alone_gets_the_base_frame_timeout():
    p = ConnPolicy(LIM, 0.0, handshaken=True)
    p.received(2.0, 0)  # 1-3 bytes of a length header
    assert p.deadline(0, None) == 12.0
    assert p.check(12.0, 0, None) == SLOW_FRAME


def test_a_silent_half_frame_is_idle_before_its_frame_deadline_when_idle_is_shorter():
    lim = ConnLimits(idle_timeout=2, frame_timeout=10, min_rate=1000)
    p = ConnPolicy(lim, 0.0, handshaken=True)
    p.received(1.0, 60_000)
    assert p.deadline(0, None) == 3.0 and p.check(3.0, 0, None) == IDLE


def test_a_write_the_peer_does_not_take_is_a_stall():
    p = ConnPolicy(LIM, 0.0, handshaken=True)
    assert p.deadline(3, 50.0) == 70.0
    assert p.check(69.9, 3, 50.0) is None
    assert p.check(70.0, 3, 50.0) == STALLED
    assert p.check(70.0, 0, 50.0) == STALLED  # nothing in flight but still writing: stalled


def test_reading_stops_at_the_in_flight_limit():
    p = ConnPolicy(LIM, 0.0, handshaken=True)
    assert p.may_read(3) and not p.may_read(4)


# -- the table ---------------------------------------------------------------------------------


def table(**kw):
    kw.setdefault("trusted", frozenset())
    return ConnTable(TableLimits(**kw))


def test_subnets():
    assert subnet_of("192.0.2.77") == "192.0.2.0/24"
    assert subnet_of("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert subnet_of("::ffff:192.0.2.9") == "192.0.2.0/24"


def test_an_address_gets_its_share_and_no_more():
    t = table(per_ip=3, per_subnet=100, accept_rate=1000, accept_burst=1000)
    assert all(t.admit(i, "192.0.2.1", 0.0).ok for i in range(3))
    a = t.admit(3, "192.0.2.1", 0.0)
    assert not a.ok and "holds 3" in a.reason  # its own are all mid-handshake: no shedding
    assert t.admit(4, "198.51.100.1", 0.0).ok  # another address is unaffected
    t.set_stage(0, FRESH)
    t.set_stalled(0, True)  # one of its own got somewhere and stalled: it makes room
    a = t.admit(5, "192.0.2.1", 1.0)
    assert a.ok and a.victim == 0 and t.holders("192.0.2.1") == 3


def test_a_subnet_gets_its_share():
    t = table(per_ip=10, per_subnet=4, accept_rate=1000, accept_burst=1000)
    for i in range(4):
        assert t.admit(i, f"192.0.2.{i + 1}", 0.0).ok
    assert not t.admit(9, "192.0.2.200", 0.0).ok
    assert t.admit(10, "192.0.3.1", 0.0).ok


def test_new_connections_per_address_are_rate_limited():
    t = table(accept_rate=2, accept_burst=4)
    oks = [t.admit(i, "192.0.2.1", 0.0).ok for i in range(6)]
    assert oks == [True] * 4 + [False] * 2
    assert t.admit(7, "192.0.2.1", 0.5).ok  # 2/s refills one token in 0.5 s
    assert t.counters["refused_rate"] == 2


def test_new_connections_per_network_are_rate_limited_too():
    """Fifty addresses of one /24 together get the network's rate, not fifty times an
    address's; another network is not affected."""
    t = table(accept_rate=2, accept_burst=4, subnet_rate=5, subnet_burst=10)
    oks = [t.admit(i, f"192.0.2.{i + 1}", 0.0).ok for i in range(50)]
    assert oks == [True] * 10 + [False] * 40
    assert t.admit("other", "198.51.100.1", 0.0).ok
    assert [t.admit(("later", i), f"192.0.2.{i + 100}", 1.0).ok for i in range(6)] == \
        [True] * 5 + [False]  # 5/s refilled five in a second
    assert t.counters["refused_rate"] == 41
    # IPv6: a /48 holds more addresses than anyone could track; its network's rate still holds
    v6 = [t.admit(("v6", i), f"2001:db8:7::{i + 1:x}", 2.0).ok for i in range(20)]
    assert v6 == [True] * 10 + [False] * 10


def test_when_full_the_least_valuable_connection_of_the_busiest_address_goes():
    t = table(max_total=6, per_ip=10, per_subnet=10, accept_rate=1000, accept_burst=1000)
    for i in range(3):  # the flooder: three connections stuck in the handshake
        t.admit(("f", i), "203.0.113.5", float(i))
    t.admit("idle", "198.51.100.2", 0.0)
    t.set_stage("idle", IDLE_CLIENT)
    t.admit("busy", "198.51.100.3", 0.0)
    t.set_stage("busy", ACTIVE)
    t.admit("node", "198.51.100.4", 0.0)
    assert t.proved_node("node", b"n" * 32)
    a = t.admit("new", "192.0.2.50", 10.0)
    assert a.ok and a.victim == ("f", 0)  # handshaking first; the oldest of the busiest address
    for i in range(2):
        t.remove(("f", i + 1))
        assert t.admit(("g", i), "192.0.2.60", 11.0).ok
    t.set_stage("new", ACTIVE)
    t.set_stage(("g", 0), ACTIVE)
    t.set_stage(("g", 1), ACTIVE)
    a = t.admit("newer", "192.0.2.70", 12.0)
    # 192.0.2.0/24 now holds three, 198.51.100.0/24 two: a newcomer of the busier network
    # may not push out a quieter network's idle client ...
    assert not a.ok and "every connection slot" in a.reason
    a = t.admit("newer", "192.0.3.70", 12.0)
    assert a.ok and a.victim == "idle"  # ... one from elsewhere may: then an idle client goes
    t.set_stage("newer", ACTIVE)
    a = t.admit("last", "192.0.4.80", 13.0)
    assert not a.ok and "every connection slot" in a.reason  # active clients and nodes stay


def test_too_many_handshakes_shed_the_oldest_handshake():
    t = table(max_handshakes=2, accept_rate=1000, accept_burst=1000)
    t.admit("a", "203.0.113.1", 0.0)
    t.admit("b", "203.0.113.2", 1.0)
    a = t.admit("c", "192.0.2.1", 2.0)
    assert a.ok and a.victim == "a"
    t.set_stage("b", FRESH)
    assert t.admit("d", "192.0.2.2", 3.0).victim is None


def test_a_flood_spread_over_many_addresses_never_sheds_a_client_from_another_network():
    """200 attacker addresses in four /24s keep re-opening handshakes; a client from a fifth
    network holds an idle link and is mid-handshake on a new one: neither is shed (its
    address holds two, each attacker address one or two: the network decides, not the
    address), and the client's own newcomer pushes out an attacker's handshake."""
    t = table(max_total=256, max_handshakes=64, per_ip=32, per_subnet=64, accept_rate=1e6,
              accept_burst=10**6)
    t.admit("idle", "192.0.2.7", 0.0)
    t.set_stage("idle", IDLE_CLIENT)
    t.admit("hs", "192.0.2.7", 0.5)
    shed, now = [], 1.0
    for i in range(5000):
        ip = f"203.0.{113 + i % 4}.{1 + (i // 4) % 50}"
        a = t.admit(("a", i), ip, now)
        now += 0.001
        if a.victim is not None:
            shed.append(a.victim)
        if a.ok and i % 3 == 0:
            t.set_stage(("a", i), FRESH)  # some finish TLS and sit there
    assert "idle" not in shed and "hs" not in shed
    assert t.info()["handshaking"] <= 64 and len(t) <= 256
    a = t.admit("client2", "192.0.2.7", now)
    assert a.ok and a.victim[0] == "a" and t.holders("192.0.2.7") == 3


def test_a_proven_node_counts_against_its_id_not_its_household_address():
    t = table(per_ip=2, per_node=2, accept_rate=1000, accept_burst=1000)
    for box in range(3):  # three boxes behind one home NAT, two links each
        for link in range(2):
            key = (box, link)
            assert t.admit(key, "192.0.2.9", 0.0).ok, key
            assert t.proved_node(key, bytes([box]) * 32)
    assert t.holders("192.0.2.9") == 0 and len(t) == 6
    assert t.admit("x", "192.0.2.9", 0.0).ok
    assert not t.proved_node("x", bytes([0]) * 32)  # a third link of one id: over its share


def test_trusted_addresses_have_no_share_or_rate():
    t = ConnTable(TableLimits(per_ip=1, accept_rate=1, accept_burst=1, max_total=50,
                              trusted=frozenset({"127.0.0.1"})))
    assert all(t.admit(i, "127.0.0.1", 0.0).ok for i in range(20))
    t.remove(3)
    assert len(t) == 19


@pytest.mark.parametrize("stage", [HANDSHAKING, FRESH])
def test_removing_keeps_the_counts_right(stage):
    t = table(accept_rate=1000, accept_burst=1000)
    t.admit("k", "192.0.2.1", 0.0)
    t.set_stage("k", stage)
    t.remove("k")
    t.remove("k")  # twice is harmless
    assert len(t) == 0 and t.holders("192.0.2.1") == 0 and t.info()["handshaking"] == 0


def test_time_the_node_held_its_own_reads_does_not_count_against_a_frame():
    p = ConnPolicy(LIM, 0.0, handshaken=True)
    p.received(1.0, 10_000, held=4.0)  # the shaper had held this link 4 s before
    assert p.deadline(1, None, held=4.0) == 1.0 + 10 + 10.0
    # pacing the monthly cap held the reads 30 s more: the peer is not slow, we were
    assert p.check(25.0, 1, None, held=34.0) is None
    assert p.deadline(1, None, held=34.0) == 51.0
    assert p.check(51.0, 1, None, held=34.0) == SLOW_FRAME
