"""Who may use the page, decided without I/O: the Host a browser names, the address a
connection comes from, how many connections each address holds, and whether a POST really came
from our own page.

Why each rule:
- Host: a page on the internet can make a LAN browser talk to this box by pointing its own
  name at the box's address (DNS rebinding). Such requests carry the attacker's name in `Host`,
  so only the box's own names and IP literals are served.
- Source address: the page is for the home network; with `allow_from = "lan"` a stray public
  address (a box with a public IPv6 address, a port forward) gets nothing.
- Connection shares: one address holds at most `per_ip` connections; when the table is full,
  the newest connection of the address holding most is shed for a newcomer from elsewhere, so
  a stranger cannot tie up the page by opening connections.
- POST /identify: the form carries a token only our page knows (another origin cannot read
  the page), and a browser's Origin / Sec-Fetch-Site must say the form came from this box.
"""

import hmac
import ipaddress


def split_host(value: str) -> tuple[str, str]:
    """'Box.local:8080' -> ('box.local', '8080'); '[fe80::1]:80' -> ('fe80::1', '80')."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return "", ""
        host, rest = value[1:end], value[end + 1:]
        return host, rest[1:] if rest.startswith(":") else ""
    host, _, port = value.partition(":")
    return host.rstrip("."), port


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HostPolicy:
    """The names this box answers to (case-insensitive); any IP literal is its own origin."""

    def __init__(self, hostname: str, extra=()):
        names = {"localhost"}
        for n in (hostname, *extra):
            n = n.strip().lower().rstrip(".")
            if n:
                names.add(n)
                if "." not in n:
                    names.add(n + ".local")
        self.names = frozenset(names)

    def allows(self, host_header: str) -> bool:
        host, _port = split_host(host_header)
        return bool(host) and (host in self.names or is_ip_literal(host))


def source_allowed(addr: str, allow_from: str) -> bool:
    """`allow_from` "lan": loopback, RFC 1918 / CGNAT, link-local and IPv6 ULA only."""
    if allow_from == "any":
        return True
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_link_local:
        return True
    if isinstance(ip, ipaddress.IPv4Address):
        return ip.is_private or ip in ipaddress.ip_network("100.64.0.0/10")
    return ip in ipaddress.ip_network("fc00::/7")


class ConnTable:
    """Open page connections by source address (pure bookkeeping; the server closes what
    `admit` names)."""

    def __init__(self, max_total: int, per_ip: int):
        self.max_total = max_total
        self.per_ip = per_ip
        self.by_ip: dict[str, list] = {}
        self.total = 0
        self.refused = 0
        self.shed = 0

    def admit(self, ip: str, conn) -> tuple[bool, object | None]:
        """(admitted, a connection to shed for it or None)."""
        held = self.by_ip.get(ip, [])
        if len(held) >= self.per_ip:
            self.refused += 1
            return False, None
        victim = None
        if self.total >= self.max_total:
            top = max(self.by_ip, key=lambda k: len(self.by_ip[k]))
            if len(self.by_ip[top]) <= len(held) + 1:  # nobody holds more than the newcomer would
                self.refused += 1
                return False, None
            victim = self.by_ip[top][-1]
            self.shed += 1
        self.by_ip.setdefault(ip, []).append(conn)
        self.total += 1
        return True, victim

    def release(self, ip: str, conn) -> None:
        held = self.by_ip.get(ip)
        if held and conn in held:
            held.remove(conn)
            self.total -= 1
            if not held:
                del self.by_ip[ip]


def post_allowed(req, hosts: HostPolicy, token: str) -> str | None:
    """None if a POST may act; else why not (for the 403 answer)."""
    site = req.header("sec-fetch-site")
    if site and site not in ("same-origin", "none"):
        return f"cross-site form ({site})"
    origin = req.header("origin")
    if origin and origin != "null":
        scheme, _, rest = origin.partition("://")
        if scheme not in ("http", "https") or split_host(rest) != split_host(req.header("host")):
            return "the form came from another site"
    elif origin == "null":
        return "the form came from an opaque origin"
    if not hosts.allows(req.header("host")):
        return "unknown Host"
    sent = req.form.get("token", "")
    if not sent or not hmac.compare_digest(sent.encode(), token.encode()):
        return "missing or stale page token: reload the page and try again"
    return None
