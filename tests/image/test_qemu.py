"""The SD image booted under QEMU through its own bootloader: what a user's Pi would do.

`-M virt` boots via Debian's u-boot-qemu and the image's boot.scr; `-M raspi3b` via the image's
own u-boot-rpi, as a Pi 3 / Zero 2 W does. The node is reached through a port forwarded to
127.0.0.1, with the host's CLI. The A/B update tests are in test_update.py.
"""

import json
import re
import subprocess
import threading
import time

import pytest
import trio

from firmware.update import layout
from qemu.guest import Guest, homenode
from qemu.harness import extract_partition, fat_write, partitions

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

MiB = 1 << 20
CARD_MIB = 4096  # the "SD card" the image is written to: bigger than the image, so data grows
WRITERS, CUT_AFTER = 8, 120  # power-cut test: concurrent store loops, acks before the cut


def record(boot_times, name, guest, extra=None):
    boot_times.append({"test": name, "boot": guest.m.boots, **guest.m.seen, **(extra or {})})


def fsck_clean(disk, number, tmp_path):
    """e2fsck -fn on a partition copied out of the (powered-off) disk image."""
    part = extract_partition(disk, number, tmp_path / f"p{number}.ext4")
    r = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True)
    part.unlink()
    return r


def debugfs_cat(disk, number, path, tmp_path) -> str:
    part = extract_partition(disk, number, tmp_path / f"p{number}.ext4")
    r = subprocess.run(["debugfs", "-R", f"cat {path}", str(part)], capture_output=True,
                       text=True)
    part.unlink()
    return r.stdout


def send_and_fetch(guest, tmp_path, text):
    key = tmp_path / "user.key"
    if not key.exists():
        r = homenode("keygen", "--out", str(key))
        assert r.returncode == 0, r.stderr
    user_id = homenode("id", "--key", str(key)).stdout.strip()
    r = guest.cli("send", "--to", user_id, text)
    assert r.returncode == 0, r.stderr
    msg_hash = r.stdout.strip()
    r = guest.cli("fetch", "--key", str(key), "--json")
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in r.stdout.splitlines()]
    return msg_hash, got


