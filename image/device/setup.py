"""homenode-setup: runs as root at every boot, before the node (homenode-setup.service).

Every step is idempotent, so a power cut during the first boot just means it runs again:
grow the data partition to fill the card, create the SSH host key (ed25519 only: RSA takes
minutes on a Pi Zero), apply homenode.toml from the boot partition, create the node identity.
Files are only rewritten when their content changes (spares the card), and every file is
durable when written (firmware.durable: fsync of the file, rename, fsync of the directory).

The root filesystem is one of two A/B slots and is replaced by every update, so what must
outlive it is on the data partition (/data): the node's directory, and under /data/system the
SSH host key and the machine id (this runs again on the first boot of every new slot).

A bad homenode.toml changes nothing: the box keeps the settings of the last good file (or, if
there never was one, runs with the defaults) and says which, with EVERY problem, in
homenode-problems.txt on the boot partition and in `homenode status` (via setup-report.json in
the data dir, which the node reads at start).

`Box(root)` holds every path, so the host tests run the same code in a temporary tree.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bootconfig  # noqa: E402  (lives next to this script on the device)

from firmware.durable import fsync_dir, write_durably  # noqa: E402
from firmware.setup_report import REPORT_FILE  # noqa: E402

NODE_PYTHON = "/opt/homenode/bin/python3"
DATA_LABEL = "hndata"


def log(msg: str) -> None:
    print(f"homenode-setup: {msg}", flush=True)


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


def write_if_changed(path: Path, text: str, mode: int = 0o644, *, owner=None) -> bool:
    try:
        st = path.stat()
        if (path.read_text() == text and (st.st_mode & 0o777) == mode
                and (owner is None or (st.st_uid, st.st_gid) == owner)):
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, text, mode, owner=owner)
    return True


def fsync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_durably(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(str(path.parent))
    return True


class Box:
    """The paths setup touches (under `root`) and how it runs commands."""

    def __init__(self, root: str | Path = "/", *, runner=run, identity_cmd=None):
        r = Path(root)
        self.boot = r / "boot/firmware"
        self.data = r / "var/lib/homenode"
        self.node_config = r / "etc/homenode/node.toml"
        self.update_config = r / "etc/homenode/update.toml"  # [update], for the updater
        self.system = r / "data/system"  # what outlives a system slot (A/B updates)
        self.applied = r / "etc/homenode/applied-from"  # "homenode.toml" or "defaults"
        self.problems = self.boot / "homenode-problems.txt"
        self.node_id_file = self.boot / "homenode-node-id.txt"
        self.wants = r / "etc/systemd/system/multi-user.target.wants"
        self.unit_dir = Path("/lib/systemd/system")  # symlink targets, as on the device
        self.etc = r / "etc"
        self.root_ssh = r / "root/.ssh"
        self.dev = r / "dev"
        self.sys_block = r / "sys/class/block"
        self.run = runner
        self.identity_cmd = identity_cmd or ["runuser", "-u", "homenode", "--", NODE_PYTHON]

    def set_enabled(self, unit: str, template: str, enabled: bool) -> bool:
        """Enable/disable a multi-user unit by its wants-symlink (what `systemctl enable` does,
        without the daemon-reload that costs ~10 s on a Pi and blocks the boot). True if
        changed."""
        link = self.wants / unit
        if enabled == link.is_symlink():
            return False
        if enabled:
            self.wants.mkdir(parents=True, exist_ok=True)
            link.symlink_to(self.unit_dir / template)
        else:
            link.unlink()
        fsync_dir(str(self.wants))
        return True


# --- grow -------------------------------------------------------------------------------------

def grow_data_partition(box: Box) -> None:
    """Extend the data partition (the card's last) to the end of the card, then ext4 online."""
    label = box.dev / f"disk/by-label/{DATA_LABEL}"
    if not label.exists():
        log(f"no partition labelled {DATA_LABEL}; not growing")
        return
    part = label.resolve().name                       # e.g. mmcblk0p3 / vda3
    sys_part = box.sys_block / part
    disk = sys_part.resolve().parent.name             # mmcblk0 / vda
    number = (sys_part / "partition").read_text().strip()
    start = int((sys_part / "start").read_text())
    size = int((sys_part / "size").read_text())
    disk_size = int((box.sys_block / disk / "size").read_text())
    free_mib = (disk_size - start - size) * 512 // (1 << 20)
    if free_mib >= 16:
        log(f"growing /dev/{part} by {free_mib} MiB to the end of /dev/{disk}")
        if int(number) > 4:  # a logical partition: its extended container grows first
            box.run("sfdisk", "--no-reread", "--no-tell-kernel", "-N",
                    extended_number(box, disk), f"/dev/{disk}", input=", +\n")
        box.run("sfdisk", "--no-reread", "--no-tell-kernel", "-N", number, f"/dev/{disk}",
                input=", +\n")
        box.run("partx", "-u", "--nr", number, f"/dev/{disk}")
    out = box.run("resize2fs", f"/dev/{part}", check=False)
    if out.returncode != 0:
        log(f"resize2fs /dev/{part} failed: {out.stderr.strip()}")
    elif "Nothing to do" not in out.stderr + out.stdout:
        log(f"data filesystem on /dev/{part} now fills its partition")


def extended_number(box: Box, disk: str) -> str:
    """The number of the disk's extended partition (the A/B layout's logical partitions)."""
    import re

    table = json.loads(box.run("sfdisk", "--json", f"/dev/{disk}").stdout)["partitiontable"]
    for p in table["partitions"]:
        if p.get("type") in ("5", "f", "85"):
            return re.search(r"(\d+)$", p["node"]).group(1)
    raise RuntimeError(f"/dev/{disk} has no extended partition")


# --- what outlives a slot ---------------------------------------------------------------------

def ensure_system_dirs(box: Box) -> None:
    for name, mode in (("ssh", 0o700), ("rauc", 0o755), ("update", 0o755)):
        (box.system / name).mkdir(mode=mode, parents=True, exist_ok=True)


def persist_machine_id(box: Box) -> None:
    """One machine id for the box across updates (journal files are kept per machine id):
    the first slot's id is saved on /data; a new slot takes it over (from its next boot)."""
    saved, etc = box.system / "machine-id", box.etc / "machine-id"
    current = etc.read_text().strip() if etc.exists() else ""
    valid = len(current) == 32 and all(c in "0123456789abcdef" for c in current)
    keep = saved.read_text().strip() if saved.exists() else ""
    if keep and keep != current:
        if os.path.ismount(etc):  # a slot's first boot: systemd's transient id is mounted there
            log("machine id: taken over from the data partition at the next boot")
            return
        write_if_changed(etc, keep + "\n", 0o444)
        log("machine id taken over from the data partition (effective at the next boot)")
    elif not keep and valid:
        write_if_changed(saved, current + "\n", 0o444)


# --- ssh --------------------------------------------------------------------------------------

def ensure_ssh_host_key(box: Box) -> None:
    key = box.system / "ssh/ssh_host_ed25519_key"  # sshd_config points here: kept by updates
    if key.exists() and key.with_suffix(".pub").exists():
        return
    key.unlink(missing_ok=True)
    box.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key))
    for path in (key, key.with_suffix(".pub")):  # ssh-keygen does not sync what it wrote
        fsync_file(path)
    fsync_dir(str(key.parent))
    log("created the SSH host key (ed25519)")


