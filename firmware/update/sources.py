"""Where bundles come from besides `homenode update apply FILE`: a `.raucb` dropped on the boot
partition from a PC, one on a USB stick, and the release channel (signed index + download).

Each source hands a file to `Updater.apply`, which checks the signature before anything is
written. A bundle is not retried by itself once it failed its trial or was refused, and one
whose version is already running is skipped, so a stick left in the port cannot loop.
"""

import contextlib
import hashlib
import os
import subprocess
import time

from firmware.update import layout
from firmware.update.rauc import RaucError
from firmware.update.updater import UpdateDeferred, Updater, UpdateRefused

DOWNLOADS = "/data/system/update/download"
USB_MOUNT = "/run/homenode-update/usb"
KEYRING = "/etc/rauc/keyring.pem"
FETCH_TIMEOUT_S = 30  # per network read
INDEX_DEADLINE_S = 120
CHUNK = 1 << 16
FREE_MARGIN = 256 << 20  # leave the node this much on the data partition


def bundles_in(directory: str) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names
            if n.lower().endswith(".raucb") and os.path.isfile(os.path.join(directory, n))]


def install_from(updater: Updater, paths: list[str], source: str, consume: bool) -> list[str]:
    """Try each bundle (skipping running and declined ones); `consume` deletes an installed
    bundle and renames a refused one (the boot partition: the owner sees what happened)."""
    results = []
    for path in paths:
        name = os.path.basename(path)
        try:
            info = updater.check_bundle(path)
        except UpdateRefused as e:
            updater.record_refusal(str(e), None)
            results.append(str(e))
            if consume:
                with contextlib.suppress(OSError):
                    os.replace(path, path + ".refused")
            continue
        if info.version == updater.version:
            results.append(f"{name}: {info.version} is already running")
            if consume:
                _remove(path)
            continue
        updater.history.refresh()  # the gate or another installer may have written since
        if updater.history.declined(info.key):
            results.append(f"{name}: {info.version} failed before; not retried by itself "
                           "(install it with `homenode update apply`)")
            continue
        try:
            # consume: the copy is deleted once installed, before the restart apply() may start
            results.append(updater.apply(path, source=source, checked=info,
                                         on_installed=(lambda p=path: _remove(p)) if consume
                                         else None))
            return results
        except UpdateDeferred as e:  # kept where it is, offered again at the next scan
            results.append(f"{name}: {e}")
            return results
        except (UpdateRefused, RaucError) as e:
            results.append(str(e))
            if consume:
                with contextlib.suppress(OSError):
                    os.replace(path, path + ".refused")
    return results


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def scan_boot_partition(updater: Updater) -> list[str]:
    return install_from(updater, bundles_in(layout.BOOTFS_MOUNT), "boot partition", consume=True)


def scan_usb(updater: Updater, device: str, run=subprocess.run) -> list[str]:
    """Mount the stick read-only, install the first usable bundle at its top level."""
    os.makedirs(USB_MOUNT, exist_ok=True)
    out = run(["mount", "-o", "ro,nosuid,nodev,noexec", device, USB_MOUNT], capture_output=True,
              text=True, timeout=60)
    if out.returncode != 0:
        return [f"{device}: cannot mount it read-only: {out.stderr.strip()}"]
    try:
        found = bundles_in(USB_MOUNT)
        if not found:
            return [f"{device}: no .raucb bundle at its top level"]
        # copy first: the stick may be pulled while RAUC reads it
        local = []
        for path in found:
            dst = os.path.join(DOWNLOADS, "usb-" + os.path.basename(path))
            os.makedirs(DOWNLOADS, exist_ok=True)
            _copy(path, dst)
            local.append(dst)
    finally:
        run(["umount", USB_MOUNT], capture_output=True, timeout=60)
    try:
        return install_from(updater, local, "USB stick", consume=False)
    finally:
        for p in local:
            with contextlib.suppress(OSError):
                os.unlink(p)


