"""Helpers for the QEMU update tests: a booted box driven over SSH and through its node, a
background writer of messages (acknowledged = must survive anything), and bundle making."""

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from qemu.guest import Guest

MiB = 1 << 20
V1 = "0.1.0"


def box_toml(pub_key: str, *, hostname: str, index_url: str = "", window_s: int = 20,
             trial_timeout_s: int = 90) -> str:
    """homenode.toml for an update test box: SSH with the test key, a short health window."""
    return (f'[device]\nhostname = "{hostname}"\n\n[ssh]\nauthorized_keys = ["{pub_key}"]\n\n'
            f'[update]\nchannel = "all"\nindex_url = "{index_url}"\nhealth_window_s = {window_s}\n'
            f"trial_timeout_s = {trial_timeout_s}\n\n[bandwidth]\nmonthly_cap_gb = 7\n")


class Box:
    """A Guest plus its SSH key: run commands as root in the guest."""

    def __init__(self, guest: Guest, key: Path):
        self.g = guest
        self.m = guest.m
        self.key = key

    def sh(self, command: str, timeout: float = 120, check: bool = True) -> str:
        r = self.m.ssh(self.key, command, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"guest: `{command}` exited {r.returncode}:\n{r.stdout}\n"
                                 f"{r.stderr}\n" + self.m.tail(30))
        return r.stdout

    def wait_ssh(self, timeout: float = 180) -> None:
        self.m.wait_until(lambda: self.m.ssh(self.key, "true", timeout=30).returncode == 0,
                          timeout, "SSH login with the test key", interval=3)

    def fetch(self, url: str, dest: str, timeout: float = 600) -> None:
        """Download on the guest (its own Python; the image has no curl), then fsync it: the
        power-cut test pulls the plug a minute later, and a bundle still in the page cache
        comes back with a zeroed tail (RAUC then rightly refuses it)."""
        self.sh("/opt/homenode/bin/python3 -c 'import shutil, sys, urllib.request as u; "
                "shutil.copyfileobj(u.urlopen(sys.argv[1], timeout=60), open(sys.argv[2], "
                f"\"wb\"), 1 << 20)' {url} {dest} && sync {dest}", timeout=timeout)

    def update_info(self) -> dict:
        return self.g.status().get("update") or {}

    def env(self) -> dict:
        out = self.sh("fw_printenv BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT", check=False)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def written_ranges(disk: Path, start: int, size: int) -> list[tuple[int, int]]:
    """Allocated (written) extents of the sparse disk file within [start, start+size): QEMU
    writes every guest write, zeros included, so an empty list means nothing was written."""
    out = []
    fd = os.open(disk, os.O_RDONLY)
    try:
        pos, end = start, start + size
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            if data >= end:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
            out.append((data, hole))
            pos = hole
    finally:
        os.close(fd)
    return out


@dataclass
class Writer:
    """Stores messages to the box's node until stopped or the link dies; keeps every hash the
    node acknowledged (those must survive any power cut, update or rollback)."""

    user: object
    acked: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    def run_once(self, port: int, node_id: bytes, count: int | None = None,
                 stop: threading.Event | None = None) -> None:
        from firmware.client import connect, seal_for

        async def main():
            async with connect("127.0.0.1", port, node_id, timeout=30) as client:
                i = 0
                while (count is None or i < count) and not (stop and stop.is_set()):
                    data = seal_for(self.user.node_id,
                                    f"message {len(self.acked)}".encode() + bytes(600))
                    r = await client.store(self.user.node_id, data, ttl_ms=86_400_000)
                    self.acked.append(r.hash)
                    i += 1

        try:
            trio.run(main)
        except BaseException as e:  # noqa: BLE001 - the guest may die mid-store (power cut)
            self.errors.append(repr(e))

    def background(self, port: int, node_id: bytes) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        t = threading.Thread(target=self.run_once, args=(port, node_id, None, stop),
                             daemon=True)
        t.start()
        return t, stop

    def stored(self, port: int, node_id: bytes) -> set:
        from firmware.client import connect

        async def main():
            async with connect("127.0.0.1", port, node_id, timeout=60) as client:
                return {m.hash for m in await client.retrieve_all(self.user.signing_key)}

        return trio.run(main)

    def missing(self, port: int, node_id: bytes) -> list[str]:
        have = self.stored(port, node_id)
        return [h.hex() for h in self.acked if h not in have]


def release_json(version: str) -> bytes:
    return (json.dumps({"version": version, "build": f"test-{version}",
                        "compatible": "homenode-rpi-arm64", "index_url": "", "keys": "test"},
                       indent=1) + "\n").encode()


BROKEN_NODE_UNIT = b"""[Unit]
Description=homenode message node (broken on purpose by the update test)
After=network.target homenode-setup.service

[Service]
Type=notify
ExecStart=/opt/homenode/bin/homenode run --config /etc/homenode/no-such-config.toml
User=homenode
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"""


def make_bundles(image, out: Path, other_signing) -> dict[str, Path]:
    """The update tests' versions, cheaply derived from the build's slot images."""
    from image import bundle

    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    s = image.signing
    made = {}
    t0 = time.monotonic()
    made["v2"] = bundle.derive(image.slots, out / "v2.raucb", "0.1.1", s, work / "v2",
                               {"/etc/homenode/release.json": release_json("0.1.1")})
    made["v3"] = bundle.derive(image.slots, out / "v3-broken-node.raucb", "0.1.2", s,
                               work / "v3",
                               {"/etc/homenode/release.json": release_json("0.1.2"),
                                "/etc/systemd/system/homenode.service": BROKEN_NODE_UNIT})
    # no /sbin/init and no /bin/sh (initramfs-tools would fall back to a shell as init):
    # the kernel and initramfs start, userspace never does, the initramfs panics and reboots
    made["v4"] = bundle.derive(image.slots, out / "v4-no-init.raucb", "0.1.3", s, work / "v4",
                               {"/etc/homenode/release.json": release_json("0.1.3"),
                                "/usr/sbin/init": None, "/usr/bin/sh": None})
    made["unknown"] = bundle.derive(image.slots, out / "unknown-key.raucb", "0.1.9",
                                    other_signing, work / "unknown",
                                    {"/etc/homenode/release.json": release_json("0.1.9")})
    tampered = out / "tampered.raucb"
    subprocess.run(["cp", str(made["v2"]), str(tampered)], check=True)
    with open(tampered, "r+b") as f:  # flip bytes inside the squashfs payload
        f.seek(tampered.stat().st_size // 3)
        chunk = bytearray(f.read(64))
        f.seek(tampered.stat().st_size // 3)
        f.write(bytes(b ^ 0xFF for b in chunk))
    made["tampered"] = tampered
    made["seconds"] = round(time.monotonic() - t0, 1)
    return made