def apply_ssh(box: Box, plan: bootconfig.Plan) -> None:
    auth = box.root_ssh / "authorized_keys"
    if plan.ssh_enabled:
        auth.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_if_changed(auth, "\n".join(plan.ssh_keys) + "\n", 0o600)
        box.set_enabled("ssh.service", "ssh.service", True)
        box.run("systemctl", "--no-block", "start", "ssh.service", check=False)
        log(f"SSH on ({len(plan.ssh_keys)} authorized key(s), key login as root only)")
    else:
        remove_durably(auth)
        if box.set_enabled("ssh.service", "ssh.service", False):
            box.run("systemctl", "--no-block", "stop", "ssh.service", check=False)
        log("SSH off (no [ssh] authorized_keys in homenode.toml)")


# --- hostname, Wi-Fi --------------------------------------------------------------------------

def apply_hostname(box: Box, plan: bootconfig.Plan) -> None:
    write_if_changed(box.etc / "hostname", plan.hostname + "\n")
    hosts = ("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
             f"127.0.1.1\t{plan.hostname}\n")
    write_if_changed(box.etc / "hosts", hosts)
    box.run("hostname", plan.hostname, check=False)


def apply_wifi(box: Box, plan: bootconfig.Plan) -> None:
    conf = box.etc / "wpa_supplicant/wpa_supplicant-wlan0.conf"
    text = bootconfig.wpa_supplicant_conf(plan)
    unit = "wpa_supplicant@wlan0.service"
    if text is None:
        remove_durably(conf)
        if box.set_enabled(unit, "wpa_supplicant@.service", False):
            box.run("systemctl", "--no-block", "stop", unit, check=False)
        return
    changed = write_if_changed(conf, text, 0o600)
    box.set_enabled(unit, "wpa_supplicant@.service", True)
    if changed:
        box.run("systemctl", "--no-block", "restart", unit, check=False)
    log(f"Wi-Fi: country {plan.wifi_country}"
        + (f", network {plan.wifi_ssid!r}" if plan.wifi_ssid else ", no network"))


