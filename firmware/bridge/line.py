"""The bridge line: everything a client needs to reach one unlisted bridge, in one string.

    homenode-bridge://HOST:PORT/<pin>?s=<secret>

- HOST: a DNS name, an IPv4 address or a bracketed IPv6 address; PORT defaults to 443.
- pin: base64url (no padding) of SHA-256 over the bridge's TLS certificate's
  SubjectPublicKeyInfo (the RSA key of its web-server-shaped certificate, see `webcert`). It is
  not the node id, so a line cannot be matched against public node records, and the client checks
  it right after the TLS handshake, before it sends anything (so a man in the middle never even
  sees an upgrade request).
- s: base64url of the 32-byte bridge secret; the client proves knowledge of it per TLS session
  (`auth`), never sends it.

Pure parse/format; every bad line is a BridgeLineError with one line saying what is wrong.
"""

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass

SCHEME = "homenode-bridge"
DEFAULT_PORT = 443
PIN_BYTES = 32
SECRET_BYTES = 32
MAX_LINE = 512
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class BridgeLineError(ValueError):
    """A bridge line that cannot be used; the message names the part and the fix."""


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64url(text: str, what: str, size: int) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise BridgeLineError(f"bridge line: {what} has characters outside base64url "
                              "(A-Z a-z 0-9 - _); was the line cut or retyped?")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size or b64url(raw) != text:
        raise BridgeLineError(f"bridge line: {what} must be {size} bytes in base64url "
                              f"({len(b64url(bytes(size)))} characters), got {len(text)} "
                              "characters; copy the whole line again")
    return raw


@dataclass(frozen=True)
class BridgeLine:
    host: str
    port: int
    pin: bytes  # SHA-256 of the bridge certificate's SubjectPublicKeyInfo
    secret: bytes

    def __post_init__(self):
        _check_host(self.host)
        if not 1 <= self.port <= 65535:
            raise BridgeLineError(f"bridge line: port {self.port} is not in 1..65535")
        if len(self.pin) != PIN_BYTES or len(self.secret) != SECRET_BYTES:
            raise BridgeLineError("bridge line: pin and secret must be 32 bytes each")

    def __repr__(self):  # never show the secret (logs, tracebacks)
        return f"BridgeLine({self.host!r}, {self.port}, pin={b64url(self.pin)[:8]}...)"

    @property
    def host_is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
            return True
        except ValueError:
            return False


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not host or len(host) > 253 or not all(_LABEL.match(x) for x in labels):
        raise BridgeLineError(f"bridge line: host {host[:80]!r} is not a host name or IP address")


def format_line(line: BridgeLine) -> str:
    host = f"[{line.host}]" if ":" in line.host else line.host
    return f"{SCHEME}://{host}:{line.port}/{b64url(line.pin)}?s={b64url(line.secret)}"


def parse_line(text: str) -> BridgeLine:
    """The BridgeLine in `text` (surrounding white space allowed); BridgeLineError otherwise."""
    text = text.strip()
    if len(text) > MAX_LINE:
        raise BridgeLineError(f"bridge line: {len(text)} characters is too long for a bridge "
                              f"line (at most {MAX_LINE})")
    prefix = SCHEME + "://"
    if not text.lower().startswith(prefix):
        got = text.split("://", 1)[0][:40] if "://" in text else text[:40]
        raise BridgeLineError(f"bridge line: must start with {prefix} (got {got!r}); "
                              "ask the bridge's owner for the line `homenode bridge line` prints")
    rest = text[len(prefix):]
    authority, slash, tail = rest.partition("/")
    if not slash:
        raise BridgeLineError("bridge line: no /<pin> after the host; copy the whole line again")
    host, port = _split_authority(authority)
    path, qmark, query = tail.partition("?")
    if "/" in path or "#" in path:
        raise BridgeLineError(f"bridge line: unexpected path {tail[:60]!r} after the pin")
    pin = _unb64url(path, "the pin (after the host)", PIN_BYTES)
    params: dict[str, str] = {}
    for item in query.split("&") if query else []:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise BridgeLineError(f"bridge line: parameter {item[:40]!r} is not name=value")
        if name in params:
            raise BridgeLineError(f"bridge line: parameter {name!r} given twice")
        params[name] = value
    unknown = sorted(set(params) - {"s"})
    if unknown:
        raise BridgeLineError(f"bridge line: unknown parameter {unknown[0][:20]!r}; this line "
                              "may be from a newer homenode: update the client")
    if "s" not in params:
        raise BridgeLineError("bridge line: no secret (?s=...); copy the whole line again")
    secret = _unb64url(params["s"], "the secret (s=)", SECRET_BYTES)
    return BridgeLine(host, port, pin, secret)


def _split_authority(authority: str) -> tuple[str, int]:
    if authority.startswith("["):
        host, close, after = authority[1:].partition("]")
        if not close:
            raise BridgeLineError("bridge line: IPv6 address without a closing ]")
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise BridgeLineError(f"bridge line: [{host[:60]}] is not an IPv6 address") from None
        port_text = after[1:] if after.startswith(":") else None
        if after and port_text is None:
            raise BridgeLineError(f"bridge line: unexpected {after[:20]!r} after the address")
    else:
        host, colon, port_text = authority.partition(":")
        if not colon:
            port_text = None
        if ":" in (port_text or ""):
            raise BridgeLineError("bridge line: an IPv6 address must be in brackets: [2001:db8::1]")
    if not host:
        raise BridgeLineError("bridge line: no host before the pin")
    if port_text is None:
        port = DEFAULT_PORT
    elif port_text.isdigit() and len(port_text) <= 5:
        port = int(port_text)
    else:
        raise BridgeLineError(f"bridge line: port {port_text[:20]!r} is not a number")
    if not 1 <= port <= 65535:
        raise BridgeLineError(f"bridge line: port {port} is not in 1..65535")
    try:
        _check_host(host)
    except BridgeLineError:
        raise
    return host, port
