"""The image side of the page, checked without QEMU: systemd hands port 80 to the unprivileged
node (socket activation, tried for real with systemd-socket-activate), the unit stays as hardened
as before, and avahi's service file announces the page and the node port."""

import os
import shutil
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from firmware.settings import default_schema
from firmware.web.activation import named_fds
from tests.conftest import write_toml

SYSTEMD = Path(__file__).resolve().parents[2] / "image/overlay/etc/systemd/system"
AVAHI = Path(__file__).resolve().parents[2] / "image/overlay/etc/avahi/services/homenode.service"


def settings(path):
    return [tuple(x.strip() for x in line.split("=", 1)) for line in path.read_text().splitlines()
            if "=" in line and not line.lstrip().startswith("#")]


def test_named_fds_follows_the_sd_listen_fds_protocol():
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:other"}
    assert named_fds(env, 42) == {"web": 3, "other": 4}
    assert named_fds(env, 43) == {}  # meant for another process (inherited by mistake)
    assert named_fds({"LISTEN_PID": "42", "LISTEN_FDS": "1"}, 42) == {"fd0": 3}
    assert named_fds({"LISTEN_PID": "42", "LISTEN_FDS": "x"}, 42) == {}


def test_socket_unit_feeds_the_node_and_the_unit_keeps_its_exposure():
    sock = dict(settings(SYSTEMD / "homenode-web.socket"))
    assert sock["ListenStream"] == "80" and sock["FileDescriptorName"] == "web"
    assert sock["Service"] == "homenode.service"
    unit = settings(SYSTEMD / "homenode.service")
    assert ("Sockets", "homenode-web.socket") in unit
    # port 80 needs no capability (systemd binds it); the one the unit keeps is for a bridge's 443
    assert ("User", "homenode") in unit
    assert ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE") in unit
    assert "systemd-journal" in dict(unit)["SupplementaryGroups"].split()
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is missing (Debian's systemd package)"
    r = subprocess.run([exe, "security", "--offline=true", str(SYSTEMD / "homenode.service")],
                       capture_output=True, text=True, timeout=60)
    level = float(r.stdout.strip().splitlines()[-1].split(": ", 1)[1].split()[0])
    assert level <= 2.0, r.stdout[-500:]


def test_avahi_file_announces_the_page_and_the_node_port():
    root = ET.parse(AVAHI).getroot()
    services = {s.findtext("type"): int(s.findtext("port")) for s in root.iter("service")}
    node_port = default_schema().load(None).node.listen_port
    assert services == {"_http._tcp": 80, "_homenode._tcp": node_port}


def test_node_serves_the_page_on_a_socket_systemd_passed(tmp_path):
    """systemd-socket-activate binds the port (as systemd would port 80), starts the node on
    the first connection and passes the socket as LISTEN_FDNAMES=web."""
    exe = shutil.which("systemd-socket-activate")
    assert exe, "systemd-socket-activate is missing (Debian's systemd package)"
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    cfg = write_toml(tmp_path / "homenode.toml", {
        "node": {"listen_port": 0, "data_dir": str(tmp_path / "data")},
        "network": {"enabled": False}, "web": {"port": 1}})  # port 1 would fail: not used
    proc = subprocess.Popen([exe, "-l", f"127.0.0.1:{port}", "--fdname=web", sys.executable,
                             "-m", "firmware.cli", "run", "--config", cfg],
                            stdout=open(tmp_path / "out.log", "wb"), stderr=subprocess.STDOUT,
                            cwd=tmp_path)
    try:
        deadline = time.monotonic() + 10
        while True:  # until systemd-socket-activate listens
            try:
                c = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        with c:
            c.sendall(b"GET /status.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data = b""
            while chunk := c.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK"), data[:200]
        assert b'"node_id": "' in data and b'"health": "' in data
    finally:
        proc.terminate()
        proc.wait(20)
    assert f"web_serving address=127.0.0.1:{port}" in (tmp_path / "out.log").read_text()
    assert os.path.exists(tmp_path / "data" / "node.key")
