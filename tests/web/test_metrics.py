"""/metrics text, parsed by prometheus_client's own parser (the format a Prometheus server
reads): conventional names, units, one-hot states, nothing missing or malformed."""

from prometheus_client.parser import text_string_to_metric_families

from firmware.web.metrics import metrics_text
from hal.core.led import STATE_NAMES
from tests.web.sample_info import info


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams, name, **labels):
    for fam in fams.values():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError((name, labels))


def test_metrics_parse_with_conventional_names_and_units():
    fams = families(metrics_text(info()))
    assert value(fams, "homenode_messages_stored") == 1234
    assert value(fams, "homenode_temperature_celsius") == 76.0
    assert value(fams, "homenode_bandwidth_bytes_total", direction="up") == 40_000_000_000
    assert value(fams, "homenode_bandwidth_bytes_total", direction="down") == 21_500_000_000
    assert fams["homenode_bandwidth_bytes"].type == "counter"  # parser strips _total
    assert value(fams, "homenode_bandwidth_paced_bytes_per_second") == 52_000
    assert value(fams, "homenode_uptime_seconds") == 93784
    assert value(fams, "homenode_peers_live") == 9
    assert value(fams, "homenode_reachability", mode="relayed") == 1
    assert value(fams, "homenode_throttle_flags") == 0x50000
    assert value(fams, "homenode_onion_peeled_total") == 12
    assert value(fams, "homenode_build_info", version="0.1.0") == 1
    states = {s.labels["state"]: s.value for s in fams["homenode_health_state"].samples}
    assert set(states) == set(STATE_NAMES) and states["throttled"] == 1
    assert sum(states.values()) == 1
    tiers = {s.labels["tier"]: s.value for s in fams["homenode_thermal_tier"].samples}
    assert tiers == {"normal": 0, "warm": 0, "hot": 1, "critical": 0}
    for fam in fams.values():
        assert fam.name.startswith("homenode_") and fam.documentation


def test_unknown_values_are_left_out_not_faked():
    i = info(health=None, reachability=None)
    i["device"]["temp_c"] = None
    i["device"]["bandwidth"]["paced_rate"] = -1
    i["device"]["bandwidth"]["cap_bytes"] = 0
    fams = families(metrics_text(i))
    for gone in ("homenode_temperature_celsius", "homenode_health_state",
                 "homenode_reachability", "homenode_bandwidth_paced_bytes_per_second",
                 "homenode_bandwidth_cap_bytes"):
        assert gone not in fams


def test_label_values_are_escaped():
    text = metrics_text(info(version='1.0 "beta"\\x\nnew'))
    fams = families(text)
    assert value(fams, "homenode_build_info") == 1
    assert fams["homenode_build_info"].samples[0].labels["version"] == '1.0 "beta"\\x\nnew'
