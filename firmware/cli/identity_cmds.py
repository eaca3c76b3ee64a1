"""`homenode identity export FILE` / `homenode identity import FILE`: key backups.

The passphrase comes from $HOMENODE_PASSPHRASE (for scripts) or a prompt on the terminal
(asked twice on export). The file format is in firmware/identity_backup.py and the README.
"""

import getpass
import os
import sys

from firmware.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_config_opt,
    add_data_dir_opt,
    data_dir_of,
    load_user_key,
)

PASSPHRASE_ENV = "HOMENODE_PASSPHRASE"


def export_args(p):
    add_config_opt(p)
    add_data_dir_opt(p)
    p.add_argument("file", help="backup file to write (refuses to overwrite one)")
    p.add_argument("--key", metavar="FILE",
                   help="back up this key file (e.g. me.key) instead of the node's key")


def import_args(p):
    add_config_opt(p)
    add_data_dir_opt(p)
    p.add_argument("file", help="backup file written by `homenode identity export`")
    p.add_argument("--out", metavar="FILE",
                   help="write the key to this file instead of the data dir's node.key")


def passphrase(confirm: bool) -> str:
    text = os.environ.get(PASSPHRASE_ENV)
    if text is not None:
        return text
    try:
        tty = open("/dev/tty")  # only to know whether a terminal is there to ask on
        tty.close()
    except OSError:
        raise CliError(f"no passphrase: set {PASSPHRASE_ENV}, or run this in a terminal to be "
                       "asked", EXIT_USAGE) from None
    first = getpass.getpass("passphrase for the backup: ")
    if confirm and getpass.getpass("the same passphrase again: ") != first:
        raise CliError("the two passphrases differ; nothing was written", EXIT_USAGE)
    return first


def cmd_export(args) -> int:
    from firmware.durable import write_durably
    from firmware.identity import node_key_path
    from firmware.identity_backup import BackupError, export_text

    source = args.key or node_key_path(data_dir_of(args))
    ident = load_user_key(source)
    if os.path.lexists(args.file):
        raise CliError(f"{args.file} already exists; refusing to overwrite it (choose another "
                       "name)")
    directory = os.path.dirname(os.path.abspath(args.file))
    if not os.path.isdir(directory):
        raise CliError(f"cannot write {args.file}: directory {directory} does not exist",
                       EXIT_USAGE)
    try:
        text = export_text(ident, passphrase(confirm=True))
    except BackupError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    try:
        write_durably(args.file, text, 0o600, exclusive=True)
    except FileExistsError:
        raise CliError(f"{args.file} already exists; refusing to overwrite it") from None
    except OSError as e:
        raise CliError(f"cannot write {args.file}: {e.strerror or e}") from None
    print(f"wrote {args.file}: key of {ident.id_hex} ({source}), encrypted with your "
          "passphrase; keep both, apart", file=sys.stderr)
    print(ident.id_hex)
    return EXIT_OK


def cmd_import(args) -> int:
    from firmware.identity import (
        IdentityError,
        ensure_data_dir,
        load_key_file,
        node_key_path,
        read_store_owner,
        write_key_file,
        write_store_owner,
    )
    from firmware.identity_backup import BackupError, WrongPassphrase, backup_node_id, import_text

    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read(65536)
    except FileNotFoundError:
        raise CliError(f"{args.file}: no such file", EXIT_USAGE) from None
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"cannot read {args.file}: {getattr(e, 'strerror', None) or e}") from None
    try:
        node_id = backup_node_id(text)
    except BackupError as e:
        raise CliError(f"{args.file}: {e}") from None
    data_dir = None if args.out else data_dir_of(args)
    target = args.out or node_key_path(data_dir)
    try:
        if os.path.lexists(target):
            present = load_key_file(target)
            if present.node_id == node_id:
                print(f"{target} already holds {node_id.hex()}; nothing to do", file=sys.stderr)
                print(node_id.hex())
                return EXIT_OK
            raise CliError(f"{target} holds another key ({present.id_hex[:16]}...), not the "
                           f"backup's {node_id.hex()[:16]}...; move it away first (a key is "
                           "never overwritten)")
        if data_dir is not None:
            ensure_data_dir(data_dir)
            owner = read_store_owner(data_dir)
            if owner is not None and owner != node_id:
                raise CliError(f"the store in {data_dir} belongs to node {owner.hex()[:16]}..., "
                               f"not the backup's {node_id.hex()[:16]}...; import into another "
                               "--data-dir")
        try:
            ident = import_text(text, passphrase(confirm=False))
        except WrongPassphrase:
            raise CliError(f"{args.file}: wrong passphrase (nothing was written)") from None
        except BackupError as e:
            raise CliError(f"{args.file}: {e}") from None
        write_key_file(target, ident)
        if data_dir is not None:
            write_store_owner(data_dir, ident)
    except IdentityError as e:
        raise CliError(str(e)) from None
    print(f"restored {target} (mode 0600) from {args.file}; id:", file=sys.stderr)
    print(ident.id_hex)
    return EXIT_OK
