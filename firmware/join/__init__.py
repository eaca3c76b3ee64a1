"""Joining without a terminal: a signed seed list shipped in the image, and LAN discovery.

``JoinParts(cfg, data_dir, own_id, add_candidate=membership.add_candidate, ...)`` gives the node:
  candidates  the signed seed list's entries, handed to membership when [network] bootstrap is
              empty; LAN neighbours as they are found
  services    join_lan (LanDiscovery: avahi-browse of _homenode._tcp, ids read from TLS)
  info        a `join` map: where the bootstrap comes from (config / seed list / lan / none),
              the seed list's state and LAN discovery's state
Config: ``[join]`` in firmware/join/settings.py.
"""

import os

from firmware.join.settings import JOIN, SECTIONS

__all__ = ["JOIN", "SECTIONS", "JoinParts", "JoinState"]

DATA_DIR_SEEDS = "seeds.json"  # where an update drops a newer signed list


class JoinState:
    """What the node knows about how it can find the network (collaborators passed in)."""

    def __init__(self, *, bootstrap, network_enabled, seed_list, seed_note, discovery):
        self.bootstrap = list(bootstrap)
        self.network_enabled = network_enabled
        self.seed_list = seed_list
        self.seed_note = seed_note
        self.discovery = discovery

    def bootstrap_entries(self) -> list[str]:
        """What membership should ask at start: the operator's list, else the seed list."""
        if self.bootstrap:
            return list(self.bootstrap)
        return list(self.seed_list.seeds) if self.seed_list else []

    def source(self) -> str:
        if not self.network_enabled:
            return "off"
        if self.bootstrap:
            return "config"
        if self.seed_list and self.seed_list.seeds:
            return "seed list"
        if self.discovery is not None and self.discovery.neighbours:
            return "lan"
        return "none"

    def info(self) -> dict:
        d = {"bootstrap": self.source(), "seed_list": self.seed_note}
        if self.discovery is not None:
            d.update(self.discovery.info())
        else:
            d["lan_discovery"] = "off: [join] lan_discovery = false"
        return {"join": d}


class JoinParts:
    """Seed list + LAN discovery for one node, built once with its collaborators.

    `add_candidate(host, port, node_id)`: membership's (None when networking is off). With an
    empty `[network] bootstrap` every seed of the newest valid signed list is handed to it at
    once, so the node asks them at its first gossip round; neighbours found on the LAN are
    handed to it as they appear."""

    def __init__(self, cfg, data_dir: str, own_id: bytes, *, add_candidate, clock_ms, log):
        from firmware.join.discovery import LanDiscovery
        from firmware.join.seeds import best_seed_list
        from firmware.net.settings import parse_bootstrap

        jc = cfg.join
        seed_list, note = best_seed_list([os.path.join(data_dir, DATA_DIR_SEEDS), jc.seed_file],
                                         jc.release_key_file, clock_ms())
        if seed_list is None and jc.seed_file and os.path.exists(jc.seed_file):
            log.warning("seed_list_unusable", reason=note)
        enabled = cfg.network.enabled and add_candidate is not None
        if enabled and seed_list is not None and not cfg.network.bootstrap:
            for entry in seed_list.seeds:
                add_candidate(*parse_bootstrap(entry))
            log.info("seed_list", seeds=len(seed_list.seeds), source=seed_list.source)
        self.discovery = None
        if jc.lan_discovery and enabled:
            self.discovery = LanDiscovery(interval=jc.lan_browse_interval,
                                          on_found=add_candidate, own_id=own_id, log=log)
        self.state = JoinState(bootstrap=cfg.network.bootstrap, network_enabled=enabled,
                               seed_list=seed_list, seed_note=note, discovery=self.discovery)

    def services(self):
        return [("join_lan", self.discovery.run)] if self.discovery is not None else []

    def info(self) -> dict:
        return self.state.info()
