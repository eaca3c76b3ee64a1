"""`homenode send` and `homenode fetch`: end-to-end encrypted messages through the network.

The node's limits are checked here first, in the user's terms (the plaintext they typed, the
ttl in the unit they typed), so a mistake is one clear line before anything is sent.
"""

import base64
import json
import sys
import time

from firmware.cli.bridge import add_bridge_opt, bridge_lines, run_via_bridges
from firmware.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_direct_opt,
    add_node_opts,
    load_user_key,
    locate_node,
    parse_duration,
    run_client,
)
from firmware.proto.limits import MAX_DATA, NS_MAX, NS_MIN, PUBLIC_NS, TTL_MIN, max_ttl

SEALED_BOX_OVERHEAD = 48  # X25519 ephemeral public key (32) + Poly1305 tag (16)
MAX_PLAINTEXT = MAX_DATA - SEALED_BOX_OVERHEAD  # 76,752 bytes


def send_args(p):
    add_node_opts(p)
    p.add_argument("--to", required=True, metavar="HEX", help="recipient public id (64 hex)")
    p.add_argument("--ns", type=int, default=0,
                   help=f"namespace {NS_MIN}..{NS_MAX} (default 0, the public inbox)")
    p.add_argument("--ttl", type=parse_duration, default=parse_duration("1d"),
                   help="time to live: 90s, 15m, 2h, 14d (default 1d; 10s to 14d in ns 0, to "
                        "30d elsewhere)")
    p.add_argument("--key", metavar="FILE",
                   help="the recipient's key file (needed for namespaces other than 0)")
    p.add_argument("--json", action="store_true",
                   help="print the result as one JSON object (hash, expiry, new, replicas)")
    p.add_argument("message", nargs="?",
                   help=f"text to send, at most {MAX_PLAINTEXT:,} bytes (default: read stdin)")
    add_direct_opt(p)
    add_bridge_opt(p)


def check_ns(ns: int) -> None:
    if not NS_MIN <= ns <= NS_MAX:
        raise CliError(f"--ns {ns} is out of range: namespaces are {NS_MIN}..{NS_MAX} (0 is the "
                       "public inbox)", EXIT_USAGE)


def check_ttl(ttl, ns: int) -> None:
    """The node's ttl range, said in the unit the user typed."""
    longest = max_ttl(ns)
    if ttl.ms > longest:
        if ns == PUBLIC_NS:
            where = (f"for the public inbox (ns 0): at most {ttl.show(longest)} there "
                     f"({ttl.show(max_ttl(1))} in other namespaces)")
        else:
            where = (f"for namespace {ns}: at most {ttl.show(longest)} there "
                     f"({ttl.show(max_ttl(PUBLIC_NS))} in the public inbox, ns 0)")
        raise CliError(f"--ttl {ttl.text} is too long {where}", EXIT_USAGE)
    if ttl.ms < TTL_MIN:
        raise CliError(f"--ttl {ttl.text} is too short: at least {ttl.show(TTL_MIN)}",
                       EXIT_USAGE)


def check_size(plaintext: bytes, source: str) -> None:
    if len(plaintext) > MAX_PLAINTEXT:
        size = (f"{len(plaintext):,} bytes" if source == "argument"
                else f"more than {MAX_PLAINTEXT:,} bytes")
        raise CliError(f"the message ({source}) is {size}; one message holds at most "
                       f"{MAX_PLAINTEXT:,} bytes ({MAX_DATA:,} bytes stored, less "
                       f"{SEALED_BOX_OVERHEAD} of encryption); split it, or send a link to it",
                       EXIT_USAGE)


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
    check_ns(args.ns)
    check_ttl(args.ttl, args.ns)
    signing_key = None
    if args.ns != 0:
        if not args.key:
            raise CliError(f"--ns {args.ns} is a private namespace: storing there needs --key "
                           "(the recipient's key file); only the public inbox (ns 0) takes "
                           "deposits from anyone", EXIT_USAGE)
        ident = load_user_key(args.key)
        if ident.node_id != recipient:
            raise CliError("--key does not belong to --to", EXIT_USAGE)
        signing_key = ident.signing_key
    if args.message is not None:
        check_size(args.message.encode(), "argument")
    # fail fast, before reading stdin
    node = None if args.bridge and bridge_lines(args) else locate_node(args)
    plaintext = (args.message.encode() if args.message is not None
                 else sys.stdin.buffer.read(MAX_PLAINTEXT + 1))  # one byte past the limit, at most
    check_size(plaintext, "stdin")
    sealed = seal_for(recipient, plaintext)

    async def send(client):
        return await client.store(recipient, sealed, ns=args.ns, ttl_ms=args.ttl.ms,
                                  signing_key=signing_key)

    r = run_via_bridges(args, send) if args.bridge else run_client(args, send, node)
    if args.json:
        print(json.dumps({"hash": r.hash.hex(), "expiry": r.expiry, "new": r.new,
                          "replicas": r.replicas}))
        return EXIT_OK
    expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(r.expiry / 1000))
    copies = "" if r.replicas is None else f" on {r.replicas} node(s)"
    what = "stored" if r.new else "was already stored"
    # like keygen: the explanation on stderr, the value a script wants alone on stdout
    print(f"sent {len(plaintext):,} bytes encrypted to {args.to[:16]}...: {what}{copies} until "
          f"{expires}; message hash:", file=sys.stderr)
    print(r.hash.hex())
    return EXIT_OK


def fetch_args(p):
    add_node_opts(p)
    p.add_argument("--key", required=True, metavar="FILE", help="your key file (keygen --out)")
    p.add_argument("--ns", type=int, default=0, help=f"namespace {NS_MIN}..{NS_MAX} (default 0)")
    p.add_argument("--after", metavar="HASH", help="only messages stored after this one")
    p.add_argument("--delete", action="store_true", help="delete the messages once fetched")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_direct_opt(p)
    add_bridge_opt(p)


def cmd_fetch(args) -> int:
    import nacl.exceptions

    from firmware.client import open_sealed

    check_ns(args.ns)
    ident = load_user_key(args.key)
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

    msgs = run_via_bridges(args, fetch) if args.bridge else run_client(args, fetch)
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
