"""`homenode status`: what the node is doing, health first."""

import json

from firmware.cli.common import EXIT_OK, add_node_opts, run_client


def status_args(p):
    add_node_opts(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--full", action="store_true", help="every counter the node keeps")
    how.add_argument("--json", action="store_true", help="machine-readable output (every field)")


def cmd_status(args) -> int:
    async def info(client):
        return await client.info()

    from firmware.status_text import jsonable, short_status, status_text

    plain = jsonable(run_client(args, info))
    if args.json:
        print(json.dumps(plain, sort_keys=True))
    else:
        print(status_text(plain) if args.full else short_status(plain))
    return EXIT_OK
