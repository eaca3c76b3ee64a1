"""LAN discovery: other homenode boxes on this home network, found by DNS-SD (`_homenode._tcp`).

Publishing is avahi's job (the image ships /etc/avahi/services/homenode.service); finding is
`avahi-browse -rpt --ignore-local _homenode._tcp` every `interval` seconds, parsed here (pure).
The announcement carries no id, so each new neighbour's id is read from its TLS certificate
(the node's certificate IS its Ed25519 id): what `on_found(host, port, node_id)` receives is
exactly what that address proves in every later pinned connection. Where avahi is missing (a
PC, a container) the feature is off and `info()` says why, never an error.
"""

import shutil
import ssl
from dataclasses import dataclass

import trio

SERVICE_TYPE = "_homenode._tcp"
PROBE_TIMEOUT_S = 5.0
BROWSE_TIMEOUT_S = 15.0
MAX_NEIGHBOURS = 64


@dataclass(frozen=True)
class Found:
    name: str
    host: str
    address: str
    port: int
    txt: tuple


def _unescape(s: str) -> str:
    """avahi-browse -p escapes as \\DDD (decimal) and \\X."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4])))
            i += 4
        elif s[i] == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_avahi_browse(text: str) -> list[Found]:
    """Resolved ('=') lines of `avahi-browse -rpt` -> one Found per address and port."""
    seen, out = set(), []
    for line in text.splitlines():
        f = line.split(";")
        if len(f) < 10 or f[0] != "=" or f[4] != SERVICE_TYPE:
            continue
        try:
            port = int(f[8])
        except ValueError:
            continue
        if not 0 < port < 65536 or not f[7]:
            continue
        address = f[7]
        if address.lower().startswith("fe80:") and "%" not in address:
            address = f"{address}%{f[1]}"  # link-local needs its interface
        key = (address, port)
        if key in seen:
            continue
        seen.add(key)
        txt = tuple(t.strip('"') for t in ";".join(f[9:]).split('" "') if t.strip('"'))
        out.append(Found(_unescape(f[3]), f[6], address, port, txt))
    return out


async def avahi_browse() -> str:
    """Run avahi-browse once; raises OSError with avahi's own words when it cannot."""
    with trio.fail_after(BROWSE_TIMEOUT_S):
        p = await trio.run_process(["avahi-browse", "-rpt", "--ignore-local", SERVICE_TYPE],
                                   capture_stdout=True, capture_stderr=True, check=False)
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip().splitlines()
        raise OSError(err[-1] if err else f"avahi-browse exited {p.returncode}")
    return p.stdout.decode(errors="replace")


async def probe_node_id(host: str, port: int) -> bytes:
    """The Ed25519 id a node proves in its TLS handshake (its certificate's key)."""
    from firmware.identity import public_key_of_cert

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # trust is the id itself, pinned by every later link
    with trio.fail_after(PROBE_TIMEOUT_S):
        tcp = await trio.open_tcp_stream(host, port)
        stream = trio.SSLStream(tcp, ctx, server_hostname=None)
        try:
            await stream.do_handshake()
            der = stream.getpeercert(binary_form=True)
        finally:
            await trio.aclose_forcefully(stream)
    return public_key_of_cert(der)


class LanDiscovery:
    """`async def run(*, task_status)`; calls `on_found(host, port, node_id)` once per new
    neighbour (and again if its address or id changes)."""

    def __init__(self, *, interval: float, on_found, own_id: bytes, log=None, browse=None,
                 probe=probe_node_id, have_avahi=None):
        self.interval = interval
        self.on_found = on_found
        self.own_id = own_id
        self.log = log
        self.browse = browse or avahi_browse
        self.probe = probe
        if have_avahi is None:
            have_avahi = browse is not None or shutil.which("avahi-browse") is not None
        self.state = "on" if have_avahi else "off: avahi-browse is not installed"
        self.neighbours: dict[tuple, bytes] = {}  # (address, port) -> node id

    async def round(self) -> None:
        try:
            found = parse_avahi_browse(await self.browse())
        except (OSError, trio.TooSlowError) as e:
            state = f"off: {e or 'avahi-browse timed out'}"
            if state != self.state and self.log:
                self.log.info("lan_discovery_off", reason=state[5:])
            self.state = state
            return
        self.state = "on"
        for f in found[:MAX_NEIGHBOURS]:
            key = (f.address, f.port)
            try:
                node_id = await self.probe(f.address, f.port)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, ValueError) as e:
                if self.log:
                    self.log.debug("lan_probe_failed", address=f"{f.address}:{f.port}",
                                   error=str(e) or type(e).__name__)
                continue
            if node_id == self.own_id or self.neighbours.get(key) == node_id:
                continue
            self.neighbours[key] = node_id
            if self.log:
                self.log.info("lan_neighbour", address=f"{f.address}:{f.port}",
                              node=node_id[:4].hex(), name=f.name)
            self.on_found(f.address, f.port, node_id)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        if not self.state.startswith("on"):
            return  # nothing to browse with on this machine; info() says so
        while True:
            await self.round()
            await trio.sleep(self.interval)

    def info(self) -> dict:
        return {"lan_discovery": self.state, "lan_neighbours": len(self.neighbours)}
