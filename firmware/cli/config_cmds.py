"""`homenode config check` and `homenode config defaults`.

`config check` runs the same check as `homenode run` and the box's first boot
(`firmware.settings.check_data`), so what it calls ok, they accept.
"""

import sys

from firmware.cli.common import EXIT_OK, EXIT_USAGE


def check_args(p):
    p.add_argument("file", help="the homenode.toml to check (a node config, or the boot "
                                "partition's file with [device] / [wifi] / [ssh])")
    p.add_argument("--boot", action="store_true",
                   help="check it as the SD card's boot-partition file even without a boot "
                        "section (the image fixes [node] data_dir and listen_host)")


def cmd_config_check(args) -> int:
    from firmware.config import ConfigError, read_toml
    from firmware.settings import BOOT_SECTIONS, check_data, is_boot_file

    try:
        data = read_toml(args.file)
    except ConfigError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    boot = args.boot or is_boot_file(data)
    _, problems = check_data(data, args.file, boot=boot)
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    kind = (" (the box's boot-partition file: " + " ".join(f"[{s.name}]" for s in BOOT_SECTIONS)
            + " configure the box, the rest the node)" if boot else "")
    print(f"{args.file}: ok{kind}")
    return EXIT_OK


def cmd_config_defaults(args) -> int:
    from firmware.settings import default_schema

    print(default_schema().defaults_toml(), end="")
    return EXIT_OK
