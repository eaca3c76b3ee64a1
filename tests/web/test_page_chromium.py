"""The status page in real headless Chromium, served by a real node, while the box is driven
through the LED states: each time the page shows the state `homenode status --json` reports.
Screenshots at phone and desktop sizes land in dist/screenshots/ (CI keeps them).

How each state is reached, for real:
  healthy, throttled (76 degC), under_voltage (throttle flags 0x1): a node process on a fake
      Pi sysfs tree whose files the test rewrites;
  connecting: a node whose only bootstrap peer does not answer;
  storage_trouble: a node whose free-space floor is above what the disk has;
  booting, fatal_error, safe_to_unplug: a node in this process (its button is a gpiozero
      MockFactory pin): held in start-up by a service that has not started yet, then a factory
      reset that fails (its key file was removed), then a 3 s hold (safe shutdown, whose
      command waits for the test);
  needs_setup: test_page_needs_setup_in_a_network_namespace (netns: a namespace with only lo).
booting comes before the node's client listener starts, fatal_error and safe_to_unplug after the
button's reset or shutdown drained it, so `homenode status` cannot reach the node then: there the
page is compared with the node's own state and the CLI's failure is asserted.
Not reachable yet: `updating` - nothing calls DeviceServices.set_phase("updating") until the
image work's update service (firmware/update) lands.
"""

import io
import json
import os
import shlex
import subprocess
import sys
import time
from html import unescape

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from firmware.identity import NODE_KEY_FILE
from firmware.logs import Log
from firmware.node import Node
from firmware.settings import default_schema
from hal.core import led
from tests.conftest import NodeProcess, write_toml
from tests.hal.fakesys import FakeSys
from tests.web import browser

pytestmark = pytest.mark.slow
SEEN: dict[str, str] = {}  # state -> where it was shown (filled by the tests below)


def fake_pi(tmp_path, name="sysroot"):
    return FakeSys(tmp_path / name).pi(temp="50000\n", throttled="0\n")


def pi_config(fake, **sections):
    cfg = {"hal": {"backend": "pi", "sysfs_root": str(fake.root), "poll_interval": 0.05,
                   "vcgencmd": ""},
           "network": {"enabled": False}}
    for name, keys in sections.items():
        cfg.setdefault(name, {}).update(keys)
    return cfg


async def status_json(args) -> dict:
    with trio.fail_after(60):  # the CLI bounds itself (--timeout 10); this bounds the test
        r = await trio.run_process([sys.executable, "-m", "firmware.cli", "status", "--json",
                                    *args], capture_stdout=True, capture_stderr=True,
                                   check=False)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


async def wait_health(args, want, timeout=30.0) -> dict:
    info = None
    with trio.move_on_after(timeout):
        while True:
            info = await status_json(args)
            if info["health"] == want:
                return info
            await trio.sleep(0.1)
    raise AssertionError(f"never {want}; last status {info}")


async def check_page(url, status_args, want, shots=True, netns=None):
    """The page shows `want`, the same as `homenode status --json` before and after."""
    before = await wait_health(status_args, want)
    html = await browser.dom(url, netns)
    after = await status_json(status_args)
    assert browser.page_state(html) == want == after["health"], (want, after["health"])
    p = led.state_pattern(want)
    text = unescape(html)  # Chromium serialises text with its own escaping
    assert p.meaning in text and p.action in text
    if before.get("health_reason"):
        assert before["health_reason"][:30] in text
    if shots:
        await browser.screenshot(url, f"{want}-phone.png", browser.PHONE, netns)
        await browser.screenshot(url, f"{want}-desktop.png", browser.DESKTOP, netns)
    SEEN[want] = url
    return html


async def only_the_page_answers(node, url, status_args, state, cli_says, page_says):
    """The in-process `node`'s client listener is down: `homenode status` gets no answer (its
    stderr has `cli_says`), so the page - its own listener - is the only window, and it must
    agree with the node's state."""
    with trio.fail_after(20):
        while node.device.health.state != state:
            await trio.sleep(0.05)
    r = await trio.run_process([sys.executable, "-m", "firmware.cli", "status", "--json",
                                "--timeout", "2", *status_args], capture_stdout=True,
                               capture_stderr=True, check=False)
    assert r.returncode == 1 and cli_says in r.stderr, r.stderr
    html = await browser.dom(url)
    assert browser.page_state(html) == state == node.device.health.state
    assert page_says in html
    await browser.screenshot(url, f"{state}-phone.png", browser.PHONE)
    await browser.screenshot(url, f"{state}-desktop.png", browser.DESKTOP)
    SEEN[state] = url


def page_url(info):
    return f"http://{info['web']['address']}/"


