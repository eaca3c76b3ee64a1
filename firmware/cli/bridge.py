"""`homenode bridge line`: the line (and its QR code) the owner hands to friends."""

import sys

from firmware.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_config_opt,
    add_data_dir_opt,
    data_dir_of,
    load_config,
)


def line_args(p):
    add_config_opt(p)
    add_data_dir_opt(p)
    p.add_argument("--host", help="address or name friends reach the bridge at "
                   "(default: [bridge] public_host)")
    p.add_argument("--port", type=int, help="port friends reach it at (default: [bridge] "
                   "public_port, else the port the bridge listens on)")
    p.add_argument("--no-qr", action="store_true", help="print the line only")


def cmd_line(args) -> int:
    from firmware.bridge.identity import BridgeIdentityError
    from firmware.bridge.owner import NoPublicAddress, bridge_for_owner

    cfg = load_config(args)
    if args.port is not None and not 1 <= args.port <= 65535:
        raise CliError(f"--port {args.port}: expected 1 to 65535", EXIT_USAGE)
    data_dir = data_dir_of(args)
    try:
        view = bridge_for_owner(data_dir, cfg.bridge, host=args.host, port=args.port)
    except BridgeIdentityError as e:
        raise CliError(str(e)) from None
    except NoPublicAddress as e:
        raise CliError(str(e), EXIT_USAGE) from None
    print(view.line)
    if args.no_qr:
        return EXIT_OK
    err = sys.stderr
    print(view.terminal_qr(), end="")
    notes = ["Give this line only to people you trust to use it: anyone holding it can use this "
             "box as their way into the network (and can tell that this address is a bridge).",
             f"It points at {view.host}:{view.port}; the box must be reachable there from the "
             "internet."]
    if view.listening_port is None:
        notes.append("The bridge is not running now: set [bridge] enabled = true and start "
                     "the node.")
    elif view.port != view.listening_port:
        notes.append(f"The bridge listens on port {view.listening_port} here: your router must "
                     f"forward outside port {view.port} to it.")
    for n in notes:
        print(n, file=err)
    return EXIT_OK