def _copy(src: str, dst: str) -> None:
    with open(src, "rb") as i, open(dst + ".part", "wb") as o:
        while chunk := i.read(1 << 20):
            o.write(chunk)
        o.flush()
        os.fsync(o.fileno())
    os.replace(dst + ".part", dst)


# --- the release channel -----------------------------------------------------------------------

def _urlopen(url, timeout):
    import urllib.request  # imported when the channel is used (ssl, http: slow on a Pi Zero)

    return urllib.request.urlopen(url, timeout=timeout)


def fetch(url: str, limit: int, deadline: float, opener=_urlopen) -> bytes:
    """GET `url` into memory, at most `limit` bytes, by `deadline` (monotonic)."""
    with opener(url, timeout=FETCH_TIMEOUT_S) as r:
        data = b""
        while chunk := r.read(CHUNK):
            data += chunk
            if len(data) > limit:
                raise OSError(f"{url}: more than {limit} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: not complete within the deadline")
    return data


def download(url: str, dest: str, size: int, sha256: str, opener=_urlopen) -> str:
    """Stream `url` to `dest`, checking size and sha256 (from the signed index)."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    st = os.statvfs(os.path.dirname(dest))
    if st.f_bavail * st.f_frsize < size + FREE_MARGIN:
        raise OSError(f"not enough space on the data partition for a {size >> 20} MiB bundle")
    h = hashlib.sha256()
    got = 0
    deadline = time.monotonic() + max(600.0, size / 50_000)  # at least 50 kB/s
    with opener(url, timeout=FETCH_TIMEOUT_S) as r, open(dest + ".part", "wb") as f:
        while chunk := r.read(1 << 20):
            got += len(chunk)
            if got > size:
                raise OSError(f"{url}: larger than the {size} bytes the index announced")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: download too slow, gave up")
            h.update(chunk)
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    if got != size or h.hexdigest() != sha256:
        os.unlink(dest + ".part")
        raise OSError(f"{url}: size or sha256 differs from the signed index (got {got} bytes)")
    os.replace(dest + ".part", dest)
    return dest


def check_channel(updater: Updater, index_url: str, keyring: str = KEYRING, force: bool = False,
                  opener=_urlopen, downloads: str = DOWNLOADS) -> str:
    from firmware.update import index as release_index  # cryptography: only when checking

    s = updater.settings
    history = updater.history
    history.refresh()
    if s.channel == "off" and not force:
        return "release channel off ([update] channel = \"off\")"
    if not index_url:
        return "no release index address (set [update] index_url)"
    now = updater.clock()
    if not force and now - float(history.data.get("last_check", 0)) < s.check_interval_h * 3600:
        return "not due yet"
    with history.change():
        history.data["last_check"] = int(now)
    deadline = time.monotonic() + INDEX_DEADLINE_S
    data = fetch(index_url, release_index.MAX_INDEX_BYTES, deadline, opener)
    sig = fetch(index_url + ".sig", 64 << 10, deadline, opener)
    with open(keyring, "rb") as f:
        idx = release_index.load(data, sig, f.read(), layout.COMPATIBLE,
                                 history.data.get("index_generated"))
    with history.change():  # never lowered, whatever another check stored meanwhile
        history.data["index_generated"] = max(idx.generated,
                                              history.data.get("index_generated") or 0)
    channel = "all" if force and s.channel == "off" else s.channel
    rel = release_index.choose(idx, updater.version, channel, history.declined_releases())
    if rel is None:
        return f"up to date ({updater.version}; channel {channel})"
    url = release_index.bundle_url(index_url, rel)
    dest = os.path.join(downloads, f"homenode-{rel.version}.raucb")
    updater.log(f"downloading {rel.version} from {url}")
    download(url, dest, rel.size, rel.sha256, opener)
    try:
        return updater.apply(dest, source=f"release channel ({rel.version})")
    except UpdateDeferred:
        raise  # offered again at the next check
    except (UpdateRefused, RaucError):
        with history.change():
            history.decline(rel.sha256, release=True)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(dest)
