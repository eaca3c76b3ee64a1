"""`homenode update ...`: the updater's command line (registered with one line in the CLI's
COMMANDS table as `Command("update", ..., add_args, run)`).

    status [--json]        what runs, what is installed, what happened last (any user)
    apply FILE             check the signature, install into the other slot, restart into it
    check [--now]          a bundle on the boot partition, then the release channel if due
    scan --device DEV      a USB stick (started by udev)
    gate                   at boot: settle the last install, run the health gate on a trial
    config                 at boot: write RAUC's system.conf for this boot disk
"""

import json
import os
import sys

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3


def add_args(p) -> None:
    sub = p.add_subparsers(dest="update_command", metavar="ACTION", required=True)
    st = sub.add_parser("status", help="show the system version, slots and the last update")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    ap = sub.add_parser("apply", help="install a bundle (.raucb) into the other slot")
    ap.add_argument("file", help="the bundle file")
    ap.add_argument("--no-reboot", action="store_true",
                    help="do not restart now: the new system starts at the next restart")
    ck = sub.add_parser("check", help="look for a bundle on the boot partition and in the "
                                      "release channel")
    ck.add_argument("--now", action="store_true",
                    help="check the release channel even if not due (or if it is off)")
    sc = sub.add_parser("scan", help="install a bundle from a USB stick")
    sc.add_argument("--device", required=True, help="the stick's partition, e.g. /dev/sda1")
    sub.add_parser("gate", help="(at boot) settle the last install; health gate on a trial")
    sub.add_parser("config", help="(at boot) write RAUC's system.conf for this boot disk")


def run(args) -> int:
    action = args.update_command
    if action == "status":
        return _status(args)
    from firmware.update.bootstate import cmdline_value, read_cmdline

    try:
        cmdline = read_cmdline()
    except OSError:
        cmdline = ""
    if cmdline_value(cmdline, "rauc.slot") is None:
        print(f"homenode update {action}: this system was not started by the A/B boot (no "
              "rauc.slot= on the kernel command line); system updates work only on a homenode "
              "box", file=sys.stderr)
        return EXIT_USAGE
    if os.geteuid() != 0:
        print(f"homenode update {action}: needs root (it writes the system slots); run it with "
              "sudo or as root over SSH", file=sys.stderr)
        return EXIT_USAGE
    try:
        return {"apply": _apply, "check": _check, "scan": _scan, "gate": _gate,
                "config": _config}[action](args)
    except KeyboardInterrupt:
        return 130


def _updater():
    from firmware.config import ConfigError
    from firmware.update.settings import load
    from firmware.update.updater import Updater

    try:
        settings = load()
    except ConfigError as e:
        print(f"homenode update: {e.problems[0]} (using defaults)", file=sys.stderr)
        from firmware.update.settings import UpdateSettings

        settings = UpdateSettings()
    return Updater(settings=settings)


def _status(args) -> int:
    from firmware.update.status import HISTORY, RUNTIME_STATUS, UpdateStatus, read_json

    info = UpdateStatus(RUNTIME_STATUS).info()
    hist = read_json(HISTORY) if os.access(HISTORY, os.R_OK) else {}
    if args.json:
        print(json.dumps({"status": info, "pending": hist.get("pending"),
                          "events": hist.get("events", [])}, sort_keys=True))
        return EXIT_OK
    if not info.get("available"):
        print("no update status on this machine (not a homenode image, or the updater has not "
              "run yet)")
        return EXIT_OK
    other = info.get("other_slot") or {}
    print(f"system    {info.get('version')} in slot {info.get('slot')} "
          f"(switched by {info.get('boot')})")
    print(f"other     slot {other.get('slot')}: {other.get('state')}, next boot: "
          f"{other.get('next_boot')}")
    if info.get("phase"):
        pct = f" {info['progress']}%" if info.get("progress") is not None else ""
        print(f"now       {info['phase']}{pct}")
    print(f"channel   {info.get('channel')}")
    if info.get("last_result"):
        print(f"last      {info['last_result']} {info.get('last_version') or ''}: "
              f"{info.get('last_reason')}")
    if info.get("rolled_back"):
        print("          the box went back to the previous system (see the line above)")
    return EXIT_OK


