"""The bridge port on the home router: forwarded by UPnP-IGD or NAT-PMP, like a node port.

Why: a bridge in a home sits behind the router; friends abroad reach it only if the router
forwards the port. A bridge never runs the reachability service (it would ask peers to connect
back: the address given away), so this is its only use of the router: ask it for the bridge
port (same outside port when free), renew at half the lease, give it back on stop. The router's
public address then goes into the line when `[bridge] public_host` is empty.

What the router said is kept for the owner's tools in `<data dir>/bridge-public.json` (0600):
never in `info`, the status or the logs (the bridge's address is what a censor wants).
`[nat] mode` decides as for the node port: "off" never asks, a loopback bridge never asks.
"""

import ipaddress
import json
import os

import trio

from firmware.durable import write_durably
from firmware.net import nat

__all__ = ["BridgePortMapper", "PUBLIC_FILE", "read_public"]

PUBLIC_FILE = "bridge-public.json"
RETRY_S = 600.0


def read_public(data_dir: str) -> tuple[str, int] | None:
    """(external address, external port) the router forwards to the bridge, if it does."""
    try:
        with open(os.path.join(data_dir, PUBLIC_FILE)) as f:
            d = json.load(f)
        host, port = d["host"], d["port"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (host, port) if type(host) is str and type(port) is int else None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class BridgePortMapper:
    """Service: keep the router forwarding the bridge port while the node runs."""

    def __init__(self, nat_cfg, data_dir: str, bound: tuple[str, int], *, log,
                 mapper=nat.map_port, unmapper=nat.unmap_port):
        self.cfg = nat_cfg
        self.path = os.path.join(data_dir, PUBLIC_FILE)
        self.bound = bound
        self.log = log
        self.mapper, self.unmapper = mapper, unmapper
        self.mapping: nat.Mapping | None = None
        self.state = "off"

    def info(self) -> dict:
        """For `info`: how, never where."""
        return {"port_mapping": self.mapping.method if self.mapping else self.state}

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        self._forget()
        task_status.started()
        if self.cfg.mode == "off" or _loopback(self.bound[0]):
            self.state = "off"
            return
        methods = ("upnp", "natpmp") if self.cfg.mode == "auto" else (self.cfg.mode,)
        try:
            while True:
                mapping, reasons = await self.mapper(self.bound[1], lease_s=self.cfg.lease,
                                                     methods=methods)
                if mapping is not None:
                    if self.mapping is None:
                        self.log.info("bridge_port_forwarded", method=mapping.method)
                    self.mapping, self.state = mapping, mapping.method
                    self._write(mapping)
                    wait = max(30.0, (mapping.lifetime_s or 2 * RETRY_S) / 2)
                else:
                    if self.mapping is not None or self.state != "none":
                        self.log.warning("bridge_port_not_forwarded", reasons="; ".join(reasons),
                                         hint="forward the bridge port to this box by hand in "
                                         "the router's settings")
                    self.mapping, self.state = None, "none"
                    self._forget()
                    wait = RETRY_S
                await trio.sleep(wait)
        finally:
            await self._give_back()

    def _write(self, m: nat.Mapping) -> None:
        write_durably(self.path, json.dumps(
            {"host": m.external_ip, "port": m.external_port, "method": m.method}), 0o600)

    def _forget(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _give_back(self) -> None:
        m, self.mapping = self.mapping, None
        self._forget()
        if m is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            try:
                await self.unmapper(m)
                self.log.info("bridge_port_given_back", method=m.method)
            except (nat.NatError, OSError) as e:
                self.log.debug("bridge_port_give_back_failed", error=str(e)[:200])
