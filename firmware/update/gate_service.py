"""The health gate while a new system is on trial: sample the node, let `HealthGate` decide.

Runs as root (homenode-update-gate.service) beside the node, never inside it: a broken node
must not be able to keep its own broken system. One sample = systemd's view of homenode.service
(READY=1 sent, restarts, given up) plus the node's own `homenode status` over loopback.
"""

import io
import json
import subprocess
from contextlib import redirect_stderr, redirect_stdout

import trio

from firmware.update.gate import HealthGate, Sample

UNIT = "homenode.service"
NODE_DATA_DIR = "/var/lib/homenode"


def parse_systemctl_show(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def unit_facts(run=subprocess.run) -> tuple[bool, bool, int, str]:
    """(ready, failed, restarts, problem) of the node's unit."""
    out = run(["systemctl", "show", UNIT, "-p", "ActiveState", "-p", "SubState", "-p",
               "NRestarts", "-p", "Result"], capture_output=True, text=True, timeout=30)
    p = parse_systemctl_show(out.stdout)
    state, sub = p.get("ActiveState", "unknown"), p.get("SubState", "")
    try:
        restarts = int(p.get("NRestarts", "0") or 0)
    except ValueError:
        restarts = 0
    failed = state == "failed"
    problem = "" if state == "active" else f"{UNIT} is {state} ({sub}, result {p.get('Result')})"
    return state == "active", failed, restarts, problem


def node_status(data_dir: str = NODE_DATA_DIR, timeout: float = 15) -> dict:
    """The node's status through the same CLI a person would use (in-process)."""
    from firmware.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli_main(["status", "--json", "--data-dir", data_dir, "--timeout", str(timeout)])
    if code != 0:
        raise RuntimeError(err.getvalue().strip().splitlines()[-1] if err.getvalue().strip()
                           else f"homenode status exited {code}")
    return json.loads(out.getvalue())


def take_sample(at: float, run=subprocess.run, status=node_status) -> Sample:
    ready, failed, restarts, problem = unit_facts(run)
    serving, health = False, "unknown"
    if ready:
        try:
            st = status()
            serving = st.get("state") == "serving"
            health = str(st.get("health") or "unknown")
            problem = "" if serving else f"node state {st.get('state')!r}"
            if health == "fatal_error":
                problem = str(st.get("health_reason") or "")
        except Exception as e:  # noqa: BLE001 - any failure to answer is "not serving"
            problem = f"the node did not answer its status: {e}"
    return Sample(at=at, ready=ready, failed=failed, restarts=restarts, serving=serving,
                  health=health, problem=problem)


class GateService:
    """`run()` samples every `interval` seconds until the gate commits or rolls back, then acts
    through `on_commit(reason)` / `on_rollback(reason)`."""

    def __init__(self, gate: HealthGate, sample, on_commit, on_rollback, log,
                 interval: float = 5.0):
        self.gate = gate
        self.sample = sample  # (at) -> Sample, blocking: runs in a worker thread
        self.on_commit, self.on_rollback = on_commit, on_rollback
        self.log = log
        self.interval = interval
        self.samples = 0

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        start = trio.current_time()
        task_status.started()
        last_reason = None
        while True:
            at = trio.current_time() - start
            s = await trio.to_thread.run_sync(self.sample, at)
            self.samples += 1
            verdict = self.gate.observe(s)
            if verdict.reason != last_reason and verdict.action == "wait":
                self.log(f"trial: {verdict.reason}")
                last_reason = verdict.reason
            if verdict.action == "commit":
                await trio.to_thread.run_sync(self.on_commit, verdict.reason)
                return verdict
            if verdict.action == "rollback":
                await trio.to_thread.run_sync(self.on_rollback, verdict.reason)
                return verdict
            await trio.sleep(self.interval)
