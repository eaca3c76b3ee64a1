"""The history recorder: one sample of the node's status a minute into `History`, kept in
`<data dir>/history.bin` across restarts.

Why this shape: the SD card is the box's weakest part, so the file is written at most once per
`save_interval` (>= 60 s, default 10 min) and at a clean stop (unless saved in the last minute),
each time whole, atomically and durably (temp file, fsync, rename, fsync of the directory): a
power cut leaves the previous or the new file, never a torn one. A damaged file is set aside as
`history.bin.bad` (kept for a diagnostics bundle) and the charts start afresh.
"""

import os

import trio

from firmware.durable import write_durably
from firmware.web.history import CounterDeltas, History, sample_from_info

HISTORY_FILE = "history.bin"
SAMPLE_S = 60.0
MIN_SAVE_GAP_S = 60.0


def load_history(path: str, log=None) -> History:
    """The saved history, or a fresh one (a damaged file is renamed aside, one log line)."""
    fresh = History()
    try:
        with open(path, "rb") as f:
            data = f.read(2 * 1024 * 1024 + 1)
    except FileNotFoundError:
        return fresh
    except OSError as e:
        if log:
            log.warning("history_unreadable", path=path, error=e.strerror or str(e),
                        note="charts start empty; check the data dir's permissions")
        return fresh
    try:
        return History.from_bytes(data).merge_layout(fresh)
    except ValueError as e:
        try:
            os.replace(path, path + ".bad")
        except OSError:
            pass
        if log:
            log.warning("history_damaged", path=path, error=str(e),
                        note="set aside as history.bin.bad; charts start empty")
        return fresh


class HistoryRecorder:
    """`async def run(*, task_status)`; `status()` returns the node's info map."""

    def __init__(self, path: str, *, status, save_interval: float, log=None,
                 sample_s: float = SAMPLE_S, offload=None):
        self.path = path
        self.status = status
        self.save_interval = save_interval
        self.sample_s = sample_s
        self.log = log
        # file I/O runs in a worker thread (`offload(fn, *args)`); tests on a virtual clock
        # pass an inline one, so the clock cannot jump while a write is in flight
        self.offload = offload or trio.to_thread.run_sync
        self.history = History()
        self.deltas = CounterDeltas()
        self.saves = 0
        self._last_save = None  # trio time of the last write (start counts: no write loops)

    async def sample(self) -> None:
        info = self.status()
        self.history.add(info.get("time", 0) / 1000, sample_from_info(info, self.deltas))

    async def save(self) -> None:
        data = self.history.to_bytes()
        try:
            await self.offload(write_durably, self.path, data)
        except OSError as e:
            if self.log:
                self.log.warning("history_save_failed", path=self.path,
                                 error=e.strerror or str(e))
            return
        self.saves += 1
        self._last_save = trio.current_time()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        self.history = await self.offload(load_history, self.path, self.log)
        self._last_save = trio.current_time()  # a node restarting in a loop must not write
        task_status.started()
        try:
            while True:
                try:
                    await self.sample()
                except Exception as e:  # a status hiccup costs one sample, never the node
                    if self.log:
                        self.log.warning("history_sample_failed",
                                         error=f"{type(e).__name__}: {e}")
                now = trio.current_time()
                if now - self._last_save >= self.save_interval:
                    await self.save()
                await trio.sleep(self.sample_s)
        finally:
            if self._last_save is None or trio.current_time() - self._last_save >= MIN_SAVE_GAP_S:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self.save()

    def info(self) -> dict:
        return {"history_saves": self.saves}
