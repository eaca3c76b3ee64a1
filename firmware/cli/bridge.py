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


# -- clients: send / fetch --bridge LINE -------------------------------------------------------


def add_bridge_opt(p):
    p.add_argument("--bridge", metavar="LINE", action="append", default=[],
                   help="reach the network through this bridge (a homenode-bridge:// line "
                        "from its owner); repeat to give several, tried in turn")


def bridge_lines(args) -> list:
    """The parsed --bridge lines (usage error for a bad one or for --direct with them)."""
    from firmware.bridge.line import BridgeLineError, parse_line

    if getattr(args, "direct", False):
        raise CliError("--direct cannot be used with --bridge: through a bridge every request "
                       "travels in an onion", EXIT_USAGE)
    try:
        return [parse_line(text) for text in args.bridge]
    except BridgeLineError as e:
        raise CliError(f"--bridge: {e}", EXIT_USAGE) from None


def run_via_bridges(args, fn):
    """`await fn(onion_client)` through the first working bridge; failures as one line."""
    import trio

    from firmware.bridge.entry import NoBridge, open_bridged_onion_client
    from firmware.client import NoPath
    from firmware.proto.errors import ProtocolError

    lines = bridge_lines(args)

    async def main():
        async with open_bridged_onion_client(lines, timeout=args.timeout) as oc:
            with trio.fail_after(args.timeout * 4):
                return await fn(oc)

    try:
        return trio.run(main)
    except NoBridge as e:
        raise CliError(f"{e}. Ask the bridge's owner for a current line (`homenode bridge "
                       "line` on their box).") from None
    except NoPath as e:
        raise CliError(f"through the bridge: {e}") from None
    except ProtocolError as e:
        raise CliError(f"the network refused: [{e.code}] {e.msg}") from None
    except trio.TooSlowError:
        raise CliError(f"no answer through the bridge within {args.timeout * 4:g} s") from None
    except (ConnectionError, OSError) as e:
        raise CliError(f"through the bridge: {e}") from None
