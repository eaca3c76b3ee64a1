"""A full data partition, every way, on a small REAL file system (a tmpfs mounted for the test)
with a real node process: the node answers `full`, shows `storage_trouble` with the reason,
restarts normally while the disk is still full, takes stores again once space is freed, and
loses nothing it acknowledged.

Mounting needs root (CI runs the tests as root). Without it this test FAILS with the reason: a
skipped full-disk test would let the crash loop it guards against come back unnoticed.
"""

import errno
import os
import subprocess

import nacl.signing
import pytest

from firmware.client import connect
from firmware.proto.errors import StorageFull
from tests.conftest import NodeProcess, wait_info

pytestmark = pytest.mark.slow

MiB = 1 << 20


@pytest.fixture
def tmpfs(tmp_path):
    """A 24 MiB tmpfs at tmp_path/disk, unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the full-disk test (run the tests as root, as CI "
                    f"does): {r.stderr.strip() or r.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory, name="filler") -> str:
    """Write a file until the file system has not one byte left; returns its path."""
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (MiB, 64 * 1024, 4096, 1):
            block = b"\xa5" * chunk
            while True:
                try:
                    os.write(fd, block)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    finally:
        os.close(fd)
    st = os.statvfs(directory)
    assert st.f_bavail == 0, f"{st.f_bavail} blocks still free"
    return path


def full_disk_node(tmp_path, disk) -> NodeProcess:
    return NodeProcess(tmp_path, {
        "network": {"enabled": False},
        "storage": {"free_floor_mb": 1, "check_interval": 0.1, "block_device": ""},
        "store": {"sweep_interval": 0.2, "quota_bytes": 64 * MiB},
        "hal": {"poll_interval": 0.05},
        "limits": {"rate_per_sec": 100_000.0, "rate_burst": 100_000},
    }, data_dir_name=str(disk / "data"))


async def test_full_disk_answers_full_shows_trouble_restarts_and_recovers(tmp_path, tmpfs):
    owner = nacl.signing.SigningKey(b"\x07" * 32)
    me = bytes(owner.verify_key)
    node = full_disk_node(tmp_path, tmpfs)
    node.start()
    acked = {}
    try:
        async with connect(node.host, node.port, node.node_id) as c:
            for i in range(40):
                r = await c.store(me, b"%03d" % i + os.urandom(3000))
                acked[r.hash] = i
            filler = fill(tmpfs)
            with pytest.raises(StorageFull) as refused:
                await c.store(me, os.urandom(3000))
            assert "full" in str(refused.value)
            info = await wait_info(c, lambda i: i["health"] == "storage_trouble",
                                   "storage_trouble")
            assert "data partition full" in info["health_reason"]
            assert info["device"]["storage"]["problem"] == info["health_reason"]
            with pytest.raises(StorageFull):  # refused by the guard now, before any write
                await c.store(me, os.urandom(100))
            got = await c.retrieve_all(owner)  # what it holds is still served
            assert {m.hash for m in got} == set(acked)
        assert node.alive
        assert "Traceback" not in node.output()

        # a restart while the disk is still full: starts normally, says why it cannot store
        assert node.stop() == 0
        assert os.statvfs(tmpfs).f_bavail == 0 or os.path.exists(filler)
        node.start()
        async with connect(node.host, node.port, node.node_id) as c:
            info = await wait_info(c, lambda i: i["health"] == "storage_trouble",
                                   "storage_trouble after restart")
            assert "data partition full" in info["health_reason"]
            with pytest.raises(StorageFull):
                await c.store(me, os.urandom(100))
            assert {m.hash for m in await c.retrieve_all(owner)} == set(acked)

            # space freed: stores are taken again, the trouble clears, the reserve comes back
            os.unlink(filler)
            info = await wait_info(c, lambda i: i["health"] != "storage_trouble"
                                   and i["device"]["storage"]["reserve_held"], "recovery")
            r = await c.store(me, b"after" + os.urandom(3000))
            acked[r.hash] = "after"
            got = await c.retrieve_all(owner)
            assert {m.hash for m in got} == set(acked)
        assert "Traceback" not in node.output()
    finally:
        node.kill()


async def test_killed_while_full_restarts_and_loses_nothing(tmp_path, tmpfs):
    """kill -9 at 0 bytes free (the WAL and -shm stay behind), then start again while full."""
    owner = nacl.signing.SigningKey(b"\x08" * 32)
    me = bytes(owner.verify_key)
    node = full_disk_node(tmp_path, tmpfs)
    node.start()
    acked = set()
    try:
        async with connect(node.host, node.port, node.node_id) as c:
            for _ in range(20):
                acked.add((await c.store(me, os.urandom(5000))).hash)
            filler = fill(tmpfs)
            with pytest.raises(StorageFull):
                await c.store(me, os.urandom(3000))
        node.kill()
        node.start()
        async with connect(node.host, node.port, node.node_id) as c:
            await wait_info(c, lambda i: i["health"] == "storage_trouble", "storage_trouble")
            assert {m.hash for m in await c.retrieve_all(owner)} == acked
            os.unlink(filler)
            await wait_info(c, lambda i: i["health"] != "storage_trouble", "recovery")
            acked.add((await c.store(me, os.urandom(5000))).hash)
            assert {m.hash for m in await c.retrieve_all(owner)} == acked
        assert "Traceback" not in node.output()
    finally:
        node.kill()
