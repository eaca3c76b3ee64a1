"""`/metrics`: the node's `info` map in the Prometheus text format (version 0.0.4), pure.

Why not `prometheus_client` at run time: importing it adds ~2.1 MiB to an idle node (bench/
web_rss.py: 35.6 -> 37.7 MiB median, 1.24x -> 1.31x the 28.8 MiB floor, over the 1.3x budget;
it pulls in http.server, wsgiref, threading helpers), while the format is a few lines of text;
the tests parse our output with prometheus_client's own parser, so a mistake cannot hide.

Names follow Prometheus conventions: a `homenode_` prefix, base units in the name (`_bytes`,
`_seconds`, `_celsius`), `_total` for counters, one-hot gauges for states.
"""

from hal.core.led import STATE_NAMES

TIERS = ("normal", "warm", "hot", "critical")
REACHABILITY = ("checking", "direct", "mapped", "relayed", "unreachable")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


class _Writer:
    def __init__(self):
        self.lines: list[str] = []

    def family(self, name, kind, help_text, samples):
        """samples: [(labels dict, value)]; values that are None are left out."""
        samples = [(lb, v) for lb, v in samples if isinstance(v, int | float)]
        if not samples:
            return
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{lab}}} {_num(value)}" if lab else f"{name} {_num(value)}")

    def gauge(self, name, help_text, value, **labels):
        self.family(name, "gauge", help_text, [(labels, value)])

    def counter(self, name, help_text, value):
        self.family(name, "counter", help_text, [({}, value)])


def metrics_text(info: dict) -> str:
    """`info` after `jsonable` -> the exposition text."""
    w = _Writer()
    dev = info.get("device") or {}
    bw = dev.get("bandwidth") or {}
    st = dev.get("storage") or {}
    onion = info.get("onion") or {}
    w.gauge("homenode_build_info", "version of the running firmware (always 1)", 1,
            version=str(info.get("version", "")), node_id=str(info.get("node_id", "")))
    w.gauge("homenode_uptime_seconds", "seconds since the node started", info.get("uptime_s"))
    health = info.get("health")
    if health is not None:
        w.family("homenode_health_state", "gauge", "1 for the state the LED shows, 0 for the "
                 "others", [({"state": s}, int(s == health)) for s in STATE_NAMES])
    w.gauge("homenode_messages_stored", "messages held in the store", info.get("messages"))
    w.gauge("homenode_stored_bytes", "bytes of message data held", info.get("bytes"))
    w.gauge("homenode_store_quota_bytes", "bytes of message data allowed",
            info.get("quota_bytes"))
    w.counter("homenode_requests_total", "requests answered (clients and nodes)",
              info.get("requests"))
    w.gauge("homenode_connections", "open client and node connections",
            info.get("connections"))
    w.gauge("homenode_peers_known", "node records held", info.get("peers_known"))
    w.gauge("homenode_peers_live", "peers tested and answering", info.get("peers_live"))
    w.gauge("homenode_swarm_recipients", "mailboxes this node holds as a swarm member",
            info.get("swarm_recipients"))
    reach = info.get("reachability")
    if reach is not None:
        modes = REACHABILITY if reach in REACHABILITY else (*REACHABILITY, reach)
        w.family("homenode_reachability", "gauge", "1 for how other nodes reach this one",
                 [({"mode": m}, int(m == reach)) for m in modes])
    w.gauge("homenode_temperature_celsius", "CPU temperature (absent when no sane reading)",
            dev.get("temp_c"))
    tier = dev.get("thermal_tier")
    if tier is not None:
        w.family("homenode_thermal_tier", "gauge", "1 for the current temperature tier",
                 [({"tier": t}, int(t == tier)) for t in TIERS])
    flags = dev.get("throttle_flags")
    if isinstance(flags, str) and flags.startswith("0x"):
        w.gauge("homenode_throttle_flags", "the firmware's throttle flags (bit 0: under-voltage)",
                int(flags, 16))
    w.family("homenode_bandwidth_bytes_total", "counter", "bytes on the node's connections "
             "this billing cycle", [({"direction": "up"}, bw.get("up_bytes")),
                                    ({"direction": "down"}, bw.get("down_bytes"))])
    if bw.get("cap_bytes"):
        w.gauge("homenode_bandwidth_cap_bytes", "monthly cap", bw.get("cap_bytes"))
        w.gauge("homenode_bandwidth_cycle_used_bytes", "bytes counted against the cap",
                bw.get("used_bytes"))
    rate = bw.get("paced_rate")
    if isinstance(rate, int | float) and rate >= 0:
        w.gauge("homenode_bandwidth_paced_bytes_per_second", "rate the cap pacing allows", rate)
    w.gauge("homenode_bandwidth_pacing", "1 while pacing to last the monthly cap",
            bw.get("pacing"))
    w.gauge("homenode_storage_free_bytes", "free bytes on the data partition",
            st.get("free_bytes"))
    w.gauge("homenode_storage_written_today_bytes", "bytes written to the card today",
            st.get("written_today_bytes"))
    w.gauge("homenode_storage_write_budget_bytes", "daily write budget",
            st.get("write_budget_bytes"))
    w.counter("homenode_storage_evicted_messages_total", "messages evicted for space",
              st.get("evicted_messages"))
    for key in sorted(onion):
        if key != "inflight" and isinstance(onion[key], int):
            w.counter(f"homenode_onion_{key}_total", f"onion layers: {key.replace('_', ' ')}",
                      onion[key])
    for key, text in (("replica_acks", "replica copies acknowledged"),
                      ("replica_naks", "replica copies refused or lost"),
                      ("repairs_in", "messages received by anti-entropy repair"),
                      ("repairs_out", "messages sent by anti-entropy repair"),
                      ("gossip_rounds", "membership exchange rounds"),
                      ("gossip_failed", "membership exchanges that failed")):
        w.counter(f"homenode_{key}_total", text, info.get(key))
    return "\n".join(w.lines) + "\n"
