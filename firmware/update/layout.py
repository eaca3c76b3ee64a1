"""Where the A/B system lives on the card: one table shared by the image build and the device.

Why one module: the image build lays the partitions out, the boot script and the update tooling
on the device find them again by number, and a bundle's hook rewrites a boot slot's command
line. If these numbers lived in three places, a mismatch would only show on a real update.

MBR (the Raspberry Pi boot ROM reads MBR; the Pi 4/5 bootloader boots only primary partitions):
  1  FAT32 `bootfs`  shared: autoboot.txt (Pi 4/5 tryboot), Pi 3 firmware + U-Boot + boot.scr,
                     homenode-ab.env (U-Boot's slot state), homenode.toml; never written by an
                     update
  2  FAT32           slot A boot files: kernel, initrd, DTBs, Pi 4 firmware, config/cmdline.txt
  3  FAT32           slot B boot files
  4  extended        holds 5-7
  5  ext4            slot A root filesystem
  6  ext4            slot B root filesystem
  7  ext4 `hndata`   shared data (/data): node identity and messages, SSH host key, journal,
                     RAUC's and the updater's records; never written by an update
"""

from dataclasses import dataclass

COMPATIBLE = "homenode-rpi-arm64"  # RAUC compatible: bundles for other hardware are refused

BOOTFS_PART = 1
EXTENDED_PART = 4
DATA_PART = 7
DATA_LABEL = "hndata"
BOOTFS_LABEL = "bootfs"


@dataclass(frozen=True)
class Slot:
    name: str  # RAUC bootname and the value of rauc.slot= on the kernel command line
    boot_part: int
    root_part: int


SLOTS = (Slot("A", 2, 5), Slot("B", 3, 6))

# U-Boot's slot state, shared with RAUC's uboot backend (fw_printenv/fw_setenv): a file on the
# shared FAT partition in U-Boot's environment format, read and written by boot.scr. U-Boot
# writes it only while a slot is on trial (fewer than COMMITTED_ATTEMPTS left), so a normal
# power-on never writes the partition it boots from. Not `uboot.env`: the Pi's U-Boot would load
# that as its whole environment (and lose its boot command).
UBOOT_ENV_FILE = "homenode-ab.env"
UBOOT_ENV_SIZE = 0x4000  # CONFIG_ENV_SIZE of Debian's rpi_arm64 U-Boot
COMMITTED_ATTEMPTS = 3  # RAUC boot-attempts: what `mark-good` writes
TRIAL_ATTEMPTS = 2  # RAUC boot-attempts-primary: tries a freshly installed slot gets

# Mount points on the device
BOOTFS_MOUNT = "/boot/firmware"
DATA_MOUNT = "/data"


def slot(name: str) -> Slot:
    for s in SLOTS:
        if s.name == name:
            return s
    raise ValueError(f"no slot {name!r} (slots: {', '.join(s.name for s in SLOTS)})")


def other(name: str) -> Slot:
    return next(s for s in SLOTS if s.name != slot(name).name)


def slot_of_boot_part(number: int) -> Slot | None:
    return next((s for s in SLOTS if s.boot_part == number), None)
