"""Links between a client or node and other nodes: TLS with pinning, the one `Link` interface,
one frame writer, one pool with a pluggable way to connect. Imports nothing of the server.

    from firmware.link import Dialer, LinkPool, direct_dial, open_link
"""

from .link import Link, LinkDown, LinkTimeout, StreamLink, open_link, result_of
from .pool import LinkPool, direct_dial
from .tls import Dialer, PinMismatch, check_pin, client_ssl_context, server_ssl_context
from .writer import Outbox

__all__ = ["Dialer", "Link", "LinkDown", "LinkPool", "LinkTimeout", "Outbox", "PinMismatch",
           "StreamLink", "check_pin", "client_ssl_context", "direct_dial", "open_link",
           "result_of", "server_ssl_context"]
