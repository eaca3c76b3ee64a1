"""Boot the homenode SD image under qemu-system-aarch64 and drive it from the host.

Why a harness: the only honest test of the image is to boot it. The guest boots through a real
bootloader from its own disk, as a Pi does: `-M virt -cpu cortex-a72` runs Debian's u-boot-qemu
(`-bios`), `-M raspi3b` runs the image's own u-boot-rpi (from its FAT partition, as the Pi
firmware would); both execute the image's boot.scr, which picks slot A or B. A reboot stays in
the same QEMU process (no -no-reboot): the A/B tests watch the bootloader pick slots.
Ports (node, SSH) are forwarded to 127.0.0.1 only, the serial console goes to a file, a QMP
socket is kept for power-off. Everything is bounded: QEMU runs under `timeout --kill-after`,
every wait has a deadline, and a failed wait raises with the console's last lines.

Power: `powerdown()` is the ACPI button (clean shutdown); `power_cut()` SIGKILLs QEMU - nothing
the guest had not handed to the virtual disk survives, as when the plug is pulled. The disk uses
cache=none (O_DIRECT): QEMU must never claim a flush it did not do (no cache=unsafe here).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BOOT_OFFSET = "4M"  # first partition (FAT) starts at 4 MiB
MiB = 1 << 20
UBOOT_QEMU = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"  # Debian's u-boot-qemu


class BootError(AssertionError):
    """The guest did not do what was waited for; carries the console tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fat_files(disk: Path) -> list[str]:
    out = subprocess.run(["mdir", "-b", "-i", f"{disk}@@{BOOT_OFFSET}", "::/"],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    return [line.strip().lstrip(":").strip("/") for line in out.stdout.splitlines()
            if line.strip()]


def fat_read(disk: Path, name: str) -> bytes:
    out = subprocess.run(["mtype", "-i", f"{disk}@@{BOOT_OFFSET}", f"::/{name}"],
                         capture_output=True, check=True, env=dict(os.environ,
                                                                   MTOOLS_SKIP_CHECK="1"))
    return out.stdout


def fat_write(disk: Path, name: str, data: bytes, tmp: Path) -> None:
    """Write a file onto the image's boot partition, as a user editing the card on a PC.
    The staging copy has a directory of its own: machines prepared at once in threads share
    `tmp` (two boxes' homenode.toml once ran into each other there)."""
    with tempfile.TemporaryDirectory(dir=tmp) as own:
        src = Path(own) / name
        src.write_bytes(data)
        subprocess.run(["mcopy", "-o", "-i", f"{disk}@@{BOOT_OFFSET}", str(src), f"::/{name}"],
                       check=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))


def extract_dtb(disk: Path, name: str, dest: Path) -> Path:
    out = dest / name
    out.write_bytes(fat_read(disk, name))
    return out


def extract_kernel(disk: Path, dest: Path) -> tuple[Path, Path]:
    names = fat_files(disk)
    kernels = sorted(n for n in names if n.startswith("vmlinuz-"))
    initrds = sorted(n for n in names if n.startswith("initrd.img-"))
    if not kernels or not initrds:
        raise BootError(f"no vmlinuz-*/initrd.img-* on the boot partition of {disk}: {names}")
    kernel, initrd = dest / "vmlinuz", dest / "initrd.img"
    kernel.write_bytes(fat_read(disk, kernels[-1]))
    initrd.write_bytes(fat_read(disk, initrds[-1]))
    return kernel, initrd


def partitions(disk: Path) -> list[dict]:
    """sfdisk's view of the image: [{'start': sectors, 'size': sectors, 'type': ...}, ...]."""
    out = subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)["partitiontable"]["partitions"]


def extract_partition(disk: Path, number: int, dest: Path) -> Path:
    p = partitions(disk)[number - 1]
    subprocess.run(["dd", f"if={disk}", f"of={dest}", "bs=1M", f"skip={p['start'] * 512}",
                    f"count={p['size'] * 512}", "iflag=skip_bytes,count_bytes", "conv=sparse",
                    "status=none"], check=True)
    return dest


