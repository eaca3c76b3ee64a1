"""The operator's window on the booted image (qemu-system-aarch64 -M virt): the page on port 80
reached from the host through a forwarded port, `homenode.local` answered by the guest's mDNS
stack, and the chart history kept across a reboot under its size cap.
"""

import io
import json
import subprocess
import tarfile
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from firmware.update import layout
from qemu.guest import Guest
from qemu.harness import Machine, extract_partition, fat_write

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

CARD_MIB = 4096
PORTS = {"node": 7070, "ssh": 22, "web": 80}


def machine(sd_image, tmp_path):
    return Machine(sd_image.raw, tmp_path / "vm", disk_size_mib=CARD_MIB, guest_ports=PORTS,
                   max_runtime=2400)


def get(m, path, host=None, timeout=60):
    port = m.ports["web"]
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Host": host or f"127.0.0.1:{port}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def page_state(html: bytes) -> str:
    return html.split(b'id=led data-state="', 1)[1].split(b'"', 1)[0].decode()


def ssh_config(tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = (tmp_path / "id_ed25519.pub").read_text().strip()
    # [network] pow_bits: the id's proof of work is a network parameter; at the default 24 bits
    # it runs for minutes under QEMU's emulation (LED and page: booting), and the page would
    # change state between two requests of this test
    return key, (f'[device]\nhostname = "homenode"\n\n[ssh]\nauthorized_keys = ["{pub}"]\n\n'
                 "[network]\npow_bits = 12\n")


def test_the_owners_window_on_a_booted_box(sd_image, tmp_path):
    """One boot (and one reboot) for everything the owner sees, to keep CI's QEMU time down:
    the page through the forwarded port 80, DNS rebinding refused, /metrics for Prometheus'
    parser, the diagnostics bundle with the journal; homenode.local and both DNS-SD services
    inside the guest, and the node's own LAN discovery (avahi-browse) running; the chart
    history kept across the reboot under its cap."""
    key, toml = ssh_config(tmp_path)
    with machine(sd_image, tmp_path) as m:
        fat_write(m.disk, "homenode.toml", toml.encode(), tmp_path)
        g = Guest(m)
        g.boot()
        started = time.monotonic()
        # the page, from the host
        status, html = m.wait_until(lambda: get(m, "/"), 120, "status page on port 80")
        assert status == 200
        assert page_state(html) == g.status()["health"]
        assert g.node_id.encode() in html
        _, metrics = get(m, "/metrics")
        names = {f.name for f in text_string_to_metric_families(metrics.decode())}
        assert {"homenode_messages_stored", "homenode_health_state"} <= names
        try:
            get(m, "/", host="attacker.example")
            raise AssertionError("a foreign Host was served")
        except urllib.error.HTTPError as e:
            assert e.code == 421
        _, bundle = get(m, "/diag.tar.gz", timeout=120)
        with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
            log = [tar.extractfile(x).read() for x in tar.getmembers()
                   if x.name.endswith("/log.txt")][0]
        assert b"journalctl -u homenode" in log and b"serving" in log  # journald, readable
        # the name on the LAN, inside the guest
        m.wait_until(lambda: m.ssh_banner().startswith(b"SSH-2.0"), 120, "sshd answering")
        r = m.wait_until(
            lambda: (lambda r: r if r.returncode == 0 and r.stdout.strip() else None)(
                m.ssh(key, "getent hosts homenode.local")), 120, "homenode.local via mDNS")
        assert r.stdout.split()[1] == "homenode.local"
        # DNS-SD: both services resolved through avahi-daemon's own D-Bus API (busctl ships
        # with systemd; avahi-utils is not in the image): the announced host name and port
        for service, port in (("_homenode._tcp", 7070), ("_http._tcp", 80)):
            r = m.ssh(key, "busctl --system -- call org.freedesktop.Avahi / "
                           "org.freedesktop.Avahi.Server ResolveService iisssiu -1 -1 "
                           f"'homenode homenode' {service} local -1 0")
            assert r.returncode == 0, r.stderr
            assert f'"{service}" "local" "homenode.local"' in r.stdout, r.stdout
            assert f" {port} " in r.stdout, r.stdout
        r = m.ssh(key, "/opt/homenode/bin/python3 -c \"import urllib.request;print(urllib."
                       "request.urlopen('http://homenode.local/status.json').status)\"")
        assert r.stdout.strip() == "200", r.stderr
        # the history: one sample a minute into 2-minute buckets; samples spanning > 120 s fill
        # two buckets (and this is past the 60 s no-save window after start)
        time.sleep(max(0.0, started + 270 - time.monotonic()))
        # LAN discovery has browsed with avahi-browse by now (a round a minute) and still runs
        assert g.status()["join"]["lan_discovery"] == "on"
        _, bundle = get(m, "/diag.tar.gz", timeout=120)
        before = _history(bundle)
        assert len(before["day"]["series"]["messages"]) >= 2
        m.powerdown()  # a clean stop saves the history (durably: fsync + rename + dir fsync)
        part = extract_partition(m.disk, layout.DATA_PART, tmp_path / "data.ext4")
        r = subprocess.run(["debugfs", "-R", "stat /homenode/history.bin", str(part)],
                           capture_output=True, text=True)
        size = int(r.stdout.split("Size: ")[1].split()[0])
        assert 0 < size <= 2 * 1024 * 1024
        part.unlink()
        g2 = Guest(m)
        g2.boot()
        _, bundle = m.wait_until(lambda: get(m, "/diag.tar.gz", timeout=120), 120,
                                 "the page after the reboot")
        after = _history(bundle)
        old = {t for t, _ in before["day"]["series"]["messages"]}
        kept = {t for t, _ in after["day"]["series"]["messages"]}
        assert old & kept and old - kept <= {max(old)}, "points from before the reboot lost"
        m.powerdown()


def _history(bundle: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.name.endswith("/history.json"):
                return json.loads(tar.extractfile(member).read())
    raise AssertionError("no history.json in the bundle")
