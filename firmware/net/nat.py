"""Port mapping on the home router: UPnP-IGD (SSDP + SOAP) and NAT-PMP (RFC 6886), stdlib only.

Why our own client: both protocols are small (one multicast search, one XML description, one
SOAP call; or two 12-byte UDP packets), the Pi image should not carry another dependency, and
everything a router sends us is untrusted input that we bound and check ourselves.

Layout: the codecs at the top are pure (bytes in, values out; tested with exact bytes); the
``async`` functions below them do the I/O with trio and never block the node. The entry point
is :func:`map_port`, which tries UPnP-IGD and then NAT-PMP and returns a :class:`Mapping` or
the list of reasons nothing worked (for the operator).

Only ever sends to the LAN: the SSDP multicast group, the IGD address that answered, and the
default gateway (NAT-PMP).
"""

import ipaddress
import re
import struct
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import trio

__all__ = [
    "NatError",
    "UpnpFault",
    "IgdService",
    "Mapping",
    "msearch",
    "parse_ssdp_response",
    "parse_http_response",
    "parse_device_description",
    "soap_envelope",
    "parse_soap_response",
    "natpmp_external_request",
    "natpmp_map_request",
    "parse_natpmp",
    "default_gateway",
    "is_public_ipv4",
    "discover_igd",
    "UpnpIgd",
    "NatPmp",
    "map_port",
    "unmap_port",
]

SSDP_GROUP = ("239.255.255.250", 1900)
SEARCH_TARGETS = (
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
    "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
)
WAN_SERVICES = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
NATPMP_PORT = 5351
MAX_HTTP = 65536  # a device description or SOAP answer larger than this is refused
DESCRIPTION = "homenode"


class NatError(Exception):
    """Mapping failed; the message says why in words an operator can act on."""


class UpnpFault(NatError):
    """The IGD answered a SOAP call with a UPnPError (``code`` e.g. 718 conflict, 606 denied)."""

    def __init__(self, code, description):
        super().__init__(f"router refused: UPnP error {code} ({description})")
        self.code = code
        self.description = description


@dataclass(frozen=True)
class IgdService:
    """A WAN connection service of an Internet Gateway Device: where to send SOAP calls."""

    control_url: str
    service_type: str


@dataclass(frozen=True)
class Mapping:
    method: str  # "upnp" or "natpmp"
    external_ip: str
    external_port: int
    internal_ip: str
    internal_port: int
    lifetime_s: int  # 0 = permanent (until the router reboots)
    control_url: str = ""  # UPnP: where to delete it again
    service_type: str = ""


# ============================================================================= pure codecs


def msearch(st: str, mx: int = 2) -> bytes:
    return (f'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n'
            f"MX: {mx}\r\nST: {st}\r\n\r\n").encode()  # fmt: skip


def _headers(lines):
    out = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def parse_ssdp_response(data: bytes):
    """Headers (lower-case names) of an SSDP search answer with a usable http LOCATION, else None."""
    try:
        text = data.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        return None
    lines = text.split("\r\n")
    if not re.match(r"HTTP/1\.[01] 200", lines[0]):
        return None
    headers = _headers(lines[1:])
    loc = headers.get("location", "")
    if not loc.lower().startswith("http://"):
        return None
    return headers


