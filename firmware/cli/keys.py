"""`homenode keygen` and `homenode id`: the node key and user key pairs."""

import json
import os
import sys

from firmware.cli.common import (
    EXIT_OK,
    CliError,
    add_config_opt,
    add_data_dir_opt,
    data_dir_of,
    load_user_key,
)


def keygen_args(p):
    add_config_opt(p)
    add_data_dir_opt(p)
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
            data_dir = data_dir_of(args)
            ident, created = load_or_create_node_identity(data_dir)
            what = "created" if created else "exists:"
            print(f"{what} node key {node_key_path(data_dir)}; node id:", file=sys.stderr)
    except IdentityError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot write the key: {e}") from None
    print(ident.id_hex)
    return EXIT_OK


def id_args(p):
    add_config_opt(p)
    add_data_dir_opt(p)
    p.add_argument("--key", metavar="FILE", help="print the public id of this key file instead")


def cmd_id(args) -> int:
    from firmware.identity import node_key_path
    from firmware.node import ADDRESS_FILE

    if args.key:
        print(load_user_key(args.key).id_hex)
        return EXIT_OK
    data_dir = data_dir_of(args)
    try:  # node.json is world-readable: works for operators who cannot read the secret key
        with open(os.path.join(data_dir, ADDRESS_FILE)) as f:
            print(json.load(f)["node_id"])
            return EXIT_OK
    except (OSError, ValueError, KeyError):
        pass
    print(load_user_key(node_key_path(data_dir)).id_hex)
    return EXIT_OK
