"""`homenode status`: the short form, exact output (pure)."""

from firmware.status_text import short_status
from tests.web.sample_info import info


def test_short_status_exact_output():
    assert short_status(info()) == """\
homenode b5165e7ff8291b94: throttled - Slowed down: too hot, or pacing the monthly bandwidth cap
  why:   temperature hot: 76.0 degC >= 75.0 degC
  to do: Give it air; nothing else.
reachable    relayed: switch on UPnP or NAT-PMP in the router
peers        9 live of 12 known
messages     1234 held (5.6 MB of 1.1 GB allowed)
storage      27.0 GB free; written today 120.0 MB of 4.1 GB
temperature  76.0 degC (hot)
bandwidth    up 40.0 GB, down 21.5 GB; 61.5 GB of 200.0 GB cap, paced to 52.0 KB/s
up           1 d 2 h, version 0.1.0
page         http://127.0.0.1:8080/
(every counter: homenode status --full)"""


def test_short_status_of_a_lone_fresh_box_says_no_bootstrap():
    i = info(health="connecting", health_reason="looking for peers", peers_live=0,
             peers_known=0, reachability="checking", reachability_advice="",
             join={"bootstrap": "none", "seed_list": "no release key at /x",
                   "lan_discovery": "off: avahi-browse is not installed"})
    i["device"]["temp_c"] = None
    i["device"]["thermal_tier"] = "warm"
    i["device"]["bandwidth"] = {"up_bytes": 0, "down_bytes": 1500, "cap_bytes": 0}
    i["device"]["led_overlay"] = "identify"
    del i["web"]
    text = short_status(i)
    assert text == """\
homenode b5165e7ff8291b94: connecting - Looking for the network and its peers
  why:   looking for peers
  to do: Wait; check the cable or Wi-Fi if it lasts.
  light: showing identify (button feedback)
reachable    checking
peers        0 live of 0 known
messages     1234 held (5.6 MB of 1.1 GB allowed)
storage      27.0 GB free; written today 120.0 MB of 4.1 GB
temperature  no sane reading (treated as warm)
bandwidth    up 0 B, down 1.5 KB
up           1 d 2 h, version 0.1.0
no bootstrap configured: this box knows no other node; add one under [network] bootstrap in \
homenode.toml, or put a second box on this home network (LAN discovery off: avahi-browse is not \
installed)
(every counter: homenode status --full)"""
    assert 10 <= len(text.splitlines()) <= 15


def test_every_led_state_reads_from_the_one_table():
    from hal.core import led

    for name in led.STATE_NAMES:
        first = short_status(info(health=name, health_reason="")).splitlines()[:2]
        p = led.state_pattern(name)
        assert first == [f"homenode b5165e7ff8291b94: {name} - {p.meaning}",
                         f"  to do: {p.action}"]
