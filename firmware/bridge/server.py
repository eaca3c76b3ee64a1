"""The bridge port: nginx's default HTTPS site to everyone, a homenode link to key holders.

Per connection: read the ClientHello (`tls.client_hello_verdict`: plain HTTP and ALPN without
http/1.1 are answered as nginx answers them), TLS handshake (`firmware.link.tlsstream.TlsStream`, which flushes whatever OpenSSL writes at once, as nginx does), then HTTP/1.1
requests answered by the `DecoySite` - until a request is a WebSocket upgrade whose
`Sec-WebSocket-Key` is the authenticator for this TLS session (`auth`). That one gets
`101 Switching Protocols` and its connection, wrapped as a `WebSocketStream`, goes to
`on_link(stream, peer_host, peer_port, raw=)` (`raw`: the stream below TLS, the shaper's when
there is one); the connection closes when on_link returns.

Every request gets the same work: the expected authenticator is computed once per session and
every request's key (absent or not) is compared in constant time, so a probe's answer does not
take longer or shorter for having tried to authenticate.

Deadlines and shares (nginx's defaults where it has one): TLS handshake and first request
header 60 s (client_header_timeout), a keep-alive connection idle 65 s (keepalive_timeout),
lingering close 5 s / 30 s; at most `per_ip` connections per address and `max_connections` in
all - a connection over either is closed at once (nginx has no per-address limit by default: a
prober who opens more than `per_ip` connections can see the difference, the price of not being
tied up by one address).
"""

import time

import trio

from firmware.bridge import auth, tls
from firmware.bridge.decoy import DecoySite, http_date
from firmware.bridge.http1 import NEED_DATA, HttpError, Request, RequestReader
from firmware.bridge.stream import WebSocketStream
from firmware.bridge.webcert import pem_to_der
from firmware.bridge.websocket import accept_value
from firmware.link.tlsstream import TlsStream


class ConnectionShares:
    """Open connections per source address and in all; `admit` says whether one more fits."""

    def __init__(self, per_ip: int, total: int):
        self.per_ip, self.total = per_ip, total
        self.active = 0
        self._by_ip: dict[str, int] = {}

    def admit(self, host: str) -> bool:
        if self.active >= self.total or self._by_ip.get(host, 0) >= self.per_ip:
            return False
        self.active += 1
        self._by_ip[host] = self._by_ip.get(host, 0) + 1
        return True

    def release(self, host: str) -> None:
        self.active -= 1
        left = self._by_ip[host] - 1
        if left:
            self._by_ip[host] = left
        else:
            del self._by_ip[host]


def is_upgrade(req: Request) -> bool:
    return (req.method == "GET" and req.version == (1, 1)
            and (req.header(b"upgrade") or b"").lower() == b"websocket"
            and b"upgrade" in (req.header(b"connection") or b"").lower()
            and req.header(b"sec-websocket-version") == b"13")


