"""homenode-setup: runs as root at every boot, before the node (homenode-setup.service).

Every step is idempotent, so a power cut during the first boot just means it runs again:
grow the data partition to fill the card, create the SSH host key (ed25519 only: RSA takes
minutes on a Pi Zero), apply homenode.toml from the boot partition, create the node identity.
Files are only rewritten when their content changes (spares the card).
"""

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bootconfig  # noqa: E402  (lives next to this script on the device)

BOOT = Path("/boot/firmware")
DATA = Path("/var/lib/homenode")
NODE_CONFIG = Path("/etc/homenode/node.toml")
PROBLEMS = BOOT / "homenode-problems.txt"
NODE_ID_FILE = BOOT / "homenode-node-id.txt"
NODE_PYTHON = "/opt/homenode/bin/python3"
DATA_LABEL = "hndata"


WANTS = Path("/etc/systemd/system/multi-user.target.wants")
UNIT_DIR = Path("/lib/systemd/system")


def set_enabled(unit: str, template: str, enabled: bool) -> bool:
    """Enable/disable a multi-user unit by its wants-symlink (what `systemctl enable` does, but
    without the daemon-reload that costs ~10 s on a Pi and blocks the boot). True if changed."""
    link = WANTS / unit
    if enabled == link.is_symlink():
        return False
    if enabled:
        WANTS.mkdir(parents=True, exist_ok=True)
        link.symlink_to(UNIT_DIR / template)
    else:
        link.unlink()
    return True


def log(msg: str) -> None:
    print(f"homenode-setup: {msg}", flush=True)


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


# --- grow -------------------------------------------------------------------------------------

def grow_data_partition() -> None:
    """Extend the data partition (the card's last) to the end of the card, then ext4 online."""
    label = Path(f"/dev/disk/by-label/{DATA_LABEL}")
    if not label.exists():
        log(f"no partition labelled {DATA_LABEL}; not growing")
        return
    part = label.resolve().name                       # e.g. mmcblk0p3 / vda3
    sys_part = Path("/sys/class/block") / part
    disk = sys_part.resolve().parent.name             # mmcblk0 / vda
    number = (sys_part / "partition").read_text().strip()
    start = int((sys_part / "start").read_text())
    size = int((sys_part / "size").read_text())
    disk_size = int((Path("/sys/class/block") / disk / "size").read_text())
    free_mib = (disk_size - start - size) * 512 // (1 << 20)
    if free_mib >= 16:
        log(f"growing /dev/{part} by {free_mib} MiB to the end of /dev/{disk}")
        run("sfdisk", "--no-reread", "--no-tell-kernel", "-N", number, f"/dev/{disk}",
            input=", +\n")
        run("partx", "-u", "--nr", number, f"/dev/{disk}")
    out = run("resize2fs", f"/dev/{part}", check=False)
    if out.returncode != 0:
        log(f"resize2fs /dev/{part} failed: {out.stderr.strip()}")
    elif "Nothing to do" not in out.stderr + out.stdout:
        log(f"data filesystem on /dev/{part} now fills its partition")


# --- ssh --------------------------------------------------------------------------------------

def ensure_ssh_host_key() -> None:
    key = Path("/etc/ssh/ssh_host_ed25519_key")
    if key.exists() and key.with_suffix(".pub").exists():
        return
    key.unlink(missing_ok=True)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key))
    log("created the SSH host key (ed25519)")


def apply_ssh(plan: bootconfig.Plan) -> None:
    auth = Path("/root/.ssh/authorized_keys")
    if plan.ssh_enabled:
        auth.parent.mkdir(mode=0o700, exist_ok=True)
        write_if_changed(auth, "\n".join(plan.ssh_keys) + "\n", 0o600)
        set_enabled("ssh.service", "ssh.service", True)
        run("systemctl", "--no-block", "start", "ssh.service", check=False)
        log(f"SSH on ({len(plan.ssh_keys)} authorized key(s), key login as root only)")
    else:
        auth.unlink(missing_ok=True)
        if set_enabled("ssh.service", "ssh.service", False):
            run("systemctl", "--no-block", "stop", "ssh.service", check=False)
        log("SSH off (no [ssh] authorized_keys in homenode.toml)")


