"""`homenode status`: what the node is doing, health first."""

import json

from firmware.cli.common import EXIT_OK, add_node_opts, run_client


def status_args(p):
    add_node_opts(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_status(args) -> int:
    async def info(client):
        return await client.info()

    from firmware.status_text import jsonable, status_text

    plain = jsonable(run_client(args, info))
    print(json.dumps(plain, sort_keys=True) if args.json else status_text(plain))
    return EXIT_OK
