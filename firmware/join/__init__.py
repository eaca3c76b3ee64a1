"""Joining without a terminal: a signed seed list shipped in the image, and LAN discovery.

``install_join(node)`` gives the node:
  service   join_lan (LanDiscovery: avahi-browse of _homenode._tcp, ids read from TLS)
  info      a `join` map: where the bootstrap comes from (config / seed list / lan / none),
            the seed list's state and LAN discovery's state, so status and the page can say
            "no bootstrap configured" when nothing at all can help the box find the network.
  .bootstrap_entries()  [network] bootstrap if set, else the signed seed list's entries
Config: ``[join]`` in firmware/join/settings.py.
"""

import os

from firmware.join.settings import JOIN, SECTIONS

__all__ = ["JOIN", "SECTIONS", "JoinState", "install_join"]

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


def install_join(node, on_found=None):
    """Plug seed list + LAN discovery into `node`; `on_found(host, port, node_id)` defaults to
    membership's `add_candidate` when it has one (integrator wiring), else a log line."""
    from firmware.join.discovery import LanDiscovery
    from firmware.join.seeds import best_seed_list

    cfg = node.cfg.join
    seed_list, note = best_seed_list([os.path.join(node.data_dir, DATA_DIR_SEEDS),
                                      cfg.seed_file], cfg.release_key_file, node.clock_ms())
    if seed_list is None and cfg.seed_file and os.path.exists(cfg.seed_file):
        node.log.warning("seed_list_unusable", reason=note)
    if on_found is None:
        membership = getattr(getattr(node, "network", None), "membership", None)
        on_found = getattr(membership, "add_candidate", None) or (lambda h, p, i: None)
    discovery = None
    if cfg.lan_discovery and node.cfg.network.enabled:
        discovery = LanDiscovery(interval=cfg.lan_browse_interval, on_found=on_found,
                                 own_id=node.identity.node_id, log=node.log)
        node.add_service("join_lan", discovery.run)
    state = JoinState(bootstrap=node.cfg.network.bootstrap,
                      network_enabled=node.cfg.network.enabled, seed_list=seed_list,
                      seed_note=note, discovery=discovery)
    node.handler.add_info(state.info)
    return state
