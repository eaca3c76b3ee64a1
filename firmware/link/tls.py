"""TLS for links: the node's server context, the client context, and pinning by node id.

Why pinning instead of a CA: a node's certificate is self-signed with its Ed25519 identity key
(firmware/tlscert.py), so the only thing worth checking is that the key is the one we meant.
TLS 1.3's CertificateVerify already proved the server holds that key's secret; comparing the
public key with the expected node id is the whole check (docs/protocol.md, "TLS and pinning").

`Dialer` opens outbound pinned streams: TCP, then an optional wrapper below TLS (the bandwidth
shaper, so the node's own connections count against its limits and monthly cap), then TLS with
the pin checked before anything is sent. A node builds one and hands it to its link pools; a
bare client uses the default.
"""

import os
import ssl
import tempfile

import trio

from firmware.identity import IdentityError, public_key_of_cert

from .tlsstream import TlsStream

__all__ = ["PinMismatch", "server_ssl_context", "client_ssl_context", "check_pin", "Dialer"]


class PinMismatch(ConnectionError):
    """The server's key is not the node id the client asked for."""


def server_ssl_context(identity) -> ssl.SSLContext:
    """TLS 1.3 server context with the identity's certificate.

    `ssl` only loads keys from files: write both PEMs to a 0600 temp file, load, delete.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    fd, path = tempfile.mkstemp(prefix="homenode-tls-")
    try:
        os.write(fd, identity.tls_key_pem() + identity.tls_cert_pem())
        os.close(fd)
        fd = -1
        ctx.load_cert_chain(path)
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(path)
    return ctx


def client_ssl_context() -> ssl.SSLContext:
    """TLS 1.3, no CA, no host name: trust comes from pinning the node id after the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def check_pin(stream, node_id: bytes, where: str) -> None:
    """Raise PinMismatch unless the handshaken `stream`'s certificate key is `node_id`."""
    der = stream.getpeercert(binary_form=True)
    if der is None:
        raise PinMismatch(f"{where} presented no certificate")
    try:
        got = public_key_of_cert(der)
    except IdentityError as e:
        raise PinMismatch(f"{where}: {e}") from None
    if got != node_id:
        raise PinMismatch(
            f"{where} is node {got.hex()}, not the expected {node_id.hex()}; "
            "check --node-id (or the address): refusing to talk to it"
        )


class Dialer:
    """Opens handshaken, pinned TLS streams to nodes.

    `wrap(tcp_stream) -> stream` is applied below TLS (None: plain TCP). Every failure to get
    a usable stream within `timeout` - refused, unreachable, a stalled handshake - is a
    ConnectionError, which is what every caller treats as "unreachable"; a wrong key is
    PinMismatch (also a ConnectionError).
    """

    def __init__(self, *, wrap=None, ssl_context: ssl.SSLContext | None = None,
                 timeout: float = 10.0):
        self.wrap = wrap
        self.ssl_context = ssl_context or client_ssl_context()
        self.timeout = timeout

    async def open(self, host: str, port: int, node_id: bytes, *,
                   timeout: float | None = None) -> TlsStream:
        timeout = self.timeout if timeout is None else timeout
        where = f"{host}:{port}"
        try:
            with trio.fail_after(timeout):
                return await self._open(host, port, node_id, where)
        except trio.TooSlowError:
            raise ConnectionError(f"{where}: no TLS handshake within {timeout:g} s") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as e:
            raise ConnectionError(f"{where}: TLS failed: {e}") from None

    async def _open(self, host, port, node_id, where):
        tcp = await trio.open_tcp_stream(host, port)
        stream = TlsStream(self.wrap(tcp) if self.wrap is not None else tcp, self.ssl_context,
                           server_side=False)
        try:
            await stream.do_handshake()
            check_pin(stream, node_id, where)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream
