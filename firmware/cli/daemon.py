"""`homenode run`: the node daemon in the foreground until SIGTERM/Ctrl-C.

Start-up failures are one line with the cause and the fix. trio wraps an error raised inside
the node's nursery (a port already in use, an address this machine does not have) in an
ExceptionGroup, so the group is unwrapped to its one cause before it is explained.
"""

import errno
import os
import socket

from firmware.cli.common import EXIT_USAGE, CliError, add_config_opt, add_data_dir_opt, load_config


def run_args(p):
    add_config_opt(p)
    add_data_dir_opt(p)
    p.add_argument("--host", help="listen address (overrides node.listen_host)")
    p.add_argument("--port", type=int, help="listen port, 0 = any free one (node.listen_port)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--new-identity", action="store_true",
                   help="accept on purpose that this data dir's store now belongs to a new node "
                        "id: the node.key present, or a new one when it is missing (peers that "
                        "pinned the old id will no longer reach it; restore a backup instead "
                        "with `homenode identity import`)")


def single_cause(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups of one; else `exc` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def listen_error(e: OSError, host: str, port: int, flags: dict) -> str | None:
    """One line for an error binding the listener, or None if `e` is not one."""
    where = f"{host}:{port}"
    host_from = "--host" if flags.get("host") else "[node] listen_host"
    port_from = "--port" if flags.get("port") is not None else "[node] listen_port"
    if isinstance(e, socket.gaierror):
        return (f"cannot start: listen address {host!r} ({host_from}) is not a known host name "
                f"or IP address ({e.strerror}); use an address of this machine, 127.0.0.1, or "
                "0.0.0.0 for all")
    if e.filename is not None:
        return None  # a file, not the socket: see the data-dir messages
    if e.errno == errno.EADDRINUSE:
        return (f"cannot start: {where} is already in use (another homenode or another "
                f"program listens there); stop it, or choose another port with {port_from} "
                "(0 picks a free one)")
    if e.errno == errno.EADDRNOTAVAIL:
        return (f"cannot start: {host} ({host_from}) is not an address of this machine; use "
                "one it has (`ip addr` lists them), 127.0.0.1 for this machine only, or "
                "0.0.0.0 for all")
    if e.errno == errno.EACCES and 0 < port < 1024:
        return (f"cannot start: port {port} ({port_from}) needs root; use a port from 1024 up")
    return None


def cmd_run(args) -> int:
    import trio

    from firmware.bridge.node_side import BridgeStartError
    from firmware.config import ConfigError
    from firmware.identity import IdentityError
    from firmware.logs import Log
    from firmware.node import DataDirBusy, Node
    from firmware.sdnotify import Notifier
    from firmware.store import StoreError
    from firmware.update.status import RELEASE_FILE, UpdateStatus

    flags = {"host": args.host, "port": args.port}
    overrides = {}
    for flag, key in (("data_dir", "node.data_dir"), ("host", "node.listen_host"),
                      ("port", "node.listen_port"), ("log_level", "node.log_level")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    cfg = load_config(args, overrides)
    log = Log(cfg.node.log_level)
    notifier = Notifier(log=log)
    host, port = cfg.node.listen_host, cfg.node.listen_port
    try:
        try:
            if args.new_identity:
                accept_new_identity(cfg.node.data_dir, log)
            updates = UpdateStatus()  # what the root-side update tooling says (the box only)
            on_image = os.path.exists(RELEASE_FILE)
            node = Node(cfg, log=log, notifier=notifier, update_phase=updates.health_phase,
                        update_info=updates.info if on_image else None)
            trio.run(node.run)
        except BaseExceptionGroup as group:
            raise single_cause(group) from None
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    except (IdentityError, DataDirBusy, BridgeStartError) as e:
        raise CliError(f"cannot start: {e}") from None
    except StoreError as e:
        raise CliError(f"cannot start: message store: {e}") from None
    except OSError as e:
        line = listen_error(e, host, port, flags)
        if line is None:  # the store engineer's data-dir messages refine this one
            what = f"{e.filename}: " if e.filename else ""
            line = f"cannot start: {what}{e.strerror or e}"
        raise CliError(line) from None
    return node.exit_status


def accept_new_identity(data_dir: str, log) -> None:
    """`run --new-identity`: record the key present (or a new one) as the store's node, under
    the data dir's lock so a running node is never changed under it."""
    from firmware.identity import (
        IdentityError,
        ensure_data_dir,
        load_or_create_node_identity,
        read_store_owner,
    )
    from firmware.node import lock_data_dir

    ensure_data_dir(data_dir)
    fd = lock_data_dir(data_dir)
    try:
        try:
            before = read_store_owner(data_dir)
        except IdentityError:
            before = None
        try:
            load_or_create_node_identity(data_dir)
        except IdentityError:
            ident, created = load_or_create_node_identity(data_dir, new_identity=True)
            log.warning("identity_replaced", node_id=ident.id_hex, created=created,
                        previous=before.hex() if before else "unknown")
    finally:
        os.close(fd)
