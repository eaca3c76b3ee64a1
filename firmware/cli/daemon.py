"""`homenode run`: the node daemon in the foreground until SIGTERM/Ctrl-C."""

from firmware.cli.common import EXIT_USAGE, CliError, add_config_opt, add_data_dir_opt, load_config


def run_args(p):
    add_config_opt(p)
    add_data_dir_opt(p)
    p.add_argument("--host", help="listen address (overrides node.listen_host)")
    p.add_argument("--port", type=int, help="listen port, 0 = any free one (node.listen_port)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def cmd_run(args) -> int:
    import trio

    from firmware.bridge.node_side import BridgeStartError
    from firmware.config import ConfigError
    from firmware.identity import IdentityError
    from firmware.logs import Log
    from firmware.node import DataDirBusy, Node
    from firmware.sdnotify import Notifier
    from firmware.store import StoreError

    overrides = {}
    for flag, key in (("data_dir", "node.data_dir"), ("host", "node.listen_host"),
                      ("port", "node.listen_port"), ("log_level", "node.log_level")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    cfg = load_config(args, overrides)
    log = Log(cfg.node.log_level)
    notifier = Notifier(log=log)
    try:
        node = Node(cfg, log=log, notifier=notifier)
        trio.run(node.run)
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    except (IdentityError, DataDirBusy, BridgeStartError) as e:
        raise CliError(f"cannot start: {e}") from None
    except StoreError as e:
        raise CliError(f"cannot start: message store: {e}") from None
    except OSError as e:
        where = f"{cfg.node.listen_host}:{cfg.node.listen_port}"
        hint = (" (is another node running? pick another port with --port)"
                if e.errno == 98 else "")
        raise CliError(f"cannot start: {where}: {e.strerror or e}{hint}") from None
    return node.exit_status
