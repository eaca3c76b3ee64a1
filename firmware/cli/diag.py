"""`homenode diag`: one .tar.gz to hand to whoever helps you (no keys, no messages, no
recipient ids; see firmware/web/diag.py for what is in it and how it is scrubbed)."""

import os

from firmware.cli.common import (
    EXIT_OK,
    CliError,
    add_node_opts,
    data_dir_of,
    load_config,
    run_client,
)


def diag_args(p):
    add_node_opts(p)
    p.add_argument("--out", metavar="PATH", default=".",
                   help="file to write, or a directory for the default name (default: here)")
    p.add_argument("--log", metavar="FILE",
                   help="also include this log file (e.g. a node's output on a PC without "
                        "journald); it is scrubbed like everything else")


def cmd_diag(args) -> int:
    from firmware.web.diag import node_bundle
    from firmware.web.history import History
    from firmware.web.recorder import HISTORY_FILE

    cfg = load_config(args)
    data_dir = data_dir_of(args)
    info, error = None, None
    try:
        info = run_client(args, lambda client: client.info())
    except CliError as e:
        error = str(e)  # a bundle of a node that does not answer is the most useful one
    history = None
    try:
        with open(os.path.join(data_dir, HISTORY_FILE), "rb") as f:
            history = History.from_bytes(f.read(2 * 1024 * 1024 + 1))
    except (OSError, ValueError):
        pass
    extra = None
    if args.log:
        try:
            with open(args.log, errors="replace") as f:
                extra = f.read()
        except OSError as e:
            raise CliError(f"--log {args.log}: {e.strerror}") from None
    name, data = node_bundle(cfg, data_dir, info, history, extra_log=extra,
                             status_error=error)
    path = os.path.join(args.out, name) if os.path.isdir(args.out) else args.out
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror}") from None
    print(f"{path}: diagnostics bundle, {len(data)} bytes"
          + (f" (the node did not answer: {error})" if error else ""))
    return EXIT_OK
