"""The daemon: one trio nursery holding every service, and an orderly stop on SIGTERM/SIGINT.

Start order (each with `nursery.start`, so READY=1 is only sent once all of them are up):
store (committer + expiry sweeper) -> client listener -> extra services -> systemd watchdog.
Stop order: stop accepting and reading, let in-flight requests finish (bounded by
`node.shutdown_grace`), flush the store, cancel everything, close the database, exit 0.

Other parts plug in without editing this file's logic:
    node.add_service("thermal", governor.run)      # async def run(*, task_status)
    node.handler.add_info(lambda: {"temp_c": ...}) # shows up in `info` / `homenode status`
"""

import fcntl
import gc
import json
import os
import shutil
import signal
import sys

import trio

from firmware import __version__
from firmware.clock import wall_ms
from firmware.device import install_device
from firmware.identity import ensure_data_dir, load_or_create_node_identity
from firmware.links import ClientListener, outbound_wrap, server_ssl_context
from firmware.logs import Log
from firmware.net import install_network
from firmware.net.onion_relay import install_onion_relay
from firmware.net.reachability import install_reachability
from firmware.rpc import RpcHandler
from firmware.sdnotify import Notifier
from firmware.store import DB_FILENAME, MessageStore

ADDRESS_FILE = "node.json"  # public facts for local CLIs: node id, address, pid
LOCK_FILE = "node.lock"


class DataDirBusy(RuntimeError):
    """Another node process already runs on this data directory."""


