"""Who may use the page: Host names (DNS rebinding), source addresses, connection shares, and
the POST check (pure)."""

from firmware.web.guard import ConnTable, HostPolicy, post_allowed, source_allowed
from firmware.web.http import RequestParser


def test_host_policy_own_names_and_ip_literals_only():
    hosts = HostPolicy("Attic-Node", extra=["nas.home.arpa"])
    for ok in ("attic-node", "ATTIC-NODE.local:80", "attic-node.local.", "localhost:8080",
               "192.168.1.20", "192.168.1.20:8080", "[fe80::1]:80", "[::1]", "nas.home.arpa"):
        assert hosts.allows(ok), ok
    for bad in ("evil.example", "attic-node.evil.example", "192.168.1.20.nip.io", "", "[::1",
                "attic-node.localx"):
        assert not hosts.allows(bad), bad


def test_source_addresses_lan_only_unless_any():
    for ok in ("127.0.0.1", "10.1.2.3", "192.168.0.9", "172.20.0.1", "100.64.1.1",
               "169.254.3.3", "fe80::1%eth0", "fd00::5", "::1", "::ffff:192.168.1.4"):
        assert source_allowed(ok, "lan"), ok
    for bad in ("8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8", "garbage"):
        assert not source_allowed(bad, "lan"), bad
    assert source_allowed("8.8.8.8", "any")


def test_conn_table_share_per_ip_and_shedding_the_greediest():
    t = ConnTable(max_total=4, per_ip=3)
    assert [t.admit("a", i) for i in range(3)] == [(True, None)] * 3
    assert t.admit("a", 3) == (False, None)          # a's share is full
    assert t.admit("b", "b0") == (True, None)        # table now full (4)
    ok, victim = t.admit("c", "c0")                  # a holds most: its newest goes
    assert ok and victim == 2
    t.release("a", victim)
    assert t.total == 4 and t.shed == 1 and t.refused == 1
    # when nobody holds more than the newcomer would, the newcomer is refused
    t2 = ConnTable(max_total=2, per_ip=2)
    t2.admit("a", 0)
    t2.admit("b", 1)
    assert t2.admit("c", 2) == (False, None)
    t2.release("a", 0)
    assert t2.admit("c", 2) == (True, None) and t2.total == 2


def _post(headers: dict, body=b"token=T0K"):
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    raw = (f"POST /identify HTTP/1.1\r\n{lines}Content-Type: application/x-www-form-urlencoded"
           f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    return RequestParser().feed(raw)


def test_post_needs_same_origin_and_the_page_token():
    hosts = HostPolicy("box")
    good = {"Host": "box.local:8080", "Origin": "http://box.local:8080",
            "Sec-Fetch-Site": "same-origin"}
    assert post_allowed(_post(good), hosts, "T0K") is None
    assert post_allowed(_post({"Host": "10.0.0.2"}), hosts, "T0K") is None  # old browser
    assert "token" in post_allowed(_post(good, b"token=old"), hosts, "T0K")
    assert "token" in post_allowed(_post(good, b""), hosts, "T0K")
    assert "cross-site" in post_allowed(_post(good | {"Sec-Fetch-Site": "cross-site"}), hosts,
                                        "T0K")
    assert "another site" in post_allowed(_post(good | {"Origin": "http://evil.example"}),
                                          hosts, "T0K")
    assert "opaque" in post_allowed(_post(good | {"Origin": "null"}), hosts, "T0K")
    assert "Host" in post_allowed(_post({"Host": "evil.example",
                                         "Origin": "http://evil.example"}), hosts, "T0K")