class BridgeServer:
    """Service: `(host, port) = await nursery.start(server.run)`."""

    def __init__(self, *, cert_path: str, key_path: str, secret: bytes, on_link, site: DecoySite,
                 host: str = "0.0.0.0", port: int = 443, per_ip: int = 8,
                 max_connections: int = 256, header_timeout: float = 60.0,
                 keepalive_timeout: float = 65.0, lingering_timeout: float = 5.0,
                 lingering_time: float = 30.0, wall_clock=time.time, log=None,
                 wrap_stream=None):
        self.ssl_context = tls.server_context(cert_path, key_path)
        with open(cert_path, "rb") as f:
            self.pin = auth.pin_of_cert(pem_to_der(f.read()))
        self._auth_key = auth.auth_key(secret)
        self.on_link = on_link
        self.site = site
        self.host, self.port = host, port
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.lingering_timeout, self.lingering_time = lingering_timeout, lingering_time
        self.wall_clock = wall_clock
        self.log = log
        self.shares = ConnectionShares(per_ip, max_connections)
        self.wrap_stream = wrap_stream  # below TLS, e.g. the node's bandwidth shaper
        self.counters = {"accepted": 0, "refused_share": 0, "plain_http": 0, "alpn_refused": 0,
                         "tls_failed": 0, "requests": 0, "links": 0}

    async def run(self, sock=None, *, task_status=trio.TASK_STATUS_IGNORED):
        """Serve until cancelled. `sock`: a listening socket bound beforehand (a node binds its
        ports before building its parts, so a refused port is a start-up error); else bind
        `host:port` here."""
        if sock is not None:
            listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
        else:
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        addr = listeners[0].socket.getsockname()[:2]
        task_status.started(addr)
        await trio.serve_listeners(self._serve_one, listeners)

    # -- one connection ------------------------------------------------------------------------

    async def _serve_one(self, tcp: trio.SocketStream) -> None:
        try:
            host, port = tcp.socket.getpeername()[:2]
        except OSError:
            await trio.aclose_forcefully(tcp)
            return
        if not self.shares.admit(host):
            self.counters["refused_share"] += 1
            await trio.aclose_forcefully(tcp)
            return
        self.counters["accepted"] += 1
        raw = self.wrap_stream(tcp) if self.wrap_stream is not None else tcp
        try:
            await self.serve_connection(raw, host, port)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception as e:  # a bug costs one connection, never the node
            if self.log is not None:
                self.log.error("bridge_connection_failed", error=f"{type(e).__name__}: {e}")
        finally:
            self.shares.release(host)
            await trio.aclose_forcefully(raw)  # (closes tcp; a shaper's count ends now)

    async def serve_connection(self, tcp: trio.abc.Stream, host: str, port: int) -> None:
        """Everything after accept() for one connection (its share already counted): the
        nginx-shaped exchange, then on_link for an authenticated upgrade."""
        deadline = trio.current_time() + self.header_timeout
        buf = b""
        verdict = tls.NEED_MORE
        with trio.move_on_at(deadline):
            while verdict == tls.NEED_MORE:
                data = await tcp.receive_some(tls.CLIENT_HELLO_MAX)
                if not data:
                    return
                buf += data
                verdict = tls.client_hello_verdict(buf)
        if verdict == tls.NEED_MORE:
            return  # no ClientHello in time: nginx closes too
        if verdict == tls.NOT_TLS:
            self.counters["plain_http"] += 1
            await self._plain_http(tcp, buf, deadline)
            return
        if verdict == tls.REFUSE_ALPN:
            self.counters["alpn_refused"] += 1
            await tcp.send_all(tls.ALERT_NO_APPLICATION_PROTOCOL)
            return
        stream = TlsStream(tcp, self.ssl_context, server_side=True, initial=buf)
        with trio.move_on_at(deadline) as cs:
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError:
                self.counters["tls_failed"] += 1
                return
        if cs.cancelled_caught:
            self.counters["tls_failed"] += 1
            return
        binding = stream.channel_binding()
        expected = (auth.authenticator(self._auth_key, binding, self.pin)
                    if binding else None)
        upgraded = await self._http(stream, expected, deadline)
        if upgraded is None:
            return
        self.counters["links"] += 1
        link = WebSocketStream(stream, client=False, initial=upgraded)
        try:
            await self.on_link(link, host, port, raw=tcp)
        finally:
            await trio.aclose_forcefully(link)

    async def _http(self, stream: TlsStream, expected: bytes | None,
                    deadline: float) -> bytes | None:
        """Serve requests; return the bytes after an authenticated upgrade request, or None once
        the connection is done."""
        reader = RequestReader()
        served = 0
        while True:
            try:
                event = reader.next_event()
            except HttpError as e:
                answer = self.site.from_error(e, self.wall_clock())
                await stream.send_all(answer.data)
                await self._finish(stream, answer.linger)
                return None
            if event is NEED_DATA:
                partial = reader.buffered > 0 or served == 0
                with trio.move_on_at(deadline if partial else
                                     trio.current_time() + self.keepalive_timeout):
                    data = await stream.receive_some()
                    if not data:
                        await stream.aclose(notify=False)
                        return None
                    reader.receive_data(data)
                    if reader.buffered and served:
                        deadline = trio.current_time() + self.header_timeout
                    continue
                # timed out: nginx closes a half-sent request without close_notify, an idle
                # connection (fresh or kept alive) with it
                await stream.aclose(notify=reader.buffered == 0)
                return None
            served += 1
            self.counters["requests"] += 1
            key_ok = auth.check_websocket_key(expected, event.header(b"sec-websocket-key"))
            if key_ok and is_upgrade(event) and not event.chunked:
                key = event.header(b"sec-websocket-key")
                await stream.send_all(
                    (f"HTTP/1.1 101 Switching Protocols\r\nServer: {self.site.server_token}\r\n"
                     f"Date: {http_date(self.wall_clock())}\r\nConnection: upgrade\r\n"
                     f"Upgrade: websocket\r\nSec-WebSocket-Accept: {accept_value(key)}\r\n\r\n"
                     ).encode())
                return reader.take_buffer()
            answer = self.site.answer(event, self.wall_clock(), served)
            await stream.send_all(answer.data)
            if answer.close:
                await self._finish(stream, answer.linger)
                return None
            deadline = trio.current_time() + self.header_timeout

    async def _finish(self, stream, linger: bool) -> None:
        if linger:  # nginx's lingering close: drop what still comes, a while; no close_notify
            with trio.move_on_after(self.lingering_time):
                while True:
                    with trio.move_on_after(self.lingering_timeout) as quiet:
                        if not await stream.receive_some():
                            break
                    if quiet.cancelled_caught:
                        break
        await stream.aclose(notify=not linger)

    async def _plain_http(self, tcp, buf: bytes, deadline: float) -> None:
        """A non-TLS first byte: nginx parses one request and answers it with an error page."""
        reader = RequestReader()
        reader.receive_data(buf)
        with trio.move_on_at(deadline):
            while True:
                try:
                    event = reader.next_event()
                except HttpError as e:
                    answer = self.site.from_error(e, self.wall_clock())
                    break
                if event is not NEED_DATA:
                    answer = self.site.error(400, self.wall_clock(), close=True,
                                             variant="plain_http", req=event)
                    break
                data = await tcp.receive_some(65536)
                if not data:
                    return
                reader.receive_data(data)
            await tcp.send_all(answer.data)
