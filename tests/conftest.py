"""Shared fixtures: real homenode daemons as subprocesses on 127.0.0.1.

`node_factory(**config_sections)` returns a `NodeProcess` (not started) for a fresh data dir in
tmp_path; `node` is one started with defaults. Readiness is systemd's own signal: the fixture
listens on a NOTIFY_SOCKET and waits for READY=1, then reads the address the node wrote to
`<data_dir>/node.json` (the node listens on port 0, so parallel runs never collide).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_POW_BITS = 8  # see NodeProcess


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def write_toml(path, sections: dict) -> str:
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in keys.items())
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return str(path)


class NodeProcess:
    """One daemon: start, stop (SIGTERM), kill (SIGKILL), restart on the same data dir."""

    def __init__(self, tmp_path, config: dict | None = None, name="node", data_dir_name="data"):
        self.dir = tmp_path / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = str(self.dir / data_dir_name)
        # Test networks lower the id proof of work ([network] pow_bits, a network parameter):
        # the real default (24 bits) costs each fresh node ~5 s of CPU here before it joins.
        # 8 bits still makes every node grind, keep and show a real proof (256 tries on
        # average), so records without one are refused in every test network too.
        self.config = {"node": {"listen_port": 0, "log_level": "debug"},
                       "web": {"port": 0},  # the status page on a free port too
                       "network": {"pow_bits": TEST_POW_BITS}}
        for section, keys in (config or {}).items():
            self.config.setdefault(section, {}).update(keys)
        self.config_path = write_toml(self.dir / "homenode.toml", self.config)
        self.proc: subprocess.Popen | None = None
        self.notifications: list[str] = []
        self.host = self.port = self.node_id = None
        self._notify_sock = None
        self._runs = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout=20.0, extra_env=None):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._runs += 1
        # AF_UNIX paths are limited to 108 bytes: keep the socket out of the deep tmp_path
        self._sock_dir = tempfile.mkdtemp(prefix="hn-notify-")
        notify_path = os.path.join(self._sock_dir, "notify")
        self._notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify_sock.bind(notify_path)
        self.notifications = []
        env = dict(os.environ, NOTIFY_SOCKET=notify_path, PYTHONUNBUFFERED="1")
        env.pop("JOURNAL_STREAM", None)
        env.update(extra_env or {})
        self.log_path = self.dir / f"run-{self._runs}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firmware.cli", "run", "--config", self.config_path,
             "--data-dir", self.data_dir],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(self.dir),
        )
        deadline = time.monotonic() + timeout
        while "READY=1" not in self.notifications:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"node not ready within {timeout} s:\n{self.output()}")
            self.poll_notifications(0.1)
        with open(os.path.join(self.data_dir, "node.json")) as f:
            info = json.load(f)
        self.host, self.port = info["host"], info["port"]
        self.node_id = bytes.fromhex(info["node_id"])
        return self

    def poll_notifications(self, timeout=0.1) -> list[str]:
        self._notify_sock.settimeout(timeout)
        try:
            while True:
                msg = self._notify_sock.recv(4096).decode()
                self.notifications.extend(msg.split("\n"))
                self._notify_sock.settimeout(0)
        except (TimeoutError, BlockingIOError):
            pass
        return self.notifications

    def stop(self, timeout=20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._close()
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def restart(self):
        self.stop()
        return self.start()

    def _close(self):
        if self._notify_sock is not None:
            try:
                self.poll_notifications(0)
            except OSError:
                pass
            self._notify_sock.close()
            self._notify_sock = None
            shutil.rmtree(self._sock_dir, ignore_errors=True)
        if getattr(self, "_log", None):
            self._log.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    # -- talking to it ------------------------------------------------------------------------

    def cli(self, *args, input=None, timeout=30) -> subprocess.CompletedProcess:
        """Run `homenode ARGS --data-dir <this node's data dir>` as a subprocess."""
        return run_cli(*args, "--data-dir", self.data_dir, input=input, timeout=timeout,
                       cwd=str(self.dir))


def run_cli(*args, input=None, timeout=30, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "firmware.cli", *args], input=input, capture_output=True,
        timeout=timeout, cwd=cwd,
    )


async def wait_info(client, pred, what, timeout=20.0):
    """Poll a node's `info` until `pred(info)`; AssertionError naming `what` and the last one."""
    import trio

    info = None
    with trio.move_on_after(timeout):
        while True:
            info = await client.info()
            if pred(info):
                return info
            await trio.sleep(0.02)
    raise AssertionError(f"node never reported {what}; last info: {info}")


@pytest.fixture
def mock_pins():
    """gpiozero's own MockFactory (PWM-capable pins) as the default pin factory, restored
    after the test."""
    import gpiozero
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    old = gpiozero.Device.pin_factory
    factory = MockFactory(pin_class=MockPWMPin)
    gpiozero.Device.pin_factory = factory
    yield factory
    factory.reset()
    gpiozero.Device.pin_factory = old


@pytest.fixture
def node_factory(tmp_path):
    made = []

    def make(name="node", data_dir_name="data", **config):
        n = NodeProcess(tmp_path, config, name=name, data_dir_name=data_dir_name)
        made.append(n)
        return n

    yield make
    for n in made:
        n.kill()


@pytest.fixture
def node(node_factory):
    return node_factory().start()
