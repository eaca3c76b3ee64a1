"""`homenode config check` and `homenode config defaults`."""

import sys

from firmware.cli.common import EXIT_OK, EXIT_USAGE


def check_args(p):
    p.add_argument("file", help="the homenode.toml to check")


def cmd_config_check(args) -> int:
    from firmware.config import ConfigError
    from firmware.settings import default_schema

    try:
        default_schema().load(args.file)
    except ConfigError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.file}: ok")
    return EXIT_OK


def cmd_config_defaults(args) -> int:
    from firmware.settings import default_schema

    print(default_schema().defaults_toml(), end="")
    return EXIT_OK
