"""TLS for the bridge port, set up the way stock Debian nginx sets up OpenSSL.

nginx (Debian's nginx.conf: `ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
ssl_prefer_server_ciphers on;`, nginx's default `ssl_ciphers HIGH:!aNULL:!MD5`,
`ssl_session_timeout 5m`, session tickets on, ALPN http/1.1 only since the default site does not
enable http2) and Python's `ssl` use the same libssl, so matching it is a matter of the same
settings. Five are not reachable through `ssl`'s API and are handled here:

- a servername callback that accepts every name (nginx has one, so OpenSSL acknowledges SNI; with
  none it stays silent) - `sni_callback`;
- the session lifetime (ticket lifetime hint 300 s, not OpenSSL's 7200) - `SSL_CTX_set_timeout`
  through ctypes on the context's `SSL_CTX *` (checked: the options read back through that pointer
  must equal `ctx.options`, else nothing is touched and `TlsSetupError` says why);
- a 20-byte session id context (nginx sets a SHA-1; it is inside every session ticket, so with
  Python's default one our tickets were 16 bytes shorter) - `SSL_CTX_set_session_id_context`;
- nginx refuses a ClientHello whose ALPN list lacks http/1.1 with a fatal
  `no_application_protocol` alert, where `ssl` would carry on without ALPN - `client_hello_verdict`
  reads the ClientHello first and the server sends that alert itself;
- nginx answers a plain HTTP request on its TLS port with a "400 The plain HTTP request was sent
  to HTTPS port" page - the same verdict says when the first byte is not TLS.
tests/bridge/test_vs_nginx.py checks the result against a real nginx.
"""

import ctypes
import ctypes.util
import functools
import hashlib
import ssl
import sys
import warnings

NGINX_CIPHERS = "HIGH:!aNULL:!MD5"
SESSION_TIMEOUT_S = 300  # ssl_session_timeout 5m
ALERT_NO_APPLICATION_PROTOCOL = bytes.fromhex("15030300020278")  # as OpenSSL writes it
CLIENT_HELLO_MAX = 16384 + 5


class TlsSetupError(RuntimeError):
    """The server context cannot be made to look like nginx's here (the bridge must not start
    looking like something else)."""


def server_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # nginx asks for TLS 1.0 up; OpenSSL's security level then refuses 1.0/1.1 with the same
        # internal_error alert at both (a 1.2 minimum would answer protocol_version instead)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers(NGINX_CIPHERS)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.sni_callback = _accept_any_name
    ctx.load_cert_chain(cert_path, key_path)
    set_session_timeout(ctx, SESSION_TIMEOUT_S)
    with open(cert_path, "rb") as f:  # nginx: SHA-1 over its server's names and certificates
        set_session_id_context(ctx, hashlib.sha1(f.read(), usedforsecurity=False).digest())
    return ctx


def _accept_any_name(sslobj, name, ctx):
    return None  # SSL_TLSEXT_ERR_OK: acknowledge SNI, like nginx's servername callback


@functools.cache
def _ssl_lib():
    """The libssl already loaded by Python's `ssl` (from /proc/self/maps: the same library
    instance, not a second copy found on the path)."""
    name = None
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "libssl.so" in line:
                    name = line.split()[-1]
                    break
    except OSError:
        pass
    name = name or ctypes.util.find_library("ssl")
    if name is None:
        raise TlsSetupError("cannot find the libssl that Python's ssl module uses")
    lib = ctypes.CDLL(name)
    lib.SSL_CTX_set_timeout.argtypes = [ctypes.c_void_p, ctypes.c_long]
    lib.SSL_CTX_set_timeout.restype = ctypes.c_long
    lib.SSL_CTX_get_timeout.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_get_timeout.restype = ctypes.c_long
    lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_get_options.restype = ctypes.c_uint64
    lib.SSL_CTX_set_session_id_context.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                                   ctypes.c_uint]
    lib.SSL_CTX_set_session_id_context.restype = ctypes.c_int
    return lib


