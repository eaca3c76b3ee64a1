"""The daemon: the node's parts, built once and explicitly, running in one trio nursery.

`Node.__init__` is the whole wiring, read top to bottom: it binds the listening socket (so every
part knows the address), opens the store and the hardware, then builds each part with its
collaborators as constructor arguments - no part reaches into another, none is half-built
until some service starts. `Node.run` starts the services in order (store -> device -> network
-> listener -> watchdog; READY=1 once all are up) and stops them on SIGTERM/SIGINT: stop
accepting and reading, let in-flight requests finish (at most `node.shutdown_grace`), flush the
store, cancel everything, close the database, exit 0.
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
from firmware.bridge.node_side import BridgeMode, bridge_server, open_bridge_port
from firmware.bridge.portmap import BridgePortMapper
from firmware.bridge.settings import node_listen_host
from firmware.clock import wall_ms
from firmware.config import ConfigError
from firmware.device.hardware import open_device_hardware
from firmware.device.services import DeviceServices
from firmware.device.shaping import BandwidthService, reads_held
from firmware.durable import write_durably
from firmware.identity import (
    ensure_data_dir,
    load_id_work,
    load_or_create_node_identity,
    save_id_work,
)
from firmware.join import JoinParts
from firmware.link import Dialer, LinkPool, direct_dial, server_ssl_context
from firmware.logs import Log
from firmware.net.id_work import IdentityWork
from firmware.net.membership import MembershipService
from firmware.net.onion_relay import OnionRelay, SwarmExecutor
from firmware.net.peers import PeerAuth, authenticated_dial
from firmware.net.reachability import ReachabilityService, ReachOps
from firmware.net.relay_hub import RelayHub
from firmware.net.relayed import RelayedMode, RelayRoutes
from firmware.net.replication import Replicator
from firmware.net.roster import AdvertisedAddress, Roster
from firmware.net.settings import parse_bootstrap
from firmware.sdnotify import Notifier
from firmware.serve.conn_policy import ConnLimits
from firmware.serve.conn_table import TableLimits
from firmware.serve.listener import Listener, bind_tcp
from firmware.serve.pipeline import ConnInfo, Pipeline, RateLimiter
from firmware.serve.storage_ops import StorageOps
from firmware.setup_report import setup_report_source
from firmware.store import DB_FILENAME, MessageStore
from firmware.web import WebParts
from hal.core.health import Actions

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


def _trusted(addresses) -> frozenset:
    """The trusted addresses, with the IPv4-mapped IPv6 form a dual-stack socket reports."""
    return frozenset(addresses) | frozenset(f"::ffff:{a}" for a in addresses if ":" not in a)


def _first_phase(*providers):
    """One phase provider for the health monitor out of several (an update in progress, the id's
    proof of work being made): the first that has something to say."""
    live = [p for p in providers if p is not None]

    def phase():
        for p in live:
            got = p()
            if got is not None:
                return got
        return None

    return phase if live else None


class _Network:
    """The network parts of one node (absent when `[network] enabled = false`). On a bridge
    (`bridge`: a BridgeMode) four of them differ: the dialer reaches only the relays, onions go
    on through a relay, `nodes` is a relay's list, and nothing tests our own reachability."""

    def __init__(self, node, cfg, identity, dialer, pipeline_respond, bridge=None):
        net, log, clock = cfg.network, node.log, node.clock_ms
        self.advertised = AdvertisedAddress(net.advertise_host, net.advertise_port, node.address)
        proof = load_id_work(node.data_dir, identity.node_id)
        self.roster = Roster(identity, net, self.advertised, version=__version__,
                             clock_ms=clock, log=log, pow=proof or b"",
                             hidden=bridge.record if bridge else None)
        # the id's proof of work: made at first start; membership and reachability (what shows
        # our record to others) start once it exists
        self.id_work = IdentityWork(
            identity.node_id, net.pow_bits, proof, log=log, on_made=self.roster.set_pow,
            save=lambda nonce: save_id_work(node.data_dir, identity.node_id, nonce))
        self.hub = RelayHub(record_of=self.roster.get, on_record=self.roster.merge_from)
        if bridge is not None:
            dialer = bridge.dialer(dialer)
        self.peer_pool = LinkPool(
            authenticated_dial(dialer, identity, self.roster.own, on_record=self.roster.merge_from),
            connect_timeout=net.link_timeout,
            # kept open between re-tests of a small network; in a big one (re-tests rate-capped,
            # minutes apart) links close between tests, so inbound links stay well under
            # [limits] max_connections (each node is tested ~max_test_rate times a second)
            idle_s=max(15.0, 2 * net.test_interval))
        self.routes = RelayRoutes(self.hub, self.peer_pool, self.roster)
        self.membership = MembershipService(identity, net, self.roster, self.peer_pool,
                                            relayed_ping=self.routes.ping, clock_ms=clock,
                                            log=log)
        self.replicator = Replicator(
            identity, node.store, self.roster, self.peer_pool, net, clock_ms=clock, log=log,
            paused=lambda: node.actions.pause_background,
            heavy_paused=lambda: node.actions.pause_heavy_writes)
        self.auth = PeerAuth(identity, own_record=self.roster.own,
                             on_record=self.roster.merge_from, denied=self.roster.denied)
        self.reach_ops = ReachOps(identity, dialer, self.roster)
        self.relayed = RelayedMode(self.peer_pool, pipeline_respond, clock_ms=clock, log=log,
                                   polls_per_relay=cfg.nat.polls_per_relay,
                                   own_record=self.roster.own)
        if bridge is None:
            self.reach = ReachabilityService(cfg.nat, identity, self.roster, self.peer_pool,
                                             self.advertised, self.relayed,
                                             bootstrap=lambda: self.membership.candidates,
                                             log=log)
            self.op_nodes = self.reach_ops.op_nodes
        else:
            self.reach = bridge.reach(self.roster, dialer)
            self.op_nodes = bridge.nodes_op(self.peer_pool).op_nodes

    def node_ops(self) -> dict:
        """Every op the network parts serve, by name (the pipeline's node ops)."""
        return {
            "challenge": self.auth.challenge, "hello": self.auth.hello, "ping": self.auth.ping,
            "gossip": self.membership.op_gossip,
            "replicate": self.replicator.op_replicate, "handoff": self.replicator.op_replicate,
            "summary": self.replicator.op_summary,
            "fetch_missing": self.replicator.op_fetch_missing,
            "tombstones": self.replicator.op_tombstones,
            "nodes": self.op_nodes, "reach_test": self.reach_ops.op_reach_test,
            "relay_poll": self.hub.op_poll, "relay_reply": self.hub.op_reply,
            "relay_forward": self.hub.op_forward,
        }

    def services(self):
        after_work = self.id_work.after
        return [("peer_links", self.peer_pool.run), ("identity_work", self.id_work.run),
                ("membership", after_work(self.membership.run)),
                ("replication", self.replicator.run), ("relayed_mode", self.relayed.run),
                ("reachability", after_work(self.reach.run))]

    def info(self) -> dict:
        return {**self.membership.info(), **self.replicator.info(), **self.reach.info(),
                **self.id_work.info(),
                "peer_links": self.peer_pool.open_count(),
                "relayed_for": len(self.hub.attached()),
                "relayed_passed_down": self.hub.counters["passed_down"]}


