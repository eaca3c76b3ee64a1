"""The diagnostics bundle: one .tar.gz a home user can hand to someone who helps them.

What it holds: versions, the config with secrets removed, health and status, the chart
history, the recent log, the firmware's throttle flags, and the disk's health. What it must
never hold: a private key, message data or a recipient id. So it reads neither the key file nor
the store, and every text member passes `scrub`, which removes every 64-hex-digit id other than
the node's own and the node ids in its config, and every long hex or base64 run (keys,
ciphertext and ids in any encoding). Building is I/O (files, `journalctl`, `vcgencmd`);
`scrub`, `redact_toml` and `pack` are pure.
"""

import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time

from firmware import __version__
from firmware.status_text import jsonable

HEX_RUN = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{40,}(?![0-9A-Fa-f])")
B64_RUN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2}(?![A-Za-z0-9+/_=-])")
SECRET_KEY_NAME = re.compile(r"secret|passphrase|password|psk|token|private|authorized_keys",
                             re.IGNORECASE)
LOG_LINES = 3000
LIBS = ("trio", "cbor2", "PyNaCl", "cryptography", "psutil", "gpiozero")


def scrub(text: str, keep=()) -> str:
    """Remove ids, keys and blobs: hex runs of 40+ digits except the ids in `keep`, and
    base64 runs of 40+ characters that mix upper and lower case (random bytes always do;
    paths and words do not)."""
    keep = {k.lower() for k in keep}

    def hex_sub(m):
        return m.group(0) if m.group(0).lower() in keep else "<removed: hex>"

    text = HEX_RUN.sub(hex_sub, text)

    def b64_sub(m):
        s = m.group(0)
        if s.lower() in keep or not (re.search(r"[a-z]", s) and re.search(r"[A-Z]", s)):
            return s  # one-case runs are paths and words (hex runs were handled above)
        return "<removed: base64>"

    return B64_RUN.sub(b64_sub, text)


def redact_toml(text: str) -> str:
    """Blank the values of keys that hold secrets (passphrases, tokens, SSH keys)."""
    out = []
    in_multiline = False
    for line in text.splitlines():
        if in_multiline:
            if "]" in line:
                in_multiline = False
            continue
        m = re.match(r"^(\s*#?\s*)([A-Za-z0-9_.-]+)(\s*=\s*)(.*)$", line)
        if m and SECRET_KEY_NAME.search(m.group(2)):
            out.append(f"{m.group(1)}{m.group(2)}{m.group(3)}\"<removed>\"")
            value = m.group(4).strip()
            in_multiline = value.startswith("[") and "]" not in value
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def config_toml(values: dict) -> str:
    """The effective config (every section) as TOML, secrets blanked."""
    lines = []
    for section, keys in values.items():
        lines.append(f"[{section}]")
        for k, v in keys.items():
            if SECRET_KEY_NAME.search(k):
                v = "<removed>"
            lines.append(f"{k} = {json.dumps(v)}")
        lines.append("")
    return "\n".join(lines)


