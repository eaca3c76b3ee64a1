"""The service loop shared by the pools of outbound links (forward_links.LinkPool,
peers.PeerLinks): it holds the nursery their link tasks live in, so links close with the
service, and sweeps out links left idle, so a node does not hold sockets for peers it no longer
talks to."""

from collections.abc import Callable

import trio

__all__ = ["IdleClosingPool"]


class IdleClosingPool:
    """Base class: a subclass sets ``idle_s`` and ``_nursery = None`` and defines
    ``_close_idle()``; ``run`` is then its trio service."""

    idle_s: float
    _nursery: trio.Nursery | None
    _close_idle: Callable[[], None]  # the subclass's sweep of its own idle links

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    await trio.sleep(max(1.0, self.idle_s / 4))
                    self._close_idle()
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()
