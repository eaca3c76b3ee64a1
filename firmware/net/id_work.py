"""The node id's proof of work: kept next to the key, made once at first boot.

Why a service of its own: at the network's difficulty (``[network] pow_bits``, docs/protocol.md
"Id proof of work") a Pi Zero 2 W grinds for about a minute. The node serves its own mailbox
meanwhile; the parts that show our record to other nodes - membership and reachability - wait
for the proof (``after``), since every peer would refuse a record without it. The search runs
in a worker thread in slices of ``slice_size`` hashes and checks a stop flag between slices, so
a shutdown ends it within one slice (~20 ms here, ~0.2 s on a Pi). The health monitor shows
"booting: making identity" from ``phase()`` while it runs (the LED stays ``booting``).

A saved proof below the network's current difficulty (the network raised it) is made again.
"""

import threading
import time
from functools import partial

import trio

from firmware.proto import pow as id_pow

__all__ = ["IdentityWork"]


class IdentityWork:
    def __init__(self, node_id: bytes, bits: int, proof: bytes | None, *, save, on_made, log,
                 monotonic=time.monotonic, slice_size: int = 1 << 16, solve=id_pow.solve):
        """`proof`: the saved nonce or None; `save(nonce)` keeps a new one (blocking, run in a
        thread); `on_made(nonce)` re-signs our record with it; `solve`: pow.solve's contract
        (it stops when `progress` returns False)."""
        self.solve = solve
        self.node_id = node_id
        self.bits = bits
        self.save = save
        self.on_made = on_made
        self.log = log
        self.monotonic = monotonic
        self.slice_size = slice_size
        self.nonce = proof if proof is not None and self._valid(proof) else None
        self.redo = proof is not None and self.nonce is None  # saved for a lower difficulty
        self.tried = 0
        self.seconds = None
        self.ready = trio.Event()
        if self.nonce is not None:
            self.ready.set()

    def _valid(self, nonce) -> bool:
        try:
            id_pow.verify(self.node_id, nonce, self.bits)
            return True
        except id_pow.PowError:
            return False

    def phase(self):
        """(phase, reason) for the health monitor while the proof is being made, else None."""
        if self.nonce is not None:
            return None
        expected = id_pow.expected_hashes(self.bits)
        return ("booting", f"making identity: proof of work at {self.bits} bits, "
                           f"{self.tried / 1e6:.1f} M of ~{expected / 1e6:.1f} M expected tries")

    def info(self) -> dict:
        out = {"pow_bits": self.bits}
        if self.nonce is None:
            out["identity"] = "making (proof of work)"
        else:
            out["identity"] = "ready"
        return out

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        if self.nonce is not None:
            return
        expected = id_pow.expected_hashes(self.bits)
        self.log.info("making_identity", pow_bits=self.bits, expected_tries=expected,
                      why=("the saved proof is below the network's difficulty" if self.redo
                           else "first start with this key"),
                      note="about a minute on a Pi Zero 2 W at the default difficulty; the node "
                           "serves its own mailbox meanwhile and joins the network after")
        stop = threading.Event()

        def progress(done, _expected):
            self.tried = done
            return not stop.is_set()

        started = self.monotonic()
        try:
            nonce = await trio.to_thread.run_sync(
                partial(self.solve, self.node_id, self.bits, slice_size=self.slice_size,
                        progress=progress),
                abandon_on_cancel=True)  # a shutdown must not wait for the search...
        finally:
            stop.set()  # ...which then ends at its next slice
        self.seconds = self.monotonic() - started
        self.tried = int.from_bytes(nonce, "big") + 1  # the solver counts from 0
        try:
            await trio.to_thread.run_sync(self.save, nonce)
        except OSError as e:  # the node still works; it makes a new proof at the next start
            self.log.warning("identity_work_not_saved", error=str(e)[:200],
                             fix="check that the data directory is writable")
        self.nonce = nonce
        self.on_made(nonce)
        self.ready.set()
        self.log.info("identity_made", seconds=round(self.seconds, 2), tries=self.tried,
                      pow_bits=self.bits)

    def after(self, service):
        """`service` (an ``async def run(*, task_status)``) started once the proof exists; the
        returned service reports itself started at once, so the node's start does not wait."""

        async def gated(*, task_status=trio.TASK_STATUS_IGNORED):
            task_status.started()
            await self.ready.wait()
            await service()

        return gated