def pack(members: dict, mtime: float, top: str) -> bytes:
    """{name: text} -> .tar.gz bytes, files under `top/`, mode 0644, owner root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for name, text in members.items():
            data = text.encode() if isinstance(text, str) else text
            ti = tarfile.TarInfo(f"{top}/{name}")
            ti.size, ti.mtime, ti.mode = len(data), int(mtime), 0o644
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _run(argv, timeout=10.0) -> str:
    if shutil.which(argv[0]) is None:
        return f"{argv[0]}: not installed on this machine\n"
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           errors="replace")
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{' '.join(argv)}: {e}\n"
    return p.stdout + (f"\n[exit {p.returncode}] {p.stderr.strip()}\n" if p.returncode else "")


def _read(path, limit=65536) -> str | None:
    try:
        with open(path, errors="replace") as f:
            return f.read(limit)
    except OSError:
        return None


def versions_text() -> str:
    from importlib import metadata

    lines = [f"homenode {__version__}", f"python {sys.version.split()[0]}",
             f"kernel {' '.join(platform.uname())}"]
    for lib in LIBS:
        try:
            lines.append(f"{lib} {metadata.version(lib)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{lib} not installed")
    osr = _read("/etc/os-release")
    if osr:
        lines += ["", "/etc/os-release:", osr.strip()]
    manifest = _read("/usr/share/homenode/manifest.txt", 200_000)
    if manifest:
        lines += ["", "/usr/share/homenode/manifest.txt:", manifest.strip()]
    return "\n".join(lines) + "\n"


def log_text(extra_log: str | None = None) -> str:
    """The recent node log: journald's when it has one, else a note (and `extra_log`)."""
    parts = []
    if shutil.which("journalctl"):
        out = _run(["journalctl", "-u", "homenode", "-n", str(LOG_LINES), "--no-pager",
                    "-o", "short-iso"], timeout=20)
        parts.append(f"journalctl -u homenode (last {LOG_LINES} lines, all boots kept):\n{out}")
    else:
        parts.append("journald is absent on this machine: no system log included.\n")
    if extra_log is not None:
        parts.append(f"\nnode output given with --log (last {LOG_LINES} lines):\n"
                     + "\n".join(extra_log.splitlines()[-LOG_LINES:]) + "\n")
    return "".join(parts)


def throttle_text(sysfs_root: str = "/") -> str:
    from hal.core.thermal import decode_throttled

    lines = []
    sysfs = os.path.join(sysfs_root, "sys/devices/platform/soc/soc:firmware/get_throttled")
    raw = _read(sysfs)
    lines.append(f"{sysfs}: {raw.strip() if raw else 'absent'}")
    lines.append("vcgencmd get_throttled: " + _run(["vcgencmd", "get_throttled"]).strip())
    value = None
    for text in (raw, lines[-1].partition("=")[2]):
        try:
            value = int(text.strip(), 0) if text and text.strip() else None
        except ValueError:
            value = None
        if value is not None:
            break
    if value is not None:
        lines.append(f"decoded 0x{value:x}: {json.dumps(decode_throttled(value))}")
    return "\n".join(lines) + "\n"


def disk_text(data_dir: str, sysfs_root: str = "/") -> str:
    lines = []
    try:
        st = os.statvfs(data_dir)
        lines.append(f"data dir {data_dir}: {st.f_bavail * st.f_frsize} bytes free of "
                     f"{st.f_blocks * st.f_frsize}; inodes free {st.f_favail}")
    except OSError as e:
        lines.append(f"data dir {data_dir}: {e}")
    try:
        for name in sorted(os.listdir(data_dir)):
            try:
                size = os.stat(os.path.join(data_dir, name)).st_size
            except OSError:
                size = "?"
            lines.append(f"  {name}  {size} bytes")
    except OSError as e:
        lines.append(f"  (cannot list: {e.strerror})")
    mounts = _read("/proc/mounts") or ""
    lines += ["", "mounts:"] + [m for m in mounts.splitlines()
                                if m.split(" ")[1:2] and m.split(" ")[1] in ("/", "/var/lib/homenode",
                                                                             "/boot/firmware")]
    block = os.path.join(sysfs_root, "sys/block")
    try:
        disks = sorted(os.listdir(block))
    except OSError:
        disks = []
    for disk in disks:
        if disk.startswith(("loop", "ram", "zram")):
            continue
        stat = _read(os.path.join(block, disk, "stat"))
        lines.append(f"/sys/block/{disk}/stat: {stat.split() if stat else 'unreadable'}")
        for attr in ("name", "type", "date", "life_time", "pre_eol_info"):
            v = _read(os.path.join(block, disk, "device", attr))
            if v:
                lines.append(f"  device/{attr}: {v.strip()}")
    ext4 = os.path.join(sysfs_root, "sys/fs/ext4")
    try:
        for dev in sorted(os.listdir(ext4)):
            errs = _read(os.path.join(ext4, dev, "errors_count"))
            if errs is not None:
                lines.append(f"ext4 {dev}: errors_count {errs.strip()}")
    except OSError:
        pass
    return "\n".join(lines) + "\n"