def parse_http_response(data: bytes):
    """(status, headers, body) of a complete HTTP/1.x response (Content-Length, chunked or EOF)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise NatError("the router sent an incomplete HTTP response")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    if not m:
        raise NatError(f"the router sent something that is not HTTP: {lines[0][:60]!r}")
    headers = _headers(lines[1:])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    elif "content-length" in headers:
        try:
            n = int(headers["content-length"])
        except ValueError:
            raise NatError("the router sent a bad Content-Length") from None
        if len(body) < n:
            raise NatError("the router's HTTP response was cut short")
        body = body[:n]
    return int(m.group(1)), headers, body


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, sep, rest = body.partition(b"\r\n")
        if not sep:
            raise NatError("bad chunked encoding from the router")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            raise NatError("bad chunked encoding from the router") from None
        if size == 0:
            return bytes(out)
        out += rest[:size]
        body = rest[size + 2 :]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_device_description(xml_bytes: bytes, location: str) -> IgdService:
    """Find the WAN IP/PPP connection service in an IGD description; absolute control URL."""
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as e:
        raise NatError(f"the router's UPnP description is not valid XML ({e})") from None
    base = location
    for el in root.iter():
        if _local(el.tag) == "URLBase" and (el.text or "").strip():
            base = el.text.strip()
    found = {}
    for svc in root.iter():
        if _local(svc.tag) != "service":
            continue
        fields = {_local(c.tag): (c.text or "").strip() for c in svc}
        st, ctl = fields.get("serviceType", ""), fields.get("controlURL", "")
        if st in WAN_SERVICES and ctl:
            found.setdefault(st, urllib.parse.urljoin(base, ctl))
    for st in WAN_SERVICES:
        if st in found:
            url = found[st]
            if not url.lower().startswith("http://"):
                raise NatError(f"the router's control URL is not plain http: {url[:80]!r}")
            return IgdService(url, st)
    raise NatError("the router speaks UPnP but offers no WAN IP/PPP connection service "
                   "(port mapping may be switched off in its settings)")


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def soap_envelope(service_type: str, action: str, args) -> bytes:
    """The SOAP body of ``action`` with ordered ``args`` [(name, value)]."""
    inner = "".join(f"<{k}>{_xml_escape(str(v))}</{k}>" for k, v in args)
    return ('<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
            's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
            f'<u:{action} xmlns:u="{service_type}">{inner}</u:{action}></s:Body></s:Envelope>'
            ).encode()  # fmt: skip


def soap_request(service: IgdService, action: str, args):
    """(host, port, request bytes) for a SOAP call to ``service``."""
    u = urllib.parse.urlsplit(service.control_url)
    if u.scheme != "http" or not u.hostname:
        raise NatError(f"unusable control URL {service.control_url[:80]!r}")
    port = u.port or 80
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    body = soap_envelope(service.service_type, action, args)
    head = (f"POST {path} HTTP/1.1\r\nHost: {u.hostname}:{port}\r\n"
            'Content-Type: text/xml; charset="utf-8"\r\n'
            f'SOAPAction: "{service.service_type}#{action}"\r\n'
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")  # fmt: skip
    return u.hostname, port, head.encode() + body


def parse_soap_response(status: int, body: bytes, action: str) -> dict:
    """Output arguments of ``action`` as {name: text}; UpnpFault / NatError otherwise."""
    try:
        root = ET.fromstring(body) if body.strip() else None
    except ET.ParseError:
        root = None
    if status != 200:
        if root is not None:
            code = desc = None
            for el in root.iter():
                if _local(el.tag) == "errorCode":
                    code = (el.text or "").strip()
                elif _local(el.tag) == "errorDescription":
                    desc = (el.text or "").strip()
            if code is not None:
                raise UpnpFault(int(code) if code.isdigit() else code, desc or "")
        raise NatError(f"the router answered {action} with HTTP {status}")
    if root is None:
        raise NatError(f"the router's answer to {action} is not XML")
    for el in root.iter():
        if _local(el.tag) == f"{action}Response":
            return {_local(c.tag): (c.text or "").strip() for c in el}
    raise NatError(f"the router's answer has no {action}Response")


def natpmp_external_request() -> bytes:
    return b"\x00\x00"


def natpmp_map_request(internal_port: int, external_port: int, lifetime_s: int,
                       tcp: bool = True) -> bytes:
    return struct.pack(">BBHHHI", 0, 2 if tcp else 1, 0, internal_port, external_port,
                       lifetime_s)


_NATPMP_RESULTS = {1: "unsupported version", 2: "not authorized (NAT-PMP switched off?)",
                   3: "network failure on the router", 4: "out of resources",
                   5: "unsupported opcode"}


def parse_natpmp(data: bytes, op: int) -> dict:
    """Decode a NAT-PMP answer to request opcode ``op`` (0 external address, 1/2 map)."""
    if len(data) < 8 or data[0] != 0 or data[1] != 128 + op:
        raise NatError("the gateway sent a malformed NAT-PMP answer")
    (result,) = struct.unpack(">H", data[2:4])
    if result:
        raise NatError("NAT-PMP refused: " + _NATPMP_RESULTS.get(result, f"result {result}"))
    (epoch,) = struct.unpack(">I", data[4:8])
    if op == 0:
        if len(data) < 12:
            raise NatError("the gateway sent a short NAT-PMP answer")
        return {"epoch": epoch, "external_ip": str(ipaddress.IPv4Address(data[8:12]))}
    if len(data) < 16:
        raise NatError("the gateway sent a short NAT-PMP answer")
    internal, external, lifetime = struct.unpack(">HHI", data[8:16])
    return {"epoch": epoch, "internal_port": internal, "external_port": external,
            "lifetime_s": lifetime}


def default_gateway(proc_net_route: str):
    """The IPv4 default gateway from the text of /proc/net/route, or None."""
    for line in proc_net_route.splitlines()[1:]:
        f = line.split()
        if len(f) >= 3 and f[1] == "00000000" and f[2] != "00000000":
            return str(ipaddress.IPv4Address(struct.pack("<I", int(f[2], 16))))
    return None


def is_public_ipv4(ip: str) -> bool:
    """True for a globally routable IPv4 address (not private, CGNAT, loopback, ...)."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return a.version == 4 and a.is_global and not a.is_multicast


