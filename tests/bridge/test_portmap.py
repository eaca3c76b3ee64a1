"""The bridge port on the home router (service logic with a fake router, in virtual time), and
how the owner's line uses what the router said."""

import json
import types

import pytest
import trio

from firmware.bridge import identity
from firmware.bridge.owner import bridge_for_owner
from firmware.bridge.portmap import PUBLIC_FILE, BridgePortMapper, read_public
from firmware.logs import Log
from firmware.net import nat


class Router:
    def __init__(self, answers):
        self.answers = list(answers)
        self.asked, self.given_back = [], []

    async def map_port(self, port, *, lease_s, methods):
        self.asked.append((port, lease_s, methods))
        ok = self.answers.pop(0) if self.answers else True
        if not ok:
            return None, ["upnp: no UPnP router answered", "natpmp: no answer"]
        return nat.Mapping("upnp", "203.0.113.50", port, "192.168.1.9", port, lease_s), []

    async def unmap_port(self, m):
        self.given_back.append(m.external_port)


def _mapper(tmp_path, router, mode="auto", host="0.0.0.0"):
    cfg = types.SimpleNamespace(mode=mode, lease=600)
    import io

    log = Log("debug", stream=io.StringIO())
    return BridgePortMapper(cfg, str(tmp_path), (host, 443), log=log,
                            mapper=router.map_port, unmapper=router.unmap_port), log


async def test_forwarded_renewed_and_given_back(tmp_path, autojump_clock):
    router = Router([True, True, False, True])
    m, log = _mapper(tmp_path, router)
    async with trio.open_nursery() as n:
        await n.start(m.run)
        await trio.sleep(1)
        assert read_public(str(tmp_path)) == ("203.0.113.50", 443)
        assert (tmp_path / PUBLIC_FILE).stat().st_mode & 0o777 == 0o600
        assert m.info() == {"port_mapping": "upnp"}
        await trio.sleep(300)  # half the lease: renewed
        assert len(router.asked) == 2
        await trio.sleep(300)  # the router forgot it: no file, a warning, retried later
        assert read_public(str(tmp_path)) is None and m.info() == {"port_mapping": "none"}
        await trio.sleep(600)
        assert read_public(str(tmp_path)) == ("203.0.113.50", 443)
        n.cancel_scope.cancel()
    assert router.given_back == [443] and read_public(str(tmp_path)) is None
    text = log.stream.getvalue()
    assert "203.0.113.50" not in text  # the address stays out of the log
    assert "bridge_port_not_forwarded" in text


@pytest.mark.parametrize("mode,host", [("off", "0.0.0.0"), ("auto", "127.0.0.1")])
async def test_never_asks_when_off_or_on_loopback(tmp_path, mode, host):
    router = Router([True])
    m, _ = _mapper(tmp_path, router, mode=mode, host=host)
    await m.run()
    assert router.asked == [] and m.info() == {"port_mapping": "off"}


def test_line_takes_the_routers_address_while_the_bridge_runs(tmp_path):
    made = identity.load_or_create(str(tmp_path))
    cfg = types.SimpleNamespace(public_host="", public_port=0, port=443)
    (tmp_path / PUBLIC_FILE).write_text(json.dumps({"host": "203.0.113.50", "port": 23101}))
    with pytest.raises(ValueError, match="did not forward"):
        bridge_for_owner(str(tmp_path), cfg)  # not running: a stale file says nothing
    (tmp_path / "node.json").write_text(json.dumps({"bridge_port": 443}))
    view = bridge_for_owner(str(tmp_path), cfg)
    assert (view.host, view.port) == ("203.0.113.50", 23101)
    cfg.public_host = "bridge.example.org"  # a DDNS name: the router's outside port still
    assert (bridge_for_owner(str(tmp_path), cfg).port, made.pin) == (23101, made.pin)
