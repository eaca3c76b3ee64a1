"""A booted homenode image as the host sees it: the node behind a forwarded port, driven with
this checkout's `homenode` CLI (the same commands an operator would type).

`Guest.boot()` is "start QEMU and wait until the node is ready"; `Guest.wait_up(since)` is the
same for a boot that happens inside a running QEMU (a reboot into another slot): the bootloader
names the slot it starts, first-boot setup prints the node id, homenode-boot-report.service
reports multi-user (ordered after the node's READY=1), then `homenode status` answers "serving"
through the forward.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from qemu.harness import Machine

REPO = Path(__file__).resolve().parent.parent
SLOT_LINE = r"homenode-uboot: starting slot ([AB])"


def homenode(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The host CLI (this checkout's firmware package), bounded by a timeout."""
    return subprocess.run([sys.executable, "-m", "firmware.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


class Guest:
    """A booted image plus the node id it announced; helpers call the host CLI against it."""

    def __init__(self, machine: Machine):
        self.m = machine
        self.node_id = ""
        self.slot = ""

    @staticmethod
    def machine(image: Path, workdir: Path, card_mib: int, copy: bool = True,
                machine: str = "virt", usb_stick: Path | None = None,
                max_runtime: int = 1500) -> Machine:
        """A guest whose disk is a copy of `image` (or `image` itself) grown to `card_mib`;
        QEMU is killed after `max_runtime` seconds whatever happens."""
        return Machine(image, workdir, disk_size_mib=card_mib, copy=copy, machine=machine,
                       usb_stick=usb_stick, max_runtime=max_runtime)

    @property
    def node_addr(self) -> str:
        return f"127.0.0.1:{self.m.ports['node']}"

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return homenode(args[0], "--node", self.node_addr, "--node-id", self.node_id,
                        "--timeout", "20", *args[1:], timeout=timeout)

    def status(self) -> dict:
        r = self.cli("status", "--json")
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip())
        return json.loads(r.stdout)

    def boot(self, timeout: float = 900, network: bool = True) -> dict:
        """Start the guest and wait for: bootloader, kernel, setup, multi-user, node serving.
        Returns the node's status. Timings land in self.m.seen (seconds after QEMU start).
        `network=False`: stop at multi-user with the node active (READY=1), for a guest whose
        network the host cannot reach; returns {}."""
        self.m.start()
        return self.wait_up(0, timeout, network)

    def wait_up(self, since: int, timeout: float = 900, network: bool = True) -> dict:
        """Wait for a boot whose console output starts at offset `since`."""
        m = self.m
        t0 = time.monotonic()
        self.slot = m.wait_console(SLOT_LINE, min(timeout, 300), "bootloader",
                                   start=since).group(1)
        m.wait_console(r"Booting Linux|Linux version", 120, "kernel", start=since)
        self.node_id = m.wait_console(r"homenode-setup: node id ([0-9a-f]{64})", timeout,
                                      "setup-done", start=since).group(1)
        up = m.wait_console(r"homenode-boot: multi-user reached at ([0-9.]+) s, node (\S+)",
                            timeout, "multi-user", start=since)
        m.seen.setdefault("guest_uptime_multi_user", float(up.group(1)))
        assert up.group(2) == "active", f"homenode.service is {up.group(2)}\n" + m.tail()
        if not network:
            return {}

        def ready():
            st = self.status()
            return st if st.get("state") == "serving" else None

        return m.wait_until(ready, max(60.0, timeout - (time.monotonic() - t0)),
                            "node serving (homenode status through the forwarded port)",
                            "node-ready", interval=3)

    def slots_started(self, since: int = 0) -> list[str]:
        """Every slot the bootloader started since console offset `since`, in order."""
        import re

        return re.findall(SLOT_LINE, self.m.console_text()[since:])
