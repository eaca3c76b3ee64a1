"""The listening socket: bind it, take what the kernel has queued, refuse with a reset.

Why the listener does not use `trio.serve_listeners`: that accepts one connection per scheduler
tick and gives each a task before anyone looked at it. A stranger re-opening hundreds of
connections a second then kept the node busy enough that the kernel's accept queue overflowed,
and a normal client's SYN was dropped and retried a second later. Here the listener takes every
queued connection at once (`accept_ready`), asks its table, and closes a refused one on the spot
(`refuse`): no task, no TLS object, a few microseconds.
"""

import errno
import socket
import struct

__all__ = ["LISTEN_BACKLOG", "bind_tcp", "accept_ready", "refuse"]

LISTEN_BACKLOG = 1024  # (Linux caps it at net.core.somaxconn, 4096 on current kernels)
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST and frees the socket
# accept() errors that concern only the connection being accepted (trio ignores the same)
_SKIP = frozenset((errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN,
                   errno.ENOPROTOOPT, errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH,
                   errno.EOPNOTSUPP, errno.ENETUNREACH))
# ... and those that say the process or the box ran out of something: the caller waits a little
_SHORT = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS))


def bind_tcp(host: str, port: int, *, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A listening TCP socket (bound before the node's services are built, so every part knows
    the address). OSError as the OS reports it (address in use, cannot assign, permission).
    The backlog is long so that a burst of connections waits in the kernel rather than having
    its SYNs dropped (each drop costs the peer a 1 s retry)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def accept_ready(sock: socket.socket, limit: int):
    """Up to `limit` connections the kernel has queued on non-blocking `sock`, without waiting:
    ([(socket, host, port), ...], None), or (those, the OSError) when the process or the box
    is out of descriptors or memory. Other errors are raised."""
    out = []
    while len(out) < limit:
        try:
            tcp, peer = sock.accept()
        except BlockingIOError:
            break
        except OSError as e:
            if e.errno in _SKIP:
                continue
            if e.errno in _SHORT:
                return out, e
            raise
        out.append((tcp, peer[0], peer[1]))
    return out, None


def refuse(tcp: socket.socket) -> None:
    """Close with a reset: the peer learns at once, and the kernel keeps nothing of it (no FIN
    exchange, no TIME_WAIT on our side)."""
    try:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    except OSError:
        pass
    tcp.close()