# ============================================================================= I/O (trio)


async def discover_igd(timeout: float = 2.0, *, group=SSDP_GROUP, grace: float = 0.3) -> list[str]:
    """LOCATION URLs of IGDs that answer an SSDP search on the LAN within ``timeout`` (waiting
    only ``grace`` more once the first one answered)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    locations = []
    with sock:
        await sock.bind(("0.0.0.0", 0))
        sock.setsockopt(trio.socket.IPPROTO_IP, trio.socket.IP_MULTICAST_TTL, 2)
        for st in SEARCH_TARGETS:
            await sock.sendto(msearch(st), group)
        with trio.move_on_after(timeout) as scope:
            while True:
                data, _ = await sock.recvfrom(4096)
                headers = parse_ssdp_response(data)
                if headers and headers["location"] not in locations:
                    locations.append(headers["location"])
                    scope.deadline = min(scope.deadline, trio.current_time() + grace)
    return locations


async def http_exchange(host: str, port: int, request: bytes, timeout: float = 5.0):
    """Send one HTTP/1.1 request (Connection: close), return (status, headers, body, local ip)."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            local_ip = stream.socket.getsockname()[0]
            await stream.send_all(request)
            buf = bytearray()
            while True:
                chunk = await stream.receive_some(16384)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > MAX_HTTP:
                    raise NatError(f"the router's answer is over {MAX_HTTP} bytes; refusing it")
    status, headers, body = parse_http_response(bytes(buf))
    return status, headers, body, local_ip


