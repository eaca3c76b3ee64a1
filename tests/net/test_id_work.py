"""IdentityWork in-process: a kept proof is used, a missing or too weak one is made in a worker
thread (saved, signed into the record, gated services started after), a shutdown stops the
search, and the pow file round-trips next to the key."""

import threading

import pytest
import trio

from firmware.identity import ID_WORK_FILE, Identity, load_id_work, save_id_work
from firmware.logs import Log
from firmware.net.id_work import IdentityWork
from firmware.proto import pow as id_pow

ID = Identity(b"\x07" * 32).node_id


def work(bits, proof, **kw):
    made, saved = [], []
    w = IdentityWork(ID, bits, proof, save=saved.append, on_made=made.append, log=Log("error"),
                     **kw)  # fmt: skip
    return w, made, saved


async def test_a_kept_proof_is_used_as_it_is():
    proof = id_pow.solve(ID, 8)
    w, made, saved = work(8, proof)
    assert w.ready.is_set() and w.phase() is None and w.info()["identity"] == "ready"
    async with trio.open_nursery() as n:
        await n.start(w.run)
    assert (made, saved) == ([], [])


async def test_a_missing_proof_is_made_saved_and_signed_then_gated_services_start():
    w, made, saved = work(10, None)
    assert w.phase()[0] == "booting" and "making identity" in w.phase()[1]
    started = []

    async def membership(*, task_status=trio.TASK_STATUS_IGNORED):
        started.append(w.nonce)

    async with trio.open_nursery() as n:
        await n.start(w.after(membership))  # reports started at once: the node does not wait
        assert started == []
        await n.start(w.run)
    id_pow.verify(ID, w.nonce, 10)
    assert made == saved == [w.nonce] and started == [w.nonce] and w.phase() is None


async def test_a_proof_below_a_raised_difficulty_is_made_again():
    weak = next(n.to_bytes(8, "big") for n in range(1 << 16)  # valid at 4 bits, not at 12
                if 1 << 52 <= id_pow.work(ID, n.to_bytes(8, "big")) < 1 << 60)
    w, made, _ = work(12, weak)
    assert w.redo and not w.ready.is_set()
    async with trio.open_nursery() as n:
        await n.start(w.run)
    id_pow.verify(ID, made[0], 12)


async def test_shutdown_stops_the_search_at_its_next_slice():
    """The search thread is told to stop when the node's task is cancelled (it is abandoned,
    not waited for, so a shutdown never waits for it)."""
    running, stopped = threading.Event(), threading.Event()

    def endless(node_id, bits, *, slice_size, progress):
        done = 0
        while True:  # pow.solve's contract: a slice, then ask whether to go on
            done += slice_size
            running.set()
            if progress(done, 1 << bits) is False:
                stopped.set()
                return None

    w, made, saved = work(40, None, solve=endless)
    async with trio.open_nursery() as n:
        await n.start(w.run)
        await trio.to_thread.run_sync(running.wait)
        n.cancel_scope.cancel()
    assert await trio.to_thread.run_sync(stopped.wait, 10)
    assert (made, saved, w.nonce, w.ready.is_set()) == ([], [], None, False)


def test_the_proof_file_round_trips_and_belongs_to_one_key(tmp_path):
    nonce = id_pow.solve(ID, 8)
    save_id_work(str(tmp_path), ID, nonce)
    assert load_id_work(str(tmp_path), ID) == nonce
    assert load_id_work(str(tmp_path), b"\x01" * 32) is None  # another key's: made again
    (tmp_path / ID_WORK_FILE).write_text("garbage\n")
    assert load_id_work(str(tmp_path), ID) is None
    assert load_id_work(str(tmp_path / "missing"), ID) is None


@pytest.mark.parametrize("bits", [0, 1])
async def test_trivial_difficulties_finish_at_once(bits):
    w, made, _ = work(bits, None)
    async with trio.open_nursery() as n:
        await n.start(w.run)
    assert len(made) == 1
