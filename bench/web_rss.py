"""Memory cost of the status page and /metrics: idle RSS of a node before and after, same run.

Variants, started in turn in each round (medians over --runs rounds), each idle for --idle s
after READY=1 with the default config otherwise:
  before     the code before the page (`--before-ref`, default: the merge base with main,
             exported with git archive and run with the same interpreter)
  web off    this tree, [web] enabled = false
  web on     this tree, the page listening (the default), never asked
  web used   the same node after GET /, /metrics, /status.json and /diag.tar.gz
  +prometheus_client, +segno
             web on, with the library imported first: what using it at run time would add
The floor is bench/rss.py's: a process importing trio, nacl, cbor2, psutil, sqlite3. Both trees
are byte-compiled first (as in the image), so no variant pays for compiling at import.

    .venv/bin/python bench/web_rss.py [--runs 5] [--idle 2]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rss import measure_floor  # noqa: E402  (same directory)

MIB = 1024 * 1024
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = '[node]\nlisten_port = 0\nlog_level = "warning"\n[web]\nport = 0\nenabled = {on}\n'
MAIN = "import sys; {pre}from firmware.cli import main; sys.exit(main())"


def start(tmp, on=True, pre="", pythonpath=None, legacy=False):
    cfg = os.path.join(tmp, "homenode.toml")
    with open(cfg, "w") as f:
        f.write(CONFIG.split("[web]")[0] if legacy else CONFIG.format(on=str(on).lower()))
    sock_path = os.path.join(tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    env.pop("JOURNAL_STREAM", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.Popen([sys.executable, "-c", MAIN.format(pre=pre), "run", "--config", cfg,
                             "--data-dir", os.path.join(tmp, "data")],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "err"), "wb"),
                            env=env, cwd=tmp if pythonpath else REPO)
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(open(os.path.join(tmp, "err")).read()[-2000:])
            try:
                if b"READY=1" in sock.recv(4096):
                    break
            except TimeoutError:
                pass
    finally:
        sock.close()
    return proc


def web_address(tmp):
    out = subprocess.run([sys.executable, "-m", "firmware.cli", "status", "--json", "--data-dir",
                          os.path.join(tmp, "data")], capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout)["web"]["address"]


def stop(proc):
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def measure(variant, root, before_tree, idle):
    tmp = tempfile.mkdtemp(dir=root)
    kind = variant
    kw = {"before": {"pythonpath": before_tree, "legacy": True}, "web off": {"on": False},
          "web on": {}, "web used": {},
          "+prometheus_client": {"pre": "import prometheus_client; "},
          "+segno": {"pre": "import segno; "}}[kind]
    proc = start(tmp, **kw)
    try:
        time.sleep(idle)
        if kind == "web used":
            addr = web_address(tmp)
            for path in ("/", "/metrics", "/status.json", "/diag.tar.gz", "/"):
                urllib.request.urlopen(f"http://{addr}{path}", timeout=30).read()
            time.sleep(idle)
        return psutil.Process(proc.pid).memory_info().rss
    finally:
        stop(proc)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--idle", type=float, default=2.0)
    p.add_argument("--before-ref", default=None, help="git ref of the code before the page")
    a = p.parse_args()
    ref = a.before_ref or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=REPO,
                                         capture_output=True, text=True).stdout.strip()
    variants = ["before", "web off", "web on", "web used", "+prometheus_client", "+segno"]
    samples = {v: [] for v in variants}
    floors = []
    with tempfile.TemporaryDirectory(prefix="bench-web-rss-") as root:
        before_tree = os.path.join(root, "before")
        os.mkdir(before_tree)
        archive = subprocess.run(["git", "archive", ref, "firmware", "hal"], cwd=REPO,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", before_tree], input=archive, check=True)
        # bytecode for both trees, as the image ships it: compiling .py files at import (e.g.
        # under PYTHONDONTWRITEBYTECODE) would leave the compiler's garbage in the RSS
        for tree in (before_tree, REPO):
            subprocess.run([sys.executable, "-m", "compileall", "-q", "firmware", "hal"],
                           cwd=tree, check=True)
        for _ in range(a.runs):
            floors.append(measure_floor())
            for v in variants:
                samples[v].append(measure(v, root, before_tree, a.idle))
    floor = statistics.median(floors)
    med = {v: statistics.median(s) for v, s in samples.items()}
    out = {"runs": a.runs, "before_ref": ref[:12], "floor_mib": round(floor / MIB, 1),
           "median_mib": {v: round(m / MIB, 1) for v, m in med.items()},
           "ratio_vs_floor": {v: round(m / floor, 3) for v, m in med.items()},
           "delta_vs_before_mib": {v: round((m - med["before"]) / MIB, 2)
                                   for v, m in med.items()},
           "load": os.getloadavg(),
           "samples_mib": {v: [round(x / MIB, 1) for x in s] for v, s in samples.items()}}
    print(json.dumps(out, indent=2))
    print(f"web rss (median of {a.runs}): floor {out['floor_mib']} MiB; " + "; ".join(
        f"{v} {out['median_mib'][v]} MiB ({out['ratio_vs_floor'][v]}x, "
        f"{out['delta_vs_before_mib'][v]:+} vs before)" for v in variants))


if __name__ == "__main__":
    main()
