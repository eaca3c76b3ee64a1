"""systemd notification (READY=1, STATUS=, WATCHDOG=1, STOPPING=1) without a dependency.

The protocol is one AF_UNIX datagram per message to $NOTIFY_SOCKET ('@' prefix = abstract
namespace). When NOTIFY_SOCKET is unset every call is a no-op, so the node needs no branches.
The watchdog service pings at half of $WATCHDOG_USEC, from inside the trio loop: if the loop
wedges, pings stop and systemd restarts the node - which is the point.
"""

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None, watchdog_usec: int | None = None, log=None):
        env = os.environ
        self.address = address if address is not None else env.get("NOTIFY_SOCKET") or None
        if watchdog_usec is None:
            wd = env.get("WATCHDOG_USEC", "")
            pid = env.get("WATCHDOG_PID", "")
            ok_pid = not pid or pid == str(os.getpid())
            watchdog_usec = int(wd) if wd.isdigit() and ok_pid else 0
        self.watchdog_usec = watchdog_usec
        self._log = log
        self._sock = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> None:
        """Send `KEY=VALUE` lines as one datagram; failures are logged, never raised."""
        if self.address is None:
            return
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), addr)
        except OSError as e:
            if self._log:
                self._log.warning("sd_notify_failed", error=e.strerror or str(e))

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *( [f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def stopping(self, status: str = "") -> None:
        self.notify("STOPPING=1", *( [f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def run_watchdog(self, task_status=None) -> None:
        """Ping WATCHDOG=1 at half the interval systemd asked for (forever; cancel to stop).
        (`nursery.start` passes `task_status`.)"""
        import trio  # here: the update gate notifies at every boot and never loads trio

        if task_status is not None:
            task_status.started()
        if self.address is None or not self.watchdog_usec:
            await trio.sleep_forever()
        period = self.watchdog_usec / 2e6
        while True:
            self.notify("WATCHDOG=1")
            await trio.sleep(period)
