"""The base arm64 root filesystem: Debian packages only, no homenode code.

Why a separate module: its text is part of the cache key of the base-rootfs tarball, so anything
that changes the base (package list, initramfs settings, hooks) lives here and nothing else does.
Editing the homenode overlay, units or image layout must not throw away the ~10-20 minutes this
stage costs under emulation.
"""

SUITE = "trixie"  # Debian 13 (stable since August 2025): kernel 6.12, Python 3.13
ARCH = "arm64"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
COMPONENTS = "main non-free-firmware"

# The image's apt sources (also what mmdebstrap installs from: updates and security included).
SOURCES = (
    f"deb {MIRROR} {SUITE} {COMPONENTS}",
    f"deb {MIRROR} {SUITE}-updates {COMPONENTS}",
    f"deb {SECURITY_MIRROR} {SUITE}-security {COMPONENTS}",
)

PACKAGES = (
    # boot: kernel, Pi firmware blobs + DTBs, a small initramfs
    "linux-image-arm64", "raspi-firmware", "initramfs-tools", "zstd",
    # Wi-Fi on the Pi (brcmfmac firmware, regulatory database) and its supplicant
    "firmware-brcm80211", "wireless-regdb", "wpasupplicant",
    # init, networking, time (no RTC on a Pi: timesyncd plus fake-hwclock)
    "systemd", "systemd-sysv", "udev", "dbus", "systemd-timesyncd", "systemd-resolved",
    "fake-hwclock", "iproute2", "netbase", "ca-certificates", "kmod", "procps",
    # filesystems: fsck in the initramfs and at boot, growing the data partition
    "e2fsprogs", "dosfstools", "fdisk",
    # the node (its Python libraries come as pinned wheels, see image/pydeps.py)
    "python3",
    # remote access, off unless the operator supplies a key
    "openssh-server",
    # A/B system updates: RAUC (CLI + D-Bus service), U-Boot for Pis without tryboot (Pi 3,
    # Zero 2 W) and fw_printenv/fw_setenv for its environment (RAUC's uboot backend)
    "rauc", "rauc-service", "u-boot-rpi", "libubootenv-tool",
    # <hostname>.local by mDNS and DNS-SD announcements (issue 10); avahi-browse (avahi-utils)
    # is how the node finds other boxes on the LAN ([join] lan_discovery)
    "avahi-daemon", "libnss-mdns", "avahi-utils",
)

# Kernel modules in the initramfs (MODULES=list): QEMU virt disks/net, the Pi SD hosts (Pi 3 /
# Zero 2 W: bcm2835 sdhost; Pi 4: sdhci_iproc), USB mass storage for USB boot, filesystems.
# Names the kernel does not have are dropped (checked with modinfo) instead of failing the boot.
INITRAMFS_MODULES = (
    "virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net",
    "mmc_block", "bcm2835", "sdhci_iproc", "sdhci_pltfm", "sdhci_brcmstb",
    "usb_storage", "uas", "xhci_pci", "pcie_brcmstb", "reset_raspberrypi", "dwc2",
    "ext4", "vfat", "nls_cp437", "nls_ascii",
)

# dpkg: no docs/man/locales on a headless appliance (copyright files stay).
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/lintian/*",
)

# update-initramfs would run on every kernel/firmware trigger (several times, ~17 min each under
# emulation): divert it to a no-op during the install and run it once at the end.
ESSENTIAL_HOOK = r"""
set -e
chroot "$1" dpkg-divert --quiet --local --rename \
    --divert /usr/sbin/update-initramfs.homenode-real --add /usr/sbin/update-initramfs
printf '#!/bin/sh\necho "update-initramfs: deferred by the image build"\nexit 0\n' \
    > "$1/usr/sbin/update-initramfs"
chmod 755 "$1/usr/sbin/update-initramfs"
"""

CUSTOMIZE_HOOK = r"""
set -e
R="$1"
KVER=$(ls "$R/lib/modules" | sort -V | tail -n 1)
# initramfs: listed modules only, zstd, ext4 root, no resume device probing
mkdir -p "$R/etc/initramfs-tools/conf.d"
printf 'MODULES=list\nCOMPRESS=zstd\nFSTYPE=ext4\nRESUME=none\n' \
    > "$R/etc/initramfs-tools/conf.d/homenode.conf"
printf '# homenode: modules the image needs to find its root filesystem\n' \
    >> "$R/etc/initramfs-tools/modules"
for m in %(modules)s; do
    if chroot "$R" modinfo -k "$KVER" "$m" >/dev/null 2>&1; then
        echo "$m" >> "$R/etc/initramfs-tools/modules"
    else
        echo "I: initramfs: kernel $KVER has no module $m, skipped"
    fi
done
# the root filesystem is found by label; the initramfs fsck hook reads the type from fstab
printf 'LABEL=rootfs / ext4 defaults,noatime 0 1\n' > "$R/etc/fstab"
printf 'ROOTPART=LABEL=rootfs\nCONSOLES="tty0 ttyS1,115200"\n' >> "$R/etc/default/raspi-firmware"
rm -f "$R/usr/sbin/update-initramfs"
chroot "$R" dpkg-divert --quiet --local --rename \
    --divert /usr/sbin/update-initramfs.homenode-real --remove /usr/sbin/update-initramfs
mounted_proc=
if ! mountpoint -q "$R/proc"; then mount -t proc proc "$R/proc"; mounted_proc=1; fi
echo "I: building the initramfs for $KVER (the slow part under emulation)"
chroot "$R" update-initramfs -c -k "$KVER"
chroot "$R" /etc/kernel/postinst.d/z50-raspi-firmware "$KVER" || true
if [ -n "$mounted_proc" ]; then umount "$R/proc"; fi
ls -l "$R/boot" "$R/boot/firmware" | head -n 60
"""


def customize_hook() -> str:
    return CUSTOMIZE_HOOK % {"modules": " ".join(INITRAMFS_MODULES)}
