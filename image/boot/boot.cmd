# homenode A/B boot script for U-Boot: Raspberry Pi 3 / Zero 2 W (and a Pi 4 whose bootloader
# ignores autoboot.txt) with Debian's u-boot-rpi, and QEMU -M virt with u-boot-qemu.
# Compiled to boot.scr (mkimage -T script) on the shared FAT partition 1.
#
# Slot A: boot files on partition 2, root filesystem on 5. Slot B: 3 and 6.
# State, shared with RAUC's uboot backend (fw_printenv/fw_setenv): BOOT_ORDER, BOOT_A_LEFT,
# BOOT_B_LEFT in homenode-ab.env on partition 1. A slot with 3 attempts left is committed: it boots
# and nothing is written. Fewer means on trial: every try costs one attempt (written before the
# kernel starts), and a slot at 0 is skipped, so a new system that never reaches userspace
# falls back to the previous one by itself. RAUC's mark-good sets 3 again.

echo "homenode-uboot: A/B boot script"
if test "${board}" = "rpi"; then
    # the 38 MB kernel must not run into the device tree or initrd (U-Boot's defaults)
    setenv kernel_addr_r 0x00200000
    setenv fdt_addr_r 0x02f00000
    setenv ramdisk_addr_r 0x03000000
    setenv hn_console "console=tty1 console=ttyS1,115200"
else
    setenv hn_console "console=ttyAMA0"
fi
setenv hn_env ${ramdisk_addr_r}
setenv hn_save
setenv BOOT_ORDER
setenv BOOT_A_LEFT
setenv BOOT_B_LEFT
if load ${devtype} ${devnum}:1 ${hn_env} homenode-ab.env && env import -c ${hn_env} 0x4000 BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; then
    echo "homenode-uboot: BOOT_ORDER=${BOOT_ORDER} BOOT_A_LEFT=${BOOT_A_LEFT} BOOT_B_LEFT=${BOOT_B_LEFT}"
fi
if test -z "${BOOT_ORDER}" || test -z "${BOOT_A_LEFT}" || test -z "${BOOT_B_LEFT}"; then
    echo "homenode-uboot: no readable homenode-ab.env: every slot gets a trial"
    setenv BOOT_ORDER "A B"
    setenv BOOT_A_LEFT 2
    setenv BOOT_B_LEFT 2
    setenv hn_save 1
fi

setenv hn_slot
for s in ${BOOT_ORDER}; do
    if test -z "${hn_slot}"; then
        if test "${s}" = "A"; then
            setenv hn_left ${BOOT_A_LEFT}
        else
            setenv hn_left ${BOOT_B_LEFT}
        fi
        if test ${hn_left} -gt 0; then
            setenv hn_slot ${s}
        fi
    fi
done
if test -z "${hn_slot}"; then
    echo "homenode-uboot: no slot has attempts left: both get another trial"
    setenv BOOT_ORDER "A B"
    setenv BOOT_A_LEFT 2
    setenv BOOT_B_LEFT 2
    env export -c -s 0x4000 ${hn_env} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
    fatwrite ${devtype} ${devnum}:1 ${hn_env} homenode-ab.env 0x4000
    reset
fi
if test ${hn_left} -lt 3; then
    setexpr hn_left ${hn_left} - 1
    if test "${hn_slot}" = "A"; then
        setenv BOOT_A_LEFT ${hn_left}
    else
        setenv BOOT_B_LEFT ${hn_left}
    fi
    setenv hn_save 1
    echo "homenode-uboot: slot ${hn_slot} is on trial: ${hn_left} more attempt(s) after this one"
fi
if test -n "${hn_save}"; then
    env export -c -s 0x4000 ${hn_env} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
    fatwrite ${devtype} ${devnum}:1 ${hn_env} homenode-ab.env 0x4000
fi

if test "${hn_slot}" = "A"; then
    setenv hn_bootpart 2
    setenv hn_rootpart 5
else
    setenv hn_bootpart 3
    setenv hn_rootpart 6
fi
part uuid ${devtype} ${devnum}:${hn_rootpart} hn_rootuuid
setenv bootargs "${hn_console} root=PARTUUID=${hn_rootuuid} rootfstype=ext4 rw rootwait fsck.repair=yes net.ifnames=0 panic=10 audit=0 rauc.slot=${hn_slot} homenode.boot=uboot"
echo "homenode-uboot: starting slot ${hn_slot} (boot partition ${hn_bootpart}, root ${hn_rootuuid})"
if load ${devtype} ${devnum}:${hn_bootpart} ${kernel_addr_r} vmlinuz; then
    if load ${devtype} ${devnum}:${hn_bootpart} ${ramdisk_addr_r} initrd.img; then
        setenv hn_initrd ${ramdisk_addr_r}:${filesize}
        setenv hn_fdt ${fdt_addr}
        if test -n "${fdtfile}"; then
            if load ${devtype} ${devnum}:${hn_bootpart} ${fdt_addr_r} ${fdtfile}; then
                setenv hn_fdt ${fdt_addr_r}
            fi
        fi
        booti ${kernel_addr_r} ${hn_initrd} ${hn_fdt}
    fi
fi

# only reached when the slot's files are missing or broken: never try it again
echo "homenode-uboot: slot ${hn_slot} cannot be started: marking it bad"
if test "${hn_slot}" = "A"; then
    setenv BOOT_A_LEFT 0
else
    setenv BOOT_B_LEFT 0
fi
env export -c -s 0x4000 ${hn_env} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
fatwrite ${devtype} ${devnum}:1 ${hn_env} homenode-ab.env 0x4000
reset