def lock_data_dir(data_dir: str) -> int:
    """An exclusive flock on `<data_dir>/node.lock`, held while the node runs (the kernel drops
    it if the process dies). Two nodes on one store would corrupt its running totals and
    fight over node.json."""
    path = os.path.join(data_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = ""
        try:
            with open(os.path.join(data_dir, ADDRESS_FILE)) as f:
                pid = f" (pid {json.load(f)['pid']})"
        except (OSError, ValueError, KeyError):
            pass
        raise DataDirBusy(f"another homenode is already running on {data_dir}{pid}; stop it "
                          "first, or give this one another --data-dir") from None
    return fd


class Node:
    def __init__(self, cfg, *, log: Log, notifier: Notifier | None = None, out=None,
                 clock_ms=wall_ms):
        self.cfg = cfg
        self.log = log
        self.notifier = notifier or Notifier(log=log)
        self.out = out if out is not None else sys.stdout
        self.clock_ms = clock_ms
        self.data_dir = os.path.abspath(cfg.node.data_dir)
        self.state = "starting"
        self.exit_status = 0  # `homenode run` exits with this (EXIT_RESTART, EXIT_POWEROFF)
        self.wrap_outbound = None  # TCP stream -> stream for connections the node opens
        ensure_data_dir(self.data_dir)
        self._lock_fd = lock_data_dir(self.data_dir)
        try:  # a refused key or database must not leave the data dir locked
            self.identity, created = load_or_create_node_identity(self.data_dir)
            self.store = MessageStore.open(
                os.path.join(self.data_dir, DB_FILENAME),
                quota_bytes=cfg.store.quota_bytes,
                clock_ms=clock_ms,
                batch_rows=cfg.store.batch_rows,
                batch_ms=cfg.store.batch_ms,
                sweep_every_s=cfg.store.sweep_interval,
            )
        except BaseException:
            os.close(self._lock_fd)
            raise
        if created:
            log.info("identity_created", node_id=self.identity.id_hex, data_dir=self.data_dir)
        lim = cfg.limits
        self.handler = RpcHandler(self.store, self.identity.node_id, rate_per_sec=lim.rate_per_sec,
                                  rate_burst=lim.rate_burst, log=log, state=lambda: self.state)
        self.listener = ClientListener(
            self.handler, server_ssl_context(self.identity), clock_ms=clock_ms, log=log,
            max_connections=lim.max_connections, max_inflight_per_conn=lim.max_inflight_per_conn,
            handshake_timeout=lim.handshake_timeout, idle_timeout=lim.idle_timeout,
        )
        self.handler.add_info(self.listener.info)
        self.address: tuple[str, int] | None = None
        self._services: list[tuple[str, object]] = []
        self.onion = install_onion_relay(self)  # op "onion" + its link pool (network work)
        self.network = install_network(self)  # membership, replication (network work)
        self.device = install_device(self)  # LED, button, thermal/bandwidth/storage governors
        self.reach = install_reachability(self)  # NAT mapping, peer tests, relayed mode

    def add_service(self, name: str, run) -> None:
        """`run(*, task_status)` is started in the node's nursery after the listener, before
        READY=1, and cancelled at shutdown (after the store is flushed)."""
        self._services.append((name, run))

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until SIGTERM/SIGINT (or until the caller cancels), then stop cleanly."""
        outbound_wrap.set(self.wrap_outbound)  # this task's context: inherited by every service
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.store.run)
                    self.address = await nursery.start(
                        self.listener.run, self.cfg.node.listen_host, self.cfg.node.listen_port
                    )
                    for name, service in self._services:
                        await nursery.start(service)
                        self.log.debug("service_started", service=name)
                    await nursery.start(self.notifier.run_watchdog)
                    self._write_address_file()
                    gc.freeze()  # startup objects (modules, config) never die: keep GC off them
                    self.state = "serving"
                    self._announce()
                    task_status.started(self.address)
                    async for signum in signals:
                        self.log.info("stopping", signal=signal.Signals(signum).name)
                        break
                    await self._stop(nursery)
            finally:
                self.store.close()
                self._remove_address_file()
                self.notifier.close()
                os.close(self._lock_fd)  # another Node may now open this data dir
        self.log.info("stopped")

    async def _stop(self, nursery: trio.Nursery) -> None:
        self.state = "stopping"
        self.notifier.stopping("finishing in-flight requests")
        self.listener.drain()
        with trio.move_on_after(self.cfg.node.shutdown_grace) as grace:
            await self.listener.drained.wait()
        if grace.cancelled_caught:
            self.log.warning("shutdown_grace_over", connections=self.listener.active)
        await self.store.flush()
        nursery.cancel_scope.cancel()

    # -- telling people how to reach us ----------------------------------------------------

    def _write_address_file(self) -> None:
        host, port = self.address
        info = {"node_id": self.identity.id_hex, "host": host, "port": port, "pid": os.getpid(),
                "version": __version__}
        path = os.path.join(self.data_dir, ADDRESS_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def _remove_address_file(self) -> None:
        try:
            path = os.path.join(self.data_dir, ADDRESS_FILE)
            with open(path) as f:
                if json.load(f).get("pid") == os.getpid():
                    os.unlink(path)
        except (OSError, ValueError):
            pass

    def _announce(self) -> None:
        host, port = self.address
        nid = self.identity.id_hex
        stats = self.store.stats()
        self.log.info("serving", node_id=nid, address=f"{host}:{port}", data_dir=self.data_dir,
                      messages=stats["count"], version=__version__)
        self.notifier.ready(f"serving on {host}:{port}, node id {nid[:16]}")
        prog = "homenode" if shutil.which("homenode") else os.path.join(
            os.path.dirname(sys.executable), "homenode")
        dd = "" if os.path.abspath(".homenode") == self.data_dir else f" --data-dir {self.data_dir}"
        text = (
            f"homenode {__version__} is serving on {host}:{port}\n"
            f"  node id:  {nid}\n"
            f"  data dir: {self.data_dir} ({stats['count']} messages)\n"
            f"Talk to it from another terminal on this machine:\n"
            f"  {prog} keygen --out me.key                       # your own key pair\n"
            f"  {prog} send{dd} --to $({prog} id --key me.key) 'hello'\n"
            f"  {prog} fetch{dd} --key me.key\n"
            f"  {prog} status{dd}\n"
            f"From elsewhere: --node {host}:{port} --node-id {nid}\n"
        )
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):
            pass
