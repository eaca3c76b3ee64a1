"""The boot-partition homenode.toml -> device plan (image/device/bootconfig.py), no QEMU."""

import hashlib
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "image" / "device"))
import bootconfig  # noqa: E402

from firmware.settings import default_schema  # noqa: E402

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm5Cq2p7Xh2yCkQ2vG9pG3nYkYv4bq2h0d3W1Uu8yZ0 me@pc"


def test_shipped_template_is_valid_and_means_defaults():
    text = (REPO / "image/boot/homenode.toml").read_text()
    plan = bootconfig.plan_from_text(text)
    assert plan.problems == []
    assert plan.hostname == "homenode" and not plan.ssh_enabled and plan.wifi_country is None
    assert plan.node_config == {"node": bootconfig.NODE_FIXED}
    assert default_schema().validate(plan.node_config, "x")[1] == []


def test_template_with_every_example_uncommented_is_valid_for_the_node():
    """The commented examples must be real keys of the node's schema (else users get errors)."""
    import re
    text = (REPO / "image/boot/homenode.toml").read_text()
    text = re.sub(r"^# ?(\[[a-z]+\]|[a-z_]+ = )", r"\1", text, flags=re.M)
    text = text.replace('"ssh-ed25519 AAAA... you@laptop"', f'"{KEY}"')
    text = text.replace("rgb_pins = [17, 27, 22]", "")  # an alternative to led_pin
    plan = bootconfig.plan_from_text(text)
    assert plan.problems == []
    assert default_schema().validate(plan.node_config, "x")[1] == []
    assert plan.wifi_ssid == "MyHomeNetwork" and plan.ssh_keys == [KEY]


def test_full_config():
    plan = bootconfig.plan_from_text(f"""
[device]
hostname = "attic-1"
[wifi]
country = "DE"
ssid = "Home \\"Net\\""
passphrase = "correct horse battery"
[ssh]
authorized_keys = ["{KEY}"]
[bandwidth]
monthly_cap_gb = 50
[hal]
button_pin = 3
""")
    assert plan.problems == []
    assert plan.hostname == "attic-1" and plan.ssh_enabled
    assert plan.node_config["bandwidth"] == {"monthly_cap_gb": 50}
    assert plan.node_config["hal"] == {"button_pin": 3}
    assert plan.node_config["node"]["listen_host"] == "0.0.0.0"
    conf = bootconfig.wpa_supplicant_conf(plan)
    assert "country=DE" in conf
    assert "ssid=" + b'Home "Net"'.hex() in conf
    assert "correct horse" not in conf  # only the derived key is stored
    expect = hashlib.pbkdf2_hmac("sha1", b"correct horse battery", b'Home "Net"', 4096, 32)
    assert f"psk={expect.hex()}" in conf


def test_wpa_psk_matches_the_ieee_test_vector():
    # IEEE 802.11i-2004, H.4.1: "password" / "IEEE"
    assert bootconfig.wpa_psk("IEEE", "password") == (
        "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e")


@pytest.mark.parametrize("text, fragment", [
    ('[device]\nhostname = "My Box"', "hostname"),
    ('[device]\nhostname = "-box"', "hostname"),
    ('[device]\nname = "x"', "unknown key [device] name"),
    ('[wifi]\nssid = "x"\npassphrase = "12345678"', "country"),
    ('[wifi]\ncountry = "de"', "country"),
    ('[wifi]\ncountry = "DE"\nssid = "net"\npassphrase = "short"', "8 to 63"),
    ('[ssh]\nauthorized_keys = ["hello"]', "OpenSSH public key"),
    ('[ssh]\nauthorized_keys = 3', "list"),
    ('[node]\ndata_dir = "/tmp"', "fixed by the image"),
    ('hostname = "x"', "inside a section"),
    ('[device\nhostname = "x"', "not valid TOML"),
    ('wifi = 3', "must be a table"),
    ('[wifi]\ncountry = "DE"\nssid = "net"', "ssid and passphrase together"),
    ('[ssh]\nauthorized_keys = "hello"', "OpenSSH public key"),
    ('[thermal]\nwarm_c = 85\nhot_c = 70\ncritical_c = 60', "warm_c < hot_c < critical_c"),
    ('[hal]\nshutdown_hold_s = 12\nreset_hold_s = 10', "shutdown_hold_s < reset_hold_s"),
    ('[bandwidth]\nmonthly_cap = 5', "did you mean monthly_cap_gb?"),
])
def test_mistakes_are_reported_clearly(text, fragment):
    plan = bootconfig.plan_from_text(text)
    assert plan.problems, text
    assert any(fragment in p for p in plan.problems), plan.problems


def test_every_problem_at_once_boot_sections_and_node_settings_together():
    """One pass of the one validator: a bad boot section no longer hides node-setting mistakes."""
    plan = bootconfig.plan_from_text(
        '[device]\nhostname = "My Box"\n[wifi]\ncountry = "de"\n[ssh]\nauthorized_keys = 3\n'
        '[bandwidth]\nmonthly_cap = 5\n[thermal]\nwarm_c = 85\n[node]\ndata_dir = "/x"\n')
    joined = "\n".join(plan.problems)
    for fragment in ("hostname", "[wifi] country", "authorized_keys", "monthly_cap_gb",
                     "warm_c < hot_c", "fixed by the image"):
        assert fragment in joined, plan.problems
    assert len(plan.problems) == 6


def test_a_single_key_string_is_taken_as_a_list():
    plan = bootconfig.plan_from_text(f'[ssh]\nauthorized_keys = "{KEY}"\n')
    assert plan.problems == [] and plan.ssh_keys == [KEY]


def test_node_config_writer_round_trips():
    cfg = {"node": {"data_dir": "/var/lib/homenode", "listen_port": 7070},
           "bandwidth": {"monthly_cap_gb": 7.5, "quiet_hours": ["18:00-23:00"]},
           "hal": {"onboard_leds": False, "shutdown_command": 'say "bye"\\now'}}
    assert tomllib.loads(bootconfig.toml_dumps(cfg)) == cfg


def test_wifi_country_without_network_sets_only_the_country():
    plan = bootconfig.plan_from_text('[wifi]\ncountry = "FR"\n')
    conf = bootconfig.wpa_supplicant_conf(plan)
    assert "country=FR" in conf and "network=" not in conf
    assert bootconfig.wpa_supplicant_conf(bootconfig.plan_from_text("")) is None
