"""Bridge line: format/parse round trip and one clear error per kind of bad line."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.bridge.line import BridgeLine, BridgeLineError, b64url, format_line, parse_line

PIN, SECRET = bytes(range(32)), bytes(range(32, 64))


def test_format_then_parse_is_identity():
    for host in ("bridge.example.org", "203.0.113.7", "2001:db8::1"):
        line = BridgeLine(host, 8443, PIN, SECRET)
        text = format_line(line)
        assert text.startswith("homenode-bridge://")
        assert parse_line("  " + text + "\n") == line
    assert format_line(BridgeLine("2001:db8::1", 443, PIN, SECRET)).startswith(
        "homenode-bridge://[2001:db8::1]:443/")


def test_port_defaults_to_443():
    text = f"homenode-bridge://h.example/{b64url(PIN)}?s={b64url(SECRET)}"
    assert parse_line(text).port == 443


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32),
       st.integers(1, 65535))
def test_round_trip_any_keys(pin, secret, port):
    line = BridgeLine("10.0.0.1", port, pin, secret)
    assert parse_line(format_line(line)) == line


def test_repr_hides_the_secret():
    line = BridgeLine("h.example", 443, PIN, SECRET)
    assert b64url(SECRET) not in repr(line) and SECRET.hex() not in repr(line)


GOOD = f"homenode-bridge://h.example:443/{b64url(PIN)}?s={b64url(SECRET)}"


@pytest.mark.parametrize("text, needle", [
    ("https://h.example/x", "must start with homenode-bridge://"),
    ("homenode-bridge://h.example", "no /<pin>"),
    (GOOD.replace(":443", ":99999"), "not in 1..65535"),
    (GOOD.replace(":443", ":http"), "is not a number"),
    (GOOD.replace("h.example", "bad_host!"), "not a host name"),
    (GOOD.replace("h.example", "2001:db8::1"), "must be in brackets"),
    (GOOD.replace("h.example", "[10.0.0.1]"), "is not an IPv6 address"),
    (GOOD.replace(b64url(PIN), b64url(PIN)[:-3]), "pin (after the host) must be 32 bytes"),
    (GOOD.replace(b64url(PIN), b64url(PIN)[:-1] + "+"), "outside base64url"),
    (GOOD.replace("?s=" + b64url(SECRET), ""), "no secret"),
    (GOOD.replace(b64url(SECRET), b64url(SECRET)[:10]), "secret (s=) must be 32 bytes"),
    (GOOD + "&x=1", "unknown parameter 'x'"),
    (GOOD + "&s=" + b64url(SECRET), "given twice"),
    (GOOD + "&novalue", "is not name=value"),
    (GOOD.replace("?s=", "/extra?s="), "unexpected path"),
    (GOOD + "A" * 600, "too long"),
])
def test_bad_lines_say_what_is_wrong(text, needle):
    with pytest.raises(BridgeLineError) as e:
        parse_line(text)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_bridge_identity_created_once_and_reloaded(tmp_path):
    import os

    from firmware.bridge import identity
    from firmware.bridge.line import parse_line

    a = identity.load_or_create(str(tmp_path))
    b = identity.load_or_create(str(tmp_path))
    assert (a.pin, a.secret) == (b.pin, b.secret)
    for name in ("bridge.key", "bridge.secret"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o600
    line = parse_line(a.line("203.0.113.9", 8443))
    assert (line.pin, line.secret, line.port) == (a.pin, a.secret, 8443)
    assert a.secret.hex() not in repr(a)
    os.chmod(tmp_path / "bridge.secret", 0o644)
    with pytest.raises(identity.BridgeIdentityError, match="chmod 600"):
        identity.load_or_create(str(tmp_path))
    os.chmod(tmp_path / "bridge.secret", 0o600)
    (tmp_path / "bridge.secret").write_text("zz\n")
    with pytest.raises(identity.BridgeIdentityError, match="corrupt"):
        identity.load_or_create(str(tmp_path))
    os.unlink(tmp_path / "bridge.crt")
    with pytest.raises(identity.BridgeIdentityError, match="only one of"):
        identity.load_or_create(str(tmp_path))  # the node says it as "cannot start: ..."


def test_owner_view_reads_what_the_node_made_and_never_creates(tmp_path):
    import json
    import types

    from firmware.bridge import identity
    from firmware.bridge.line import parse_line
    from firmware.bridge.owner import NoPublicAddress, bridge_for_owner

    cfg = types.SimpleNamespace(public_host="", public_port=0, port=443)
    with pytest.raises(identity.BridgeIdentityError, match="start the node once"):
        bridge_for_owner(str(tmp_path), cfg)
    assert list(tmp_path.iterdir()) == []
    made = identity.load_or_create(str(tmp_path))
    with pytest.raises(NoPublicAddress, match=r"\[bridge\] public_host"):
        bridge_for_owner(str(tmp_path), cfg)
    view = bridge_for_owner(str(tmp_path), cfg, host="bridge.example.org")
    assert (view.port, view.listening_port) == (443, None)  # not running: the config's port
    (tmp_path / "node.json").write_text(json.dumps({"bridge_port": 8443}))
    cfg.public_host = "203.0.113.9"
    view = bridge_for_owner(str(tmp_path), cfg)
    line = parse_line(view.line)
    assert (line.host, line.port, line.pin, line.secret) == ("203.0.113.9", 8443, made.pin,
                                                             made.secret)
    cfg.public_port = 443  # the router forwards 443 to the bridge's 8443
    assert parse_line(bridge_for_owner(str(tmp_path), cfg).line).port == 443
    assert made.secret.hex() not in repr(view)
    assert "<svg" in view.svg_qr() and "▀" in view.terminal_qr()
