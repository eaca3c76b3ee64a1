"""One connection's timing rules as a pure object: events and the time in, decisions out.

Like h11's connection state machine (and `FrameDecoder`), it does no I/O and reads no clock:
the listener tells it what happened and when, and asks when it must look again (`deadline`) and
whether the connection must go (`check`). Tested in virtual time without sockets.

The rules, each against a way a stranger could tie a slot up:

- `handshake`: TLS must finish within `handshake_timeout` of the accept (a peer that opens a
  socket and says nothing costs it no crypto, so it must not cost us a slot for long), not
  counting time the node held its reads (a newcomer waiting its turn under a paced cap would
  otherwise be cut off after spending cap bytes, and try again, spending them again);
- `slow_frame`: once a frame's length header has arrived, its body must arrive within
  `frame_timeout + size / min_rate` (a header announcing 60 KB then one byte every 3 s),
  not counting time the node itself held its reads (pacing a bandwidth cap is not the peer's
  fault: the caller passes the held seconds in);
- `stalled`: a write in progress for `stall_timeout` means the peer stopped reading our
  answers (it would otherwise hold its in-flight slots and our buffers forever);
- `idle`: silence for `idle_timeout` with nothing in flight (a half-received frame included).
"""

import math
from dataclasses import dataclass

__all__ = ["ConnLimits", "ConnPolicy", "HANDSHAKE", "SLOW_FRAME", "STALLED", "IDLE"]

HANDSHAKE = "handshake"
SLOW_FRAME = "slow_frame"
STALLED = "stalled"
IDLE = "idle"

_REASONS = {
    HANDSHAKE: "no TLS handshake in time",
    SLOW_FRAME: "a frame arrived too slowly",
    STALLED: "the peer stopped reading answers",
    IDLE: "idle",
}


@dataclass(frozen=True)
class ConnLimits:
    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    frame_timeout: float = 10.0  # seconds any frame body may take, plus size / min_rate
    min_rate: float = 4096.0  # bytes/s a frame body must at least arrive at
    stall_timeout: float = 60.0
    max_inflight: int = 32

    def describe(self, verdict: str) -> str:
        return _REASONS[verdict]


class ConnPolicy:
    """Timers of one connection. All times are seconds on one monotonic clock."""

    __slots__ = ("limits", "opened", "shaken", "last_activity", "frame_started", "frame_size",
                 "frame_held")

    def __init__(self, limits: ConnLimits, now: float, *, handshaken: bool = False):
        self.limits = limits
        self.opened = now
        self.shaken = handshaken
        self.last_activity = now
        self.frame_started: float | None = None  # when the pending frame's header arrived
        self.frame_size = 0
        self.frame_held = 0.0  # the node's own holding time (seconds, cumulative) back then

    # -- events ------------------------------------------------------------------------------

    def handshake_done(self, now: float) -> None:
        self.shaken = True
        self.last_activity = now

    def received(self, now: float, pending_size: int | None, held: float = 0.0) -> None:
        """Bytes arrived; `pending_size` is the announced body size of a frame still incomplete
        after them (None: the buffer holds no partial frame); `held`: seconds the node itself
        has held this connection's reads so far."""
        self.last_activity = now
        if pending_size is None:
            self.frame_started = None
        elif self.frame_started is None or pending_size != self.frame_size:
            self.frame_started, self.frame_size, self.frame_held = now, pending_size, held

    def _frame_deadline(self, held: float) -> float:
        lim = self.limits
        return (self.frame_started + lim.frame_timeout + self.frame_size / lim.min_rate
                + max(0.0, held - self.frame_held))

    def answered(self, now: float) -> None:
        """An answer went out (the peer is reading): activity."""
        self.last_activity = now

    # -- decisions ---------------------------------------------------------------------------

    def may_read(self, inflight: int) -> bool:
        """Backpressure: no more reading while `max_inflight` requests are being answered."""
        return inflight < self.limits.max_inflight

    def deadline(self, inflight: int, write_started: float | None, held: float = 0.0) -> float:
        """The earliest time `check` could close the connection (inf: nothing pending)."""
        lim = self.limits
        if not self.shaken:
            return self.opened + lim.handshake_timeout + held
        at = math.inf
        if write_started is not None:
            at = write_started + lim.stall_timeout
        if self.frame_started is not None:
            at = min(at, self._frame_deadline(held))
        if inflight == 0 and write_started is None:
            at = min(at, self.last_activity + lim.idle_timeout)
        return at

    def check(self, now: float, inflight: int, write_started: float | None,
              held: float = 0.0) -> str | None:
        """Why the connection must be closed now (HANDSHAKE, SLOW_FRAME, STALLED, IDLE), or None."""
        lim = self.limits
        if not self.shaken:
            return HANDSHAKE if now >= self.opened + lim.handshake_timeout + held else None
        if write_started is not None and now >= write_started + lim.stall_timeout:
            return STALLED
        if self.frame_started is not None and now >= self._frame_deadline(held):
            return SLOW_FRAME
        if inflight == 0 and write_started is None and now >= self.last_activity + lim.idle_timeout:
            return IDLE
        return None