async def test_page_follows_the_sensors_of_a_node_process(tmp_path):
    fake = fake_pi(tmp_path)
    node = NodeProcess(tmp_path, pi_config(fake))
    node.start()
    try:
        args = ["--data-dir", node.data_dir]
        info = await wait_health(args, "healthy")
        url = page_url(info)
        html = await check_page(url, args, "healthy")
        assert node.node_id.hex() in html
        # the QR code on the page decodes (zbarimg on Chromium's screenshot) to the full id
        shot = os.path.join(browser.SCREENSHOTS, "healthy-desktop.png")
        r = subprocess.run(["zbarimg", "-q", "--raw", shot], capture_output=True, text=True)
        assert r.stdout.strip() == node.node_id.hex(), r.stderr
        fake.thermal_zone(0, "76000\n")
        html = await check_page(url, args, "throttled")
        assert "76.0 °C (hot)" in html
        # /metrics of the same node says the same, through prometheus_client's parser
        web_host, web_port = info["web"]["address"].rsplit(":", 1)
        s = await trio.open_tcp_stream(web_host, int(web_port))
        await s.send_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        raw = b""
        while chunk := await s.receive_some(65536):
            raw += chunk
        fams = {f.name: f for f in text_string_to_metric_families(
            raw.split(b"\r\n\r\n", 1)[1].decode())}
        states = {x.labels["state"]: x.value for x in fams["homenode_health_state"].samples}
        assert states["throttled"] == 1 and sum(states.values()) == 1
        assert fams["homenode_temperature_celsius"].samples[0].value == 76.0
        fake.thermal_zone(0, "50000\n")
        await wait_health(args, "healthy")
        fake.throttled("0x1\n")
        await check_page(url, args, "under_voltage")
        fake.throttled("0x0\n")
        await wait_health(args, "healthy")
        # identify from the page's own form (token + same origin), as the button sends it
        token = html.split('name="token" value="')[1].split('"')[0]
        body = f"token={token}".encode()
        req = (f"POST /identify HTTP/1.1\r\nHost: {info['web']['address']}\r\nOrigin: "
               f"http://{info['web']['address']}\r\nContent-Type: application/x-www-form-"
               f"urlencoded\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        host, port = info["web"]["address"].rsplit(":", 1)
        s = await trio.open_tcp_stream(host, int(port))
        await s.send_all(req)
        assert (await s.receive_some(100)).startswith(b"HTTP/1.1 303")
        await s.aclose()
        st = await status_json(args)
        assert st["device"]["led_overlay"] == "identify"
        html = await browser.dom(url + "?identified=1")
        assert "Showing now: identify" in html and "blinking white" in html
    finally:
        node.stop()


async def test_page_connecting_needs_setup_and_storage_trouble(tmp_path):
    fake = fake_pi(tmp_path)
    lonely = NodeProcess(tmp_path, pi_config(fake, network={
        "enabled": True, "bootstrap": ["127.0.0.1:9@" + "11" * 32],
        "gossip_interval": 0.5}), name="lonely")
    lonely.start()
    try:
        args = ["--data-dir", lonely.data_dir]
        info = await wait_health(args, "connecting")
        assert info["join"]["bootstrap"] == "config"
        await check_page(page_url(info), args, "connecting")
    finally:
        lonely.stop()
    alone = NodeProcess(tmp_path, pi_config(fake, network={"enabled": True},
                                            join={"seed_file": ""}), name="alone")
    alone.start()
    try:
        args = ["--data-dir", alone.data_dir]
        info = await wait_health(args, "needs_setup")
        assert info["join"]["bootstrap"] == "none"
        html = await check_page(page_url(info), args, "needs_setup")
        assert "no bootstrap configured" in html
    finally:
        alone.stop()
    full = NodeProcess(tmp_path, pi_config(fake, storage={"free_floor_mb": 10_000_000,
                                                          "check_interval": 0.1}), name="full")
    full.start()
    try:
        args = ["--data-dir", full.data_dir]
        info = await wait_health(args, "storage_trouble")
        html = await check_page(page_url(info), args, "storage_trouble")
        assert "data partition nearly full" in html
    finally:
        full.stop()


async def test_page_booting_updating_fatal_error_and_safe_to_unplug_in_process(tmp_path,
                                                                               mock_pins):
    fake = fake_pi(tmp_path)
    release = tmp_path / "let-shutdown-finish"
    wait_cmd = shlex.join(["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.05; done"])
    cfg_path = write_toml(tmp_path / "homenode.toml", {
        "node": {"data_dir": str(tmp_path / "data"), "listen_port": 0},
        "web": {"port": 0},
        **pi_config(fake, hal={"button_pin": 3, "rgb_pins": [17, 27, 22],
                               "shutdown_command": wait_cmd}),
    })
    update = [None]  # what the update service will report through Node(update_phase=...)
    node = Node(default_schema().load(cfg_path), log=Log("debug", stream=io.StringIO()),
                out=io.StringIO(), pin_factory=mock_pins, update_phase=lambda: update[0])
    pin = mock_pins.pin(3)
    boot_done = trio.Event()

    async def still_starting(*, task_status=trio.TASK_STATUS_IGNORED):
        await boot_done.wait()  # the node is not done starting until this service is
        task_status.started()

    # one more start-up step, after the page's: the node stays "starting" (LED booting) until
    # the test lets it finish (the node has no public seam for this; it is its start list)
    node._services.append(("test_still_starting", still_starting))

    async def hold(seconds):
        pin.drive_low()
        await trio.sleep(seconds)
        pin.drive_high()
        await trio.sleep(0.1)

    with trio.fail_after(300):  # a hang anywhere below fails with its traceback
        await _drive_in_process(node, update, hold, boot_done, release)
    assert node.device.health.state == "safe_to_unplug"


async def _drive_in_process(node, update, hold, boot_done, release):
    stopped = trio.Event()

    async def run_node():
        await node.run()
        stopped.set()

    async with trio.open_nursery() as n:
        n.start_soon(run_node)
        with trio.fail_after(20):
            while node.web.service.address is None:
                await trio.sleep(0.02)
        url = "http://{}:{}/".format(*node.web.service.address)
        args = ["--node", "{}:{}".format(*node.address), "--node-id", node.identity.id_hex]
        # While it starts, the node's client listener is not up yet (it starts last)
        await only_the_page_answers(node, url, args, "booting", b"no TLS handshake",
                                    "Starting up")
        boot_done.set()
        await check_page(url, args, "healthy", shots=False)
        update[0] = ("updating", "installing homenode 0.2.0")
        html = await check_page(url, args, "updating")
        assert "installing homenode 0.2.0" in html
        update[0] = None
        await check_page(url, args, "healthy", shots=False)
        # factory reset on a data dir whose key file is gone: refused -> fatal error
        os.unlink(os.path.join(node.data_dir, NODE_KEY_FILE))
        await hold(10.5)
        await trio.sleep(1)
        await hold(0.2)  # the confirming press
        # The reset drained the node's client listener before it failed, and nothing re-opens
        # it (reported to the integrator)
        await only_the_page_answers(node, url, args, "fatal_error", b"cannot talk to the node",
                                    "factory reset failed")
        # hold 3 s: safe shutdown; its command waits for us while the page says so
        await hold(3.3)
        with trio.fail_after(20):
            while node.device.health.state != "safe_to_unplug":
                await trio.sleep(0.05)
        html = await browser.dom(url)
        assert browser.page_state(html) == "safe_to_unplug" == node.device.health.state
        await browser.screenshot(url, "safe_to_unplug-phone.png", browser.PHONE)
        await browser.screenshot(url, "safe_to_unplug-desktop.png", browser.DESKTOP)
        SEEN["safe_to_unplug"] = url
        release.write_text("done")  # the shutdown command ends; the node stops itself
        with trio.move_on_after(60):
            await stopped.wait()
        if not stopped.is_set():
            # Seen once under load ~50 (reported): the page and the node said safe_to_unplug,
            # the command ended, yet Node.run had not returned 4 min later. Stopping is the
            # button tests' subject (tests/hal/test_device_button.py), not the page's.
            print("node did not stop by itself within 60 s after its shutdown command ended")
            n.cancel_scope.cancel()


@pytest.mark.netns
async def test_page_needs_setup_in_a_network_namespace(tmp_path):
    """A box with no network at all (a namespace with only loopback): needs_setup."""
    ns = "webtest-nosetup"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        fake = fake_pi(tmp_path)
        node = NodeProcess(tmp_path, pi_config(fake))
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "firmware.cli", "run", "--config",
             node.config_path, "--data-dir", node.data_dir],
            stdout=open(tmp_path / "ns.log", "wb"), stderr=subprocess.STDOUT, cwd=str(node.dir))
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(os.path.join(node.data_dir, "node.json")):
                assert proc.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "ns.log").read_text()
                await trio.sleep(0.1)
            args = ["--data-dir", node.data_dir]

            async def ns_status(a):
                r = await trio.run_process(
                    ["ip", "netns", "exec", ns, sys.executable, "-m", "firmware.cli", "status",
                     "--json", *a], capture_stdout=True, capture_stderr=True, check=False)
                assert r.returncode == 0, r.stderr
                return json.loads(r.stdout)

            info = None
            with trio.fail_after(30):
                while info is None or info["health"] != "needs_setup":
                    info = await ns_status(args)
                    await trio.sleep(0.1)
            url = page_url(info)
            html = await browser.dom(url, netns=ns)
            assert browser.page_state(html) == "needs_setup" == (await ns_status(args))["health"]
            await browser.screenshot(url, "needs_setup-phone.png", browser.PHONE, ns)
            await browser.screenshot(url, "needs_setup-desktop.png", browser.DESKTOP, ns)
        finally:
            proc.terminate()
            proc.wait(20)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_every_state_was_shown():
    """Runs after the tests above (file order): which states the page really showed."""
    if len(SEEN) < 3:
        pytest.skip("run with the Chromium tests above")
    missing = set(led.STATE_NAMES) - set(SEEN)
    assert not missing, missing
