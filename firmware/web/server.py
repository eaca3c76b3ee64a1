"""WebService: the status page, /status.json, /metrics and the diagnostics bundle over HTTP/1.1.

One request per connection, each connection inside a deadline (`request_timeout`) for reading
its request and sending the answer; connections are admitted by `guard.ConnTable` (a share per
source address, the greediest shed when full) and by source address (`allow_from`). The one
action, POST /identify, blinks the LED (see guard.post_allowed for why it is CSRF-safe).

    web = WebService(cfg.web, status=<() -> info map>, identify=<() -> None>,
                     history=<() -> History or None>, diag=<async () -> (name, bytes)>,
                     log=log, sock=<a listening socket from systemd, or None>)
    address = await nursery.start(web.run)
"""

import json
import secrets
import socket

import trio

from firmware import qr
from firmware.status_text import jsonable
from firmware.web import guard, http, metrics, page

READ_CHUNK = 4096
IDENTIFY_GAP_S = 2.0


class _Conn:
    def __init__(self, ip):
        self.ip = ip
        self.scope = trio.CancelScope()


class WebService:
    def __init__(self, cfg, *, status, identify=None, history=None, diag=None, log=None,
                 hostname: str | None = None, sock: socket.socket | None = None):
        self.cfg = cfg
        self.sock = sock
        self.status = status
        self.identify = identify
        self.history = history or (lambda: None)
        self.diag = diag
        self.log = log
        self.hosts = guard.HostPolicy(hostname or socket.gethostname(), cfg.allowed_hosts)
        self.table = guard.ConnTable(cfg.max_connections, cfg.per_ip_connections)
        self.token = secrets.token_urlsafe(18)  # per process: a page from before a restart is stale
        self.address = None
        self.error = None
        self.counters = {"requests": 0, "bad_requests": 0, "wrong_host": 0, "timeouts": 0,
                         "not_lan": 0, "identify": 0}
        self._qr_svg = None
        self._qr_for = None
        self._last_identify = None
        self._diag_lock = trio.Lock()

    # -- service ----------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        try:
            listeners = await self._listeners()
        except OSError as e:  # the page is a convenience: the node serves on without it
            self.error = (f"cannot listen on {self.cfg.host}:{self.cfg.port}: "
                          f"{e.strerror or e}; set [web] port to a free one")
            if self.log:
                self.log.warning("web_unavailable", error=self.error)
            task_status.started(None)
            return
        sockname = listeners[0].socket.getsockname()
        self.address = (sockname[0], sockname[1])
        if self.log:
            self.log.info("web_serving", address=f"{self.address[0]}:{self.address[1]}")
        task_status.started(self.address)
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)

    async def _listeners(self):
        if self.sock is not None:  # handed over by systemd (socket activation: port 80)
            return [trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))]
        return await trio.open_tcp_listeners(self.cfg.port, host=self.cfg.host or None)

    async def _accept_loop(self, listener, nursery):
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as e:  # EMFILE and friends: back off, never crash the node
                    if self.log:
                        self.log.warning("web_accept_failed", error=e.strerror or str(e))
                    await trio.sleep(0.5)
                    continue
                try:
                    ip = stream.socket.getpeername()[0]
                except OSError:
                    await trio.aclose_forcefully(stream)
                    continue
                if not guard.source_allowed(ip, self.cfg.allow_from):
                    self.counters["not_lan"] += 1
                    await trio.aclose_forcefully(stream)
                    continue
                conn = _Conn(ip)
                ok, victim = self.table.admit(ip, conn)
                if not ok:
                    await trio.aclose_forcefully(stream)
                    continue
                if victim is not None:
                    victim.scope.cancel()
                nursery.start_soon(self._serve, stream, conn)

    async def _serve(self, stream, conn):
        try:
            with conn.scope:
                with trio.move_on_after(self.cfg.request_timeout) as deadline:
                    await self._one_request(stream)
                if deadline.cancelled_caught:
                    self.counters["timeouts"] += 1
        finally:
            self.table.release(conn.ip, conn)
            await trio.aclose_forcefully(stream)

    async def _one_request(self, stream):
        parser = http.RequestParser()
        req = None
        try:
            while req is None:
                data = await stream.receive_some(READ_CHUNK)
                if not data:
                    return
                req = parser.feed(data)
        except http.HttpError as e:
            self.counters["bad_requests"] += 1
            await _send(stream, http.response_bytes(e.status, (e.detail + "\n").encode()))
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        self.counters["requests"] += 1
        try:
            response = await self.respond(req)
        except Exception as e:  # a bug costs this request, never the node
            if self.log:
                self.log.error("web_internal_error", path=req.path[:80],
                               error=f"{type(e).__name__}: {e}")
            response = http.response_bytes(500, b"internal error; see the node's log\n")
        await _send(stream, response)

    # -- routing ----------------------------------------------------------------------------

    async def respond(self, req: http.Request) -> bytes:
        head = req.method == "HEAD"
        if not self.hosts.allows(req.header("host")):
            self.counters["wrong_host"] += 1
            name = guard.split_host(req.header("host"))[0]
            local = sorted(n for n in self.hosts.names if n.endswith(".local")) or ["localhost"]
            return http.response_bytes(421, (
                f"This box does not answer to the name {name!r}. Use its address or "
                f"http://{local[0]}/, or add the name to [web] allowed_hosts in "
                "homenode.toml.\n").encode(), head_only=head)
        routes = {"/": self._page, "/status.json": self._status_json,
                  "/metrics": self._metrics, "/diag.tar.gz": self._diag}
        if req.path == "/identify":
            if req.method != "POST":
                return http.response_bytes(405, b"use the button on the page\n",
                                           extra_headers=[("Allow", "POST")])
            return await self._identify(req)
        handler = routes.get(req.path)
        if handler is None:
            return http.response_bytes(404, b"not found\n", head_only=head)
        if req.method not in ("GET", "HEAD"):
            return http.response_bytes(405, b"read-only\n", extra_headers=[("Allow", "GET")])
        status, body, ctype, extra = await handler(req)
        return http.response_bytes(status, body, ctype, extra, head_only=head)

    def _info(self) -> dict:
        return jsonable(self.status())

    def _qr(self, node_id: str) -> str:
        if self._qr_for != node_id:  # the id never changes while the node runs: encode once
            self._qr_svg = qr.to_svg(qr.encode(node_id), module_px=3, title="node id")
            self._qr_for = node_id
        return self._qr_svg

    async def _page(self, req):
        info = self._info()
        flash = ""
        if "identified" in req.query:
            flash = "The light on the box is blinking white now."
        elif "busy" in req.query:
            flash = "The light was asked to blink a moment ago; wait a little."
        body = page.render_page(info, self.history(), token=self.token,
                                qr_svg=self._qr(str(info.get("node_id", ""))),
                                now_s=info.get("time", 0) / 1000 or None, flash=flash)
        return 200, body.encode(), "text/html; charset=utf-8", ()

    async def _status_json(self, req):
        body = json.dumps(self._info(), sort_keys=True).encode()
        return 200, body, "application/json", ()

    async def _metrics(self, req):
        return 200, metrics.metrics_text(self._info()).encode(), metrics.CONTENT_TYPE, ()

    async def _diag(self, req):
        if self.diag is None:
            return 404, b"no diagnostics here\n", "text/plain; charset=utf-8", ()
        if self._diag_lock.locked():
            return 429, b"a bundle is being made; try again in a moment\n", \
                "text/plain; charset=utf-8", (("Retry-After", "5"),)
        async with self._diag_lock:
            name, data = await self.diag()
        return 200, data, "application/gzip", (
            ("Content-Disposition", f'attachment; filename="{name}"'),)

    async def _identify(self, req):
        why = guard.post_allowed(req, self.hosts, self.token)
        if why is not None:
            return http.response_bytes(403, f"refused: {why}\n".encode())
        if self.identify is None:
            return http.response_bytes(404, b"this box has no light to blink\n")
        now = trio.current_time()
        if self._last_identify is not None and now - self._last_identify < IDENTIFY_GAP_S:
            return http.response_bytes(303, b"", extra_headers=[("Location", "/?busy=1")])
        self._last_identify = now
        self.counters["identify"] += 1
        self.identify()
        if self.log:
            self.log.info("web_identify")
        return http.response_bytes(303, b"", extra_headers=[("Location", "/?identified=1")])

    def info(self) -> dict:
        addr = f"{self.address[0]}:{self.address[1]}" if self.address else None
        return {"web": {"address": addr, "error": self.error, "open": self.table.total,
                        "refused": self.table.refused, "shed": self.table.shed,
                        **self.counters}}


async def _send(stream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
