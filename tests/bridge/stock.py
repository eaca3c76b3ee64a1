"""Test harness: a stock Debian nginx and a BridgeServer side by side on loopback, and probes.

nginx is configured as Debian ships it (nginx.conf's http settings and the default site with
its commented HTTPS lines enabled: `listen ... ssl default_server; include snippets/snakeoil.conf`)
plus `server_tokens off` and, to compare deadlines in seconds rather than minutes, both servers'
header and keep-alive timeouts shortened alike (2 s / 3 s for nginx's 60 s / 65 s), with a
snakeoil certificate made by the exact command of Debian's
make-ssl-cert (the test checks that script still runs that command). Both servers get the same
certificate and the same document root (the welcome page, same mtime), so every byte they send
can be compared. Needs the Debian packages nginx, ssl-cert and openssl (scripts/setup.sh).
"""

import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time

import trio

from firmware.bridge import BridgeServer, DecoySite
from firmware.bridge.decoy import WELCOME_PAGE

MAKE_SSL_CERT = "/usr/sbin/make-ssl-cert"
SSLEAY_CNF = "/usr/share/ssl-cert/ssleay.cnf"
SNAKEOIL_CMD = 'openssl req -config "${TMPFILE}" -new -x509 -days "${opt_expiration_days}" -nodes -sha256'
SITE_MTIME = 1_767_268_800  # 2026-01-01 12:00:00 UTC
HOST_NAME = "raspberrypi"
HEADER_TIMEOUT, KEEPALIVE_TIMEOUT = 2, 3  # both servers, instead of 60 s / 65 s


def require_tools() -> None:
    """Fail (never skip) when a tool the comparison needs is missing."""
    missing = [t for t in ("nginx", "openssl") if shutil.which(t) is None]
    missing += [p for p in (MAKE_SSL_CERT, SSLEAY_CNF) if not os.path.exists(p)]
    assert not missing, (f"missing {missing}: run scripts/setup.sh (Debian packages nginx, "
                         "ssl-cert, openssl)")