def node_bundle(cfg, data_dir: str, info: dict | None, history=None, *,
                extra_log: str | None = None, status_error: str | None = None,
                now: float | None = None) -> tuple[str, bytes]:
    """(file name, .tar.gz bytes) for the node whose config is `cfg`."""
    from firmware.net.settings import parse_bootstrap

    now = time.time() if now is None else now
    info = jsonable(info) if info is not None else None
    own = (info or {}).get("node_id") or _own_id(data_dir)
    keep = {own} if own else set()
    values = cfg.as_dict()
    for entry in values.get("network", {}).get("bootstrap", []):
        try:
            keep.add(parse_bootstrap(entry)[2].hex())
        except ValueError:
            pass
    keep.update(values.get("network", {}).get("deny", []))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    top = f"homenode-diag-{(own or 'unknown')[:8]}-{stamp}"
    health = ({k: info.get(k) for k in ("health", "health_reason", "state", "uptime_s")}
              | {"device": info.get("device")} if info else {"error": status_error})
    members = {
        "README.txt": (
            "homenode diagnostics bundle\n"
            f"made {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(now))}\n\n"
            "versions.txt    firmware, Python, libraries, OS, kernel\n"
            "config.toml     the settings in effect (secrets removed)\n"
            "config-file.toml the file they came from (secrets removed)\n"
            "health.json     the LED state, its reason, sensors and governors\n"
            "status.json     every counter the node reports\n"
            "history.json    the chart history (24 h and 30 days)\n"
            "log.txt         the recent log\n"
            "throttling.txt  the firmware's under-voltage / throttle flags\n"
            "disk.txt        free space, the card's counters, filesystem errors\n\n"
            "Never included: the node's private key, message data, recipient ids. Every long\n"
            "hex or base64 string except this node's id and the node ids in its config is\n"
            "replaced by <removed: ...>.\n"),
        "versions.txt": versions_text(),
        "config.toml": config_toml(values),
        "health.json": json.dumps(health, indent=2, sort_keys=True) + "\n",
        "status.json": (json.dumps(info, indent=2, sort_keys=True) + "\n" if info else
                        f"the node did not answer: {status_error}\n"),
        "history.json": (json.dumps(history.as_json()) + "\n" if history is not None else
                         "no chart history saved yet (the node writes it every "
                         f"{cfg.web.history_save_interval:g} s and when it stops)\n"),
        "log.txt": log_text(extra_log),
        "throttling.txt": throttle_text(cfg.hal.sysfs_root),
        "disk.txt": disk_text(data_dir, cfg.hal.sysfs_root),
    }
    if cfg.source:
        members["config-file.toml"] = redact_toml(_read(cfg.source) or "(unreadable)\n")
    members = {name: scrub(text, keep) for name, text in members.items()}
    return top + ".tar.gz", pack(members, now, top)


def _own_id(data_dir: str) -> str | None:
    try:
        with open(os.path.join(data_dir, "node.json")) as f:
            return json.load(f).get("node_id")
    except (OSError, ValueError):
        return None


# -- a child process builds the page's bundle --------------------------------------------------
# Why: making a bundle imports tarfile, gzip, platform and importlib.metadata (~1.5 MiB that a
# long-running node would keep for good) and runs journalctl and vcgencmd; a short-lived child
# keeps all of that out of the node and off its event loop.


def child_request(cfg, data_dir: str, info: dict, history) -> bytes:
    """What the node sends the child on stdin (JSON: no secrets in any of it)."""
    import base64

    return json.dumps({"config": cfg.as_dict(), "source": cfg.source, "data_dir": data_dir,
                       "info": jsonable(info),
                       "history": base64.b64encode(history.to_bytes()).decode()
                       if history is not None else None}).encode()


def child_main(stdin=None, stdout=None) -> int:
    import base64

    from firmware.config import Config
    from firmware.web.history import History

    req = json.loads((stdin or sys.stdin.buffer).read())
    cfg = Config(req["config"], req["source"])
    history = (History.from_bytes(base64.b64decode(req["history"]))
               if req.get("history") else None)
    name, data = node_bundle(cfg, req["data_dir"], req["info"], history)
    out = stdout or sys.stdout.buffer
    out.write(name.encode() + b"\n" + data)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
