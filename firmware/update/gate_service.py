"""The health gate while a new system is on trial: sample the node, let `HealthGate` decide.

Runs as root (homenode-update-gate.service) beside the node, never inside it: a broken node
must not be able to keep its own broken system. One sample = systemd's view of homenode.service
(READY=1 sent, restarts, given up) plus the node's own `homenode status` over loopback.
"""

import json
import os
import subprocess

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
    """The node's status as `homenode status --json` gets it: its address and pinned id from
    node.json in its data dir, then `info` over the client library (no CLI import: the CLI
    registers the updater's verbs)."""
    from firmware.client import connect
    from firmware.identity import parse_node_id
    from firmware.node import ADDRESS_FILE

    with open(os.path.join(data_dir, ADDRESS_FILE)) as f:
        local = json.load(f)
    host = str(local["host"])
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    port, node_id = int(local["port"]), parse_node_id(local["node_id"])

    async def info():
        with trio.fail_after(timeout):
            async with connect(host, port, node_id, timeout=timeout) as client:
                return await client.info()

    return trio.run(info)


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
