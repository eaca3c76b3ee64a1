"""Client side: a bridge line in, the byte stream of a homenode link out.

    stream = await open_bridge_stream(line, timeout=20)
    # ... run a homenode link (frames as in docs/protocol.md) over `stream`

Order, so that nothing identifying leaves the client until the server proved to be the bridge:
TCP, TLS 1.3 (SNI only when the line names a host name, as a browser does), pin check against
the line, then the upgrade request carrying the session-bound authenticator.
"""

import trio

from firmware.bridge import auth, tls
from firmware.bridge.line import BridgeLine, parse_line
from firmware.bridge.stream import WebSocketStream
from firmware.bridge.websocket import accept_value

RESPONSE_HEAD_MAX = 16384


class BridgeError(ConnectionError):
    """The bridge could not be used; the message says why and what to check."""


class BridgePinMismatch(BridgeError):
    """The server at the line's address is not the bridge the line names."""


class BridgeRefused(BridgeError):
    """The server answered as a plain web site: the line's secret is wrong or outdated."""


async def open_bridge_stream(line: BridgeLine | str, *, timeout: float,
                             open_tcp=trio.open_tcp_stream) -> trio.abc.Stream:
    """A WebSocketStream to the bridge in `line`, ready for a homenode link; BridgeError (a
    ConnectionError) when it cannot be had within `timeout` s. `open_tcp(host, port)` opens the
    TCP stream (e.g. a node's shaped opener)."""
    if isinstance(line, str):
        line = parse_line(line)
    where = f"bridge {line.host}:{line.port}"
    try:
        with trio.fail_after(timeout):
            try:
                tcp = await open_tcp(line.host, line.port)
            except OSError as e:
                raise BridgeError(f"{where}: cannot connect ({e.strerror or e}); is the "
                                  "address in the bridge line still right?") from None
            stream = trio.SSLStream(tcp, tls.client_context(),
                                    server_hostname=None if line.host_is_ip else line.host)
            try:
                return await _upgrade(stream, line, where)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except trio.TooSlowError:
        raise BridgeError(f"{where}: no answer within {timeout:g} s") from None


async def _upgrade(stream: trio.SSLStream, line: BridgeLine, where: str) -> WebSocketStream:
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as e:
        raise BridgeError(f"{where}: TLS handshake failed ({e.__cause__ or e}); the port may "
                          "not be a bridge (or TLS 1.3 is blocked on the way)") from None
    der = stream.getpeercert(binary_form=True)
    try:
        pin = auth.pin_of_cert(der or b"")
    except auth.PinError as e:
        raise BridgePinMismatch(f"{where}: unreadable certificate ({e})") from None
    if pin != line.pin:
        raise BridgePinMismatch(f"{where} presented another key than the bridge line's pin: "
                                "someone is in between, or the bridge got a new identity; ask "
                                "its owner for a fresh line. Nothing was sent.")
    if stream.version() != "TLSv1.3":
        raise BridgeError(f"{where} negotiated {stream.version()}, not TLS 1.3: refusing to "
                          "authenticate over it")
    binding = stream.get_channel_binding("tls-unique")
    key = auth.websocket_key(auth.auth_key(line.secret), binding, line.pin)
    host = line.host if not line.host_is_ip or ":" not in line.host else f"[{line.host}]"
    if line.port != 443:
        host = f"{host}:{line.port}"
    await stream.send_all((f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        try:
            data = await stream.receive_some(4096)
        except trio.BrokenResourceError:
            data = b""
        if not data or len(head) > RESPONSE_HEAD_MAX:
            raise BridgeError(f"{where} closed the connection during the upgrade")
        head += data
    head, _, rest = head.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    headers = {}
    for h in lines[1:]:
        name, _, value = h.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if len(status) < 2 or status[1] != b"101":
        raise BridgeRefused(f"{where} answered as an ordinary web site "
                            f"({b' '.join(status[1:]).decode('latin-1')[:40]}): the secret in "
                            "the bridge line is wrong or outdated; ask the owner for the "
                            "current line")
    if headers.get(b"sec-websocket-accept", b"").decode("latin-1") != accept_value(key):
        raise BridgeError(f"{where}: bad WebSocket accept value in its upgrade answer")
    return WebSocketStream(stream, client=True, initial=rest)
