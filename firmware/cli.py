"""`homenode` command line: run the node, manage keys, send/fetch messages, check config.

Subcommands come from the `COMMANDS` table; another part adds one with one line, e.g.
    Command("flash", "write the SD image to a card", image.cli.add_args, image.cli.run),
where `add_args(parser)` declares its options and `run(args) -> int` does the work. A name with
a space ("config check") becomes a nested subcommand.

Exit codes: 0 ok, 1 operational error (node unreachable, refused request, bad key file),
2 usage or configuration error. Expected errors print one line, never a traceback.
"""

import argparse
import base64
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

from firmware import __version__, flash, update

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
DEFAULT_DATA_DIR = ".homenode"


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


def _add_config_opt(p):
    p.add_argument("--config", metavar="FILE", default=os.environ.get("HOMENODE_CONFIG"),
                   help="homenode.toml to read (default: $HOMENODE_CONFIG, else built-in "
                        "defaults)")


def _add_data_dir_opt(p):
    p.add_argument("--data-dir", metavar="DIR", default=os.environ.get("HOMENODE_DATA_DIR"),
                   help="node data directory (default: $HOMENODE_DATA_DIR, the config's "
                        f"node.data_dir, else ./{DEFAULT_DATA_DIR})")


def _add_node_opts(p):
    _add_config_opt(p)
    _add_data_dir_opt(p)
    p.add_argument("--node", metavar="HOST:PORT",
                   help="node address (default: the local node found in the data directory)")
    p.add_argument("--node-id", metavar="HEX",
                   help="the node's public id to pin (default: read from the data directory)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")


def _add_direct_opt(p):
    p.add_argument("--direct", action="store_true",
                   help="talk to this one node only (default: through 3-hop onions over the "
                        "nodes it knows, when it knows enough of them)")


def _load_config(args, overrides=None):
    from firmware.config import ConfigError, default_schema

    try:
        return default_schema().load(args.config, overrides)
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from None


def _data_dir(args) -> str:
    if args.data_dir:
        return args.data_dir
    if getattr(args, "config", None):
        return _load_config(args).node.data_dir
    return DEFAULT_DATA_DIR


def _locate_node(args) -> tuple[str, int, bytes]:
    """(host, port, node_id) from the flags, else from the local node's data directory."""
    from firmware.identity import parse_node_id
    from firmware.node import ADDRESS_FILE

    data_dir = _data_dir(args)
    local = {}
    path = os.path.join(data_dir, ADDRESS_FILE)
    try:
        with open(path) as f:
            local = json.load(f)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        raise CliError(f"cannot read {path}: {e}") from None
    if args.node:
        host, sep, port = args.node.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise CliError(f"--node {args.node!r}: expected HOST:PORT, e.g. 127.0.0.1:7070",
                           EXIT_USAGE)
        host, port = host.strip("[]"), int(port)
    elif local:
        host, port = local["host"], int(local["port"])
    else:
        cfg = _load_config(args)
        host, port = cfg.node.listen_host, cfg.node.listen_port
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if args.node_id:
        try:
            node_id = parse_node_id(args.node_id)
        except ValueError as e:
            raise CliError(f"--node-id: {e}", EXIT_USAGE) from None
    elif local:
        node_id = bytes.fromhex(local["node_id"])
    else:
        raise CliError(
            f"no running node found in {os.path.abspath(data_dir)} (no {ADDRESS_FILE}); start "
            "one with `homenode run`, or give --data-dir DIR, or --node HOST:PORT --node-id HEX"
        )
    return host, port, node_id


def _run_client(args, fn, node=None):
    """Run `await fn(client)` against the located node, mapping failures to exit codes."""
    import trio

    from firmware.client import connect
    from firmware.links import PinMismatch
    from firmware.proto.errors import ProtocolError

    host, port, node_id = node or _locate_node(args)

    async def main():
        if not getattr(args, "direct", True):  # send/fetch: through onions when possible
            from firmware.onion_client import run_via_onion

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
    except ProtocolError as e:
        raise CliError(f"the node refused: [{e.code}] {e.msg}") from None
    except trio.TooSlowError:
        raise CliError(f"{host}:{port}: no answer within {args.timeout:g} s") from None
    except (ConnectionError, OSError) as e:
        raise CliError(f"cannot talk to the node at {host}:{port}: {e}; is it running "
                       "(`homenode run`)?") from None