def _apply(args) -> int:
    from firmware.update.rauc import RaucError
    from firmware.update.updater import UpdateRefused

    u = _updater()
    try:
        print(u.apply(os.path.abspath(args.file), source="homenode update apply",
                      reboot=False if args.no_reboot else None))
        return EXIT_OK
    except UpdateRefused as e:
        print(f"homenode update: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except RaucError as e:
        print(f"homenode update: install failed, the running system is unchanged: {e}",
              file=sys.stderr)
        return EXIT_FAIL


def _check(args) -> int:
    from firmware.update import sources
    from firmware.update.gate import TRIAL, classify
    from firmware.update.rauc import RaucError
    from firmware.update.updater import UpdateRefused

    u = _updater()
    if classify(u.facts(), u.history.pending)[0] == TRIAL:
        print("a new system is on trial; checking later")
        return EXIT_OK
    for line in sources.scan_boot_partition(u):
        print(line)
    url = u.settings.index_url or u.release.get("index_url") or ""
    if u.settings.channel == "off" and not args.now:
        print("release channel off ([update] channel = \"off\")")
        return EXIT_OK
    from firmware.update.index import IndexProblem

    try:
        print(sources.check_channel(u, url, force=args.now))
    except (OSError, IndexProblem, UpdateRefused, RaucError) as e:
        u.log(f"release channel: {e}")
        print(f"homenode update: release channel: {e}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def _scan(args) -> int:
    from firmware.update import sources

    for line in sources.scan_usb(_updater(), args.device):
        print(line)
    return EXIT_OK


def _gate(args) -> int:
    from firmware.sdnotify import Notifier

    return run_gate(_updater(), Notifier(), _watch_trial)


def run_gate(updater, notifier, watch_trial) -> int:
    """Settle the last install, tell systemd (READY=1), then watch a trial if there is one.

    Why READY only after settling: the units that install bundles (USB stick, boot partition,
    release channel) are ordered after this one, and read the update history. Started before
    the rolled-back boot had recorded its rollback, a stick left in the port installed the same
    failed bundle again (the history it read did not decline it yet)."""
    from firmware.update.gate import TRIAL

    try:
        situation, _ = updater.settle()
    except (OSError, ValueError) as e:
        print(f"homenode update gate: {e}", file=sys.stderr)
        updater.write_status()
        return EXIT_FAIL  # (systemd counts the unit failed; the units after it start anyway)
    notifier.ready(f"last update settled: {situation}")
    if situation != TRIAL:
        return EXIT_OK
    return EXIT_OK if watch_trial(updater) == "commit" else EXIT_FAIL


def _watch_trial(updater) -> str:
    """The health gate over a new system on trial; returns "commit" or "rollback"."""
    import trio  # only now: a second or more of imports on a Pi Zero, for every boot otherwise

    from firmware.update.gate import HealthGate
    from firmware.update.gate_service import GateService, take_sample

    s = updater.settings
    service = GateService(HealthGate(s.health_window_s, s.trial_timeout_s),
                          lambda at: take_sample(at), updater.commit, updater.roll_back,
                          updater.log)
    return trio.run(service.run).action


def _config(args) -> int:
    from firmware.update import sysconf
    from firmware.update.bootstate import cmdline_value, read_cmdline
    from firmware.update.status import write_text

    cmdline = read_cmdline()
    mode = cmdline_value(cmdline, "homenode.boot")
    try:
        parts = sysconf.disk_partitions(sysconf.root_partition(cmdline))
        text = sysconf.system_conf(parts, mode or "")
        sysconf.check_mounts(parts)
    except (OSError, ValueError) as e:
        print(f"homenode update config: {e}; updates are off for this boot", file=sys.stderr)
        return EXIT_FAIL
    write_text(sysconf.SYSTEM_CONF, text)
    print(f"wrote {sysconf.SYSTEM_CONF}: {mode} boot, slots on the disk of {parts[1]}")
    return EXIT_OK
