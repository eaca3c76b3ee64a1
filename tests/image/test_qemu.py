"""The SD image booted under QEMU (qemu-system-aarch64 -M virt): what a user's Pi would do.

Each test boots a throwaway copy of dist/homenode-<v>-arm64.img (built by the session fixture if
needed) and talks to the node through a port forwarded to 127.0.0.1, with the host's CLI.
"""

import json
import subprocess
import threading
import time

import pytest
import trio

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


def test_fresh_image_first_boot(sd_image, tmp_path, boot_times):
    """Grows the data partition, creates the identity, SSH off, node serving, store/fetch."""
    image_parts = partitions(sd_image.raw)
    with Guest.machine(sd_image.raw, tmp_path / "vm", CARD_MIB) as m:
        g = Guest(m)
        st = g.boot()
        assert st["node_id"] == g.node_id
        console = m.console_text()
        assert "homenode-setup: growing /dev/vda3" in console
        assert "SSH off" in console
        assert m.ssh_banner() == b"", "SSH answers although no key was configured"
        msg_hash, got = send_and_fetch(g, tmp_path, "hello from the host")
        assert [x["hash"] for x in got] == [msg_hash]
        assert got[0]["text"] == "hello from the host"
        healthy = m.wait_until(lambda: g.status().get("health") == "healthy", 180,
                               "node health 'healthy'", "healthy", interval=3)
        assert healthy
        record(boot_times, "fresh", g, {"poweroff_s": round(m.powerdown(), 1)})
    parts = partitions(m.disk)
    assert parts[2]["start"] == image_parts[2]["start"]
    assert parts[2]["size"] > image_parts[2]["size"]
    assert (parts[2]["start"] + parts[2]["size"]) * 512 > (CARD_MIB - 2) * MiB
    for n in (2, 3):
        r = fsck_clean(m.disk, n, tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
    key = debugfs_cat(m.disk, 3, "/node.key", tmp_path)
    assert g.node_id in key  # the identity lives on the data partition
    assert debugfs_cat(m.disk, 2, "/etc/ssh/ssh_host_ed25519_key.pub", tmp_path).startswith(
        "ssh-ed25519 ")


def test_boot_partition_config_applies(sd_image, tmp_path, boot_times):
    """homenode.toml written onto the FAT partition (as from a PC): hostname, SSH, bandwidth."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = (tmp_path / "id_ed25519.pub").read_text().strip()
    toml = (f'[device]\nhostname = "kitchen-node"\n\n[ssh]\nauthorized_keys = ["{pub}"]\n\n'
            '[bandwidth]\nmonthly_cap_gb = 7\nbilling_day = 15\n')
    with Guest.machine(sd_image.raw, tmp_path / "vm", CARD_MIB) as m:
        fat_write(m.disk, "homenode.toml", toml.encode(), tmp_path)
        g = Guest(m)
        st = g.boot()
        bw = st.get("device", {}).get("bandwidth", {})
        assert bw.get("cap_bytes") == 7_000_000_000, st
        m.wait_until(lambda: m.ssh_banner().startswith(b"SSH-2.0"), 120, "sshd answering")
        r = m.ssh(key, "hostname; cat /etc/homenode/node.toml; "
                  "systemctl is-active homenode.service; "
                  "systemd-analyze security homenode.service --no-pager | tail -n 1")
        imports = m.ssh(key, "/opt/homenode/bin/python3 -c 'import lgpio, nacl, cryptography, "
                             "cbor2, psutil, gpiozero, trio; print(\"imports ok\", trio.__version__)'")
        assert imports.stdout.strip() == "imports ok 0.35.0", imports.stderr
        timing = m.ssh(key, "systemd-analyze time; systemd-analyze blame --no-pager | head -n 12")
        print(timing.stdout)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == "kitchen-node"
        assert "monthly_cap_gb = 7" in r.stdout and 'listen_host = "0.0.0.0"' in r.stdout
        assert "active" in lines
        exposure = lines[-1]
        assert "Overall exposure level for homenode.service" in exposure
        record(boot_times, "config", g, {"exposure": exposure.split(": ", 1)[-1],
                                         "systemd_analyze": timing.stdout.splitlines()})
        m.powerdown()


def test_power_cut_during_stores_loses_no_acknowledged_message(sd_image, tmp_path, boot_times):
    from firmware.client import connect, seal_for
    from firmware.identity import Identity

    user = Identity.generate()
    acked: list[bytes] = []
    with Guest.machine(sd_image.raw, tmp_path / "vm", CARD_MIB) as m:
        g = Guest(m)
        g.boot()
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
        record(boot_times, "power-cut-1", g, {"acked": len(acked)})
        # boot the same disk again: journal replay + fsck, the node must have everything
        g.boot()

        async def fetch_all():
            async with connect("127.0.0.1", m.ports["node"], node_id, timeout=30) as client:
                return await client.retrieve_all(user.signing_key)

        stored = {msg.hash for msg in trio.run(fetch_all)}
        missing = [h.hex() for h in acked if h not in stored]
        assert not missing, f"{len(missing)} acknowledged messages lost: {missing[:5]}"
        console = m.console_text()
        record(boot_times, "power-cut-2", g, {"acked": len(acked), "stored": len(stored)})
        m.powerdown()
    assert "UNEXPECTED INCONSISTENCY" not in console
    for n in (2, 3):
        r = fsck_clean(m.disk, n, tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr


def test_flash_to_a_file_then_boot_it(sd_image, tmp_path, boot_times):
    card = tmp_path / "card.img"
    r = homenode("flash", str(sd_image.xz), str(card), "--yes", timeout=900)
    assert r.returncode == 0, r.stderr
    assert "verified" in r.stderr
    assert card.stat().st_size == sd_image.raw.stat().st_size
    with Guest.machine(card, tmp_path / "vm", CARD_MIB, copy=False) as m:
        g = Guest(m)
        st = g.boot()
        assert st["state"] == "serving"
        record(boot_times, "flashed", g)
        m.powerdown()


def test_raspberry_pi_3_boots_from_its_sd_card(sd_image, tmp_path, boot_times):
    """-M raspi3b: the Pi's own SD host driver must be in the initramfs (virt cannot catch that),
    the data partition is mmcblk0p3, and USB networking (usb0) must come up."""
    with Guest.machine(sd_image.raw, tmp_path / "vm", CARD_MIB, machine="raspi3b") as m:
        g = Guest(m)
        st = g.boot(timeout=1200)
        assert st["state"] == "serving"
        console = m.console_text()
        assert "homenode-setup: growing /dev/mmcblk0p3" in console
        record(boot_times, "raspi3b", g, {"backend": st.get("device", {}).get("backend")})
        m.power_cut()  # no ACPI power button on this machine; the copy is thrown away
