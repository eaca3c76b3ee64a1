"""The bootloader's view of the two slots, read on the device (U-Boot environment or tryboot).

The kernel command line says which slot runs (`rauc.slot=A`) and what switched slots
(`homenode.boot=uboot` from the U-Boot script, `homenode.boot=tryboot` from the slot's
cmdline.txt on a Pi 4/5). The U-Boot part is pure (`uboot_facts` turns the environment into
`BootFacts`) so its rules are tested on the host with the real `fw_printenv` output format.
"""

import re
import subprocess

from firmware.update import layout
from firmware.update.gate import BootFacts
from firmware.update.tryboot import TrybootBackend


def cmdline_value(cmdline: str, key: str) -> str | None:
    m = re.search(rf"(?:^|\s){re.escape(key)}=(\S+)", cmdline)
    return m.group(1) if m else None


def attempts(env: dict, name: str) -> int:
    """RAUC writes BOOT_x_LEFT in hex; U-Boot's setexpr too."""
    try:
        return int(env.get(f"BOOT_{name}_LEFT", "0"), 16)
    except ValueError:
        return 0


def uboot_facts(booted: str, env: dict) -> BootFacts:
    order = [s for s in (env.get("BOOT_ORDER") or "").split() if s]
    live = [s for s in order if attempts(env, s) > 0]
    bad = frozenset(s.name for s in layout.SLOTS if s.name not in live)
    return BootFacts(booted=booted, mode="uboot",
                     trial=attempts(env, booted) < layout.COMMITTED_ATTEMPTS,
                     primary=live[0] if live else None, bad=bad)


def parse_printenv(text: str) -> dict:
    env = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            env[k.strip()] = v.strip()
    return env


def read_uboot_env(run=subprocess.run) -> dict:
    names = ["BOOT_ORDER"] + [f"BOOT_{s.name}_LEFT" for s in layout.SLOTS]
    out = run(["fw_printenv", *names], capture_output=True, text=True, timeout=30)
    # fw_printenv exits non-zero when one name is missing but still prints the others
    return parse_printenv(out.stdout)


def read_cmdline(path: str = "/proc/cmdline") -> str:
    with open(path) as f:
        return f.read()


def boot_facts(cmdline: str, run=subprocess.run, tryboot: TrybootBackend | None = None
               ) -> BootFacts:
    booted = cmdline_value(cmdline, "rauc.slot")
    mode = cmdline_value(cmdline, "homenode.boot")
    if booted is None or mode not in ("uboot", "tryboot"):
        raise ValueError("this system was not started by the A/B boot setup (no rauc.slot= and "
                         "homenode.boot= on the kernel command line)")
    booted = layout.slot(booted).name
    if mode == "uboot":
        return uboot_facts(booted, read_uboot_env(run))
    tb = tryboot or TrybootBackend()
    committed = tb.committed()
    bad = frozenset(s.name for s in layout.SLOTS if tb.get_state(s.name) == "bad")
    return BootFacts(booted=booted, mode="tryboot",
                     trial=tb.tryboot_active() and booted != committed,
                     primary=tb.get_primary(), bad=bad)