class QMP:
    """Just enough of the QEMU Machine Protocol: capabilities, then commands."""

    def __init__(self, path: Path, timeout: float = 10):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""
        self._recv()  # greeting
        self.execute("qmp_capabilities")

    def _recv(self) -> dict:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("QMP socket closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, cmd: str, **arguments) -> dict:
        msg = {"execute": cmd}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._recv()
            if "return" in reply or "error" in reply:
                return reply

    def close(self) -> None:
        self.sock.close()


class Machine:
    """One QEMU guest booted from a copy of `image` in `workdir`."""

    def __init__(self, image: Path, workdir: Path, *, disk_size_mib: int | None = None,
                 copy: bool = True, mem_mib: int = 1024, smp: int = 2, max_runtime: int = 1500,
                 guest_ports: dict[str, int] | None = None, machine: str = "virt",
                 usb_stick: Path | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.disk = self.workdir / "disk.img"
        if copy:
            subprocess.run(["cp", "--sparse=always", str(image), str(self.disk)], check=True)
        else:
            self.disk = Path(image)
        if disk_size_mib:
            with open(self.disk, "r+b") as f:
                f.truncate(disk_size_mib * MiB)
        if machine not in ("virt", "raspi3b"):
            raise ValueError(f"machine {machine!r}: use 'virt' or 'raspi3b'")
        if machine == "raspi3b" and self.disk.stat().st_size & (self.disk.stat().st_size - 1):
            raise ValueError("-M raspi3b needs an SD image whose size is a power of two "
                             "(pass disk_size_mib=4096)")
        self.machine = machine
        self.usb_stick = usb_stick
        self.mem_mib, self.smp, self.max_runtime = mem_mib, smp, max_runtime
        self.guest_ports = guest_ports or {"node": 7070, "ssh": 22}
        self.ports: dict[str, int] = {}
        self.console = self.workdir / "console.log"
        self.qmp_path = self.workdir / "qmp.sock"
        self.pidfile = self.workdir / "qemu.pid"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.seen: dict[str, float] = {}  # label -> seconds after start when first seen
        self.boots = 0

    # --- lifecycle -------------------------------------------------------------------------

    def command(self) -> list[str]:
        fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{self.ports[n]}-:{g}"
                       for n, g in self.guest_ports.items())
        if self.machine == "raspi3b":
            return self._raspi3b_command(fwd)
        if not os.path.exists(UBOOT_QEMU):
            raise BootError(f"{UBOOT_QEMU} missing: apt-get install u-boot-qemu")
        stick = ["-device", "qemu-xhci,id=xhci"]  # a USB port, for sticks (plug_usb)
        if self.usb_stick is not None:
            stick += ["-drive", f"file={self.usb_stick},if=none,id=stick,format=raw,cache=none",
                      "-device", "usb-storage,bus=xhci.0,drive=stick"]
        return [
            "timeout", "--kill-after=10", str(self.max_runtime),
            "qemu-system-aarch64", "-M", "virt,acpi=off", "-cpu", "cortex-a72", "-smp", str(self.smp),
            "-m", str(self.mem_mib), "-nographic", "-monitor", "none", "-bios", UBOOT_QEMU,
            "-drive", f"file={self.disk},if=virtio,format=raw,cache=none,discard=unmap",
            "-netdev", f"user,id=n0,{fwd}", "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-device", "virtio-rng-pci", *stick,
            "-serial", f"file:{self.console}",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-pidfile", str(self.pidfile),
        ]

    def _raspi3b_command(self, fwd: str) -> list[str]:
        """A Raspberry Pi 3B: the image's own U-Boot (u-boot-rpi, from its FAT partition, where
        the Pi firmware would load it from) with the firmware's DTB, the real SD host, USB
        networking; the serial console is the mini UART, QEMU's second serial port. (The image
        has no VCHIQ driver: QEMU does not emulate the VideoCore interface, and the staging
        driver oopsed under emulation; a headless node never uses it.)"""
        uboot = self.workdir / "u-boot-rpi.bin"
        uboot.write_bytes(fat_read(self.disk, "u-boot.bin"))
        dtb = extract_dtb(self.disk, "bcm2837-rpi-3-b.dtb", self.workdir)
        return [
            "timeout", "--kill-after=10", str(self.max_runtime),
            "qemu-system-aarch64", "-M", "raspi3b", "-m", "1024", "-nographic",
            "-monitor", "none", "-kernel", str(uboot), "-dtb", str(dtb),
            "-drive", f"file={self.disk},if=sd,format=raw,cache=none",
            "-netdev", f"user,id=n0,{fwd}", "-device", "usb-net,netdev=n0",
            "-serial", "null", "-serial", f"file:{self.console}",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-pidfile", str(self.pidfile),
        ]

    def start(self) -> None:
        if self.running:
            raise RuntimeError("already running")
        self.ports = {name: free_port() for name in self.guest_ports}
        for p in (self.console, self.qmp_path, self.pidfile):
            p.unlink(missing_ok=True)
        self.console.touch()
        self.seen = {}
        self.boots += 1
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(
                                         self.workdir / "qemu.stderr", "w"),
                                     start_new_session=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def qemu_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def wait_exit(self, timeout: float) -> bool:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def powerdown(self, timeout: float = 120) -> float:
        """ACPI power button -> clean shutdown. Returns the seconds it took."""
        t = time.monotonic()
        qmp = QMP(self.qmp_path)
        try:
            qmp.execute("system_powerdown")
        finally:
            qmp.close()
        if not self.wait_exit(timeout):
            self.kill()
            raise BootError(f"guest did not power off within {timeout} s\n" + self.tail())
        return time.monotonic() - t

    def plug_usb(self, image: Path, name: str = "stick1") -> None:
        """Plug a USB stick (a raw disk image file) into the running guest's USB port."""
        qmp = QMP(self.qmp_path)
        try:
            for cmd, args in (("blockdev-add", {"driver": "raw", "node-name": name, "file": {
                                  "driver": "file", "filename": str(image)}}),
                              ("device_add", {"driver": "usb-storage", "bus": "xhci.0",
                                              "drive": name, "id": f"{name}-dev"})):
                reply = qmp.execute(cmd, **args)
                if "error" in reply:
                    raise BootError(f"QMP {cmd}: {reply['error']}")
        finally:
            qmp.close()

    def power_cut(self) -> None:
        """Pull the plug: SIGKILL QEMU itself, no flush, no shutdown."""
        pid = self.qemu_pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not self.wait_exit(20):
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=20)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()

    # --- console -----------------------------------------------------------------------------

    def console_text(self) -> str:
        try:
            return self.console.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", self.console_text())
        last = text.splitlines()[-lines:]
        err = ""
        try:
            err = (self.workdir / "qemu.stderr").read_text().strip()
        except OSError:
            pass
        return (f"--- last {len(last)} console lines ({self.console}) ---\n" + "\n".join(last)
                + (f"\n--- qemu stderr ---\n{err}" if err else ""))

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def mark(self) -> int:
        """Current end of the console text: wait_console(..., start=mark) sees only what
        the guest prints after this point (e.g. after a reboot)."""
        return len(self.console_text())

    def wait_console(self, pattern: str, timeout: float, label: str | None = None,
                     start: int = 0) -> re.Match:
        """Wait until `pattern` (regex) appears on the console; record when, under `label`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.console_text(), start)
            if m:
                if label and label not in self.seen:
                    self.seen[label] = round(self.elapsed(), 1)
                return m
            if not self.running:
                raise BootError(f"QEMU exited while waiting for {pattern!r}\n" + self.tail())
            if time.monotonic() > deadline:
                raise BootError(f"no {pattern!r} on the console within {timeout} s\n"
                                + self.tail())
            time.sleep(0.25)

    def wait_until(self, check, timeout: float, what: str, label: str | None = None,
                   interval: float = 2.0):
        """Poll `check()` (returns a truthy value or raises) until it succeeds."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                result = check()
                if result:
                    if label and label not in self.seen:
                        self.seen[label] = round(self.elapsed(), 1)
                    return result
            except Exception as e:  # noqa: BLE001 - reported below if it never succeeds
                last = e
            if not self.running:
                raise BootError(f"QEMU exited while waiting for {what}\n" + self.tail())
            if time.monotonic() > deadline:
                raise BootError(f"{what}: not within {timeout} s (last error: {last!r})\n"
                                + self.tail())
            time.sleep(interval)

    # --- talking to the guest ----------------------------------------------------------------

    def ssh_banner(self, timeout: float = 10) -> bytes:
        """First bytes the forwarded SSH port sends (b'' when nothing listens in the guest)."""
        with socket.create_connection(("127.0.0.1", self.ports["ssh"]), timeout=timeout) as s:
            try:
                return s.recv(64)
            except (ConnectionResetError, TimeoutError):
                return b""

    def ssh(self, key: Path, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        ssh = shutil.which("ssh")
        if not ssh:
            raise BootError("no ssh client on the host (apt-get install openssh-client)")
        return subprocess.run(
            ["timeout", "--kill-after=5", str(timeout), ssh, "-p", str(self.ports["ssh"]),
             "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
             "-o", "LogLevel=ERROR", "root@127.0.0.1", command],
            capture_output=True, text=True)