def _load_user_key(path):
    from firmware.identity import IdentityError, load_key_file

    try:
        return load_key_file(path)
    except IdentityError as e:
        raise CliError(str(e)) from None


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_ms(text: str) -> int:
    """'90', '90s', '15m', '2h', '14d' -> milliseconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 15m, 2h or 14d")
    return int(m.group(1)) * _TTL_UNITS[m.group(2) or "s"] * 1000


# --------------------------------------------------------------------------- commands


def _run_args(p):
    _add_config_opt(p)
    _add_data_dir_opt(p)
    p.add_argument("--host", help="listen address (overrides node.listen_host)")
    p.add_argument("--port", type=int, help="listen port, 0 = any free one (node.listen_port)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def cmd_run(args) -> int:
    import trio

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
    cfg = _load_config(args, overrides)
    log = Log(cfg.node.log_level)
    notifier = Notifier(log=log)
    try:
        node = Node(cfg, log=log, notifier=notifier)
        trio.run(node.run)
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    except (IdentityError, DataDirBusy) as e:
        raise CliError(f"cannot start: {e}") from None
    except StoreError as e:
        raise CliError(f"cannot start: message store: {e}") from None
    except OSError as e:
        where = f"{cfg.node.listen_host}:{cfg.node.listen_port}"
        hint = (" (is another node running? pick another port with --port)"
                if e.errno == 98 else "")
        raise CliError(f"cannot start: {where}: {e.strerror or e}{hint}") from None
    return node.exit_status


def _keygen_args(p):
    _add_config_opt(p)
    _add_data_dir_opt(p)
    p.add_argument("--out", metavar="FILE",
                   help="write a new user key pair here (default: the node key in the data dir)")


def cmd_keygen(args) -> int:
    from firmware.identity import (
        Identity,
        IdentityError,
        load_or_create_node_identity,
        node_key_path,
        write_key_file,
    )

    try:
        if args.out:
            ident = Identity.generate()
            write_key_file(args.out, ident)
            print(f"created {args.out} (mode 0600); public id:", file=sys.stderr)
        else:
            data_dir = _data_dir(args)
            ident, created = load_or_create_node_identity(data_dir)
            what = "created" if created else "exists:"
            print(f"{what} node key {node_key_path(data_dir)}; node id:", file=sys.stderr)
    except IdentityError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot write the key: {e}") from None
    print(ident.id_hex)
    return EXIT_OK


def _id_args(p):
    _add_config_opt(p)
    _add_data_dir_opt(p)
    p.add_argument("--key", metavar="FILE", help="print the public id of this key file instead")


def cmd_id(args) -> int:
    from firmware.identity import node_key_path
    from firmware.node import ADDRESS_FILE

    if args.key:
        print(_load_user_key(args.key).id_hex)
        return EXIT_OK
    data_dir = _data_dir(args)
    try:  # node.json is world-readable: works for operators who cannot read the secret key
        with open(os.path.join(data_dir, ADDRESS_FILE)) as f:
            print(json.load(f)["node_id"])
            return EXIT_OK
    except (OSError, ValueError, KeyError):
        pass
    print(_load_user_key(node_key_path(data_dir)).id_hex)
    return EXIT_OK


def _send_args(p):
    _add_node_opts(p)
    p.add_argument("--to", required=True, metavar="HEX", help="recipient public id (64 hex)")
    p.add_argument("--ns", type=int, default=0, help="namespace (default 0, the public inbox)")
    p.add_argument("--ttl", type=parse_duration_ms, default=parse_duration_ms("1d"),
                   help="time to live: 90s, 15m, 2h, 14d (default 1d)")
    p.add_argument("--key", metavar="FILE",
                   help="the recipient's key file (needed for namespaces other than 0)")
    p.add_argument("message", nargs="?", help="text to send (default: read stdin)")
    _add_direct_opt(p)


def cmd_send(args) -> int:
    import nacl.exceptions

    from firmware.client import seal_for
    from firmware.identity import parse_node_id, x25519_public_of

    try:
        recipient = parse_node_id(args.to)
        x25519_public_of(recipient)  # not every 32 bytes are a usable Ed25519 public key
    except ValueError as e:
        raise CliError(f"--to: {e}", EXIT_USAGE) from None
    except nacl.exceptions.CryptoError:
        raise CliError(f"--to: {args.to} is not a valid Ed25519 public key", EXIT_USAGE) from None
    signing_key = None
    if args.ns != 0:
        if not args.key:
            raise CliError(f"--ns {args.ns} needs --key (the recipient's key file): only the "
                           "public inbox (ns 0) takes deposits from anyone", EXIT_USAGE)
        ident = _load_user_key(args.key)
        if ident.node_id != recipient:
            raise CliError("--key does not belong to --to", EXIT_USAGE)
        signing_key = ident.signing_key
    node = _locate_node(args)  # fail fast, before reading stdin
    plaintext = (args.message.encode() if args.message is not None
                 else sys.stdin.buffer.read())
    sealed = seal_for(recipient, plaintext)

    async def send(client):
        return await client.store(recipient, sealed, ns=args.ns, ttl_ms=args.ttl,
                                  signing_key=signing_key)

    r = _run_client(args, send, node)
    print(r.hash.hex())
    return EXIT_OK


def _fetch_args(p):
    _add_node_opts(p)
    p.add_argument("--key", required=True, metavar="FILE", help="your key file (keygen --out)")
    p.add_argument("--ns", type=int, default=0, help="namespace (default 0)")
    p.add_argument("--after", metavar="HASH", help="only messages stored after this one")
    p.add_argument("--delete", action="store_true", help="delete the messages once fetched")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_direct_opt(p)


def cmd_fetch(args) -> int:
    import nacl.exceptions

    from firmware.client import open_sealed

    ident = _load_user_key(args.key)
    after = None
    if args.after:
        try:
            after = bytes.fromhex(args.after)
            assert len(after) == 32
        except (ValueError, AssertionError):
            raise CliError("--after: expected a 64-hex-digit message hash", EXIT_USAGE) from None

    async def fetch(client):
        msgs = await client.retrieve_all(ident.signing_key, ns=args.ns, after=after)
        if args.delete and msgs:
            await client.delete(ident.signing_key, [m.hash for m in msgs], ns=args.ns)
        return msgs

    msgs = _run_client(args, fetch)
    out = sys.stdout
    undecryptable = 0
    for m in msgs:
        try:
            plain = open_sealed(ident.signing_key, m.data)
        except nacl.exceptions.CryptoError:
            undecryptable += 1
            plain = None
        if args.json:
            rec = {"hash": m.hash.hex(), "ts": m.ts, "expiry": m.expiry}
            if plain is None:
                rec["error"] = "not encrypted to this key"
            else:
                try:
                    rec["text"] = plain.decode()
                except UnicodeDecodeError:
                    rec["base64"] = base64.b64encode(plain).decode()
            out.write(json.dumps(rec) + "\n")
        elif plain is not None:
            out.write(plain.decode(errors="replace") + "\n")
    if undecryptable:
        print(f"fetch: {undecryptable} message(s) were not encrypted to this key (skipped)",
              file=sys.stderr)
    if not args.json:
        print(f"fetch: {len(msgs)} message(s)" + (", deleted" if args.delete and msgs else ""),
              file=sys.stderr)
    return EXIT_OK


def _status_args(p):
    _add_node_opts(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_status(args) -> int:
    async def info(client):
        return await client.info()

    from firmware.status_text import jsonable, status_text

    plain = jsonable(_run_client(args, info))
    print(json.dumps(plain, sort_keys=True) if args.json else status_text(plain))
    return EXIT_OK


def _config_check_args(p):
    p.add_argument("file", help="the homenode.toml to check")


def cmd_config_check(args) -> int:
    from firmware.config import ConfigError, default_schema

    try:
        default_schema().load(args.file)
    except ConfigError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.file}: ok")
    return EXIT_OK


def cmd_config_defaults(args) -> int:
    from firmware.config import default_schema

    print(default_schema().defaults_toml(), end="")
    return EXIT_OK


COMMANDS = [
    Command("run", "run the node daemon (until SIGTERM/Ctrl-C)", _run_args, cmd_run),
    Command("keygen", "create the node key, or a user key pair with --out", _keygen_args,
            cmd_keygen),
    Command("id", "print the node's public id (or a key file's with --key)", _id_args, cmd_id),
    Command("send", "encrypt a message to a recipient and store it on the node", _send_args,
            cmd_send),
    Command("fetch", "fetch and decrypt your messages", _fetch_args, cmd_fetch),
    Command("status", "show the node's state", _status_args, cmd_status),
    Command("config check", "validate a homenode.toml (exit 0 ok, 2 invalid)",
            _config_check_args, cmd_config_check),
    Command("config defaults", "print every setting with its default and help",
            lambda p: None, cmd_config_defaults),
    Command("flash", "write the SD image onto a card, then verify it by reading back",
            flash.add_arguments, flash.run),
    Command("update", "system updates on the box: status, apply a bundle, check", update.add_args, update.run),
]


# --------------------------------------------------------------------------- parser


def build_parser(commands=COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="homenode", description="homenode node and client")
    parser.add_argument("--version", action="version", version=f"homenode {__version__}")
    groups = {(): parser.add_subparsers(dest="command", metavar="COMMAND", required=True)}
    for cmd in commands:
        words = tuple(cmd.name.split())
        for i in range(1, len(words)):
            if words[:i] not in groups:
                parent = groups[words[:i - 1]].add_parser(words[i - 1], help=f"{words[i - 1]} …")
                groups[words[:i]] = parent.add_subparsers(dest=f"sub{i}", metavar="COMMAND",
                                                         required=True)
        sub = groups[words[:-1]].add_parser(words[-1], help=cmd.help, description=cmd.help)
        cmd.add_args(sub)
        sub.set_defaults(_run=cmd.run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args._run(args)
    except CliError as e:
        print(f"homenode: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
