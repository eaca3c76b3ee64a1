"""`homenode` command line: run the node, manage keys, send/fetch messages, check config.

One module per verb family (daemon, keys, messages, status, config_cmds, ...); this module only
lists them in `COMMANDS` and builds the parser. A part adds a verb with one line, e.g.
    Command("flash", "write the SD image to a card", flash.add_arguments, flash.run),
where `add_args(parser)` declares its options and `run(args) -> int` does the work. A name with
a space ("config check") becomes a nested subcommand.

Exit codes: 0 ok, 1 operational error (node unreachable, refused request, bad key file),
2 usage or configuration error. Every error prints one line, never a traceback: expected ones
as CliError, argparse's through OneLineParser, and a bug as "internal error" (set
HOMENODE_DEBUG=1 for its traceback; `run` prints it to its log before the line).
"""

import os
import sys
import traceback

from firmware import __version__, flash, update
from firmware.cli import bridge, config_cmds, daemon, diag, identity_cmds, keys, messages, status
from firmware.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, CliError, Command, OneLineParser

__all__ = ["COMMANDS", "Command", "CliError", "build_parser", "main",
           "EXIT_OK", "EXIT_FAIL", "EXIT_USAGE"]

COMMANDS = [
    Command("run", "run the node daemon (until SIGTERM/Ctrl-C)", daemon.run_args, daemon.cmd_run),
    Command("keygen", "create the node key, or a user key pair with --out", keys.keygen_args,
            keys.cmd_keygen),
    Command("id", "print the node's public id (or a key file's with --key)", keys.id_args,
            keys.cmd_id),
    Command("identity export", "write the node's key (or --key FILE) to a passphrase-encrypted "
            "backup file", identity_cmds.export_args, identity_cmds.cmd_export),
    Command("identity import", "restore the node's key (or --out FILE) from a backup file",
            identity_cmds.import_args, identity_cmds.cmd_import),
    Command("send", "encrypt a message to a recipient and store it on the node",
            messages.send_args, messages.cmd_send),
    Command("fetch", "fetch and decrypt your messages", messages.fetch_args, messages.cmd_fetch),
    Command("status", "show the node's state", status.status_args, status.cmd_status),
    Command("diag", "write a diagnostics bundle (.tar.gz, no keys or messages)", diag.diag_args,
            diag.cmd_diag),
    Command("config check", "validate a homenode.toml (exit 0 ok, 2 invalid)",
            config_cmds.check_args, config_cmds.cmd_config_check),
    Command("config defaults", "print every setting with its default and help",
            lambda p: None, config_cmds.cmd_config_defaults),
    Command("flash", "write the SD image onto a card, then verify it by reading back",
            flash.add_arguments, flash.run),
    Command("bridge line", "print this bridge's line (and QR code) to hand to friends",
            bridge.line_args, bridge.cmd_line),
    Command("update", "system updates on the box: status, apply a bundle, check",
            update.add_args, update.run),
]


def build_parser(commands=COMMANDS) -> OneLineParser:
    parser = OneLineParser(prog="homenode", description="homenode node and client")
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
        sub.set_defaults(_run=cmd.run, _prog=sub.prog)
    return parser


def main(argv=None, commands=COMMANDS) -> int:
    parser = build_parser(commands)
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the subcommand, whose --help lists what it takes
        parser.exit(EXIT_USAGE, f"{args._prog}: unrecognized arguments: {' '.join(extra)} "
                                f"(see: {args._prog} --help)\n")
    try:
        return args._run(args)
    except CliError as e:
        print(f"homenode: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: still one line, the traceback on request
        if os.environ.get("HOMENODE_DEBUG"):
            raise
        if args._prog.endswith(" run"):  # the daemon's log is where a crash gets diagnosed
            traceback.print_exc()
        print(f"homenode: internal error: {type(e).__name__}: {e} (a bug; please report it, "
              "with the traceback HOMENODE_DEBUG=1 shows)", file=sys.stderr)
        return EXIT_FAIL