def test_flashed_card_first_boot_then_power_cut_during_stores(sd_image, tmp_path, boot_times):
    """`homenode flash` writes the image to a card (a file here); its first boot grows the data
    partition (a logical one: the extended partition grows first), creates the identity, keeps
    SSH off, serves, and says it needs a node to join (no bootstrap yet); then a power cut
    (SIGKILL) during a burst of stores loses no acknowledged message and both ext4 filesystems of slot A and data stay clean."""
    from firmware.client import connect, seal_for
    from firmware.identity import Identity

    card = tmp_path / "card.img"
    r = homenode("flash", str(sd_image.raw), str(card), "--yes", timeout=900)
    assert r.returncode == 0, r.stderr
    assert "verified" in r.stderr
    assert card.stat().st_size == sd_image.raw.stat().st_size
    image_parts = partitions(card)
    user = Identity.generate()
    acked: list[bytes] = []
    with Guest.machine(card, tmp_path / "vm", CARD_MIB, copy=False) as m:
        # The id's proof of work is a network parameter ([network] pow_bits, 24 by default:
        # ~48 s on a Pi Zero 2 W, many minutes and a random length under QEMU's emulation, while
        # the LED says booting): this card's network uses 12 bits, so the first boot's state
        # after booting is reached in the test's time.
        fat_write(m.disk, "homenode.toml", b"[network]\npow_bits = 12\n", tmp_path)
        g = Guest(m)
        st = g.boot()
        assert st["node_id"] == g.node_id
        console = m.console_text()
        assert "homenode-setup: growing /dev/vda7" in console
        assert "homenode-uboot: starting slot A" in console
        assert "SSH off" in console
        assert m.ssh_banner() == b"", "SSH answers although no key was configured"
        assert st["update"]["slot"] == "A" and st["update"]["last_result"] is None
        msg_hash, got = send_and_fetch(g, tmp_path, "hello from the host")
        assert [x["hash"] for x in got] == [msg_hash]
        assert got[0]["text"] == "hello from the host"
        # a fresh box knows no other node: it serves its own mailbox and says what it needs
        # (the first state after booting, not "healthy": health tells the truth)
        st = m.wait_until(lambda: (lambda s: s if s.get("health") not in (None, "booting")
                                   else None)(g.status()), 180, "node past booting", "settled",
                          interval=3)
        assert st["health"] == "needs_setup", st
        assert "[network] bootstrap" in st["health_reason"], st["health_reason"]
        record(boot_times, "flashed-first-boot", g)
        node_id = bytes.fromhex(g.node_id)
        cut = threading.Event()

        async def burst():
            with trio.fail_after(300):
                await _burst()

        async def _burst():
            # WRITERS concurrent store loops, so grouped commits are in flight when the plug is
            # pulled; after CUT_AFTER acknowledgements another thread SIGKILLs QEMU.
            async with connect("127.0.0.1", m.ports["node"], node_id, timeout=30) as client:
                async def writer(w):
                    for i in range(100_000):
                        data = seal_for(user.node_id, f"w{w} message {i}".encode() + bytes(900))
                        r = await client.store(user.node_id, data, ttl_ms=3_600_000)
                        acked.append(r.hash)
                        if len(acked) == CUT_AFTER:
                            threading.Thread(target=lambda: (time.sleep(0.5), m.power_cut(),
                                                             cut.set())).start()

                async with trio.open_nursery() as nursery:
                    for w in range(WRITERS):
                        nursery.start_soon(writer, w)

        try:
            trio.run(burst)
        except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the link dies with the guest: expected
        assert cut.wait(60), "the power cut did not happen"
        assert len(acked) > CUT_AFTER  # stores were still being acknowledged at the cut
        # boot the same card again: journal replay + fsck, the node must have everything
        g.boot()

        async def fetch_all():
            async with connect("127.0.0.1", m.ports["node"], node_id, timeout=30) as client:
                return await client.retrieve_all(user.signing_key)

        stored = {msg.hash for msg in trio.run(fetch_all)}
        missing = [h.hex() for h in acked if h not in stored]
        assert not missing, f"{len(missing)} acknowledged messages lost: {missing[:5]}"
        console = m.console_text()
        record(boot_times, "after-power-cut", g, {"acked": len(acked), "stored": len(stored),
                                                  "poweroff_s": round(m.powerdown(), 1)})
    assert "UNEXPECTED INCONSISTENCY" not in console
    parts = partitions(card)
    data = parts[layout.DATA_PART - 1]
    assert data["start"] == image_parts[layout.DATA_PART - 1]["start"]
    assert data["size"] > image_parts[layout.DATA_PART - 1]["size"]
    assert (data["start"] + data["size"]) * 512 > (CARD_MIB - 2) * MiB
    for n in (layout.SLOTS[0].root_part, layout.DATA_PART):
        r = fsck_clean(card, n, tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
    key = debugfs_cat(card, layout.DATA_PART, "/homenode/node.key", tmp_path)
    assert g.node_id in key  # the identity lives on the data partition
    assert debugfs_cat(card, layout.DATA_PART, "/system/ssh/ssh_host_ed25519_key.pub",
                       tmp_path).startswith("ssh-ed25519 ")


def test_raspberry_pi_3_boots_through_u_boot(sd_image, tmp_path, boot_times):
    """-M raspi3b: the Pi firmware's step is QEMU's (it loads the image's u-boot-rpi with the
    Pi 3 DTB from the FAT partition); then the image's own U-Boot runs boot.scr from the SD card,
    loads kernel, initrd and DTB from slot A, the kernel finds its root through the Pi's SD host
    driver in the initramfs (virt cannot check that), the data partition is mmcblk0p7, the node
    starts (READY=1) and the updater reads U-Boot's slot state. Checked on the console: QEMU's
    emulated usb-net does not enumerate under Linux 6.12 after U-Boot ("dwc2: Not connected"),
    so the host cannot reach this guest's node."""
    with Guest.machine(sd_image.raw, tmp_path / "vm", CARD_MIB, machine="raspi3b") as m:
        g = Guest(m)
        g.boot(timeout=1800, network=False)
        console = m.console_text()
        # U-Boot's own autoboot prompt (its banner comes before the console UART is set up)
        assert "Hit any key to stop autoboot" in console
        assert "homenode-uboot: starting slot A" in console
        assert "Machine model: Raspberry Pi 3 Model B" in console
        assert "homenode-setup: growing /dev/mmcblk0p7" in console
        assert re.search(r"homenode-update: boot: slot A \(uboot\), idle", console)
        record(boot_times, "raspi3b", g)
        m.power_cut()  # no power button on this machine; the copy is thrown away