# --- node config, identity, the report --------------------------------------------------------

def apply_config(box: Box) -> tuple[list[str], str]:
    """Apply homenode.toml if it is entirely right. Returns (problems, what the box now runs
    with: "homenode.toml", "previous" (the last good file's settings) or "defaults")."""
    src = box.boot / "homenode.toml"
    text = src.read_text(errors="replace") if src.exists() else ""
    plan = bootconfig.plan_from_text(text)
    if not plan.problems:
        using = "homenode.toml" if src.exists() else "defaults"
    else:
        for p in plan.problems:
            log(f"config problem: {p}")
        try:
            had_good_file = box.applied.read_text().strip() == "homenode.toml"
        except FileNotFoundError:
            had_good_file = False
        if had_good_file and box.node_config.exists():
            return plan.problems, "previous"  # change nothing
        using = "defaults"
        problems, plan = plan.problems, bootconfig.plan_from_text("")
        plan.problems = problems
    apply_hostname(box, plan)
    apply_wifi(box, plan)
    apply_ssh(box, plan)
    if write_if_changed(box.node_config, bootconfig.toml_dumps(plan.node_config)):
        log(f"node settings written to {box.node_config}")
    if write_if_changed(box.update_config, bootconfig.toml_dumps({"update": plan.update})):
        log(f"update settings written to {box.update_config}")
    write_if_changed(box.applied, using + "\n")
    return plan.problems, using


IDENTITY_CODE = """
import sys
from firmware.identity import IdentityError, load_or_create_node_identity as f
try:
    i, new = f(sys.argv[1])
except IdentityError as e:
    print(e, file=sys.stderr)
    sys.exit(3)
print(i.id_hex, 'new' if new else 'existing')
"""


def ensure_identity(box: Box) -> list[str]:
    """Create the node identity on first boot (never over a store whose key is missing or
    replaced: that is reported instead). Returns problems for the report."""
    out = box.run(*box.identity_cmd, "-c", IDENTITY_CODE, str(box.data), check=False,
                  cwd=str(box.data))
    if out.returncode != 0:
        why = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "no output"
        log(f"could not load or create the node identity: {why}")
        return [f"the node's identity: {why}"]
    node_id, state = out.stdout.split()
    write_if_changed(box.node_id_file, node_id + "\n")  # on the card before it is announced
    log(f"node id {node_id} ({state})")
    return []


def report_text(problems: list[str], using: str) -> str:
    if using == "previous":
        how = "it kept the settings of the last homenode.toml that worked."
    elif using == "defaults":
        how = ("it runs with the default settings (hostname homenode, no Wi-Fi, SSH off, "
               "node defaults): it has not had a usable homenode.toml yet.")
    else:
        how = "it applied homenode.toml, but:"
    return (f"homenode could not use everything on this card; {how}\n"
            f"Fix these {len(problems)} problem(s) and restart the box:\n\n"
            + "\n".join(problems) + "\n")


def write_report(box: Box, problems: list[str], using: str) -> None:
    """homenode-problems.txt for the owner, setup-report.json for `homenode status`; both
    removed once there is nothing to report."""
    report = box.data / REPORT_FILE
    if not problems:
        remove_durably(box.problems)
        remove_durably(report)
        return
    write_if_changed(box.problems, report_text(problems, using))
    if box.data.is_dir():
        # owned like the data dir: the node (its own user) refuses files there it cannot write
        st = box.data.stat()
        write_if_changed(report, json.dumps({"problems": problems, "using": using}, indent=1)
                         + "\n", 0o644, owner=(st.st_uid, st.st_gid))


def main(box: Box | None = None) -> int:
    box = box or Box()
    failed = 0
    problems, using = [], "homenode.toml"
    for step in (grow_data_partition, ensure_system_dirs, persist_machine_id, ensure_ssh_host_key,
                 apply_config, ensure_identity):
        try:
            result = step(box)
            if step is apply_config:
                problems, using = result
            elif step is ensure_identity:
                problems = problems + result
        except Exception as e:  # one broken step must not keep the node from starting
            failed += 1
            log(f"{step.__name__} failed: {e!r}")
            problems = problems + [f"setup step {step.__name__} failed: {e}"]
    try:
        write_report(box, problems, using)
    except OSError as e:
        failed += 1
        log(f"could not write the problem report: {e!r}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