class Node:
    def __init__(self, cfg, *, log: Log, notifier: Notifier | None = None, out=None,
                 clock_ms=wall_ms, pin_factory=None, hal_env=None, update_phase=None,
                 update_info=None):
        self.cfg = cfg
        self.log = log
        self.notifier = notifier or Notifier(log=log)
        self.out = out if out is not None else sys.stdout
        self.clock_ms = clock_ms
        self._update_info = update_info  # () -> dict: the system update state, for status
        self.data_dir = os.path.abspath(cfg.node.data_dir)
        self.state = "starting"
        self.exit_status = 0  # `homenode run` exits with this (EXIT_RESTART, EXIT_POWEROFF)
        self._stop_requested = trio.Event()
        ensure_data_dir(self.data_dir)
        self._lock_fd = lock_data_dir(self.data_dir)
        self._sock = self._bridge_sock = None
        self.store = None
        try:  # a refused key, store or address must not leave the data dir locked
            self.bridge_mode = self._bridge_mode(cfg)  # a config error before touching anything
            self.identity, created = load_or_create_node_identity(self.data_dir)
            # a bridge's node port is loopback only: open to the internet, it gives it away
            self._sock = bind_tcp(node_listen_host(cfg.node.listen_host, cfg.bridge.enabled),
                                  cfg.node.listen_port)
            self.address = self._sock.getsockname()[:2]
            if cfg.bridge.enabled:
                self._bridge_sock = open_bridge_port(cfg.bridge)
            self._build(cfg, pin_factory, hal_env, update_phase)
        except BaseException:
            if self.store is not None:
                self.store.close()
            for sock in (self._sock, self._bridge_sock):
                if sock is not None:
                    sock.close()
            os.close(self._lock_fd)
            raise
        if created:
            log.info("identity_created", node_id=self.identity.id_hex, data_dir=self.data_dir)

    def _build(self, cfg, pin_factory, hal_env, update_phase):
        log, clock = self.log, self.clock_ms
        # What the health monitor decides (pause background work, refuse new work...), read
        # live by the services it concerns.
        self.actions = actions = Actions()
        self.store = MessageStore.open(
            os.path.join(self.data_dir, DB_FILENAME), quota_bytes=cfg.store.quota_bytes,
            clock_ms=clock, batch_rows=cfg.store.batch_rows, batch_ms=cfg.store.batch_ms,
            sweep_every_s=cfg.store.sweep_interval,
            sweep_paused=lambda: actions.pause_background)
        hw = open_device_hardware(cfg, self.data_dir, log, pin_factory=pin_factory, env=hal_env)
        # Every connection, accepted or opened, goes through the shaper (below TLS): both
        # directions count against the link limits and the monthly cap.
        bandwidth = BandwidthService(cfg.bandwidth, self.data_dir, clock, log, hw.net)
        shaping = bandwidth.wrap  # always: it counts every link, shapes only when configured
        self.dialer = Dialer(wrap=shaping, timeout=cfg.network.link_timeout)
        bridge_mode = self.bridge_mode
        self.network = None
        if cfg.network.enabled:
            self.network = _Network(self, cfg, self.identity, self.dialer, self._respond,
                                    bridge=bridge_mode)
        net = self.network
        self.device = DeviceServices(
            cfg, hw, actions, bandwidth, data_dir=self.data_dir, store=self.store,
            clock_ms=clock, log=log, node_phase=lambda: self.state, quiesce=self._quiesce,
            stop=self.request_stop, peers_live=net.roster.live_count if net else None,
            has_bootstrap=lambda: bool(net and net.membership.candidates),
            update_phase=_first_phase(update_phase, net.id_work.phase if net else None))
        self.join = JoinParts(cfg, self.data_dir, self.identity.node_id, clock_ms=clock, log=log,
                              add_candidate=net.membership.add_candidate if net else None)
        admit_new = [self.device.refuse_when_hot]
        storage = StorageOps(self.store, self.identity.node_id, state=lambda: self.state,
                             info_sources=[self._status, setup_report_source(self.data_dir)])
        # Onions: any node is a hop (a lone mailbox too); with the network, relayed next hops
        # are reached through the relay routes and final-hop retrieves follow placement.
        if bridge_mode is not None:  # a bridge passes onions to its relays only
            self.forward_pool = bridge_mode.forward_pool(net.peer_pool)
        else:
            self.forward_pool = LinkPool(direct_dial(self.dialer),
                                         routes=net.routes.link_to if net else None,
                                         idle_s=120.0, max_links=256)
        self.swarm_executor = SwarmExecutor(self.identity.node_id, net.roster if net else None,
                                            self.forward_pool, self._storage_request)
        self.relay = OnionRelay(self.identity, self.forward_pool, log=log, clock_ms=clock,
                                execute=self.swarm_executor)
        node_ops = {"onion": self.relay.op_onion, **(net.node_ops() if net else {})}
        lim = cfg.limits
        self.pipeline = Pipeline(
            storage=storage, limiter=RateLimiter(lim.rate_per_sec, lim.rate_burst),
            node_ops=node_ops,
            admit={"store": admit_new, "onion": admit_new,
                   "expire": [self.device.refuse_in_minimum_service]},
            make_room=self.device.make_room,
            replication=self.network.replicator if self.network else None, log=log)
        self.listener = Listener(
            self.pipeline, server_ssl_context(self.identity), clock_ms=clock, log=log,
            limits=ConnLimits(handshake_timeout=lim.handshake_timeout,
                              idle_timeout=lim.idle_timeout, frame_timeout=lim.frame_timeout,
                              min_rate=lim.min_frame_rate, stall_timeout=lim.stall_timeout,
                              max_inflight=lim.max_inflight_per_conn),
            table=TableLimits(max_total=lim.max_connections, per_ip=lim.max_connections_per_ip,
                              per_subnet=lim.max_connections_per_subnet,
                              accept_rate=lim.new_connections_per_sec,
                              accept_burst=max(1, int(2 * lim.new_connections_per_sec)),
                              subnet_rate=lim.new_connections_per_sec_per_subnet,
                              subnet_burst=max(1, int(2 * lim.new_connections_per_sec_per_subnet)),
                              trusted=_trusted(lim.trusted_addresses)),
            wrap_stream=shaping, reads_held=reads_held if bandwidth.enabled else None)
        # the bridge port: the decoy web site, and for key holders an ordinary link served by
        # the listener above (it takes a slot of the client address's share there too)
        self.bridge = None
        if bridge_mode is not None:
            self.bridge, _ = bridge_server(cfg.bridge, self.data_dir, on_link=self._bridge_link,
                                           wrap_stream=shaping, log=log)
            self.bridge_ports = BridgePortMapper(cfg.nat, self.data_dir,
                                                 self._bridge_sock.getsockname()[:2], log=log)
        self.web = WebParts(cfg, self.data_dir, status=lambda: storage.info(clock()),
                            leds=self.device.leds, log=log)
        self._services = self.device.services() + [("forward_links", self.forward_pool.run),
                                                    ("onion_relay", self.relay.run)]
        if self.bridge is not None:
            self._services.append(("bridge_port_mapping", self.bridge_ports.run))
        if self.network is not None:
            self._services += self.network.services()
        self._services += self.join.services() + self.web.services()

    # -- the node's own seams -----------------------------------------------------------------

    @staticmethod
    def _bridge_mode(cfg):
        """A BridgeMode when `[bridge] enabled` (its relays: `[network] bootstrap`), else None."""
        if not cfg.bridge.enabled:
            return None
        if not cfg.network.enabled:
            raise ConfigError(["[bridge] enabled = true needs [network] enabled = true: a bridge "
                               "is the way into the network for its clients"])
        try:
            return BridgeMode([parse_bootstrap(b) for b in cfg.network.bootstrap])
        except ValueError as e:
            raise ConfigError([str(e)]) from None

    async def _bridge_link(self, stream, host, port, raw=None):
        """An authenticated bridge client: its link runs as any client's would."""
        await self.listener.serve_stream(stream, ConnInfo(host, port), raw=raw)

    async def _respond(self, frame, conn, now_ms):
        """Relayed mode serves work passed down by a relay through the whole pipeline."""
        return await self.pipeline.respond(frame, conn, now_ms)

    async def _storage_request(self, frame, conn, now_ms):
        """An onion's final layer runs the storage RPC here (admitted where it came in)."""
        return await self.pipeline.storage_request(frame, conn, now_ms)

    def _status(self) -> dict:
        """The status map's parts beyond the store's totals (`info`, `homenode status`)."""
        out = {"connections": self.listener.active, "listener": self.listener.info(),
               "requests": self.pipeline.counters["requests"], **self.device.info(),
               **self.join.info(), **self.web.info()}
        if self._update_info is not None:
            out["update"] = self._update_info()
        out["onion"] = {**self.relay.info(), **self.swarm_executor.counters}
        if self.network is not None:
            out.update(self.network.info())
        if self.bridge is not None:  # counters only: never the line, the secret or an address
            c = self.bridge.counters
            out["bridge"] = {"links": c["links"], "web_requests": c["requests"],
                             "connections": self.bridge.shares.active,
                             **self.forward_pool.counters, **self.bridge_ports.info()}
        return out

    def request_stop(self, exit_status: int = 0) -> None:
        """End `run` as SIGTERM would (a safe shutdown, a factory reset), with this exit status."""
        self.exit_status = exit_status
        self._stop_requested.set()

    async def _quiesce(self):
        """Stop taking requests and get every acknowledged write onto the card."""
        self.listener.drain()
        with trio.move_on_after(self.cfg.node.shutdown_grace):
            await self.listener.drained.wait()
        await self.store.flush()

    # -- running ------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until SIGTERM/SIGINT, `request_stop`, or the caller cancels; then stop cleanly."""
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.store.run)
                    for name, service in self._services:
                        await nursery.start(service)
                        self.log.debug("service_started", service=name)
                    await nursery.start(self.listener.run, self._sock)
                    if self.bridge is not None:
                        self.bridge_address = await nursery.start(self.bridge.run,
                                                                  self._bridge_sock)
                    await nursery.start(self.notifier.run_watchdog)
                    self._write_address_file()
                    gc.freeze()  # startup objects (modules, config) never die: keep GC off them
                    self.state = "serving"
                    self._announce()
                    task_status.started(self.address)
                    async with trio.open_nursery() as waiting:
                        waiting.start_soon(self._first_signal, signals)
                        await self._stop_requested.wait()
                        waiting.cancel_scope.cancel()
                    await self._stop(nursery)
            finally:
                self.store.close()
                self._sock.close()
                if self._bridge_sock is not None:
                    self._bridge_sock.close()
                self._remove_address_file()
                self.notifier.close()
                os.close(self._lock_fd)  # another Node may now open this data dir
        self.log.info("stopped")

    async def _first_signal(self, signals):
        async for signum in signals:
            self.log.info("stopping", signal=signal.Signals(signum).name)
            self._stop_requested.set()
            return

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
        if self.bridge is not None:  # where the bridge port listens (`homenode bridge line`)
            info["bridge_port"] = self.bridge_address[1]
        write_durably(os.path.join(self.data_dir, ADDRESS_FILE), json.dumps(info) + "\n", 0o644)

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
        count = self.store.totals()["count"]
        self.log.info("serving", node_id=nid, address=f"{host}:{port}", data_dir=self.data_dir,
                      messages=count, version=__version__)
        self.notifier.ready(f"serving on {host}:{port}, node id {nid[:16]}")
        prog = "homenode" if shutil.which("homenode") else os.path.join(
            os.path.dirname(sys.executable), "homenode")
        dd = "" if os.path.abspath(".homenode") == self.data_dir else f" --data-dir {self.data_dir}"
        text = (
            f"homenode {__version__} is serving on {host}:{port}\n"
            f"  node id:  {nid}\n"
            f"  data dir: {self.data_dir} ({count} messages)\n"
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