async def http_get(url: str, timeout: float = 5.0):
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise NatError(f"unusable UPnP description URL {url[:80]!r}")
    port = u.port or 80
    path = (u.path or "/") + (("?" + u.query) if u.query else "")
    req = (f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{port}\r\nConnection: close\r\n\r\n")
    return await http_exchange(u.hostname, port, req.encode(), timeout)


class UpnpIgd:
    """One Internet Gateway Device's WAN connection service."""

    def __init__(self, service: IgdService, *, timeout: float = 5.0):
        self.service = service
        self.timeout = timeout
        self.local_ip: str | None = None  # our LAN address as the router sees it

    @classmethod
    async def find(cls, timeout: float = 2.0):
        """The first IGD on the LAN with a WAN connection service; NatError if none."""
        locations = await discover_igd(timeout)
        if not locations:
            raise NatError("no UPnP router answered on the LAN (UPnP is off in the router's "
                           "settings, or the router does not support it)")
        errors = []
        for loc in locations:
            try:
                status, _, body, _ = await http_get(loc)
                if status != 200:
                    raise NatError(f"{loc}: HTTP {status}")
                return cls(parse_device_description(body, loc))
            except (NatError, OSError, trio.TooSlowError) as e:
                errors.append(str(e) or type(e).__name__)
        raise NatError("UPnP routers answered but none was usable: " + "; ".join(errors))

    async def call(self, action: str, args=()) -> dict:
        host, port, req = soap_request(self.service, action, list(args))
        status, _, body, local_ip = await http_exchange(host, port, req, self.timeout)
        self.local_ip = local_ip
        return parse_soap_response(status, body, action)

    async def external_ip(self) -> str:
        out = await self.call("GetExternalIPAddress")
        return out.get("NewExternalIPAddress", "")

    async def add_port_mapping(self, external_port, internal_port, internal_ip, lease_s,
                               description=DESCRIPTION):
        args = [("NewRemoteHost", ""), ("NewExternalPort", external_port),
                ("NewProtocol", "TCP"), ("NewInternalPort", internal_port),
                ("NewInternalClient", internal_ip), ("NewEnabled", 1),
                ("NewPortMappingDescription", description), ("NewLeaseDuration", lease_s)]
        await self.call("AddPortMapping", args)

    async def delete_port_mapping(self, external_port):
        await self.call("DeletePortMapping", [("NewRemoteHost", ""),
                                              ("NewExternalPort", external_port),
                                              ("NewProtocol", "TCP")])

    async def map(self, internal_port: int, lease_s: int = 3600, external_port=None) -> Mapping:
        """Map TCP ``internal_port`` (same external port if free, else a few others)."""
        ext_ip = await self.external_ip()  # also learns our LAN address (self.local_ip)
        if not is_public_ipv4(ext_ip):
            raise NatError(f"the router's own internet address is {ext_ip or 'unknown'}, not "
                           "public: there is a second NAT (carrier-grade NAT or a modem in "
                           "router mode) and a mapping here cannot make us reachable")
        candidates = [external_port or internal_port] + [20000 + (internal_port * 7 + i) % 40000
                                                          for i in range(1, 4)]
        last = None
        for ext in candidates:
            lease = lease_s
            for _ in range(2):
                try:
                    await self.add_port_mapping(ext, internal_port, self.local_ip, lease)
                    return Mapping("upnp", ext_ip, ext, self.local_ip, internal_port, lease,
                                   self.service.control_url, self.service.service_type)
                except UpnpFault as e:
                    last = e
                    if e.code == 725 and lease:  # OnlyPermanentLeasesSupported
                        lease = 0
                        continue
                    break
            if last is not None and last.code not in (718, 724):  # conflict: try another port
                break
        raise last or NatError("AddPortMapping failed")


class NatPmp:
    """NAT-PMP client for the default gateway (RFC 6886: retries at 250 ms, doubling)."""

    def __init__(self, gateway: str, *, port: int = NATPMP_PORT, tries: int = 4):
        self.gateway = gateway
        self.port = port
        self.tries = tries

    @classmethod
    def from_routes(cls, path="/proc/net/route", **kw):
        try:
            with open(path) as f:
                gw = default_gateway(f.read())
        except OSError:
            gw = None
        if gw is None:
            raise NatError("no default gateway, so no router to ask for a port mapping")
        return cls(gw, **kw)

    async def _ask(self, request: bytes, op: int) -> dict:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with sock:
            await sock.connect((self.gateway, self.port))
            wait = 0.25
            for _ in range(self.tries):
                await sock.send(request)
                with trio.move_on_after(wait):
                    while True:
                        try:
                            data = await sock.recv(64)
                        except ConnectionRefusedError:
                            raise NatError("the gateway does not speak NAT-PMP (port 5351 "
                                           "closed)") from None
                        if len(data) >= 2 and data[1] == 128 + op:
                            return parse_natpmp(data, op)
                wait *= 2
        raise NatError(f"the gateway {self.gateway} did not answer NAT-PMP")

    async def external_ip(self) -> str:
        return (await self._ask(natpmp_external_request(), 0))["external_ip"]

    async def map(self, internal_port: int, lease_s: int = 3600, external_port=None) -> Mapping:
        ext_ip = await self.external_ip()
        if not is_public_ipv4(ext_ip):
            raise NatError(f"the gateway's internet address is {ext_ip}, not public (double NAT)")
        r = await self._ask(natpmp_map_request(internal_port, external_port or internal_port,
                                               lease_s), 2)
        # our LAN address: the source address the kernel picks towards the gateway
        probe = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with probe:
            await probe.connect((self.gateway, self.port))
            local_ip = probe.getsockname()[0]
        return Mapping("natpmp", ext_ip, r["external_port"], local_ip, internal_port,
                       r["lifetime_s"])

    async def unmap(self, internal_port: int):
        await self._ask(natpmp_map_request(internal_port, 0, 0), 2)


async def unmap_port(m: Mapping, *, ssdp_timeout: float = 2.0):
    """Remove a mapping made by :func:`map_port` (NatError when the router refuses)."""
    if m.method == "upnp":
        igd = UpnpIgd(IgdService(m.control_url, m.service_type))
        await igd.delete_port_mapping(m.external_port)
    elif m.method == "natpmp":
        await NatPmp.from_routes().unmap(m.internal_port)


async def map_port(internal_port: int, *, lease_s: int = 3600, methods=("upnp", "natpmp"),
                   ssdp_timeout: float = 2.0):
    """Try each method in turn. Returns (Mapping or None, [reasons it failed, per method])."""
    reasons = []
    for method in methods:
        try:
            if method == "upnp":
                igd = await UpnpIgd.find(ssdp_timeout)
                return await igd.map(internal_port, lease_s), reasons
            if method == "natpmp":
                return await NatPmp.from_routes().map(internal_port, lease_s), reasons
            reasons.append(f"{method}: unknown method")
        except NatError as e:
            reasons.append(f"{method}: {e}")
        except (OSError, trio.TooSlowError) as e:
            reasons.append(f"{method}: {type(e).__name__}: {e}")
    return None, reasons
