"""What every `homenode` verb shares: exit codes, CliError, common options, finding the node,
running one client call against it with failures mapped to one-line errors."""

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
DEFAULT_DATA_DIR = ".homenode"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the command and where its help is."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see: {self.prog} --help)\n")


class CliError(Exception):
    def __init__(self, msg: str, code: int = EXIT_FAIL):
        super().__init__(msg)
        self.code = code


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_args: Any  # (argparse.ArgumentParser) -> None
    run: Any  # (argparse.Namespace) -> int


# --------------------------------------------------------------------------- shared options


def add_config_opt(p):
    p.add_argument("--config", metavar="FILE", default=os.environ.get("HOMENODE_CONFIG"),
                   help="homenode.toml to read (default: $HOMENODE_CONFIG, else built-in "
                        "defaults)")


def add_data_dir_opt(p):
    p.add_argument("--data-dir", metavar="DIR", default=os.environ.get("HOMENODE_DATA_DIR"),
                   help="node data directory (default: $HOMENODE_DATA_DIR, the config's "
                        f"node.data_dir, else ./{DEFAULT_DATA_DIR})")


def add_node_opts(p):
    add_config_opt(p)
    add_data_dir_opt(p)
    p.add_argument("--node", metavar="HOST:PORT",
                   help="node address (default: the local node found in the data directory)")
    p.add_argument("--node-id", metavar="HEX",
                   help="the node's public id to pin (default: read from the data directory)")
    p.add_argument("--timeout", type=positive_seconds, default=10.0,
                   help="seconds to wait (default 10)")


def add_direct_opt(p):
    p.add_argument("--direct", action="store_true",
                   help="talk to this one node only (default: through 3-hop onions over the "
                        "nodes it knows, when it knows enough of them)")


def load_config(args, overrides=None):
    from firmware.config import ConfigError
    from firmware.settings import file_schema

    try:  # the same schema as `config check`: a boot-partition file's sections are known
        return file_schema().load(args.config, overrides)
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from None


def data_dir_of(args) -> str:
    if args.data_dir:
        return args.data_dir
    if getattr(args, "config", None):
        return load_config(args).node.data_dir
    return DEFAULT_DATA_DIR


def locate_node(args) -> tuple[str, int, bytes]:
    """(host, port, node_id) from the flags, else from the local node's data directory."""
    from firmware.identity import parse_node_id
    from firmware.node import ADDRESS_FILE

    data_dir = data_dir_of(args)
    local = {}
    path = os.path.join(data_dir, ADDRESS_FILE)
    try:
        with open(path) as f:
            local = json.load(f)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        raise CliError(f"cannot read {path}: {e}") from None
    if local:
        try:
            local = {"host": str(local["host"]), "port": int(local["port"]),
                     "node_id": parse_node_id(local["node_id"])}
        except (KeyError, TypeError, ValueError) as e:
            raise CliError(f"{path} is damaged ({type(e).__name__}: {e}); restart the node "
                           "(it rewrites the file), or give --node HOST:PORT --node-id HEX") \
                from None
    if args.node:
        host, sep, port = args.node.rpartition(":")
        if not sep or not port.isdigit() or not host or not 1 <= int(port) <= 65535:
            raise CliError(f"--node {args.node!r}: expected HOST:PORT with a port from 1 to "
                           "65535, e.g. 127.0.0.1:7070", EXIT_USAGE)
        host, port = host.strip("[]"), int(port)
        if not args.node_id and not (local and (local.get("host"), local.get("port"))
                                     == (host, port)):
            raise CliError(f"--node {args.node} needs --node-id HEX too: the CLI talks only to "
                           "the node whose id it pins (`homenode id` on that node prints it)",
                           EXIT_USAGE)
    elif local:
        host, port = local["host"], local["port"]
    else:
        cfg = load_config(args)
        host, port = cfg.node.listen_host, cfg.node.listen_port
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if args.node_id:
        try:
            node_id = parse_node_id(args.node_id)
        except ValueError as e:
            raise CliError(f"--node-id: {e}", EXIT_USAGE) from None
    elif local:
        node_id = local["node_id"]
    else:
        raise CliError(
            f"no running node found in {os.path.abspath(data_dir)} (no {ADDRESS_FILE}); start "
            "one with `homenode run`, or give --data-dir DIR, or --node HOST:PORT --node-id HEX"
        )
    return host, port, node_id


def run_client(args, fn, node=None):
    """Run `await fn(client)` against the located node, mapping failures to exit codes."""
    import trio

    from firmware.client import PinMismatch, connect, run_via_onion
    from firmware.proto.errors import FrameTooLarge, ProtocolError

    host, port, node_id = node or locate_node(args)

    async def main():
        if not getattr(args, "direct", True):  # send/fetch: through onions when possible
            with trio.fail_after(args.timeout * 3):
                used, result = await run_via_onion(host, port, node_id, fn, timeout=args.timeout)
            if used:
                return result
            if result:
                print(f"homenode: {result}; talking to the node directly", file=sys.stderr)
        async with connect(host, port, node_id, timeout=args.timeout) as client:
            with trio.fail_after(args.timeout):
                return await fn(client)

    try:
        return trio.run(main)
    except PinMismatch as e:
        raise CliError(str(e)) from None
    except FrameTooLarge as e:  # raised here, before sending: not the node's refusal
        raise CliError(f"request not sent: {e}") from None
    except ProtocolError as e:
        raise CliError(f"the node refused: [{e.code}] {e.msg}") from None
    except trio.TooSlowError:
        raise CliError(f"{host}:{port}: no answer within {args.timeout:g} s") from None
    except (ConnectionError, OSError) as e:
        raise CliError(f"cannot talk to the node at {host}:{port}: {e}; is it running "
                       "(`homenode run`)? If the network is blocked where you are, ask someone "
                       "who runs a bridge for its line and add --bridge LINE") from None


def load_user_key(path):
    from firmware.identity import IdentityError, load_key_file

    try:
        return load_key_file(path)
    except IdentityError as e:
        raise CliError(str(e)) from None


def positive_seconds(text: str) -> float:
    """--timeout: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0, e.g. 10")
    return value


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Duration:
    """A duration as the user typed it (`text`, unit `unit`) and in milliseconds."""

    ms: int
    text: str
    unit: str

    def show(self, ms: int) -> str:
        """`ms` in this duration's unit, e.g. 14d for 1_209_600_000 when the user typed days."""
        n = ms / (_TTL_UNITS[self.unit] * 1000)
        return f"{n:g}{self.unit}"


def parse_duration(text: str) -> Duration:
    """'90', '90s', '15m', '2h', '14d' -> Duration."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 15m, 2h or 14d")
    unit = m.group(2) or "s"
    return Duration(int(m.group(1)) * _TTL_UNITS[unit] * 1000, text.strip(), unit)