def _ssl_ctx_pointer(ctx: ssl.SSLContext) -> int:
    """The `SSL_CTX *` inside an ssl.SSLContext, checked before use."""
    if sys.implementation.name != "cpython":
        raise TlsSetupError("the bridge's TLS settings need CPython's ssl module")
    lib = _ssl_lib()
    # CPython's PySSLContext: PyObject_HEAD, then `SSL_CTX *ctx`
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr or lib.SSL_CTX_get_options(ptr) != int(ctx.options):
        raise TlsSetupError("unexpected ssl.SSLContext layout: cannot reach SSL_CTX")
    return ptr


def set_session_id_context(ctx: ssl.SSLContext, sid_ctx: bytes) -> None:
    """SSL_CTX_set_session_id_context: part of every session ticket, so its length shows."""
    lib = _ssl_lib()
    if lib.SSL_CTX_set_session_id_context(_ssl_ctx_pointer(ctx), sid_ctx, len(sid_ctx)) != 1:
        raise TlsSetupError("libssl refused the session id context")


def set_session_timeout(ctx: ssl.SSLContext, seconds: int) -> None:
    """SSL_CTX_set_timeout on `ctx` (the lifetime hint in session tickets)."""
    lib = _ssl_lib()
    ptr = _ssl_ctx_pointer(ctx)
    lib.SSL_CTX_set_timeout(ptr, seconds)
    if lib.SSL_CTX_get_timeout(ptr) != seconds:
        raise TlsSetupError("libssl did not take the session lifetime")


def client_context() -> ssl.SSLContext:
    """What Python's TLS clients (urllib, requests, websockets) send, minus CA checks: the pin
    is checked by hand after the handshake. It offers TLS 1.2 too, like them (a 1.3-only
    ClientHello would stand out); the client then refuses anything but 1.3, the only version that
    carries an authenticator (a forced downgrade is caught by TLS 1.3's own downgrade check)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# -- the ClientHello, read before OpenSSL sees it -----------------------------------------------

NEED_MORE, TLS_OK, NOT_TLS, REFUSE_ALPN = "need_more", "tls_ok", "not_tls", "refuse_alpn"


def client_hello_verdict(buf: bytes) -> str:
    """What to do with a connection that started with `buf`: NEED_MORE bytes, NOT_TLS (answer as
    plain HTTP), REFUSE_ALPN (send nginx's alert), or TLS_OK (hand everything to OpenSSL, which
    also judges anything malformed, exactly as under nginx)."""
    if not buf:
        return NEED_MORE
    if not (buf[0] == 0x16 or buf[0] & 0x80):  # nginx's own test of the first byte
        return NOT_TLS
    if buf[0] != 0x16:
        return TLS_OK
    if len(buf) < 5:
        return NEED_MORE
    rec_len = int.from_bytes(buf[3:5], "big")
    if len(buf) < 5 + rec_len:
        return NEED_MORE if 5 + rec_len <= CLIENT_HELLO_MAX else TLS_OK
    alpn = _alpn_offer(buf[5:5 + rec_len])
    if alpn is not None and b"http/1.1" not in alpn:
        return REFUSE_ALPN
    return TLS_OK


def _alpn_offer(hs: bytes) -> list[bytes] | None:
    """The ALPN names of a ClientHello within one record, or None (none, or not parseable here:
    then OpenSSL decides)."""
    try:
        if hs[0] != 1:
            return None
        body_len = int.from_bytes(hs[1:4], "big")
        if 4 + body_len > len(hs):
            return None  # split over records: leave it to OpenSSL
        p = 4 + 2 + 32
        p += 1 + hs[p]  # session id
        p += 2 + int.from_bytes(hs[p:p + 2], "big")  # cipher suites
        p += 1 + hs[p]  # compression methods
        if p >= 4 + body_len:
            return None
        end = p + 2 + int.from_bytes(hs[p:p + 2], "big")
        p += 2
        while p + 4 <= end:
            etype = int.from_bytes(hs[p:p + 2], "big")
            elen = int.from_bytes(hs[p + 2:p + 4], "big")
            data = hs[p + 4:p + 4 + elen]
            p += 4 + elen
            if etype == 16:
                names, q = [], 2
                while q < len(data):
                    n = data[q]
                    names.append(bytes(data[q + 1:q + 1 + n]))
                    q += 1 + n
                return names
    except IndexError:
        return None
    return None