# --- hostname, Wi-Fi --------------------------------------------------------------------------

def apply_hostname(plan: bootconfig.Plan) -> None:
    write_if_changed(Path("/etc/hostname"), plan.hostname + "\n")
    hosts = ("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
             f"127.0.1.1\t{plan.hostname}\n")
    write_if_changed(Path("/etc/hosts"), hosts)
    run("hostname", plan.hostname, check=False)


def apply_wifi(plan: bootconfig.Plan) -> None:
    conf = Path("/etc/wpa_supplicant/wpa_supplicant-wlan0.conf")
    text = bootconfig.wpa_supplicant_conf(plan)
    unit = "wpa_supplicant@wlan0.service"
    if text is None:
        conf.unlink(missing_ok=True)
        if set_enabled(unit, "wpa_supplicant@.service", False):
            run("systemctl", "--no-block", "stop", unit, check=False)
        return
    changed = write_if_changed(conf, text, 0o600)
    set_enabled(unit, "wpa_supplicant@.service", True)
    if changed:
        run("systemctl", "--no-block", "restart", unit, check=False)
    log(f"Wi-Fi: country {plan.wifi_country}"
        + (f", network {plan.wifi_ssid!r}" if plan.wifi_ssid else ", no network"))


# --- node config, identity --------------------------------------------------------------------

def node_config_problems(config: dict) -> list[str]:
    """Validate with the installed node's own schema (same messages as `homenode run`)."""
    try:
        from firmware.settings import default_schema
    except ImportError as e:  # running outside /opt/homenode's Python
        return [f"could not check the node settings: {e}"]
    return default_schema().validate(config, "homenode.toml")[1]


def apply_config() -> bootconfig.Plan:
    src = BOOT / "homenode.toml"
    text = src.read_text(errors="replace") if src.exists() else ""
    plan = bootconfig.plan_from_text(text)
    if not plan.problems:
        plan.problems = node_config_problems(plan.node_config)
    if plan.problems:
        report = ("homenode could not use homenode.toml; it kept its previous settings.\n"
                  "Fix these lines and restart the box:\n\n" + "\n".join(plan.problems) + "\n")
        write_if_changed(PROBLEMS, report)
        for p in plan.problems:
            log(f"config problem: {p}")
        if NODE_CONFIG.exists():
            return plan
        plan = bootconfig.plan_from_text("")  # first boot with a broken file: defaults
    elif PROBLEMS.exists():
        PROBLEMS.unlink()
    apply_hostname(plan)
    apply_wifi(plan)
    apply_ssh(plan)
    if write_if_changed(NODE_CONFIG, bootconfig.toml_dumps(plan.node_config)):
        log(f"node settings written to {NODE_CONFIG}")
    return plan


def ensure_identity() -> None:
    code = ("from firmware.identity import load_or_create_node_identity as f\n"
            f"i,new=f({str(DATA)!r})\nprint(i.id_hex, 'new' if new else 'existing')")
    out = run("runuser", "-u", "homenode", "--", NODE_PYTHON, "-c", code, check=False,
              cwd=str(DATA))
    if out.returncode != 0:
        log(f"could not create the node identity: {out.stderr.strip()[-500:]}")
        return
    node_id, state = out.stdout.split()
    log(f"node id {node_id} ({state})")
    write_if_changed(NODE_ID_FILE, node_id + "\n")


def main() -> int:
    steps = [grow_data_partition, ensure_ssh_host_key, apply_config, ensure_identity]
    failed = 0
    for step in steps:
        try:
            step()
        except Exception as e:  # one broken step must not keep the node from starting
            failed += 1
            log(f"{step.__name__} failed: {e!r}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
