"""The few RAUC commands the updater uses, as functions over a `run` callable (subprocess.run
on the device, a recorder in tests). RAUC does the real work: signature and compatibility
checks, writing the inactive slot group, the bootloader switch, its own slot records."""

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

PROGRESS = re.compile(r"^\s*(\d{1,3})% (.*)$")


class RaucError(RuntimeError):
    """A RAUC command failed; the message is RAUC's own last error line."""


@dataclass(frozen=True)
class BundleInfo:
    compatible: str
    version: str
    build: str
    key: str  # what identifies this bundle in our records (manifest build + image checksums)


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "LastError:" in ln:
            return ln.split("LastError:", 1)[1].strip()
    for ln in reversed(lines):
        if "error" in ln.lower() or "fail" in ln.lower():
            return ln
    return lines[-1] if lines else "no output"


def info(path: str, run=subprocess.run, keyring: str | None = None) -> BundleInfo:
    """Verify the bundle's signature against the keyring and read its manifest. Nothing is
    written anywhere; a bundle that fails here was never installed."""
    cmd = ["rauc", "info", "--output-format=json", path]
    if keyring:
        cmd.insert(2, f"--keyring={keyring}")
    out = run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RaucError(_last_error(out.stderr + out.stdout))
    try:
        doc = json.loads(out.stdout[out.stdout.index("{"):])
    except ValueError:
        raise RaucError(f"rauc info printed no manifest: {out.stdout[-200:]!r}") from None
    sums = sorted(str(v.get("checksum")) for img in doc.get("images", [])
                  for v in img.values() if isinstance(v, dict))
    return BundleInfo(compatible=str(doc.get("compatible")), version=str(doc.get("version")),
                      build=str(doc.get("build") or ""),
                      key=f"{doc.get('build') or ''}:{'+'.join(sums)}")


def verify_payload(path: str, run=subprocess.run, under: str = "/run/homenode-update",
                   read=None) -> None:
    """Read the whole bundle payload through dm-verity before anything is installed: RAUC 1.13
    installs a verity bundle while reading it (its `perform-pre-check` did not run for an
    install here), so a block changed after signing showed up only halfway through writing the
    other slot. `rauc mount` sets up the same verity device RAUC installs from; reading every
    block of it (~200 MB, under 2 s in QEMU) turns a tampered bundle into a refusal with every
    slot untouched. Raises RaucError naming the failure."""
    os.makedirs(under, mode=0o755, exist_ok=True)
    prefix = tempfile.mkdtemp(prefix="check-", dir=under)
    mount = os.path.join(prefix, "bundle")
    try:
        out = run(["rauc", "mount", f"--mount={prefix}", path], capture_output=True, text=True,
                  timeout=300)
        if out.returncode != 0:
            raise RaucError(_last_error(out.stderr + out.stdout))
        try:
            src = run(["findmnt", "-n", "-o", "SOURCE", mount], capture_output=True, text=True,
                      timeout=60).stdout.strip()
            (read or _read_all)(src)
        except OSError as e:
            raise RaucError(f"payload verification failed: the bundle was changed after it was "
                            f"signed (verity: {e.strerror or e})") from None
        finally:
            run(["umount", mount], capture_output=True, timeout=120)
    finally:
        for d in (mount, prefix):
            try:
                os.rmdir(d)
            except OSError:
                pass


def _read_all(device: str) -> None:
    with open(device, "rb", buffering=0) as f:
        while f.read(1 << 20):
            pass


def install(path: str, on_progress, run_lines) -> None:
    """`rauc install`; `on_progress(percent, message)` per progress line. `run_lines(cmd)`
    yields output lines and finally returns the exit status (see `popen_lines`)."""
    tail: list[str] = []
    gen = run_lines(["rauc", "install", path])
    while True:
        try:
            line = next(gen)
        except StopIteration as stop:
            status = stop.value
            break
        tail = (tail + [line])[-30:]
        m = PROGRESS.match(line)
        if m:
            on_progress(int(m.group(1)), m.group(2).strip())
    if status != 0:
        raise RaucError(_last_error("\n".join(tail)))


def popen_lines(cmd):
    """Generator over a command's combined output lines; returns its exit status."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        yield line.rstrip("\n")
    return proc.wait()


def status(run=subprocess.run) -> dict:
    out = run(["rauc", "status", "--detailed", "--output-format=json"], capture_output=True,
              text=True, timeout=120)
    if out.returncode != 0:
        raise RaucError(_last_error(out.stderr + out.stdout))
    return json.loads(out.stdout[out.stdout.index("{"):])


def slot_versions(status_doc: dict) -> dict[str, dict]:
    """bootname -> {"version", "installed", "boot_status"} from `rauc status` JSON."""
    out = {}
    for entry in status_doc.get("slots", []):
        for _name, slot in entry.items():
            if not isinstance(slot, dict) or not slot.get("bootname"):
                continue
            st = slot.get("slot_status") or {}
            bundle = st.get("bundle") or {}
            installed = st.get("installed") or {}
            out[slot["bootname"]] = {"version": bundle.get("version"),
                                     "installed": installed.get("timestamp"),
                                     "boot_status": slot.get("boot_status")}
    return out


def mark(state: str, slot: str = "booted", run=subprocess.run) -> None:
    """`rauc status mark-good|mark-bad|mark-active booted|other|<slot>`."""
    out = run(["rauc", "status", f"mark-{state}", slot], capture_output=True, text=True,
              timeout=120)
    if out.returncode != 0:
        raise RaucError(_last_error(out.stderr + out.stdout))
