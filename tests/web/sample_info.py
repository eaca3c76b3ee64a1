"""A realistic `info` map (as `homenode status --json` prints it) for the pure web tests."""

import copy

NODE_ID = "b5165e7ff8291b94dc8bfa1f24f8417651251777c6834b270967b2c90da15c37"

INFO = {
    "node_id": NODE_ID, "version": "0.1.0", "time": 1796173185720, "state": "serving",
    "uptime_s": 93784, "messages": 1234, "bytes": 5_600_000, "quota_bytes": 1073741824,
    "requests": 98765, "connections": 3, "health": "throttled",
    "health_reason": "temperature hot: 76.0 degC >= 75.0 degC",
    "peers_known": 12, "peers_live": 9, "swarm_k": 5, "swarm_recipients": 310,
    "reachability": "relayed", "reachability_advice": "switch on UPnP or NAT-PMP in the router",
    "replica_acks": 50, "replica_naks": 1, "repairs_in": 3, "repairs_out": 4,
    "gossip_rounds": 400, "gossip_failed": 2,
    "onion": {"busy": 0, "final": 5, "forwarded": 7, "inflight": 1, "peeled": 12,
              "rejected": 1},
    "join": {"bootstrap": "config", "seed_list": "none configured", "lan_discovery": "on",
             "lan_neighbours": 0},
    "web": {"address": "127.0.0.1:8080"},
    "device": {
        "backend": "pi", "temp_c": 76.0, "thermal_tier": "hot", "throttle_flags": "0x50000",
        "led_overlay": None,
        "bandwidth": {"cap_bytes": 200_000_000_000, "used_bytes": 61_500_000_000,
                      "up_bytes": 40_000_000_000, "down_bytes": 21_500_000_000,
                      "paced_rate": 52_000, "pacing": True, "enabled": True},
        "storage": {"free_bytes": 27_000_000_000, "written_today_bytes": 120_000_000,
                    "write_budget_bytes": 4_096_000_000, "evicted_messages": 0,
                    "problem": None},
    },
}


def info(**changes):
    d = copy.deepcopy(INFO)
    d.update(changes)
    return d
