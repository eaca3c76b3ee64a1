"""Signed A/B system updates on the device: RAUC writes the inactive slot, the bootloader
(U-Boot's boot counter, or the Pi 4/5 firmware's tryboot) switches, and a health gate keeps the
new system only once the node has proven itself, else the box goes back to the previous one.

Pure parts (tested on the host): `gate` (what happened at boot; commit / wait / roll back),
`index` (the signed release index), `tryboot` (autoboot.txt), `sysconf` (RAUC's system.conf),
`bootstate.uboot_facts`, `settings`. I/O: `updater`, `sources`, `gate_service`, `rauc`.
The node reads only `status.UpdateStatus` (LED "updating", `homenode status`).
"""

from firmware.update.cli import add_args, run

__all__ = ["add_args", "run"]