def make_snakeoil(directory: str, host_name: str = HOST_NAME) -> tuple[str, str]:
    """(key, cert) made as make-ssl-cert generate-default-snakeoil makes them."""
    with open(MAKE_SSL_CERT) as f:
        assert SNAKEOIL_CMD in f.read(), "make-ssl-cert changed: update the stock model"
    with open(SSLEAY_CNF) as f:
        cnf = f.read().replace("@HostName@", host_name).replace("@SubjectAltName@",
                                                                 f"DNS:{host_name}")
    cnf_path = os.path.join(directory, "snakeoil.cnf")
    with open(cnf_path, "w") as f:
        f.write(cnf)
    key, cert = os.path.join(directory, "snakeoil.key"), os.path.join(directory, "snakeoil.pem")
    subprocess.run(["openssl", "req", "-config", cnf_path, "-new", "-x509", "-days", "3650",
                    "-nodes", "-sha256", "-out", cert, "-keyout", key],
                   check=True, capture_output=True)
    return key, cert


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StockNginx:
    def __init__(self, directory: str, key: str, cert: str, site_mtime: int = SITE_MTIME):
        self.dir = directory
        self.port = free_port()
        www = os.path.join(directory, "www")
        os.makedirs(www, exist_ok=True)
        page = os.path.join(www, "index.nginx-debian.html")
        with open(page, "wb") as f:
            f.write(WELCOME_PAGE)
        os.utime(page, (site_mtime, site_mtime))
        conf = f"""
worker_processes 1;
user root;
pid {directory}/nginx.pid;
error_log {directory}/error.log;
events {{ worker_connections 768; }}
http {{
  sendfile on; tcp_nopush on; types_hash_max_size 2048;
  include /etc/nginx/mime.types; default_type application/octet-stream;
  ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
  ssl_prefer_server_ciphers on;
  access_log {directory}/access.log;
  gzip on;
  server_tokens off;
  client_header_timeout {HEADER_TIMEOUT}s; keepalive_timeout {KEEPALIVE_TIMEOUT}s;
  client_body_temp_path {directory}/body; proxy_temp_path {directory}/proxy;
  fastcgi_temp_path {directory}/fcgi; uwsgi_temp_path {directory}/uwsgi;
  scgi_temp_path {directory}/scgi;
  server {{
    listen 127.0.0.1:{self.port} ssl default_server;
    ssl_certificate {cert}; ssl_certificate_key {key};
    root {www};
    index index.html index.htm index.nginx-debian.html;
    server_name _;
    location / {{ try_files $uri $uri/ =404; }}
  }}
}}
"""
        self.conf = os.path.join(directory, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(["nginx", "-c", self.conf, "-g", "daemon off;"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _wait_listening(self.port, self.proc)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _wait_listening(port, proc=None, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read().decode(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # waiting for a foreign process to bind: nothing to await on
    raise RuntimeError(f"nothing listens on {port}")


class BridgeInThread:
    """A BridgeServer running in its own trio loop on a thread, for blocking probe clients."""

    def __init__(self, key: str, cert: str, secret: bytes, on_link=None):
        self.secret = secret
        self.links = []
        self._ready = threading.Event()
        self._token = None
        self._scope = None
        self.port = None
        self.server = BridgeServer(cert_path=cert, key_path=key, secret=secret,
                                   on_link=on_link or self._on_link,
                                   site=DecoySite.stock(SITE_MTIME), host="127.0.0.1", port=0,
                                   header_timeout=HEADER_TIMEOUT,
                                   keepalive_timeout=KEEPALIVE_TIMEOUT)
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "bridge did not start"

    def link_count(self) -> int:
        return len(self.links)

    async def _on_link(self, stream, host, port, raw=None):
        self.links.append((host, port))
        while data := await stream.receive_some():
            await stream.send_all(data)

    async def _main(self):
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            _, self.port = await nursery.start(self.server.run)
            self._ready.set()

    def stop(self):
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)


# -- probe clients -------------------------------------------------------------------------------


def tls_client_context(alpn=None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def read_answer(sock, *, head_request: bool = False, eof_wait: float = 8.0) -> bytes:
    """Read one HTTP answer by its framing; if it says `Connection: close` (or has no framing),
    also read to the end of the stream, and append <EOF> when the server closed."""
    buf = b""
    sock.settimeout(eof_wait)

    def more() -> bool:
        nonlocal buf
        try:
            d = sock.recv(65536)
        except TimeoutError:
            buf += b"<TIMEOUT>"
            return False
        except (ssl.SSLError, OSError) as e:
            buf += f"<{type(e).__name__}>".encode()
            return False
        if not d:
            buf += b"<EOF>"
            return False
        buf += d
        return True

    while b"\r\n\r\n" not in buf:
        if not buf.startswith(b"HTTP/") and len(buf) >= 5:
            while more():  # HTTP/0.9 body: up to EOF
                pass
            return buf
        if not more():
            return buf
    head, _, body = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = head.lower()
    if head_request or status in (101, 304):
        need = 0
    elif b"transfer-encoding: chunked" in headers:
        while not re.search(rb"(^|\r\n)0\r\n\r\n", body):
            if not more():
                return buf
            body = buf.partition(b"\r\n\r\n")[2]
        need = len(body)
    else:
        m = re.search(rb"content-length: (\d+)", headers)
        need = int(m.group(1)) if m else 0
    while len(buf.partition(b"\r\n\r\n")[2]) < need:
        if not more():
            return buf
    if b"connection: close" in headers:
        while more():
            pass
    return buf


def normalize(answer: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*", b"Date: <now>", answer)


class BridgeOfANode:
    """The bridge port of a real `homenode run` (a relay node beside it: a bridge needs one),
    with the same shortened deadlines as BridgeInThread. Its certificate, key and secret are the
    ones the node made in its data directory; `site_mtime` is its decoy page's install time."""

    def __init__(self, tmp_path):
        import json

        from tests.conftest import NodeProcess

        self.relay = NodeProcess(tmp_path, {"nat": {"mode": "off"}}, name="relay").start()
        boot = f"127.0.0.1:{self.relay.port}@{self.relay.node_id.hex()}"
        self.node = NodeProcess(tmp_path, {
            "network": {"bootstrap": [boot]},
            "bridge": {"enabled": True, "host": "127.0.0.1", "port": 0,
                       "public_host": "127.0.0.1", "web_host_name": HOST_NAME,
                       "header_timeout": float(HEADER_TIMEOUT),
                       "keepalive_timeout": float(KEEPALIVE_TIMEOUT)},
        }, name="bridge-node")
        try:
            self.node.start()
            with open(os.path.join(self.node.data_dir, "node.json")) as f:
                self.port = json.load(f)["bridge_port"]
        except BaseException:
            self.stop()
            raise
        d = self.node.data_dir
        self.key, self.cert = os.path.join(d, "bridge.key"), os.path.join(d, "bridge.crt")
        with open(os.path.join(d, "bridge.secret")) as f:
            self.secret = bytes.fromhex(f.read().strip())
        self.site_mtime = int(os.stat(self.cert).st_mtime)

    def link_count(self) -> int:
        import json

        r = self.node.cli("status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["bridge"]["links"]

    def stop(self):
        self.node.kill()
        self.relay.kill()
