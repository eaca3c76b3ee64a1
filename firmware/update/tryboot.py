"""RAUC's bootloader backend on a Raspberry Pi 4/5: the firmware's `tryboot` A/B switch.

Why a custom backend: RAUC has none for the Pi firmware, whose A/B support is
`autoboot.txt` on the first FAT partition plus a one-shot flag:

    [all]
    tryboot_a_b=1
    boot_partition=2      <- the committed slot: every normal boot
    [tryboot]
    boot_partition=3      <- the other slot: only after `reboot "0 tryboot"`

The flag is cleared by the firmware before the kernel starts, so a new slot that hangs, panics or
is power-cycled comes back on the committed slot by itself (a boot counter of one). Only the
health gate's `mark-good` rewrites autoboot.txt (same length, written in place: one sector).

RAUC calls `<backend> get-primary | set-primary SLOT | get-state SLOT | set-state SLOT good|bad |
get-current`. The slot to try next and the slots marked bad live in a small JSON file on the
data partition (ext4, journaled), not on the FAT partition the firmware boots from.
"""

import os
import re
import sys

from firmware.update import layout
from firmware.update.status import read_json, write_json

AUTOBOOT = os.path.join(layout.BOOTFS_MOUNT, "autoboot.txt")
STATE = "/data/system/update/tryboot.json"
DEVICE_TREE = "/proc/device-tree"


def autoboot_txt(committed: str) -> str:
    """autoboot.txt that boots slot `committed` normally and the other one in tryboot mode."""
    c, t = layout.slot(committed), layout.other(committed)
    return (f"[all]\ntryboot_a_b=1\nboot_partition={c.boot_part}\n"
            f"[tryboot]\nboot_partition={t.boot_part}\n")


def committed_slot(text: str) -> str:
    """The slot autoboot.txt boots normally (the [all] section's boot_partition)."""
    section, part = "all", None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]").strip()
        elif section == "all":
            m = re.fullmatch(r"boot_partition=(\d+)", line)
            if m:
                part = int(m.group(1))
    s = layout.slot_of_boot_part(part) if part is not None else None
    if s is None:
        raise ValueError(f"autoboot.txt names no slot's boot partition (found {part})")
    return s.name


class TrybootBackend:
    def __init__(self, autoboot: str = AUTOBOOT, state: str = STATE,
                 device_tree: str = DEVICE_TREE, cmdline: str = "/proc/cmdline"):
        self.autoboot, self.state_path = autoboot, state
        self.device_tree, self.cmdline = device_tree, cmdline

    # -- facts ---------------------------------------------------------------------------------

    def committed(self) -> str:
        with open(self.autoboot) as f:
            return committed_slot(f.read())

    def _dt(self, name: str) -> bytes | None:
        try:
            with open(os.path.join(self.device_tree, "chosen/bootloader", name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def tryboot_active(self) -> bool:
        """The firmware started this boot in tryboot mode (a 32-bit big-endian 1)."""
        raw = self._dt("tryboot")
        return raw is not None and int.from_bytes(raw[:4], "big") == 1

    def current(self) -> str:
        raw = self._dt("partition")
        if raw is not None:
            s = layout.slot_of_boot_part(int.from_bytes(raw[:4], "big"))
            if s is not None:
                return s.name
        with open(self.cmdline) as f:
            m = re.search(r"(?:^|\s)rauc\.slot=(\S+)", f.read())
        if not m:
            raise ValueError("cannot tell the booted slot: no chosen/bootloader/partition in the "
                             "device tree and no rauc.slot= on the kernel command line")
        return layout.slot(m.group(1)).name

    def _state(self) -> dict:
        data = read_json(self.state_path)
        return {"primary": data.get("primary"), "bad": sorted(set(data.get("bad") or []))}

    def _save(self, state: dict) -> None:
        write_json(self.state_path, state)

    # -- RAUC's interface -----------------------------------------------------------------------

    def get_primary(self) -> str:
        st = self._state()
        if st["primary"] and st["primary"] not in st["bad"]:
            return st["primary"]
        return self.committed()

    def set_primary(self, name: str) -> None:
        name = layout.slot(name).name
        st = self._state()
        st["bad"] = [b for b in st["bad"] if b != name]
        st["primary"] = None if name == self.committed() else name
        self._save(st)

    def get_state(self, name: str) -> str:
        return "bad" if layout.slot(name).name in self._state()["bad"] else "good"

    def set_state(self, name: str, state: str) -> None:
        name = layout.slot(name).name
        st = self._state()
        if state == "bad":
            st["bad"] = sorted(set(st["bad"]) | {name})
            if st["primary"] == name:
                st["primary"] = None
            self._save(st)
            return
        if state != "good":
            raise ValueError(f"unknown state {state!r} (good or bad)")
        st["bad"] = [b for b in st["bad"] if b != name]
        if name != self.committed():
            if name != self.current():
                raise ValueError(f"slot {name} can only be kept while it is running (booted: "
                                 f"{self.current()})")
            self._commit(name)
        if st["primary"] == name:
            st["primary"] = None
        self._save(st)

    def _commit(self, name: str) -> None:
        """Make `name` the normal boot: rewrite autoboot.txt in place (same length)."""
        new = autoboot_txt(name).encode()
        with open(self.autoboot, "r+b") as f:
            old = f.read()
            if len(old) != len(new):
                f.seek(0)
                f.truncate()
            f.seek(0)
            f.write(new)
            f.flush()
            os.fsync(f.fileno())


def main(argv: list[str] | None = None, backend: TrybootBackend | None = None,
         out=sys.stdout) -> int:
    """Entry point RAUC runs as bootloader-custom-backend."""
    argv = sys.argv[1:] if argv is None else argv
    b = backend or TrybootBackend()
    try:
        match argv:
            case ["get-primary"]:
                print(b.get_primary(), file=out)
            case ["set-primary", name]:
                b.set_primary(name)
            case ["get-state", name]:
                print(b.get_state(name), file=out)
            case ["set-state", name, state]:
                b.set_state(name, state)
            case ["get-current"]:
                print(b.current(), file=out)
            case _:
                print("usage: get-primary | set-primary SLOT | get-state SLOT | "
                      "set-state SLOT good|bad | get-current", file=sys.stderr)
                return 2
    except (OSError, ValueError) as e:
        print(f"homenode tryboot backend: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
