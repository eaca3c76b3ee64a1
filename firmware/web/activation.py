"""Sockets handed over by systemd (socket activation), so the unprivileged node serves the page
on port 80 without any capability: systemd binds `homenode-web.socket` and passes the listening
socket in at start (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES; fds from 3)."""

import os
import socket

SD_LISTEN_FDS_START = 3


def named_fds(env, pid: int) -> dict[str, int]:
    """{name: fd} of the sockets systemd passed to process `pid` (pure: reads `env` only)."""
    if env.get("LISTEN_PID", "") != str(pid):
        return {}
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return {}
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    out = {}
    for i in range(max(0, min(count, 64))):
        name = names[i] if i < len(names) and names[i] else f"fd{i}"
        out[name] = SD_LISTEN_FDS_START + i
    return out


def systemd_socket(name: str, env=None, pid=None) -> socket.socket | None:
    """The listening socket systemd passed under `name`, or None."""
    fd = named_fds(os.environ if env is None else env, os.getpid() if pid is None else pid).get(name)
    if fd is None:
        return None
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    os.set_inheritable(fd, False)
    return sock
